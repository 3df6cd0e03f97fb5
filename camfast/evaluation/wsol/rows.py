"""The table's rows: which CAM method runs on which trained model.

* :func:`inference_rows` (a real dataset, one loaded model): one row per method of
  :mod:`camfast.methods.registry`, in registration order, named by its display name; the
  ``cam-nwc`` variant is scored with PaS, as Bae et al. pair NWC and PaS. A newly registered
  method is a row without any edit here.
* :func:`synthetic_rows` (the synthetic table): the papers' experiment design,
  :data:`SYNTHETIC_DESIGN` (which of the three trained classifiers each method runs on: CAM
  and its relatives on the GAP baseline, CAM on the TAP classifier, CAM and the multi-scale
  CAM on the Puzzle-CAM classifier), then every other registered method on the GAP baseline.

Every row's method is checked against the registry when the row is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

__all__ = ["MODELS", "MODEL_NAMES", "PAS_METHODS", "Row", "SYNTHETIC_DESIGN", "check_rows", "inference_rows",
           "synthetic_rows"]

#: The trained classifiers of the synthetic table (:mod:`camfast.evaluation.train`), and
#: ``"model"``: the one model of a real-dataset table.
MODELS = ("gap", "tap", "puzzle", "model")
#: How the table names them.
MODEL_NAMES = {"gap": "GAP", "tap": "TAP", "puzzle": "Puzzle-CAM"}
#: Methods whose fixed-threshold box columns use PaS (Bae et al. 2020 pair it with NWC).
PAS_METHODS = ("cam-nwc",)


@dataclass(frozen=True)
class Row:
    """One line of the table: a CAM method applied to one trained model.

    Attributes:
        name: the row's label in the table.
        model: ``"gap"``, ``"tap"``, ``"puzzle"`` (synthetic) or ``"model"`` (a loaded model).
        method: a method of :mod:`camfast.methods.registry`, any spelling (kept canonical).
        pas: PaS for the fixed-threshold box columns (threshold 0.35 of the 90th percentile).
    """

    name: str
    model: str
    method: str
    pas: bool = False

    def __post_init__(self) -> None:
        from camfast.methods import registry

        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"Row.name must be a non-empty str, got {self.name!r}")
        if self.model not in MODELS:
            raise ValueError(f"Row.model must be one of {', '.join(MODELS)}; got {self.model!r}")
        object.__setattr__(self, "method", registry.get(self.method).name)  # ValueError: unknown method

    @property
    def box_threshold(self) -> float:
        return 0.35 if self.pas else 0.2

    @classmethod
    def of(cls, method: str, model: str = "model") -> "Row":
        """The row of ``method`` on ``model``, named from the registry (``"CAM + NWC + PaS, TAP model"``)."""
        from camfast.methods import registry

        spec = registry.get(method)
        pas = spec.name in PAS_METHODS
        name = spec.display + (" + PaS" if pas else "")
        if model in ("tap", "puzzle"):
            name += f", {MODEL_NAMES[model]} model"
        return cls(name, model, spec.name, pas=pas)


#: The papers' design: (method, trained model) in table order.
SYNTHETIC_DESIGN: tuple[tuple[str, str], ...] = (
    ("cam", "gap"), ("grad-cam", "gap"), ("layer-cam", "gap"), ("zoom-cam", "gap"), ("rcam", "gap"),
    ("rcam-crf", "gap"), ("cam-nwc", "gap"),
    ("cam", "tap"), ("cam-nwc", "tap"),
    ("cam", "puzzle"), ("multiscale-cam", "puzzle"),
)


def inference_rows() -> tuple[Row, ...]:
    """One row per registered method (registration order) on the loaded model."""
    from camfast.methods import registry

    return tuple(Row.of(spec.name, "model") for spec in registry.specs())


def synthetic_rows() -> tuple[Row, ...]:
    """:data:`SYNTHETIC_DESIGN`, then every other registered method on the GAP baseline."""
    from camfast.methods import registry

    rows = [Row.of(method, model) for method, model in SYNTHETIC_DESIGN]
    designed = {r.method for r in rows}
    rows += [Row.of(spec.name, "gap") for spec in registry.specs() if spec.name not in designed]
    return tuple(rows)


def check_rows(rows: Sequence[Row] | None, default: Sequence[Row]) -> tuple[Row, ...]:
    """``rows`` as a non-empty tuple of :class:`Row` (``default`` when None)."""
    if rows is None:
        return tuple(default)
    rows = tuple(rows)
    if not rows or not all(isinstance(r, Row) for r in rows):
        raise TypeError("rows must be a non-empty sequence of camfast.wsol.Row")
    return rows
