"""Settings and result of one ``camfast pseudo-label`` run."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from camfast.cli.common import (DEFAULT_METHOD, EXIT_FAILED_IMAGES, EXIT_INTERRUPTED, EXIT_OUTPUT, UsageError,
                                method_names)
from camfast.methods import registry
from camfast.utils.progress import MODES as PROGRESS_MODES

__all__ = ["DEFAULT_LABELS_THRESHOLD", "FORMATS", "PseudoLabelConfig", "Summary", "UsageError"]

FORMATS = ("png", "npy", "irn")
#: background threshold with labels when none is given (IRN's ``cam_eval_thres``)
DEFAULT_LABELS_THRESHOLD = 0.15


@dataclasses.dataclass
class PseudoLabelConfig:
    """Settings of one ``camfast pseudo-label`` run (see :mod:`camfast.cli.pseudo_label`).

    ``threshold=None`` means: 0.15 with labels, no label map without. ``size=None`` uses the
    model's input size (224 when it has none). ``threads=None`` gives each process
    ``cores // processes per node`` torch threads (CPU). ``progress``: ``"auto"`` (a tqdm bar
    when stderr is a terminal, else a line every ``log_every`` images), ``"bar"``, ``"lines"``
    or ``"none"``; only rank 0 reports progress. ``crf``: refine label maps with a dense CRF;
    a method that has its own CRF (its function takes ``crf=``) runs with it instead.
    ``scales`` / ``flip`` / ``format="irn"``: the maps come from
    :func:`camfast.methods.multiscale.multiscale` on each image at its own size (IRN's
    recipe; ``format="irn"`` defaults to IRN's scales with flips) instead of one pass at
    ``size x size``.
    """

    images: Path
    out: Path
    method: str = DEFAULT_METHOD
    labels: Path | None = None
    model: str = "efficientnet-lite0"
    batch_size: int = 16
    size: int | None = None
    threshold: float | None = None
    crf: bool = False
    workers: int = 0
    format: str = "png"
    overwrite: bool = False
    device: str | None = None
    threads: int | None = None
    progress: str = "auto"
    log_every: int = 100
    scales: tuple[float, ...] | None = None
    flip: bool | None = None

    @property
    def multiscale(self) -> bool:
        """Maps by :func:`camfast.methods.multiscale.multiscale` (IRN's recipe) at each image's
        own size: with ``scales``, ``flip`` or ``format="irn"``."""
        return self.scales is not None or bool(self.flip) or self.format == "irn"

    def validate(self) -> None:
        self.images, self.out = Path(self.images), Path(self.out)
        if self.format == "irn":  # IRN's make_cam.py: its scales, with flips, unless told otherwise
            if self.scales is None:
                from camfast.methods.multiscale import IRN_SCALES

                self.scales = tuple(IRN_SCALES)
            if self.flip is None:
                self.flip = True
        if self.multiscale:
            from camfast.methods.multiscale import check_scales

            self.scales = check_scales(tuple(self.scales) if self.scales is not None else (1.0,))
            self.flip = bool(self.flip)
        try:
            self.method = registry.get(self.method).name
        except (TypeError, ValueError):
            raise ValueError(f"method must be one of {', '.join(method_names())}, got {self.method!r}") from None
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        for name in ("batch_size", "log_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        for name in ("size", "threads"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"workers must be an int >= 0, got {self.workers!r}")
        if self.threshold is not None and not (isinstance(self.threshold, (int, float))
                                               and 0 <= self.threshold <= 1):
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold!r}")
        if self.progress not in PROGRESS_MODES:
            raise ValueError(f"progress must be one of {', '.join(PROGRESS_MODES)}, got {self.progress!r}")
        if not self.images.is_dir():
            raise ValueError(f"images: {str(self.images)!r} is not a folder")
        if self.labels is not None and not Path(self.labels).is_file():
            raise ValueError(f"labels: {str(self.labels)!r} is not a file")
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"out: {str(self.out)!r} exists and is not a folder")
        if self.multiscale and registry.get(self.method).takes_image:
            raise ValueError(f"method {self.method} takes the image itself; it does not run with scales/flip/irn")
        if (self.crf and self.labels is None and self.threshold is None
                and not registry.get(self.method).accepts("crf")):
            raise ValueError("crf refines label maps: give labels or a threshold (or a method with its own CRF)")


@dataclasses.dataclass
class Summary:
    """What a run did (all ranks together).

    ``exit_code``: 0; 3 when an image could not be read or written; 4 when the run stopped
    because the output folder cannot be written (``stopped`` says why); 130 when interrupted.
    """

    found: int = 0
    written: int = 0
    skipped: int = 0
    failed: int = 0
    failures: list[dict[str, str]] = dataclasses.field(default_factory=list)
    unlabelled: int = 0
    seconds: float = 0.0
    images_per_s: float = 0.0
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    world_size: int = 1
    interrupted: bool = False
    stopped: str | None = None

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.stopped is not None:
            return EXIT_OUTPUT
        return EXIT_FAILED_IMAGES if self.failed else 0
