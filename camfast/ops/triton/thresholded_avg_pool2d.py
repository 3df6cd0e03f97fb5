"""Triton backend of ``camfast::thresholded_avg_pool2d``.

Layers, as in Liger-Kernel: private ``@triton.jit`` kernels, then launchers that pick block
sizes and grids (``forward``/``backward``), called by the custom op in
``camfast/ops/thresholded_avg_pool2d.py``. The kernels take element strides, so contiguous,
channels-last and non-contiguous inputs need no copy. Offsets are computed in int64.

forward: one program per (b, c) plane; pass 1 the max (NaN tracked separately: Triton's
``max`` does not promise NaN propagation), pass 2 the sum and count above ``tau``. ``theta``
arrives as a one-element tensor in the accumulator dtype, made on the device
(``_launch.device_scalar``: no host-to-device copy, so the launch can be captured in a CUDA
graph).
backward: one program per pixel block of a (b, c) plane, all on grid axis 0
(``_launch.batch_blocks_grid``), ``dx = dy * [x > tau] / N``.

Performance plan for the forward (issue 14, item 11; not done: unmeasured on a GPU). The
native CUDA forward (``csrc/cuda/thresholded_avg_pool2d_cuda.cu``) gives one warp to a whole
plane and divides 64-bit indices (``p / W``, ``p % W``) per element; here one program takes
a plane with ``BLOCK = next_pow2(HW)`` lanes and the default 4 warps, so a 7x7 plane keeps
64 of 128 lanes and a 56x56 one loops over 1024-wide blocks on a single program. Planned,
sized by the plane: planes up to 64 pixels, several per program as a ``[PLANES, BLOCK]``
tile reduced along axis 1 (in CUDA: 8 lanes per plane, reductions with ``__shfl_xor_sync``
inside the 8-lane group); planes past 1024 pixels, a block of 256 threads per plane with a
shared-memory reduction; 2-D ``(y, x)`` loops or 32-bit division when ``HW < 2^31``. Decided
by ``benchmarks/run.py thresholded_avg_pool2d --device cuda`` (``scripts/gpu-check.sh``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from camfast.ops.triton._launch import batch_blocks, batch_blocks_grid, device_scalar, on_input_device


def _acc(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


@triton.jit
def _tap_fwd_kernel(
    x_ptr, theta_ptr, pooled_ptr, tau_ptr, count_ptr, C, HW, W, sxb, sxc, sxh, sxw,
    ACC: tl.constexpr, BLOCK: tl.constexpr,
):
    bc = tl.program_id(0).to(tl.int64)
    b = bc // C
    c = bc % C
    base = x_ptr + b * sxb + c * sxc
    m = tl.full([BLOCK], float("-inf"), dtype=ACC)
    nan = tl.zeros([BLOCK], dtype=tl.int32)
    for p0 in range(0, HW, BLOCK):
        p = p0 + tl.arange(0, BLOCK).to(tl.int64)
        msk = p < HW
        v = tl.load(base + (p // W) * sxh + (p % W) * sxw, mask=msk, other=float("-inf")).to(ACC)
        isnan = v != v
        nan = tl.maximum(nan, isnan.to(tl.int32))
        m = tl.maximum(m, tl.where(isnan, float("-inf"), v))
    mx = tl.max(m, axis=0)
    has_nan = tl.max(nan, axis=0) > 0
    theta = tl.load(theta_ptr).to(ACC)
    t = tl.where(has_nan, float("nan"), theta * mx)
    bad = has_nan | (mx == float("inf")) | (mx == float("-inf"))
    s = tl.zeros([BLOCK], dtype=ACC)
    n = tl.zeros([BLOCK], dtype=ACC)
    for p0 in range(0, HW, BLOCK):
        p = p0 + tl.arange(0, BLOCK).to(tl.int64)
        msk = p < HW
        v = tl.load(base + (p // W) * sxh + (p % W) * sxw, mask=msk, other=0.0).to(ACC)
        keep = (v > t) & msk
        s += tl.where(keep, v, 0.0)
        n += tl.where(keep, 1.0, 0.0)
    total = tl.sum(s, axis=0)
    cnt = tl.maximum(tl.sum(n, axis=0), 1.0)
    out = tl.where(bad, float("nan"), total / cnt)
    tl.store(tau_ptr + bc, t)
    tl.store(count_ptr + bc, cnt)
    tl.store(pooled_ptr + bc, out.to(pooled_ptr.dtype.element_ty))


@triton.jit
def _tap_bwd_kernel(
    x_ptr, tau_ptr, count_ptr, gout_ptr, dx_ptr, C, HW, W, sxb, sxc, sxh, sxw, sdb, sdc, sdh, sdw,
    ACC: tl.constexpr, BLOCK: tl.constexpr,
):
    bc, p, msk = batch_blocks(HW, BLOCK)
    b = bc // C
    c = bc % C
    h = p // W
    w = p % W
    v = tl.load(x_ptr + b * sxb + c * sxc + h * sxh + w * sxw, mask=msk, other=0.0).to(ACC)
    t = tl.load(tau_ptr + bc)
    g = tl.load(gout_ptr + bc).to(ACC) / tl.load(count_ptr + bc)
    d = tl.where(v > t, g, 0.0)
    tl.store(dx_ptr + b * sdb + c * sdc + h * sdh + w * sdw, d.to(dx_ptr.dtype.element_ty), mask=msk)


def _acc_tl(x: Tensor):
    return tl.float64 if x.dtype == torch.float64 else tl.float32


@on_input_device
def forward(x: Tensor, theta: float) -> tuple[Tensor, Tensor, Tensor]:
    B, C, H, W = x.shape
    pooled = x.new_empty((B, C))
    tau = x.new_empty((B, C), dtype=_acc(x))
    count = torch.empty_like(tau)
    theta_t = device_scalar(theta, _acc(x), x.device)  # theta in the accumulator dtype
    block = min(max(triton.next_power_of_2(H * W), 16), 1024)
    _tap_fwd_kernel[(B * C,)](
        x, theta_t, pooled, tau, count, C, H * W, W, *x.stride(), ACC=_acc_tl(x), BLOCK=block,
    )
    return pooled, tau, count


@on_input_device
def backward(grad_out: Tensor, x: Tensor, tau: Tensor, count: Tensor) -> Tensor:
    B, C, H, W = x.shape
    grad_out = grad_out.to(x.dtype).contiguous()
    tau = tau.contiguous()
    count = count.contiguous()
    grad_x = torch.empty_like(x)
    block = min(max(triton.next_power_of_2(H * W), 16), 1024)
    _tap_bwd_kernel[batch_blocks_grid(B * C, H * W, block)](
        x, tau, count, grad_out, grad_x, C, H * W, W, *x.stride(), *grad_x.stride(), ACC=_acc_tl(x), BLOCK=block,
    )
    return grad_x
