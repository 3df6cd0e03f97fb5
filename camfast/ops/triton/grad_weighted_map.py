"""Triton backend of ``camfast::grad_weighted_map``.

Layers, as in Liger-Kernel: private ``@triton.jit`` kernels, then launchers that pick block
sizes and grids (``forward``/``backward``), called by the custom op in
``camfast/ops/grad_weighted_map.py``. All kernels take element strides, so contiguous,
channels-last and non-contiguous inputs need no copy. Offsets are computed in int64 (the
channel loops advance int64 pointers by the channel stride instead of multiplying ``c`` by
it in int32). The per-pixel kernels fold the batch into grid axis 0
(``_launch.batch_blocks_grid``); the per-plane ones take one program per ``(b, c)``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from camfast.ops._spec import GWM_MODES
from camfast.ops.triton._launch import batch_blocks, batch_blocks_grid, on_input_device

_ZOOM, _GRADCAM, _LAYERCAM = GWM_MODES["zoom"], GWM_MODES["gradcam"], GWM_MODES["layercam"]


@triton.jit
def _relu(x):
    # NaN-propagating, like torch.relu
    return tl.where((x > 0) | (x != x), x, 0.0)


@triton.jit
def _plane_mean(g_ptr, b, c, HW, W, sgb, sgc, sgh, sgw, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """mean over the (h, w) plane (b, c) of G, accumulated in ACC."""
    acc = tl.zeros([BLOCK], dtype=ACC)
    for p0 in range(0, HW, BLOCK):
        p = p0 + tl.arange(0, BLOCK).to(tl.int64)
        m = p < HW
        off = b * sgb + c * sgc + (p // W) * sgh + (p % W) * sgw
        acc += tl.load(g_ptr + off, mask=m, other=0.0).to(ACC)
    return tl.sum(acc, axis=0) / HW


@triton.jit
def _channel_mean_kernel(g_ptr, w_ptr, C, HW, W, sgb, sgc, sgh, sgw, ACC: tl.constexpr, BLOCK: tl.constexpr):
    bc = tl.program_id(0).to(tl.int64)
    tl.store(w_ptr + bc, _plane_mean(g_ptr, bc // C, bc % C, HW, W, sgb, sgc, sgh, sgw, ACC, BLOCK))


@triton.jit
def _gwm_fwd_kernel(
    a_ptr, g_ptr, w_ptr, out_ptr, C, HW, W,
    sab, sac, sah, saw, sgb, sgc, sgh, sgw,
    MODE: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr,
):
    b, p, m = batch_blocks(HW, BLOCK)
    h = p // W
    x = p % W
    a_p = a_ptr + (b * sab + h * sah + x * saw)
    g_p = g_ptr + (b * sgb + h * sgh + x * sgw)
    acc = tl.zeros([BLOCK], dtype=ACC)
    for c in range(C):
        av = tl.load(a_p, mask=m, other=0.0).to(ACC)
        if MODE == 1:
            wv = tl.load(w_ptr + b * C + c)
        else:
            wv = tl.load(g_p, mask=m, other=0.0).to(ACC)
            if MODE == 2:
                wv = _relu(wv)
        acc += wv * av
        a_p += sac
        g_p += sgc
    tl.store(out_ptr + b * HW + p, _relu(acc).to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def _gwm_bwd_kernel(
    a_ptr, g_ptr, out_ptr, gout_ptr, da_ptr, dg_ptr, C, HW, W,
    sab, sac, sah, saw, sgb, sgc, sgh, sgw,
    sdab, sdac, sdah, sdaw, sdgb, sdgc, sdgh, sdgw,
    MODE: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr,
):
    b, p, m = batch_blocks(HW, BLOCK)
    h = p // W
    x = p % W
    o = tl.load(out_ptr + b * HW + p, mask=m, other=0.0).to(ACC)
    gm = tl.where(o > 0, tl.load(gout_ptr + b * HW + p, mask=m, other=0.0).to(ACC), 0.0)
    a_p = a_ptr + (b * sab + h * sah + x * saw)
    g_p = g_ptr + (b * sgb + h * sgh + x * sgw)
    da_p = da_ptr + (b * sdab + h * sdah + x * sdaw)
    dg_p = dg_ptr + (b * sdgb + h * sdgh + x * sdgw)
    for c in range(C):
        av = tl.load(a_p, mask=m, other=0.0).to(ACC)
        gv = tl.load(g_p, mask=m, other=0.0).to(ACC)
        if MODE == 2:
            da = gm * _relu(gv)
            dg = tl.where(gv > 0, gm * av, 0.0)
        else:
            da = gm * gv
            dg = gm * av
        tl.store(da_p, da.to(da_ptr.dtype.element_ty), mask=m)
        tl.store(dg_p, dg.to(dg_ptr.dtype.element_ty), mask=m)
        a_p += sac
        g_p += sgc
        da_p += sdac
        dg_p += sdgc


@triton.jit
def _gwm_bwd_gradcam_kernel(
    a_ptr, g_ptr, out_ptr, gout_ptr, da_ptr, dg_ptr, C, HW, W,
    sab, sac, sah, saw, sgb, sgc, sgh, sgw,
    sdab, sdac, sdah, sdaw, sdgb, sdgc, sdgh, sdgw,
    ACC: tl.constexpr, BLOCK: tl.constexpr,
):
    # One program per (b, c) plane: w = mean(G); dA = gm * w and dw = sum(gm * A); dG = dw / HW.
    bc = tl.program_id(0).to(tl.int64)
    b = bc // C
    c = bc % C
    w = _plane_mean(g_ptr, b, c, HW, W, sgb, sgc, sgh, sgw, ACC, BLOCK)
    acc = tl.zeros([BLOCK], dtype=ACC)
    for p0 in range(0, HW, BLOCK):
        p = p0 + tl.arange(0, BLOCK).to(tl.int64)
        m = p < HW
        h = p // W
        x = p % W
        o = tl.load(out_ptr + b * HW + p, mask=m, other=0.0).to(ACC)
        gm = tl.where(o > 0, tl.load(gout_ptr + b * HW + p, mask=m, other=0.0).to(ACC), 0.0)
        av = tl.load(a_ptr + b * sab + c * sac + h * sah + x * saw, mask=m, other=0.0).to(ACC)
        acc += gm * av
        tl.store(da_ptr + b * sdab + c * sdac + h * sdah + x * sdaw, (gm * w).to(da_ptr.dtype.element_ty), mask=m)
    dw = tl.sum(acc, axis=0) / HW
    for p0 in range(0, HW, BLOCK):
        p = p0 + tl.arange(0, BLOCK).to(tl.int64)
        m = p < HW
        val = tl.zeros([BLOCK], dtype=ACC) + dw
        tl.store(dg_ptr + b * sdgb + c * sdgc + (p // W) * sdgh + (p % W) * sdgw, val.to(dg_ptr.dtype.element_ty), mask=m)


def _acc(x: Tensor):
    return tl.float64 if x.dtype == torch.float64 else tl.float32


def _block(hw: int) -> int:
    # Large blocks keep the number of programs (and interpreter time on CPU) small.
    return max(16, min(1024, triton.next_power_of_2(hw)))


@on_input_device
def forward(activation: Tensor, gradient: Tensor, mode: str) -> Tensor:
    B, C, H, W = activation.shape
    HW = H * W
    out = activation.new_empty((B, H, W))
    acc = _acc(activation)
    block = _block(HW)
    w = activation.new_empty((B * C,), dtype=torch.float64 if acc == tl.float64 else torch.float32)
    code = GWM_MODES[mode]
    if code == _GRADCAM:
        _channel_mean_kernel[(B * C,)](gradient, w, C, HW, W, *gradient.stride(), ACC=acc, BLOCK=block)
    _gwm_fwd_kernel[batch_blocks_grid(B, HW, block)](
        activation, gradient, w, out, C, HW, W, *activation.stride(), *gradient.stride(),
        MODE=code, ACC=acc, BLOCK=block,
    )
    return out


@on_input_device
def backward(grad_out: Tensor, activation: Tensor, gradient: Tensor, out: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    B, C, H, W = activation.shape
    HW = H * W
    grad_out = grad_out.contiguous()
    out = out.contiguous()
    grad_a = torch.empty_like(activation)
    grad_g = torch.empty_like(gradient)
    acc = _acc(activation)
    block = _block(HW)
    strides = (*activation.stride(), *gradient.stride(), *grad_a.stride(), *grad_g.stride())
    code = GWM_MODES[mode]
    if code == _GRADCAM:
        _gwm_bwd_gradcam_kernel[(B * C,)](
            activation, gradient, out, grad_out, grad_a, grad_g, C, HW, W, *strides, ACC=acc, BLOCK=block
        )
    else:
        _gwm_bwd_kernel[batch_blocks_grid(B, HW, block)](
            activation, gradient, out, grad_out, grad_a, grad_g, C, HW, W, *strides,
            MODE=code, ACC=acc, BLOCK=block,
        )
    return grad_a, grad_g
