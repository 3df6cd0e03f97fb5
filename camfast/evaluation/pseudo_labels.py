"""Scoring a folder of pseudo-labels against VOC-style ground truth (``camfast eval pseudo-labels``).

Predictions (one file per image, matched to ``GT/<stem>.png`` by the path relative to the
prediction folder without its suffix):

* **label PNGs** (``camfast pseudo-label``'s ``OUT/labels``): 0 background, class ``k`` as
  ``k + 1``; scored as they are (no threshold);
* **IRN CAM dicts** (``.npy`` holding ``{"keys", "cam", "high_res"}``, IRN's
  ``step/make_cam.py`` and ``camfast pseudo-label --format irn``): read with
  :func:`camfast.evaluation.safe_npy.load_npy` (no code from the file runs); the ``key``
  map (``high_res`` by default, as IRN's ``eval_cam.py``) at the image's size;
* **camfast npy heatmaps** (``OUT/heatmaps/<stem>.npy``, float16 ``(K, H, W)`` with
  ``--labels``): their classes come from the labels file of the run (``classes``).

Score maps become labels as IRN's ``eval_cam.py`` does: a background plane of constant
``threshold`` is put in front of the ``(K, H, W)`` maps (float32), the argmax taken (ties to
the background, then to the first class), class ``keys[k]`` written as ``keys[k] + 1``.
The confusion matrix over ``num_classes`` (21 for VOC) ignores ground-truth pixels of 255;
IoU per class = TP / (TP + FP + FN), mIoU = their mean over classes that occur (NaN
otherwise, as ``np.nanmean``).

A sweep scores every threshold in one pass over the files: per pixel only the number of
thresholds below its best score matters, so one histogram over (that count, GT class,
predicted class) gives every threshold's confusion matrix by cumulative sums.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from camfast.evaluation.safe_npy import load_npy

__all__ = ["IGNORE", "IRN_THRESHOLD", "SWEEP", "ConfusionSweep", "Prediction", "Scores", "evaluate_folder",
           "find_predictions", "iou_from_confusion", "read_gt", "read_prediction", "sweep_figure"]

#: IRN's ``cam_eval_thres``
IRN_THRESHOLD = 0.15
#: the thresholds of a sweep: 0.00, 0.01, ..., 0.99
SWEEP = tuple(round(0.01 * i, 2) for i in range(100))
#: ground-truth value that is not scored (VOC's object boundaries)
IGNORE = 255


@dataclasses.dataclass
class Prediction:
    """One image's prediction: ``labels`` (``(H, W)`` ints, 0 background) or score maps
    ``scores`` ``(K, H, W)`` float32 for the 0-based classes ``keys`` ``(K,)``."""

    labels: np.ndarray | None = None
    keys: np.ndarray | None = None
    scores: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.labels.shape if self.labels is not None else self.scores.shape[1:])  # type: ignore


def iou_from_confusion(conf: np.ndarray) -> np.ndarray:
    """IoU per class from a ``(n, n)`` confusion matrix (rows GT, columns prediction); NaN
    for a class neither in the GT nor predicted."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)
    denom = conf.sum(1) + conf.sum(0) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.where(denom > 0, denom, 1), np.nan)


def _miou(iou: np.ndarray) -> float:
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


class ConfusionSweep:
    """Confusion matrices accumulated image by image, for every threshold at once.

    ``add(gt, prediction)``; :meth:`confusion` (``(T, n, n)``, one per threshold) or, when
    only label maps were added, :attr:`fixed` (``(n, n)``). Label maps and score maps can be
    mixed: label maps count the same at every threshold.
    """

    def __init__(self, num_classes: int = 21, thresholds: Sequence[float] = (IRN_THRESHOLD,)) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 2 <= num_classes <= 255:
            raise ValueError(f"num_classes must be an int in [2, 255], got {num_classes!r}")
        t = np.asarray(thresholds, dtype=np.float32).reshape(-1)
        if t.size == 0 or not np.isfinite(t).all() or np.any(np.diff(t) <= 0):
            raise ValueError(f"thresholds must be finite and increasing, got {list(thresholds)}")
        self.n, self.thresholds = num_classes, t
        T = t.size
        # hist[c, g, p]: pixels of GT class g whose best class is p (0 when no class) and whose
        # best score exceeds exactly the c lowest thresholds
        self.hist = np.zeros((T + 1, num_classes, num_classes), dtype=np.int64)
        self.fixed = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.images = 0

    def add(self, gt: np.ndarray, pred: Prediction, name: str = "") -> None:
        n = self.n
        if gt.ndim != 2 or pred.shape != gt.shape:
            raise ValueError(f"{name}: prediction is {pred.shape[0]}x{pred.shape[1]}, its ground truth "
                             f"{gt.shape[0]}x{gt.shape[1]} (H x W)")
        valid = gt != IGNORE
        g = gt[valid].astype(np.int64)
        if g.size and (g.min() < 0 or g.max() >= n):
            raise ValueError(f"{name}: ground-truth values must be 0..{n - 1} or {IGNORE}, found "
                             f"{sorted(set(np.unique(g[(g < 0) | (g >= n)]).tolist()))[:5]}")
        self.images += 1
        if pred.labels is not None:
            p = pred.labels[valid].astype(np.int64)
            if p.size and (p.min() < 0 or p.max() >= n):
                raise ValueError(f"{name}: predicted labels must be 0..{n - 1}, found "
                                 f"{sorted(set(np.unique(p[(p < 0) | (p >= n)]).tolist()))[:5]}")
            self.fixed += np.bincount(g * n + p, minlength=n * n).reshape(n, n)
            return
        keys, scores = pred.keys, pred.scores
        if keys.size and (keys.min() < 0 or keys.max() >= n - 1):
            raise ValueError(f"{name}: classes (keys) must be 0..{n - 2} (background excluded), got {keys.tolist()}")
        if keys.size == 0:
            c = np.zeros(g.shape, dtype=np.int64)
            p = np.zeros(g.shape, dtype=np.int64)
        else:
            s = scores[:, valid]
            best = s.argmax(0)
            top = np.take_along_axis(s, best[None], 0)[0]
            p = (keys.astype(np.int64) + 1)[best]
            c = np.searchsorted(self.thresholds, top, side="left")  # thresholds strictly below the score
        T1 = self.thresholds.size + 1
        self.hist += np.bincount((c * n + g) * n + p, minlength=T1 * n * n).reshape(T1, n, n)

    def confusion(self) -> np.ndarray:
        """``(T, n, n)``: the confusion matrix at each threshold (rows GT, columns prediction)."""
        h = self.hist
        # foreground at threshold i: pixels with c > i; background: c <= i
        after = np.cumsum(h[::-1], 0)[::-1]            # after[c] = sum_{c' >= c} h[c']
        fg = after[1:]                                  # (T, n, n): c > i
        bg = np.cumsum(h.sum(2), 0)[:-1]                # (T, n): c <= i
        conf = fg.copy()
        conf[:, :, 0] += bg
        return conf + self.fixed[None]


@dataclasses.dataclass
class Scores:
    """What :func:`evaluate_folder` found: ``thresholds`` ``(T,)``, ``miou`` ``(T,)``,
    ``iou`` ``(T, n)``, ``confusion`` ``(T, n, n)``, the one ``threshold`` asked for (its
    index ``at``) and the best one, the images scored, the GT files without a prediction."""

    thresholds: np.ndarray
    miou: np.ndarray
    iou: np.ndarray
    confusion: np.ndarray
    at: int
    images: int
    class_names: list[str]
    thresholded: bool
    unmatched_gt: int = 0

    @property
    def threshold(self) -> float:
        return float(self.thresholds[self.at])

    @property
    def best(self) -> int:
        m = np.where(np.isnan(self.miou), -np.inf, self.miou)
        return int(np.argmax(m))

    def as_dict(self) -> dict[str, Any]:
        def num(v: float) -> float | None:
            return None if not np.isfinite(v) else round(float(v), 6)

        out: dict[str, Any] = {
            "images": self.images, "unmatched_gt": self.unmatched_gt, "thresholded": self.thresholded,
            "miou": num(self.miou[self.at]),
            "iou": {c: num(v) for c, v in zip(self.class_names, self.iou[self.at])},
            "confusion": self.confusion[self.at].tolist(),
        }
        if self.thresholded:
            out["threshold"] = round(self.threshold, 6)
            if self.thresholds.size > 1:
                out["best_threshold"] = round(float(self.thresholds[self.best]), 6)
                out["best_miou"] = num(self.miou[self.best])
                out["sweep"] = [{"threshold": round(float(t), 6), "miou": num(m)}
                                for t, m in zip(self.thresholds, self.miou)]
        return out

    def table(self) -> str:
        """The per-class IoU table (markdown) at the threshold asked for."""
        head = "| class | IoU (%) |\n|---|---:|\n"
        rows = "".join(f"| {c} | {'-' if not np.isfinite(v) else f'{100 * v:.2f}'} |\n"
                       for c, v in zip(self.class_names, self.iou[self.at]))
        m = self.miou[self.at]
        return head + rows + f"| **mIoU** | **{'-' if not np.isfinite(m) else f'{100 * m:.2f}'}** |\n"


def read_gt(path: Path) -> np.ndarray:
    """A ground-truth PNG's values (palette indices for VOC's palette PNGs), ``(H, W)``."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16"):
                raise ValueError(f"{path}: a class PNG must be palette or greyscale, got mode {im.mode}")
            return np.asarray(im).astype(np.int64)
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e}") from None


def read_prediction(path: Path, *, key: str = "high_res", classes: Sequence[int] | None = None) -> Prediction:
    """One prediction file (see the module docs). ``classes``: the 0-based classes of a
    camfast ``(K, H, W)`` npy heatmap (from the run's labels file).

    Raises:
        ValueError: unreadable, malformed (wrong keys, shapes), a pickle that would run code
            (:class:`camfast.evaluation.safe_npy.UnsafeFile`), classes missing: the message
            names the file.
    """
    path = Path(path)
    if path.suffix.lower() == ".png":
        from PIL import Image

        try:
            with Image.open(path) as im:
                return Prediction(labels=np.asarray(im).astype(np.int64))
        except OSError as e:
            raise ValueError(f"{path}: cannot read: {e}") from None
    obj = load_npy(path)
    if isinstance(obj, dict):
        missing = [k for k in ("keys", key) if k not in obj]
        if missing:
            raise ValueError(f"{path}: an IRN CAM dict needs {', '.join(map(repr, missing))}; it has "
                             f"{sorted(map(str, obj))}")
        keys = np.asarray(obj["keys"]).reshape(-1)
        scores = np.asarray(obj[key])
        if not np.issubdtype(keys.dtype, np.integer) and keys.size:
            raise ValueError(f"{path}: 'keys' must be integer classes, got {keys.dtype}")
        keys = keys.astype(np.int64)
    elif isinstance(obj, np.ndarray) and obj.dtype.kind == "f":
        if classes is None:
            raise ValueError(f"{path}: a camfast heatmap .npy has no classes: give the run's labels file (--labels)")
        scores = obj[None] if obj.ndim == 2 else obj
        keys = np.asarray(list(classes), dtype=np.int64).reshape(-1)
    else:
        raise ValueError(f"{path}: expected an IRN dict or a float (K, H, W) array, got "
                         f"{type(obj).__name__}{getattr(obj, 'shape', '')}")
    if scores.ndim != 3 or scores.shape[0] != keys.size:
        raise ValueError(f"{path}: maps of shape {scores.shape} for {keys.size} classes (expected (K, H, W))")
    return Prediction(keys=keys, scores=scores.astype(np.float32, copy=False))


def find_predictions(pred_dir: Path) -> list[tuple[str, Path]]:
    """``(stem, path)`` of every prediction under ``pred_dir`` (recursive, sorted): the
    ``.npy`` files when there are any, else the ``.png`` files; hidden entries skipped."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise ValueError(f"pred: {str(pred_dir)!r} is not a folder")
    found: dict[str, list[Path]] = {".npy": [], ".png": []}
    for dirpath, dirnames, filenames in os.walk(pred_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            suffix = os.path.splitext(f)[1].lower()
            if suffix in found and not f.startswith("."):
                found[suffix].append(Path(dirpath) / f)
    paths = found[".npy"] or found[".png"]
    out = sorted((p.relative_to(pred_dir).with_suffix("").as_posix(), p) for p in paths)
    if not out:
        raise ValueError(f"pred: no .npy or .png prediction under {pred_dir}")
    return out


def evaluate_folder(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike, *, threshold: float = IRN_THRESHOLD,
                    sweep: bool = False, thresholds: Sequence[float] | None = None, num_classes: int = 21,
                    key: str = "high_res", classes: Mapping[str, Sequence[int]] | None = None,
                    class_names: Sequence[str] | None = None, progress: str = "auto",
                    log_every: int = 100) -> Scores:
    """Score every prediction under ``pred_dir`` against ``gt_dir/<stem>.png``, streaming
    (one image in memory at a time), with :class:`camfast.utils.progress.Progress`.

    ``threshold``: IRN's background score (0.15); ``sweep``: also every threshold of
    :data:`SWEEP` (or ``thresholds``). ``classes``: image stem -> 0-based classes, for
    camfast npy heatmaps (see :func:`read_prediction`). ``class_names``: the table's names
    (default: VOC's background + 20 classes when ``num_classes`` is 21, else numbers).

    Raises:
        ValueError: a missing folder, a prediction without its GT PNG, a size mismatch, an
            unreadable or unsafe file (the message names it).
    """
    from camfast.utils.progress import Progress

    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise ValueError(f"gt: {str(gt_dir)!r} is not a folder")
    preds = find_predictions(Path(pred_dir))
    grid = sorted({*(thresholds if thresholds is not None else (SWEEP if sweep else ())), float(threshold)})
    grid_f32 = np.asarray(grid, dtype=np.float32)
    grid = [float(t) for t in dict.fromkeys(grid_f32.tolist())]
    acc = ConfusionSweep(num_classes, grid)
    names = list(class_names) if class_names is not None else _default_names(num_classes)
    if len(names) != num_classes:
        raise ValueError(f"class_names: {len(names)} names for {num_classes} classes")
    bar = Progress(len(preds), "eval pseudo-labels", progress, every=log_every, noun="images", unit="img")
    scored = set()
    thresholded = False
    try:
        for stem, path in preds:
            gt_path = gt_dir / f"{stem}.png"
            if not gt_path.is_file():
                raise ValueError(f"{path}: no ground truth {gt_path}")
            own = None
            if classes is not None:
                own = classes.get(stem)
            pred = read_prediction(path, key=key, classes=own)
            thresholded = thresholded or pred.labels is None
            acc.add(read_gt(gt_path), pred, str(path))
            scored.add(stem)
            bar.update(1)
    finally:
        bar.close()
    conf = acc.confusion()
    iou = np.stack([iou_from_confusion(c) for c in conf])
    miou = np.array([_miou(i) for i in iou])
    at = int(np.flatnonzero(acc.thresholds == np.float32(threshold))[0])
    gt_stems = {p.relative_to(gt_dir).with_suffix("").as_posix() for p in gt_dir.rglob("*.png")}
    return Scores(acc.thresholds.astype(np.float64), miou, iou, conf, at, acc.images, names, thresholded,
                  unmatched_gt=len(gt_stems - scored))


def _default_names(n: int) -> list[str]:
    if n == 21:
        from camfast.evaluation.datasets.voc import VOC_CLASSES

        return ["background", *VOC_CLASSES]
    return ["background", *[str(k) for k in range(n - 1)]]


def sweep_figure(scores: Scores, path: str | os.PathLike) -> bool:
    """mIoU against the threshold, the best and the asked one marked, as ``path`` (PNG).
    False when matplotlib is not installed (the figure is optional)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from camfast.utils.io import atomic_write

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    ax.plot(scores.thresholds, 100 * scores.miou, lw=1.5)
    b = scores.best
    ax.plot([scores.thresholds[b]], [100 * scores.miou[b]], "o", label=f"best {scores.thresholds[b]:.2f}: "
            f"{100 * scores.miou[b]:.2f}")
    ax.axvline(scores.threshold, color="grey", ls="--", lw=1, label=f"threshold {scores.threshold:.2f}: "
               f"{100 * scores.miou[scores.at]:.2f}")
    ax.set_xlabel("background threshold")
    ax.set_ylabel("mIoU (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(Path(path), lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
    return True
