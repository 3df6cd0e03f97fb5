"""Native launcher for ``camfast::guided_filter`` (csrc/cpu/guided_filter_cpu.cpp).

CPU only: there is no CUDA kernel, so on CUDA the native backend runs the reference's
formulas (``_composed``: PyTorch cumulative-sum box means), and the default backend on CUDA
is Triton's fused kernels (``camfast/ops/_backend.py``). ``subsample > 1``: the resizing
is done with ``F.interpolate`` around the native kernel, which then returns ``mean(a)``,
``mean(b)`` on the small grid (``coeffs_out``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from camfast.ops._spec import DEVICES, GF_BORDERS
from camfast.ops.native._launch import DTYPE_CODES, lib
from camfast.ops.reference import guided_filter as ref


def _kernel(guide: Tensor, src: Tensor, radius: int, eps: float, border: str, adjoint: bool,
            coeffs_out: bool) -> Tensor:
    B, G, H, W = guide.shape
    C = src.shape[1]
    out = src.new_empty((B, (G + 1) * C if coeffs_out else C, H, W))
    lib().guided_filter(DEVICES["cpu"], DTYPE_CODES[src.dtype], (B, G, C, H, W), int(radius), float(eps),
                        GF_BORDERS[border], adjoint, coeffs_out, guide.data_ptr(), guide.stride(), src.data_ptr(),
                        src.stride(), out.data_ptr(), out.stride())
    return out


def _composed(guide: Tensor, src: Tensor, radius: int, eps: float, subsample: int, border: str) -> Tensor:
    # GPU path: the reference's formulas (its box means are PyTorch cumulative sums).
    return ref.forward(guide, src, radius, eps, subsample, border)


def forward(guide: Tensor, src: Tensor, radius: int, eps: float, subsample: int, border: str) -> Tensor:
    if src.device.type != "cpu":
        return _composed(guide, src, radius, eps, subsample, border)
    if subsample == 1:
        return _kernel(guide, src, radius, eps, border, False, False)
    B, G, H, W = guide.shape
    C, out_dtype = src.shape[1], src.dtype
    size = ref.low_res_size(H, W, subsample)
    # the resizing and the final combination run in the accumulator dtype (float32; float64)
    acc = torch.float64 if src.dtype == torch.float64 else torch.float32
    # the guide centred per image and channel (the filter is invariant to that shift): the
    # final mean(a)^T I + mean(b) then does not cancel a large offset in float32
    guide = (guide.double() - guide.double().mean((2, 3), keepdim=True)).to(acc)
    src = src.to(acc)
    gs = F.interpolate(guide, size=size, mode="bilinear", align_corners=False)
    ps = F.interpolate(src, size=size, mode="bilinear", align_corners=False)
    coeffs = _kernel(gs, ps, ref.low_res_radius(radius, subsample), eps, border, False, True)
    coeffs = F.interpolate(coeffs, size=(H, W), mode="bilinear", align_corners=False).unflatten(1, (C, G + 1))
    return ((coeffs[:, :, :G] * guide[:, None]).sum(2) + coeffs[:, :, G]).to(out_dtype)


def backward(grad_out: Tensor, guide: Tensor, src: Tensor, radius: int, eps: float, subsample: int, border: str,
             need_guide: bool, need_src: bool) -> tuple[Tensor, Tensor]:
    native_src = need_src and src.device.type == "cpu" and border == "truncate" and subsample == 1
    dg, ds = ref.backward(grad_out, guide, src, radius, eps, subsample, border, need_guide,
                          need_src and not native_src)
    if native_src:
        # q = Wp is linear in p and W^T g = N * W (g / N) (csrc/guided_filter.h)
        ds = _kernel(guide, grad_out.to(src.dtype).contiguous(), radius, eps, border, True, False)
    return dg, ds
