"""The WSOL benchmark table: train the small classifiers, score every CAM method, write the table.

:func:`run_synthetic` (``camfast eval synthetic``, ``python benchmarks/wsol_table.py``)
trains the GAP baseline, the TAP classifier and the Puzzle-CAM classifier of
:mod:`camfast.evaluation.train` on :class:`camfast.evaluation.datasets.SyntheticWSOL` (same
data, budget and initial weights; checkpoints are reused on a rerun), then scores each row
of :data:`SYNTHETIC_ROWS` on the held-out ``test`` split. :func:`run_dataset` scores
:data:`INFERENCE_ROWS` on a real dataset with a model from :func:`camfast.models.load_model`.
Both write ``<name>.md``, ``<name>.json`` and ``<name>.png`` (example maps) atomically.

One module per concern:

* :mod:`~camfast.evaluation.wsol.rows`: :class:`Row`, the papers' design and the rows read
  from :mod:`camfast.methods.registry` (a registered method is a row with no edit here);
* :mod:`~camfast.evaluation.wsol.scoring`: :func:`compute_maps`, :class:`Scorer`,
  :class:`MIoUSweep` (the scoring protocol is in its docstring);
* :mod:`~camfast.evaluation.wsol.claims`: :data:`PAPER_RESULTS` and :func:`orderings`;
* :mod:`~camfast.evaluation.wsol.report`: :func:`render_markdown`, the figure, the writers;
* :mod:`~camfast.evaluation.wsol.run`: :func:`run_synthetic`, :func:`run_dataset`.

:data:`INFERENCE_ROWS` and :data:`SYNTHETIC_ROWS` are computed on each access (PEP 562), so
they include methods registered after this package was imported.
"""

from __future__ import annotations

from typing import Any

from camfast.evaluation.wsol.claims import ORDERING_CHECKS, PAPER_RESULTS, orderings
from camfast.evaluation.wsol.report import render_markdown, write_figure
from camfast.evaluation.wsol.rows import SYNTHETIC_DESIGN, Row, inference_rows, synthetic_rows
from camfast.evaluation.wsol.run import DATASETS, load_dataset, run_dataset, run_synthetic, stamp
from camfast.evaluation.wsol.scoring import METRIC_COLUMNS, MIoUSweep, Scorer, compute_maps

__all__ = ["DATASETS", "INFERENCE_ROWS", "METRIC_COLUMNS", "MIoUSweep", "ORDERING_CHECKS", "PAPER_RESULTS", "Row",
           "SYNTHETIC_DESIGN", "SYNTHETIC_ROWS", "Scorer", "compute_maps", "inference_rows", "load_dataset",
           "orderings", "render_markdown", "run_dataset", "run_synthetic", "stamp", "synthetic_rows", "write_figure"]

_COMPUTED = {"INFERENCE_ROWS": inference_rows, "SYNTHETIC_ROWS": synthetic_rows}


def __getattr__(name: str) -> Any:
    if name in _COMPUTED:
        return _COMPUTED[name]()
    raise AttributeError(f"module 'camfast.evaluation.wsol' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_COMPUTED))
