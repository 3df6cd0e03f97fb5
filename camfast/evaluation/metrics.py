"""Evaluation metrics for CAMs: streaming accumulators (``update`` per batch, ``compute`` at the end).

WSOL metrics follow clovaai/wsolevaluation (Choe et al., CVPR 2020) step by step, so the
numbers equal that code's on the same score maps:

* :class:`MaxBoxAcc` (V1: largest contour, IoU 50%) and :class:`MaxBoxAccV2` (all contours,
  mean over IoU 30/50/70%); :class:`GTKnownLoc` and :class:`Top1Loc`.
* :class:`PxAP`: pixel average precision from foreground/background histograms.

Segmentation and saliency metrics:

* :class:`MIoU`: mean IoU of (pseudo-)label maps over a dataset, background included.
* :class:`FMeasure` (``beta^2 = 0.3``, ODS and OIS) and :class:`MAE`, as in the rCAM paper
  (Ha et al., WACV 2018).

Box extraction (wsolevaluation's ``compute_bboxes_from_scoremaps``), for each score map ``S``
in ``[0, 1]`` (min-max normalise CAMs first, e.g. with :func:`camfast.normalize`: the metrics
do not normalise) and each CAM threshold ``t``:

1. ``u8 = uint8(S * 255)`` (truncation; float16/bfloat16 maps are computed in float32);
2. ``mask = u8 > int(t * max(u8))`` (strict, ``cv2.threshold(..., THRESH_BINARY)``);
3. contours of ``mask`` by OpenCV ``findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)``: V1 keeps the
   contour of largest ``cv2.contourArea`` (the first on ties), V2 all of them (hole contours
   included, as wsolevaluation counts them);
4. each contour's bounding rectangle ``(x, y, w, h)`` becomes the box
   ``(x, y, min(x + w, W - 1), min(y + h, H - 1))`` (``box_format="wsol"``, the default: one
   pixel wider than the region except at the border, as wsolevaluation does) or the exact
   ``(x, y, x + w - 1, y + h - 1)`` (``box_format="inclusive"``);
5. no contour: wsolevaluation's box ``(0, 0, 0, 0)`` (``"wsol"``) or no box, IoU 0
   (``"inclusive"``);
6. IoU with the +1 pixel convention (``area = (x1 - x0 + 1) * (y1 - y0 + 1)``) against each
   ground-truth box (inclusive pixel coordinates); an image counts as correct at ``t`` when
   the best IoU over its boxes and ground-truth boxes is ``>= delta``.

``MaxBoxAcc(delta) = max_t`` (share of correct images), in percent. Thresholding and the
pixel statistics run batched in torch on the maps' device; only the binary masks go to the
CPU for OpenCV, once per distinct mask (thresholds that give the same mask share one
``findContours`` call), and the rectangles, areas and IoUs are vectorised in numpy.

OpenCV (``pip install opencv-python-headless`` or ``camfast[loc]``) is needed by the box
metrics only, imported on first use.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "BoxAccDetails", "BoxAccumulator", "FMeasure", "FMeasureResult", "GTKnownLoc", "MAE", "MIoU", "MaxBoxAcc",
    "MaxBoxAccV2", "PxAP", "Top1Loc", "contour_boxes", "default_cam_thresholds",
]

_BOX_FORMATS = ("wsol", "inclusive")
#: Up to this many contours per mask, :func:`contour_boxes` takes rectangles and areas from OpenCV
#: calls; above it, from numpy over all contour points at once (same numbers, tested).
FEW_CONTOURS = 32


def default_cam_thresholds() -> np.ndarray:
    """wsolevaluation's CAM threshold grid: ``numpy.arange(0, 1, 0.01)`` (100 float64 values).

    (wsolevaluation's ``evaluation.py`` uses the interval 0.01 by default and its training
    script 0.001; pass ``numpy.arange(0, 1, 0.001)`` as ``cam_thresholds`` for the latter.)
    """
    return np.arange(0, 1, 0.01)


# ------------------------------------------------------------------------------ validation
def _cv2() -> Any:
    from camfast.localization import opencv

    return opencv("camfast.metrics' box metrics")


def _thresholds(name: str, values: object, default: np.ndarray, increasing: bool, below_one: bool) -> np.ndarray:
    if values is None:
        return default.copy()
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    try:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}") from e
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1 or (below_one and arr.max() >= 1):
        bound = "[0, 1)" if below_one else "[0, 1]"
        raise ValueError(f"{name} must lie in {bound}, got values from {arr.min()} to {arr.max()}")
    if increasing and arr.size > 1 and not np.all(np.diff(arr) > 0):
        raise ValueError(f"{name} must be strictly increasing")
    return arr


def _percent(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < float(value) <= 100):
        raise ValueError(f"{name} must be a percentage in (0, 100] (e.g. 50 for IoU 0.5), got {value!r}")
    return value  # kept as given: wsolevaluation compares with value / 100


def _check_maps(name: str, x: object, batch: int | None = None) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"{name} must have shape (B, H, W), got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if batch is not None and x.shape[0] != batch:
        raise ValueError(f"{name} has batch size {x.shape[0]}, expected {batch}")
    return x


def _check_scores(name: str, x: object) -> Tensor:
    """(B, H, W) floating maps, finite, in [0, 1] (wsolevaluation's check_scoremap_validity)."""
    x = _check_maps(name, x)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor with values in [0, 1], got {x.dtype}")
    x = x.detach()
    if x.dtype not in (torch.float32, torch.float64):
        x = x.to(torch.float32)
    lo, hi = torch.aminmax(x)
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} must be finite (it holds NaN or inf)")
    if lo < 0 or hi > 1:
        raise ValueError(
            f"{name} must lie in [0, 1] (min-max normalise each map first, e.g. camfast.normalize); "
            f"got values from {lo} to {hi}"
        )
    return x


def _check_bool(name: str, x: object, like: Tensor) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor, got {x.dtype}")
    if x.shape != like.shape:
        raise ValueError(f"{name} must have the shape of the maps {tuple(like.shape)}, got {tuple(x.shape)}")
    return x.to(like.device)


def _check_boxes(boxes: object, batch: int, height: int, width: int) -> list[np.ndarray]:
    if isinstance(boxes, Tensor) or not isinstance(boxes, (list, tuple)):
        raise TypeError(f"boxes must be a list of B (n_i, 4) integer tensors, got {type(boxes).__name__}")
    if len(boxes) != batch:
        raise ValueError(f"boxes has {len(boxes)} entries, expected one per map ({batch})")
    out = []
    for i, b in enumerate(boxes):
        if isinstance(b, np.ndarray):
            b = torch.from_numpy(b)
        if not isinstance(b, Tensor):
            raise TypeError(f"boxes[{i}] must be a torch.Tensor of shape (n, 4), got {type(b).__name__}")
        if b.is_floating_point() or b.is_complex() or b.dtype == torch.bool:
            raise TypeError(f"boxes[{i}] must hold integer pixel coordinates, got {b.dtype}")
        if b.dim() == 1 and b.numel() == 4:
            b = b.reshape(1, 4)
        if b.dim() != 2 or b.shape[1] != 4:
            raise ValueError(f"boxes[{i}] must have shape (n, 4) as (x0, y0, x1, y1), got {tuple(b.shape)}")
        if b.shape[0] == 0:
            raise ValueError(f"boxes[{i}] is empty: every image needs at least one ground-truth box")
        a = b.detach().cpu().to(torch.int64).numpy()
        x0, y0, x1, y1 = a.T
        if (x0 < 0).any() or (y0 < 0).any() or (x1 >= width).any() or (y1 >= height).any():
            raise ValueError(
                f"boxes[{i}] lies outside the {height}x{width} map: need 0 <= x0 <= x1 <= W - 1 and "
                f"0 <= y0 <= y1 <= H - 1 (inclusive pixel coordinates), got {a.tolist()}"
            )
        if (x1 < x0).any() or (y1 < y0).any():
            raise ValueError(f"boxes[{i}] must satisfy x0 <= x1 and y0 <= y1, got {a.tolist()}")
        out.append(a)
    return out


def _no_data(name: str) -> RuntimeError:
    return RuntimeError(f"{name}.compute() called before any update(): nothing to compute")


# ------------------------------------------------------------------------------ boxes
def contour_boxes(mask: np.ndarray, largest: bool = False, offset: tuple[int, int] = (0, 0), *, cv2: Any = None
                  ) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
    """Bounding rectangles ``(x_min, y_min, x_max, y_max)`` (inclusive) of the contours of ``mask``
    (a ``uint8`` binary array; step 3-4 of the module docstring, before the box format).

    The same rectangles as ``cv2.boundingRect`` (``x = x_min``, ``w = x_max - x_min + 1``) and,
    for ``largest``, the contour of largest ``cv2.contourArea`` (shoelace on the same integer
    points, exact in int64; first on ties), computed for all contours at once. ``offset`` is
    added to every point (``mask`` is a crop). Also returns the bounding box of all contour
    points (= of the mask's foreground), None when there is no contour.
    """
    cv2 = cv2 if cv2 is not None else _cv2()
    contours = cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE, offset=offset)[-2]
    if len(contours) == 0:
        return np.zeros((0, 4), dtype=np.int64), None
    if len(contours) <= FEW_CONTOURS:  # OpenCV per contour: cheaper than numpy's fixed costs
        rects = [cv2.boundingRect(c) for c in contours]
        extent = (min(r[0] for r in rects), min(r[1] for r in rects),
                  max(r[0] + r[2] for r in rects) - 1, max(r[1] + r[3] for r in rects) - 1)
        if largest:
            areas = [cv2.contourArea(c) for c in contours] if len(rects) > 1 else [0.0]
            rects = [rects[areas.index(max(areas))]]  # the first largest, as Python's max
        return np.array([(x, y, x + w - 1, y + h - 1) for x, y, w, h in rects], dtype=np.int64), extent
    lens = np.fromiter((len(c) for c in contours), dtype=np.int64, count=len(contours))
    pts = np.concatenate(contours).reshape(-1, 2).astype(np.int64)
    starts = np.zeros_like(lens)
    np.cumsum(lens[:-1], out=starts[1:])
    x, y = pts[:, 0], pts[:, 1]
    extent = (int(x.min()), int(y.min()), int(x.max()), int(y.max()))
    if largest and len(contours) > 1:
        nxt = np.arange(1, len(pts) + 1)
        nxt[starts + lens - 1] = starts
        twice_area = np.abs(np.add.reduceat(x * y[nxt] - x[nxt] * y, starts))
        j = int(np.argmax(twice_area))
        sl = slice(int(starts[j]), int(starts[j] + lens[j]))
        return np.array([[x[sl].min(), y[sl].min(), x[sl].max(), y[sl].max()]], dtype=np.int64), extent
    boxes = np.stack(
        [np.minimum.reduceat(x, starts), np.minimum.reduceat(y, starts),
         np.maximum.reduceat(x, starts), np.maximum.reduceat(y, starts)], axis=1,
    )
    return (boxes[:1] if largest else boxes), extent


def _best_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Max IoU (+1 pixel convention, wsolevaluation's calculate_multiple_iou) of each pred box over gt."""
    ix = np.minimum(pred[:, None, 2], gt[None, :, 2]) - np.maximum(pred[:, None, 0], gt[None, :, 0]) + 1
    iy = np.minimum(pred[:, None, 3], gt[None, :, 3]) - np.maximum(pred[:, None, 1], gt[None, :, 1]) + 1
    inter = np.maximum(0, ix) * np.maximum(0, iy)
    area_p = (pred[:, 2] - pred[:, 0] + 1) * (pred[:, 3] - pred[:, 1] + 1)
    area_g = (gt[:, 2] - gt[:, 0] + 1) * (gt[:, 3] - gt[:, 1] + 1)
    den = area_p[:, None] + area_g[None, :] - inter
    bad = den <= 0
    iou = inter / np.where(bad, 1, den)
    iou[bad] = 0.0
    return iou.max(axis=1)


def _scoremap_u8(cams: Tensor) -> Tensor:
    """``uint8(S * 255)`` with numpy's truncation, in the map's float32/float64."""
    return (cams * 255).to(torch.uint8)


@dataclass(frozen=True)
class BoxAccDetails:
    """Everything a box accumulator knows after :meth:`compute`.

    Attributes:
        value: the metric (percent), what ``compute()`` returns.
        per_iou: ``{delta: max_t accuracy}`` (percent) for each IoU threshold (in percent).
        best_threshold: ``{delta: t}``, the first CAM threshold reaching that maximum.
        curve: ``(n_iou, K)`` float64 accuracy (percent) per IoU threshold per CAM threshold.
        cam_thresholds: ``(K,)`` float64, the CAM thresholds of the curve's columns.
        count: number of images seen.
    """

    value: float
    per_iou: dict
    best_threshold: dict
    curve: Tensor
    cam_thresholds: Tensor
    count: int


class BoxAccumulator(abc.ABC):
    """The box-accuracy curve shared by MaxBoxAcc, MaxBoxAccV2 and GTKnownLoc; each subclass
    says how the per-IoU-threshold maxima become its one number (:meth:`_value`)."""

    #: How the thresholded masks are made: ``"auto"`` (OpenCV's threshold for CPU maps, one
    #: batched torch compare per image elsewhere) or ``"torch"`` (the batched compare always:
    #: what the tests use to check the device path on a CPU). Same masks either way.
    mask_path = "auto"

    def __init__(self, cam_thresholds: object, iou_thresholds: Sequence[float], multi_contour: bool,
                 box_format: str) -> None:
        self.cam_thresholds = _thresholds("cam_thresholds", cam_thresholds, default_cam_thresholds(),
                                          increasing=False, below_one=False)
        if isinstance(iou_thresholds, (str, bytes)) or not isinstance(iou_thresholds, Sequence) or not iou_thresholds:
            raise ValueError(f"iou_thresholds must be a non-empty sequence of percentages, got {iou_thresholds!r}")
        self.iou_thresholds = tuple(_percent("iou_thresholds", v) for v in iou_thresholds)
        if not isinstance(multi_contour, bool):
            raise TypeError(f"multi_contour must be a bool, got {type(multi_contour).__name__}")
        self.multi_contour = multi_contour
        if not isinstance(box_format, str) or box_format not in _BOX_FORMATS:
            raise ValueError(f"box_format must be one of {_BOX_FORMATS}, got {box_format!r}")
        self.box_format = box_format
        self.reset()

    def reset(self) -> None:
        """Forget every update."""
        self._correct = np.zeros((len(self.iou_thresholds), len(self.cam_thresholds)), dtype=np.int64)
        self._count = 0

    def _accumulate(self, cams: object, boxes: object, keep: np.ndarray | None = None) -> None:
        cams = _check_scores("cams", cams)
        batch, height, width = (int(s) for s in cams.shape)
        gts = _check_boxes(boxes, batch, height, width)
        cv2 = _cv2()
        u8 = _scoremap_u8(cams)
        flat = u8.reshape(batch, -1).to(torch.int64)
        offsets = torch.arange(batch, device=flat.device).unsqueeze(1) * 256
        hist = torch.bincount((flat + offsets).reshape(-1), minlength=256 * batch).reshape(batch, 256)
        # above[b, T] = number of pixels with u8 > T: thresholds with the same count give the same mask.
        above = (hist.sum(1, keepdim=True) - hist.cumsum(1)).cpu().numpy()
        top = flat.amax(1).cpu().numpy().astype(np.float64)
        # int(t * max(u8)) exactly as wsolevaluation computes it (float64 product, truncation).
        thr = np.floor(self.cam_thresholds[None, :] * top[:, None]).astype(np.int64)
        wsol = self.box_format == "wsol"
        largest = not self.multi_contour
        # On the CPU OpenCV's threshold (wsolevaluation's own call) is ~10x faster than a
        # broadcast compare; elsewhere the masks of one image are made in one batched compare
        # and copied to the host at once.
        if self.mask_path not in ("auto", "torch"):
            raise ValueError(f"mask_path must be 'auto' or 'torch', got {self.mask_path!r}")
        on_host = u8.device.type == "cpu" and self.mask_path == "auto"
        u8_host = u8.numpy() if on_host else None
        for b in range(batch):
            if keep is not None and not bool(keep[b]):
                continue
            key = above[b, thr[b]]
            # distinct masks, ascending key = descending level; key 0 is the empty mask
            _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
            levels = thr[b, first]
            filled = np.flatnonzero(key[first] > 0)
            if not on_host and len(filled):
                lv = torch.as_tensor(levels[filled], dtype=torch.uint8, device=u8.device).view(-1, 1, 1)
                stack = (u8[b].unsqueeze(0) > lv).cpu().numpy().view(np.uint8)  # levels <= max(u8) <= 255
            preds, owners = [], []
            # Masks are nested: a higher level's mask lies inside a lower level's, so each one is
            # thresholded and traced only inside the bounding box of the previous (lower) one.
            # The crop keeps the raster order, hence the same contours in the same order.
            x0, y0, x1, y1 = 0, 0, width - 1, height - 1
            for rank, j in enumerate(filled[::-1]):
                if on_host:
                    crop = u8_host[b, y0:y1 + 1, x0:x1 + 1]
                    mask = cv2.threshold(crop, int(levels[j]), 1, cv2.THRESH_BINARY)[1]
                else:
                    mask = np.ascontiguousarray(stack[len(filled) - 1 - rank, y0:y1 + 1, x0:x1 + 1])
                rect, extent = contour_boxes(mask, largest, (x0, y0), cv2=cv2)
                x0, y0, x1, y1 = extent  # a non-empty mask has at least one contour
                preds.append(rect)
                owners.append(len(rect))
            best = np.zeros(len(levels), dtype=np.float64)
            if preds:
                pred = np.concatenate(preds)
                if wsol:  # wsolevaluation's (x, y, min(x + w, W - 1), min(y + h, H - 1))
                    np.minimum(pred[:, 2] + 1, width - 1, out=pred[:, 2])
                    np.minimum(pred[:, 3] + 1, height - 1, out=pred[:, 3])
                np.maximum.at(best, np.repeat(filled[::-1], owners), _best_iou(pred, gts[b]))
            if wsol and len(filled) < len(levels):
                # no contour: wsolevaluation's box (0, 0, 0, 0); "inclusive": no box, IoU 0
                best[0] = _best_iou(np.zeros((1, 4), dtype=np.int64), gts[b])[0]
            best_t = best[inverse.reshape(-1)]
            for i, delta in enumerate(self.iou_thresholds):
                self._correct[i] += best_t >= (delta / 100)
        self._count += batch

    def _curve(self) -> np.ndarray:
        if self._count == 0:
            raise _no_data(type(self).__name__)
        return self._correct * 100.0 / float(self._count)

    @abc.abstractmethod
    def _value(self, per_iou: list[float]) -> float:
        """The metric from the best accuracy per IoU threshold (percent)."""

    def compute(self) -> float:
        """The metric in percent (see the class docstring)."""
        return self._value([float(c.max()) for c in self._curve()])

    def curve(self) -> Tensor:
        """``(n_iou, K)`` float64 accuracy in percent per IoU threshold (rows) per CAM threshold."""
        return torch.from_numpy(self._curve().copy())

    def details(self) -> BoxAccDetails:
        """The metric with its per-IoU maxima, best CAM thresholds and the whole curve."""
        c = self._curve()
        per_iou = [float(row.max()) for row in c]
        return BoxAccDetails(
            value=self._value(per_iou),
            per_iou=dict(zip(self.iou_thresholds, per_iou)),
            best_threshold={d: float(self.cam_thresholds[int(np.argmax(row))]) for d, row in zip(self.iou_thresholds, c)},
            curve=torch.from_numpy(c.copy()),
            cam_thresholds=torch.from_numpy(self.cam_thresholds.copy()),
            count=self._count,
        )


class MaxBoxAccV2(BoxAccumulator):
    """MaxBoxAccV2 (wsolevaluation): mean over IoU thresholds of the best-threshold box accuracy.

    Args:
        cam_thresholds: CAM thresholds ``t`` in ``[0, 1]``; None: :func:`default_cam_thresholds`.
        iou_thresholds: IoU thresholds ``delta`` in percent (30, 50, 70).
        multi_contour: True (V2): one box per contour, the best matching counts; False: the
            largest contour only.
        box_format: ``"wsol"`` (wsolevaluation's boxes, its numbers) or ``"inclusive"``
            (exact boxes); see the module docstring.

    ``update(cams, boxes)``: ``cams`` ``(B, H, W)`` floating score maps in ``[0, 1]`` (any
    device), ``boxes`` a list of ``B`` integer tensors ``(n_i, 4)``, ``n_i >= 1``, of
    ground-truth boxes ``(x0, y0, x1, y1)`` in inclusive pixel coordinates of the map.
    ``compute()`` returns ``mean_delta max_t acc(t, delta)`` in percent.

    Example:
        >>> m = torch.zeros(1, 8, 8); m[0, 2:5, 1:6] = 1.0
        >>> metric = camfast.metrics.MaxBoxAccV2(box_format="inclusive")
        >>> metric.update(m, [torch.tensor([[1, 2, 5, 4]])])
        >>> metric.compute()
        100.0
    """

    def __init__(self, cam_thresholds: object = None, iou_thresholds: Sequence[float] = (30, 50, 70),
                 multi_contour: bool = True, *, box_format: str = "wsol") -> None:
        super().__init__(cam_thresholds, iou_thresholds, multi_contour, box_format)

    def update(self, cams: Tensor, boxes: Sequence[Tensor]) -> None:
        """Add a batch: ``cams`` ``(B, H, W)`` in ``[0, 1]``, ``boxes`` a list of ``B`` ``(n_i, 4)`` tensors."""
        self._accumulate(cams, boxes)

    def _value(self, per_iou: list[float]) -> float:
        return float(np.average(per_iou))


class MaxBoxAcc(BoxAccumulator):
    """MaxBoxAcc (wsolevaluation's V1): best-threshold share of images with IoU >= ``iou_threshold``.

    Defaults: largest contour only, IoU 50%, :func:`default_cam_thresholds`. ``update`` and
    the box conventions as :class:`MaxBoxAccV2`. ``compute()`` returns percent.
    """

    def __init__(self, cam_thresholds: object = None, iou_threshold: float = 50, multi_contour: bool = False,
                 *, box_format: str = "wsol") -> None:
        super().__init__(cam_thresholds, (iou_threshold,), multi_contour, box_format)

    def update(self, cams: Tensor, boxes: Sequence[Tensor]) -> None:
        """Add a batch: ``cams`` ``(B, H, W)`` in ``[0, 1]``, ``boxes`` a list of ``B`` ``(n_i, 4)`` tensors."""
        self._accumulate(cams, boxes)

    def _value(self, per_iou: list[float]) -> float:
        return per_iou[0]


def _single_or_grid(cam_threshold: object) -> object:
    if cam_threshold is None:
        return None
    if isinstance(cam_threshold, bool) or not isinstance(cam_threshold, (int, float)) or not (
        0.0 <= float(cam_threshold) <= 1.0
    ):
        raise ValueError(f"cam_threshold must be None (best over the grid) or a number in [0, 1], got {cam_threshold!r}")
    return [float(cam_threshold)]


class GTKnownLoc(BoxAccumulator):
    """GT-known localisation accuracy: the box from the ground-truth class's CAM has IoU >= delta.

    Args:
        iou_threshold: delta in percent (50).
        cam_threshold: None (default): the best threshold of :func:`default_cam_thresholds`
            (wsolevaluation's "GT-known" = MaxBoxAcc at delta 0.5, and how "Rethinking CAM"
            reports it); a number ``t``: that fixed threshold (the original CAM protocol, e.g. 0.2).
        multi_contour, box_format: as :class:`MaxBoxAccV2` (largest contour by default).

    ``update(cams, boxes)``: ``cams`` must be the CAMs of the ground-truth class.
    """

    def __init__(self, iou_threshold: float = 50, cam_threshold: float | None = None, multi_contour: bool = False,
                 *, box_format: str = "wsol") -> None:
        super().__init__(_single_or_grid(cam_threshold), (iou_threshold,), multi_contour, box_format)

    def update(self, cams: Tensor, boxes: Sequence[Tensor]) -> None:
        """Add a batch: ground-truth-class ``cams`` ``(B, H, W)`` in ``[0, 1]`` and their ``boxes``."""
        self._accumulate(cams, boxes)

    def _value(self, per_iou: list[float]) -> float:
        return per_iou[0]


def _class_ok(preds: object, labels: object, batch: int) -> np.ndarray:
    if not isinstance(preds, Tensor):
        raise TypeError(f"preds must be a torch.Tensor, got {type(preds).__name__}")
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.dim() != 1:
        raise TypeError(f"labels must be a 1-D integer tensor of class indices, got {labels.dtype} {tuple(labels.shape)}")
    if preds.dim() == 2 and preds.is_floating_point():
        preds = preds.argmax(1)  # logits or scores (B, C)
    elif preds.dim() != 1 or preds.is_floating_point() or preds.dtype == torch.bool:
        raise TypeError(f"preds must be (B,) integer top-1 classes or (B, C) floating logits, got {preds.dtype} "
                        f"{tuple(preds.shape)}")
    if preds.shape[0] != batch or labels.shape[0] != batch:
        raise ValueError(f"preds and labels must have the batch size of cams ({batch}), got {preds.shape[0]} "
                         f"and {labels.shape[0]}")
    return (preds.detach().cpu().to(torch.int64) == labels.detach().cpu().to(torch.int64)).numpy()


class Top1Loc(GTKnownLoc):
    """Top-1 localisation accuracy: GT-known correct and the top-1 class correct.

    Same arguments as :class:`GTKnownLoc` (best threshold over the grid by default, or a fixed
    ``cam_threshold``). ``update(cams, boxes, preds, labels)``: ``cams`` of the ground-truth
    class, ``preds`` ``(B,)`` predicted classes or ``(B, C)`` logits (argmax taken), ``labels``
    ``(B,)`` true classes.
    """

    def update(self, cams: Tensor, boxes: Sequence[Tensor], preds: Tensor | None = None,
               labels: Tensor | None = None) -> None:
        """Add a batch (see the class docstring)."""
        if preds is None or labels is None:
            raise TypeError("Top1Loc.update needs preds and labels")
        batch = int(cams.shape[0]) if isinstance(cams, Tensor) and cams.dim() == 3 else -1
        if batch < 0:
            _check_maps("cams", cams)
        self._accumulate(cams, boxes, keep=_class_ok(preds, labels, batch))


# ------------------------------------------------------------------------------ PxAP
class PxAP:
    """Pixel average precision (wsolevaluation's MaskEvaluator), in percent.

    Scores are binned into ``[t_0, t_1), ..., [t_{K-1}, 1), [1, 2), [2, 3]`` (``numpy.histogram``
    bins; values below ``t_0`` are dropped as it drops them) separately for foreground and
    background pixels over the whole dataset; at each cut ``S >= edge`` precision and recall
    follow, and ``AP = sum precision_i * (recall_i - recall_{i-1})`` over cuts with predictions.
    Scores on the grid's bins give exactly sklearn's ``average_precision_score``; in general
    this is wsolevaluation's histogram approximation.

    Args:
        cam_thresholds: strictly increasing, in ``[0, 1)``; None: :func:`default_cam_thresholds`
            (interval 0.01, wsolevaluation's ``evaluation.py`` default; its training script
            uses 0.001).

    ``update(cams, masks, ignore=None)``: ``cams`` ``(B, H, W)`` floating in ``[0, 1]``,
    ``masks`` bool foreground, ``ignore`` bool pixels to leave out; as in wsolevaluation,
    ignored pixels that are foreground stay foreground.
    """

    def __init__(self, cam_thresholds: object = None) -> None:
        t = _thresholds("cam_thresholds", cam_thresholds, default_cam_thresholds(), increasing=True, below_one=True)
        self.cam_thresholds = t
        self._edges = np.append(t, [1.0, 2.0, 3.0])
        self.reset()

    def reset(self) -> None:
        """Forget every update."""
        self._fg: Tensor | None = None
        self._bg: Tensor | None = None

    def update(self, cams: Tensor, masks: Tensor, ignore: Tensor | None = None) -> None:
        """Add a batch (see the class docstring)."""
        cams = _check_scores("cams", cams)
        masks = _check_bool("masks", masks, cams)
        nbins = len(self._edges) - 1
        edges = torch.as_tensor(self._edges, dtype=torch.float64, device=cams.device)
        idx = torch.bucketize(cams.to(torch.float64), edges, right=True) - 1
        valid = idx >= 0
        fg = masks & valid
        bg = ~masks & valid
        if ignore is not None:
            bg &= ~_check_bool("ignore", ignore, cams)
        h_fg = torch.bincount(idx[fg], minlength=nbins)
        h_bg = torch.bincount(idx[bg], minlength=nbins)
        if self._fg is None:
            self._fg, self._bg = h_fg, h_bg
        else:
            self._fg += h_fg.to(self._fg.device)
            self._bg += h_bg.to(self._bg.device)

    def precision_recall(self) -> tuple[Tensor, Tensor]:
        """Precision and recall (float64, ``K + 2`` cuts ``S >= 2``, ``S >= 1``, ``S >= t_{K-1}``, ...,
        ``S >= t_0``; NaN precision where nothing is predicted)."""
        if self._fg is None:
            raise _no_data("PxAP")
        fg = self._fg.cpu().numpy().astype(np.float64)
        bg = self._bg.cpu().numpy().astype(np.float64)
        tp = fg[::-1].cumsum()
        fp = bg[::-1].cumsum()
        if fg.sum() <= 0:
            raise RuntimeError("PxAP: no foreground pixel in the masks seen so far")
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = tp / (tp + fp)
        recall = tp / fg.sum()
        return torch.from_numpy(precision.copy()), torch.from_numpy(recall.copy())

    def compute(self) -> float:
        """PxAP in percent."""
        precision, recall = (t.numpy() for t in self.precision_recall())
        tp_fp = (self._fg + self._bg).cpu().numpy()[::-1].cumsum()
        if (tp_fp <= 0).all():
            raise RuntimeError("PxAP: no scored pixel seen")
        nz = tp_fp[1:] != 0
        return float((precision[1:] * np.diff(recall))[nz].sum() * 100)


# ------------------------------------------------------------------------------ mIoU
class MIoU:
    """Mean IoU of label maps over a dataset (confusion matrix, background included), in percent.

    Args:
        num_classes: number of classes including background (21 for VOC).
        ignore_index: target value left out (255 for VOC boundaries).
        bg_threshold: for CAM input: a pixel is background (0) where the largest CAM of the
            image's present classes is ``<= bg_threshold``, else ``1 + argmax`` (first class on
            ties), the convention of PSA / Puzzle-CAM (background score padded in front, argmax).

    ``update(pred, target, labels=None)``: ``target`` ``(B, H, W)`` integer labels in
    ``[0, num_classes)`` or ``ignore_index``; ``pred`` either ``(B, H, W)`` integer labels or
    ``(B, num_classes - 1, H, W)`` floating CAMs of the foreground classes (channel ``c`` is
    class ``c + 1``; needs ``bg_threshold``), with ``labels`` ``(B, num_classes - 1)`` image-level
    labels (nonzero = present; None: all classes considered). The confusion matrix accumulates
    with ``torch.bincount`` on the inputs' device.

    ``compute()``: mean over classes of ``TP / (TP + FP + FN)`` in percent, over the classes
    that occur in the targets or predictions (others are NaN in :meth:`per_class`).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, bg_threshold: float | None = None) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2 (background included), got {num_classes!r}")
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index ({ignore_index}) must not be a class index in [0, {num_classes})")
        if bg_threshold is not None and (isinstance(bg_threshold, bool) or not isinstance(bg_threshold, (int, float))
                                         or not math.isfinite(bg_threshold)):
            raise ValueError(f"bg_threshold must be None or a finite number, got {bg_threshold!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.bg_threshold = bg_threshold
        self.reset()

    def reset(self) -> None:
        """Forget every update."""
        self.confusion: Tensor | None = None  # (target, prediction) counts, int64

    def pseudo_labels(self, cams: Tensor, labels: Tensor | None = None) -> Tensor:
        """``(B, H, W)`` int64 labels from ``(B, num_classes - 1, H, W)`` CAMs (see the class docstring)."""
        if self.bg_threshold is None:
            raise ValueError("CAM input needs bg_threshold (MIoU(num_classes, bg_threshold=...))")
        if not isinstance(cams, Tensor) or not cams.is_floating_point():
            raise TypeError("cams must be a floating torch.Tensor of shape (B, num_classes - 1, H, W)")
        if cams.dim() != 4 or cams.shape[1] != self.num_classes - 1:
            raise ValueError(f"cams must have shape (B, {self.num_classes - 1}, H, W), got {tuple(cams.shape)}")
        if not bool(torch.isfinite(cams).all()):
            raise ValueError("cams must be finite (it holds NaN or inf)")
        cams = cams.detach()
        if labels is not None:
            if not isinstance(labels, Tensor):
                raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
            if labels.shape != cams.shape[:2]:
                raise ValueError(f"labels must have shape {tuple(cams.shape[:2])}, got {tuple(labels.shape)}")
            present = (labels != 0).to(cams.device)
            cams = cams.masked_fill(~present[:, :, None, None], float("-inf"))
        top = cams.amax(1)
        arg = cams.argmax(1)  # first maximal class on ties
        return torch.where(top > self.bg_threshold, arg + 1, torch.zeros_like(arg))

    def update(self, pred: Tensor, target: Tensor, labels: Tensor | None = None) -> None:
        """Add a batch (see the class docstring)."""
        if not isinstance(target, Tensor):
            raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
        if target.is_floating_point() or target.dtype == torch.bool or target.dim() != 3:
            raise TypeError(f"target must be a (B, H, W) integer tensor, got {target.dtype} {tuple(target.shape)}")
        if not isinstance(pred, Tensor):
            raise TypeError(f"pred must be a torch.Tensor, got {type(pred).__name__}")
        if pred.dim() == 4:
            pred = self.pseudo_labels(pred, labels)
            if pred.shape != target.shape:
                raise ValueError(f"cams (B, K, H, W) must match target {tuple(target.shape)} in B, H, W")
        else:
            if labels is not None:
                raise ValueError("labels apply only to CAM input (B, num_classes - 1, H, W)")
            if pred.is_floating_point() or pred.dtype == torch.bool or pred.dim() != 3:
                raise TypeError(f"pred must be (B, H, W) integer labels or (B, K, H, W) floating CAMs, got "
                                f"{pred.dtype} {tuple(pred.shape)}")
            if pred.shape != target.shape:
                raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
        n = self.num_classes
        target = target.to(pred.device, torch.int64)
        pred = pred.to(torch.int64)
        valid = target != self.ignore_index
        t, p = target[valid], pred[valid]
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n):
            raise ValueError(f"target values must be in [0, {n}) or ignore_index={self.ignore_index}")
        if p.numel() and (int(p.min()) < 0 or int(p.max()) >= n):
            raise ValueError(f"pred values must be in [0, {n}) where the target is not ignored")
        cm = torch.bincount(t * n + p, minlength=n * n).reshape(n, n)
        if self.confusion is None:
            self.confusion = cm
        else:
            self.confusion += cm.to(self.confusion.device)

    def per_class(self) -> Tensor:
        """``(num_classes,)`` float64 IoU in percent per class (NaN for classes never seen nor predicted)."""
        if self.confusion is None:
            raise _no_data("MIoU")
        cm = self.confusion.to(torch.float64).cpu()
        tp = cm.diagonal()
        union = cm.sum(0) + cm.sum(1) - tp
        return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan"))) * 100

    def compute(self) -> float:
        """mIoU in percent."""
        iou = self.per_class()
        if bool(torch.isnan(iou).all()):
            raise RuntimeError("MIoU: no labelled pixel seen (all targets ignored)")
        return float(iou.nanmean())


# ------------------------------------------------------------------------------ F-measure, MAE
class FMeasureResult(NamedTuple):
    """ODS and OIS F-measures in ``[0, 1]`` and the ODS threshold."""

    ods: float
    ois: float
    ods_threshold: float


class FMeasure:
    """F-measure ``F = (1 + b2) P R / (b2 P + R)`` of thresholded saliency maps, ODS and OIS.

    At each threshold ``t`` an image's map ``S`` is binarised as ``S > t``; ``P`` and ``R`` are
    its pixel precision and recall against the ground truth (0 when undefined, and ``F = 0``
    when ``P + R = 0``). **ODS** = ``max_t mean_images F_i(t)`` (one threshold for the
    dataset); **OIS** = ``mean_images max_t F_i(t)`` (each image's best). So OIS >= ODS, and
    binary maps give OIS = ODS.

    Args:
        beta2: ``beta^2`` (0.3, Achanta et al., as in the rCAM paper).
        thresholds: strictly increasing, in ``[0, 1)``; None: ``k / 255`` for ``k = 0..254``
            (every binarisation of an 8-bit map).

    ``update(preds, gts)``: ``preds`` ``(B, H, W)`` floating in ``[0, 1]``, ``gts`` bool.
    ``compute()`` returns :class:`FMeasureResult` (fractions, as the rCAM paper reports them).
    """

    def __init__(self, beta2: float = 0.3, thresholds: object = None) -> None:
        if isinstance(beta2, bool) or not isinstance(beta2, (int, float)) or not (math.isfinite(beta2) and beta2 > 0):
            raise ValueError(f"beta2 must be a positive number, got {beta2!r}")
        self.beta2 = float(beta2)
        self.thresholds = _thresholds("thresholds", thresholds, np.arange(255) / 255.0, increasing=True, below_one=True)
        self.reset()

    def reset(self) -> None:
        """Forget every update."""
        self._sum_f: Tensor | None = None
        self._sum_best: Tensor | None = None
        self._count = 0

    def per_image(self, preds: Tensor, gts: Tensor) -> Tensor:
        """``(B, T)`` float64 F-measure of each image at each threshold (no accumulation)."""
        preds = _check_scores("preds", preds)
        gts = _check_bool("gts", gts, preds)
        batch = preds.shape[0]
        nt = len(self.thresholds)
        t = torch.as_tensor(self.thresholds, dtype=torch.float64, device=preds.device)
        # idx = number of thresholds below the score: the pixel is positive at thresholds 0..idx-1.
        idx = torch.bucketize(preds.to(torch.float64), t, right=False).reshape(batch, -1)
        idx = idx + torch.arange(batch, device=idx.device).unsqueeze(1) * (nt + 1)
        g = gts.reshape(batch, -1)
        h_all = torch.bincount(idx.reshape(-1), minlength=batch * (nt + 1)).reshape(batch, nt + 1)
        h_fg = torch.bincount(idx[g], minlength=batch * (nt + 1)).reshape(batch, nt + 1)
        pos = h_all.flip(1).cumsum(1).flip(1)[:, 1:].to(torch.float64)
        tp = h_fg.flip(1).cumsum(1).flip(1)[:, 1:].to(torch.float64)
        npos = g.sum(1, keepdim=True).to(torch.float64)
        p = torch.where(pos > 0, tp / pos.clamp_min(1), torch.zeros_like(tp))
        r = torch.where(npos > 0, tp / npos.clamp_min(1), torch.zeros_like(tp))
        den = self.beta2 * p + r
        return torch.where(den > 0, (1 + self.beta2) * p * r / torch.where(den > 0, den, torch.ones_like(den)),
                           torch.zeros_like(den))

    def update(self, preds: Tensor, gts: Tensor) -> None:
        """Add a batch (see the class docstring)."""
        f = self.per_image(preds, gts)
        s, m = f.sum(0), f.amax(1).sum()
        if self._sum_f is None:
            self._sum_f, self._sum_best = s, m
        else:
            self._sum_f += s.to(self._sum_f.device)
            self._sum_best += m.to(self._sum_best.device)
        self._count += f.shape[0]

    def curve(self) -> Tensor:
        """``(T,)`` float64 mean F-measure over images per threshold (its max is ODS)."""
        if self._count == 0:
            raise _no_data("FMeasure")
        return (self._sum_f / self._count).cpu()

    def compute(self) -> FMeasureResult:
        """ODS, OIS and the ODS threshold."""
        c = self.curve()
        k = int(torch.argmax(c))
        return FMeasureResult(ods=float(c[k]), ois=float(self._sum_best.cpu()) / self._count,
                              ods_threshold=float(self.thresholds[k]))


class MAE:
    """Mean absolute error ``mean_images mean_pixels |S - G|`` (Perazzi et al.), ``S`` in ``[0, 1]``.

    ``update(preds, gts)``: ``preds`` ``(B, H, W)`` floating in ``[0, 1]``, ``gts`` bool (or
    floating in ``[0, 1]``) of the same shape. ``compute()`` returns a float in ``[0, 1]``.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every update."""
        self._sum: Tensor | None = None
        self._count = 0

    def update(self, preds: Tensor, gts: Tensor) -> None:
        """Add a batch (see the class docstring)."""
        preds = _check_scores("preds", preds)
        if isinstance(gts, Tensor) and gts.dtype == torch.bool:
            g = _check_bool("gts", gts, preds).to(torch.float64)
        else:
            g = _check_scores("gts", gts).to(preds.device, torch.float64)
            if g.shape != preds.shape:
                raise ValueError(f"gts must have the shape of preds {tuple(preds.shape)}, got {tuple(g.shape)}")
        err = (preds.to(torch.float64) - g).abs().flatten(1).mean(1).sum()
        self._sum = err if self._sum is None else self._sum + err.to(self._sum.device)
        self._count += preds.shape[0]

    def compute(self) -> float:
        """MAE in ``[0, 1]``."""
        if self._count == 0:
            raise _no_data("MAE")
        return float(self._sum.cpu()) / self._count
