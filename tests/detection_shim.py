"""torchvision's detectors on a machine whose torchvision has no CPU kernel for ``nms``.

The torchvision wheel next to the CPU torch here is a CUDA build: ``torchvision::nms`` has no
CPU kernel (``tests/torchvision_shim.py`` declares the schema so that torchvision imports).
Faster R-CNN, RetinaNet and FCOS call ``torchvision.ops.boxes.batched_nms``, which calls the
module's ``nms``; :func:`ensure_nms` replaces that ``nms`` with a plain greedy NMS
(:func:`greedy_nms`, the same rule: boxes by descending score, each kept box suppresses the
later ones whose IoU with it exceeds the threshold) only when the compiled one fails, and
then lets compiled backwards keep their buffers (the roi_align fallback is compiled).
Pytest-free, shared by the detection tests.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchvision_shim import import_torchvision


def greedy_nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Indices of the kept boxes, by descending score (torchvision's ``nms`` contract)."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.long, device=boxes.device)
    b = boxes.detach().double().cpu()
    order = torch.sort(scores.detach().cpu(), descending=True, stable=True).indices.numpy()
    area = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).numpy()
    bb = b.numpy()
    x1 = np.maximum(bb[:, None, 0], bb[None, :, 0])
    y1 = np.maximum(bb[:, None, 1], bb[None, :, 1])
    x2 = np.minimum(bb[:, None, 2], bb[None, :, 2])
    y2 = np.minimum(bb[:, None, 3], bb[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    iou = inter / (area[:, None] + area[None, :] - inter)
    suppressed = np.zeros(len(bb), dtype=bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return torch.as_tensor(keep, dtype=torch.long, device=boxes.device)


def ensure_nms():
    """``torchvision`` with a working ``ops.boxes.nms`` (the compiled one, or :func:`greedy_nms`)."""
    torchvision = import_torchvision()
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.9]])
    try:
        torchvision.ops.boxes.nms(boxes, torch.tensor([1.0, 0.5]), 0.5)
    except (RuntimeError, NotImplementedError):
        torchvision.ops.boxes.nms = greedy_nms
        torchvision.ops.nms = greedy_nms
        # Without the compiled ops, roi_align (Faster R-CNN) runs torchvision's Python fallback
        # through torch.compile, whose backward donates its buffers and so refuses
        # retain_graph=True: one backward per round of targets needs it.
        torch._functorch.config.donated_buffer = False
    return torchvision
