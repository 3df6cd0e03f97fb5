"""Detection models: their outputs, a box-score target, and their default layers.

A detector's output, here, is a list with one dict per image holding ``boxes`` ``(n, 4)``
(``x1, y1, x2, y2``), ``labels`` ``(n,)`` and ``scores`` ``(n,)`` (torchvision's Faster
R-CNN, RetinaNet, FCOS, SSD in eval mode, and any model returning the same).

The box-score target of one image, for reference boxes ``r_i`` with labels ``c_i``::

    S = sum_i [IoU(r_i, d_j) > t] * (IoU(r_i, d_j) + score(d_j)),
        j = argmax_{j : label(d_j) = c_i} IoU(r_i, d_j)

``d_j`` the model's detections: for each reference, the best-overlapping detection of the
same class counts when its IoU exceeds the threshold ``t``; the gradient flows through the
detection's score and through its box (the IoU). pytorch-grad-cam's
``FasterRCNNBoxScoreTarget`` takes the best-overlapping detection of *any* class and counts
it only when its label matches (``any_class_match=True`` here): the two are the same sum
unless a detection of another class overlaps a reference more, which happens whenever a
detector's boxes are class-agnostic (RetinaNet, FCOS: one box, several labels), where
pytorch-grad-cam's rule drops the reference's own detection. With ``target=None`` a CAM function makes one map per detection
(each detection its own reference box), all from one forward pass, one backward per round
(the all-class machinery of :mod:`camfast.methods.targets`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["BoxScoreTarget", "box_iou", "detection_layers", "every_detection", "is_detections"]

_KEYS = ("boxes", "labels", "scores")


def is_detections(out: Any) -> bool:
    """Whether a model output is a list of per-image dicts with boxes, labels and scores."""
    return (isinstance(out, (list, tuple)) and len(out) > 0
            and all(isinstance(d, dict) and all(isinstance(d.get(k), Tensor) for k in _KEYS) for d in out))


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of ``(n, 4)`` and ``(m, 4)`` ``x1, y1, x2, y2`` boxes: ``(n, m)``
    (differentiable)."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter)


class BoxScoreTarget:
    """The box-score target of one image (module docstring): a callable on that image's
    detections dict, returning a scalar.

    Args:
        labels: the reference boxes' classes, ``(n,)``.
        boxes: the reference boxes ``(n, 4)`` ``x1, y1, x2, y2`` in input pixels.
        iou_threshold: a detection counts when its IoU with the reference exceeds this.
        any_class_match: match each reference to the best-overlapping detection of any class
            (pytorch-grad-cam's rule), not of its own class.
    """

    def __init__(self, labels: Sequence[int] | Tensor, boxes: Sequence[Sequence[float]] | Tensor,
                 iou_threshold: float = 0.5, any_class_match: bool = False) -> None:
        self.labels = torch.as_tensor(labels).reshape(-1).long()
        self.boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        if self.labels.shape[0] != self.boxes.shape[0]:
            raise ValueError(f"BoxScoreTarget: {self.labels.shape[0]} labels for {self.boxes.shape[0]} boxes")
        if not 0 <= float(iou_threshold) < 1:
            raise ValueError(f"iou_threshold must be in [0, 1), got {iou_threshold!r}")
        self.iou_threshold = float(iou_threshold)
        self.any_class_match = bool(any_class_match)

    def __repr__(self) -> str:
        return (f"BoxScoreTarget({self.labels.tolist()}, {self.boxes.tolist()}, iou_threshold={self.iou_threshold}"
                + (", any_class_match=True)" if self.any_class_match else ")"))

    def __call__(self, detections: dict[str, Tensor]) -> Tensor:
        boxes, labels, scores = (detections[k] for k in _KEYS)
        total = scores.new_zeros(())
        if boxes.shape[0] == 0:
            return total
        ious = box_iou(self.boxes.to(boxes), boxes)
        same = labels.detach().to(self.labels.device)[None, :] == self.labels[:, None]  # (n_ref, n_det)
        rank = ious.detach() if self.any_class_match else torch.where(same.to(ious.device), ious.detach(), -1.0)
        best = rank.argmax(dim=1)
        for i in range(self.boxes.shape[0]):
            j = int(best[i])
            if float(ious[i, j]) > self.iou_threshold and bool(same[i, j]):
                total = total + ious[i, j] + scores[j]
        return total


def every_detection(out: list[dict[str, Tensor]], iou_threshold: float = 0.5) -> list[list[BoxScoreTarget]]:
    """One :class:`BoxScoreTarget` per detection of each image (its own box and label)."""
    return [[BoxScoreTarget(d["labels"][j:j + 1].detach().cpu(), d["boxes"][j:j + 1].detach().float().cpu(),
                            iou_threshold) for j in range(d["boxes"].shape[0])] for d in out]


def detection_layers(model: nn.Module) -> list[str] | None:
    """The default layers of a detector: the outputs of its feature pyramid (torchvision's
    ``backbone.fpn.layer_blocks``: P2..P5 from the finest to the coarsest), or None when the
    model has no such pyramid."""
    names = [n for n, m in model.named_modules()
             if n.endswith("fpn.layer_blocks") and isinstance(m, (nn.ModuleList, nn.Sequential))]
    if not names:
        return None
    blocks = dict(model.named_modules())[names[0]]
    return [f"{names[0]}.{i}" for i in range(len(blocks))]
