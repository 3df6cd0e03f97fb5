"""Triton backend of ``camfast::guided_filter``: not a fused kernel yet.

The box means (``border="truncate"``) run on the Triton box-filter kernels
(``camfast/ops/triton/box_filter.py``); the per-pixel algebra (and the 3x3 solve) is the
reference's, in PyTorch, in float32 (float64 for float64). ``border="reflect"`` and every
gradient use the float64 reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from camfast.ops.reference import guided_filter as ref
from camfast.ops.triton import box_filter as tbox


def _mean(x: Tensor, r: int, border: str) -> Tensor:
    return tbox.forward(x.contiguous(), r)


def forward(guide: Tensor, src: Tensor, radius: int, eps: float, subsample: int, border: str) -> Tensor:
    if border != "truncate":
        return ref.forward(guide, src, radius, eps, subsample, border)
    acc = torch.float64 if src.dtype == torch.float64 else torch.float32
    I, p = guide.to(acc), src.to(acc)
    H, W = I.shape[-2:]
    if subsample > 1:
        size = ref.low_res_size(H, W, subsample)
        Is = F.interpolate(I, size=size, mode="bilinear", align_corners=False)
        ps = F.interpolate(p, size=size, mode="bilinear", align_corners=False)
        ma, mb = ref.coefficients(Is, ps, ref.low_res_radius(radius, subsample), eps, border, _mean)
        ma = F.interpolate(ma.flatten(1, 2), size=(H, W), mode="bilinear", align_corners=False).unflatten(
            1, ma.shape[1:3])
        mb = F.interpolate(mb, size=(H, W), mode="bilinear", align_corners=False)
    else:
        ma, mb = ref.coefficients(I, p, radius, eps, border, _mean)
    return ((ma * I[:, None]).sum(2) + mb).to(src.dtype)


def backward(grad_out: Tensor, guide: Tensor, src: Tensor, radius: int, eps: float, subsample: int, border: str,
             need_guide: bool, need_src: bool) -> tuple[Tensor, Tensor]:
    return ref.backward(grad_out, guide, src, radius, eps, subsample, border, need_guide, need_src)
