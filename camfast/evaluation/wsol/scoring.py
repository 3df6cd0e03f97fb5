"""Scoring one table row: its maps (:func:`compute_maps`) and its streaming metrics (:class:`Scorer`).

The protocol, per row and image, with the map of the ground-truth class (``target`` = the
label; for a model whose classes are not the dataset's, its top-1 class, and the
classification columns are left empty):

* the map is resized to the input size **bicubically** and min-max normalised
  (:func:`camfast.normalize`), as wsolevaluation (``cv2.resize(..., INTER_CUBIC)``, then
  ``normalize_scoremap``) and the Rethinking-CAM code do: a one-layer method's map (CAM,
  Grad-CAM, ...) is taken at its layer's resolution (:func:`native_map`) and resized so; a
  method whose pipeline ends at the input size (Zoom-CAM's fusion, rCAM) is used as it is;
* **GT-known Loc** / **Top-1 Loc**: largest-contour box at the row's fixed CAM threshold
  (0.2 of the max; PaS rows 0.35 of the 90th percentile, i.e. the map normalised with
  ``camfast.normalize(method="percentile", q=90)``), IoU >= 0.5 (:class:`camfast.metrics.GTKnownLoc`,
  :class:`~camfast.metrics.Top1Loc`);
* **MaxBoxAccV2** and **PxAP**: threshold-free (best threshold of the grid; all contours),
  on the min-max map for every row (PaS changes only the fixed-threshold columns);
* **mIoU**: pseudo-labels ``label + 1`` where the map exceeds a background threshold, else
  background; the best threshold of ``0.05, 0.10, ..., 0.95`` (as Puzzle-CAM's evaluation
  sweeps it), with that threshold reported (:class:`MIoUSweep`);
* **F-measure** (``beta^2 = 0.3``, OIS and ODS) and **MAE** against the foreground mask (the
  rCAM paper's saliency metrics).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from camfast.evaluation.wsol.rows import Row

__all__ = ["FRACTIONS", "METRIC_COLUMNS", "MIOU_THRESHOLDS", "MIoUSweep", "Scorer", "bicubic_score_map", "compute_maps", "fmt",
           "native_map", "score_rows", "spans"]

METRIC_COLUMNS = (
    ("top1_cls", "Top-1 cls"), ("gt_known_loc", "GT-known Loc"), ("top1_loc", "Top-1 Loc"),
    ("max_box_acc_v2", "MaxBoxAccV2"), ("pxap", "PxAP"), ("miou", "mIoU"), ("f_ois", "F OIS"),
    ("f_ods", "F ODS"), ("mae", "MAE"),
)
#: Metrics that are fractions (three decimals), not percentages.
FRACTIONS = ("mae", "f_ois", "f_ods")
MIOU_THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))


def native_map(result: Any, batch: int) -> Tensor | None:
    """The one feature-resolution map ``(B, h, w)`` of a ``return_layers=True`` result of a
    single-layer method (a :class:`~camfast.methods.engine.CAMResult` with one layer map), or
    None (several layers fused, rCAM's stages, several classes per image)."""
    from camfast.methods.engine import CAMResult

    if not isinstance(result, CAMResult) or len(result.layer_maps) != 1:
        return None
    (m,) = result.layer_maps.values()
    if not isinstance(m, Tensor) or m.dim() != 3 or m.shape[0] != batch:
        return None
    return m


def bicubic_score_map(m: Tensor, size: tuple[int, int]) -> Tensor:
    """wsolevaluation's score map: ``m (B, h, w)`` resized to ``size`` bicubically (``a = -0.75``,
    half-pixel centres, edge pixels replicated: OpenCV's ``INTER_CUBIC``), then min-max normalised
    per image (a constant map becomes zeros)."""
    from camfast.localization import normalize
    from camfast.methods.engine import unit_scale

    m = unit_scale(torch.nan_to_num(m.detach().float()))  # scale-free: normalize's eps is then negligible
    if tuple(m.shape[-2:]) != tuple(size):
        m = torch.nn.functional.interpolate(m[:, None], size=size, mode="bicubic", align_corners=False)[:, 0]
    return normalize(m)


def compute_maps(method: str, model: nn.Module, x: Tensor, target: Tensor, images: Tensor | None = None) -> Tensor:
    """``(B, H, W)`` map of class ``target`` for ``x``, at the input size, min-max normalised
    (bicubic from the layer's resolution for a one-layer method: see the module docstring).

    Args:
        method: a method of :mod:`camfast.methods.registry` (any spelling; the table's rows
            are its names: ``cam``, ``cam-nwc``, ``grad-cam``, ``zoom-cam``, ``rcam-crf``, ...).
        model: the classifier (eval mode), returning logits.
        x: the model's input ``(B, 3, H, W)``.
        target: ``(B,)`` class indices.
        images: the images in [0, 1] (a CRF's colour term); default ``x`` scaled per image.
    """
    from camfast.localization import normalize
    from camfast.methods import registry

    spec = registry.get(method)
    kwargs = {}
    if spec.takes_image and images is not None:
        kwargs["image"] = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    if spec.accepts("return_layers"):
        result = spec(model, x, target, return_layers=True, **kwargs)
        m = native_map(result, x.shape[0])
        if m is not None:
            return bicubic_score_map(m, tuple(x.shape[-2:]))
        return normalize(result.cam.float())
    return normalize(spec(model, x, target, **kwargs).float())



class MIoUSweep:
    """mIoU of thresholded single-class pseudo-labels at every background threshold at once.

    A pixel of an image whose map is ``M`` and whose class is ``c`` gets ``c + 1`` where
    ``M > t`` (strict) and 0 (background) elsewhere; for each ``t`` of ``thresholds`` the
    confusion matrix over the dataset is accumulated from one histogram of ``M`` per (target
    class, image class), and the mIoU is :class:`camfast.metrics.MIoU`'s on that matrix. Equal
    to ``MIoU(num_classes + 1, bg_threshold=t).update(cams, target, labels)`` with the
    ``(B, K, H, W)`` CAMs holding ``M`` in channel ``c`` (tested), for all ``t`` in one pass.
    """

    def __init__(self, num_classes: int, thresholds: Sequence[float] = MIOU_THRESHOLDS,
                 ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.thresholds = torch.tensor(sorted(float(t) for t in thresholds), dtype=torch.float64)
        self.ignore_index = ignore_index
        n = num_classes + 1
        self._hist = torch.zeros(n, num_classes, len(self.thresholds) + 1, dtype=torch.int64)

    def update(self, maps: Tensor, labels: Tensor, target: Tensor) -> None:
        """``maps (B, H, W)`` floating, ``labels (B,)`` image classes, ``target (B, H, W)`` ints."""
        n, k, nb = self.num_classes + 1, self.num_classes, len(self.thresholds) + 1
        bins = torch.bucketize(maps.detach().cpu().to(torch.float64), self.thresholds, right=False)  # thresholds < M
        target = target.cpu().to(torch.int64)
        cls = labels.cpu().to(torch.int64)[:, None, None].expand_as(target)
        valid = target != self.ignore_index
        if bool(((target[valid] < 0) | (target[valid] >= n)).any()):
            raise ValueError(f"target values must be in [0, {n}) or {self.ignore_index}")
        idx = (target[valid] * k + cls[valid]) * nb + bins[valid]
        self._hist += torch.bincount(idx, minlength=n * k * nb).reshape(n, k, nb)

    def confusion(self, j: int) -> Tensor:
        """``(K + 1, K + 1)`` (target, prediction) counts at ``thresholds[j]``."""
        n = self.num_classes + 1
        above = self._hist[:, :, j + 1:].sum(-1)               # predicted c + 1
        below = self._hist[:, :, :j + 1].sum(-1).sum(1)         # predicted background
        cm = torch.zeros(n, n, dtype=torch.int64)
        cm[:, 1:] = above
        cm[:, 0] = below
        return cm

    def compute(self) -> tuple[float, float]:
        """The best mIoU (percent) over the thresholds and its threshold."""
        from camfast.evaluation.metrics import MIoU

        best = (-1.0, float("nan"))
        for j, t in enumerate(self.thresholds.tolist()):
            m = MIoU(self.num_classes + 1, ignore_index=self.ignore_index)
            m.confusion = self.confusion(j)
            value = m.compute()
            if value > best[0]:
                best = (value, t)
        return best


class Scorer:
    """Streaming metrics of one row (see the module docstring for the protocol)."""

    def __init__(self, row: Row, num_classes: int) -> None:
        from camfast.evaluation import metrics

        self.row = row
        self.num_classes = num_classes
        self.gt_known = metrics.GTKnownLoc(cam_threshold=row.box_threshold)
        self.top1_loc = metrics.Top1Loc(cam_threshold=row.box_threshold)
        self.v2 = metrics.MaxBoxAccV2()
        self.pxap = metrics.PxAP()
        self.miou = MIoUSweep(num_classes)
        self.fmeasure = metrics.FMeasure()
        self.mae = metrics.MAE()
        self.correct = 0
        self.count = 0
        self.has_boxes = self.has_masks = self.has_classes = False
        self.seconds = 0.0

    def update(self, maps: Tensor, labels: Tensor, preds: Tensor | None, boxes: Sequence[Tensor] | None,
               masks: Tensor | None, ignore: Tensor | None = None, segmentation: Tensor | None = None) -> None:
        """One batch: ``maps (B, H, W)`` in [0, 1] of class ``labels (B,)``; ``preds (B,)`` top-1
        classes or None (model classes are not the dataset's); ``boxes`` a list of ``(n_i, 4)``;
        ``masks (B, H, W)`` bool foreground; ``segmentation (B, H, W)`` int (0 background,
        ``class + 1``, 255 ignore; default ``masks * (labels + 1)``)."""
        import camfast

        b = maps.shape[0]
        self.count += b
        if preds is not None:
            self.has_classes = True
            self.correct += int((preds.cpu() == labels.cpu()).sum())
        if boxes is not None:
            self.has_boxes = True
            box_maps = camfast.normalize(maps, method="percentile", q=90) if self.row.pas else maps
            self.gt_known.update(box_maps, boxes)
            if preds is not None:
                self.top1_loc.update(box_maps, boxes, preds, labels)
            self.v2.update(maps, boxes)
        if masks is not None:
            self.has_masks = True
            self.pxap.update(maps, masks, ignore)
            target = segmentation if segmentation is not None else masks.long() * (labels.long()[:, None, None] + 1)
            self.miou.update(maps, labels, target)
            keep = masks if ignore is None else masks & ~ignore
            self.fmeasure.update(maps, keep)
            self.mae.update(maps, keep)

    def compute(self) -> dict[str, Any]:
        """The row's numbers in percent (MAE and F-measure as fractions, as the rCAM paper), None
        where the data lack what a metric needs."""
        out: dict[str, Any] = {k: None for k, _ in METRIC_COLUMNS}
        if self.has_classes:
            out["top1_cls"] = 100.0 * self.correct / max(self.count, 1)
        if self.has_boxes:
            out["gt_known_loc"] = self.gt_known.compute()
            out["max_box_acc_v2"] = self.v2.compute()
            if self.has_classes:
                out["top1_loc"] = self.top1_loc.compute()
        if self.has_masks:
            out["pxap"] = self.pxap.compute()
            out["miou"], out["miou_threshold"] = self.miou.compute()
            f = self.fmeasure.compute()
            out["f_ois"], out["f_ods"] = f.ois, f.ods
            out["mae"] = self.mae.compute()
        out["seconds"] = self.seconds
        out["images"] = self.count
        return out


def spans(n: int, batch_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def score_rows(rows: Sequence[Row], models: dict[str, nn.Module], preprocess: Callable[[Tensor], Tensor],
                batches: Callable[[], Any], num_batches: int, num_classes: int, class_match: bool,
                examples: int, log: Callable[[str], None]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Score ``rows``; ``batches()`` yields dicts with ``image``, ``label``, ``boxes``, ``mask``,
    ``ignore``, ``segmentation`` (collated). Returns the row results and the figure's examples."""
    # class-agnostic scoring when the model's classes are not the dataset's: one foreground class
    scorers = [Scorer(r, num_classes if class_match else 1) for r in rows]
    ex: dict[str, Any] = {"images": [], "masks": [], "maps": {r.name: [] for r in rows}}
    t0 = time.perf_counter()
    for i, batch in enumerate(batches()):
        images = batch["image"]
        x = preprocess(images)
        labels = batch["label"]
        preds: dict[str, Tensor] = {}
        for name, model in models.items():
            with torch.no_grad():
                preds[name] = model(x).argmax(1).cpu()
        for s in scorers:
            target = labels if class_match else preds[s.row.model]
            t = time.perf_counter()
            maps = compute_maps(s.row.method, models[s.row.model], x, target.to(x.device), images)
            s.seconds += time.perf_counter() - t
            maps = maps.cpu()
            s.update(maps, target.cpu() if class_match else torch.zeros_like(target.cpu()),
                     preds[s.row.model] if class_match else None, batch.get("boxes"),
                     batch.get("mask"), batch.get("ignore"), batch.get("segmentation") if class_match else None)
            have = len(ex["maps"][s.row.name])
            if have < examples:
                ex["maps"][s.row.name].extend(maps[:examples - have])
        if len(ex["images"]) < examples:
            take = examples - len(ex["images"])
            ex["images"].extend(images[:take].cpu())
            m = batch.get("mask")
            ex["masks"].extend(list(m[:take]) if m is not None else [None] * min(take, images.shape[0]))
        log(f"[score] batch {i + 1}/{num_batches}, {sum(s.count for s in scorers) // len(scorers)} images, "
            f"{time.perf_counter() - t0:.1f} s")
    results = []
    for s in scorers:
        res = {"name": s.row.name, "model": s.row.model, "method": s.row.method, "pas": s.row.pas,
               "box_threshold": s.row.box_threshold, **s.compute()}
        results.append(res)
        log(f"[score] {s.row.name}: " + ", ".join(f"{label} {fmt(res[k], k)}" for k, label in METRIC_COLUMNS
                                                  if res[k] is not None) + f" ({s.seconds:.1f} s)")
    return results, ex


def fmt(value: Any, key: str = "") -> str:
    if value is None:
        return "-"
    if key in FRACTIONS:
        return f"{value:.3f}"
    return f"{value:.1f}"
