"""Triton backend of ``camfast::grad_weighted_map``.

Layers, as in Liger-Kernel: private ``@triton.jit`` kernels, then launchers that pick block
sizes and grids (``forward``/``backward``), called by the custom op in
``camfast/ops/grad_weighted_map.py``. All kernels take element strides, so contiguous,
channels-last and non-contiguous inputs need no copy. Offsets are computed in int64 (the
channel loops advance int64 pointers by the channel stride instead of multiplying ``c`` by
it in int32). The per-pixel kernels fold the batch into grid axis 0
(``_launch.batch_blocks_grid``); the per-plane ones take one program per ``(b, c)``: the
channel weights of the per-channel modes (gradcam, gradcampp, xgradcam) and their backward.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from camfast.ops._spec import GWM_GRADCAMPP_EPS, GWM_MODES, GWM_XGRADCAM_EPS
from camfast.ops.triton._launch import batch_blocks, batch_blocks_grid, on_input_device

_GRADCAM, _LAYERCAM = GWM_MODES["gradcam"], GWM_MODES["layercam"]
_GRADCAMPP, _XGRADCAM = GWM_MODES["gradcampp"], GWM_MODES["xgradcam"]
#: the modes with one weight per (b, c) channel, M = ReLU(sum_c w_c A_c)
_PER_CHANNEL = (_GRADCAM, _GRADCAMPP, _XGRADCAM)
_GPP_EPS = tl.constexpr(GWM_GRADCAMPP_EPS)
_XGRAD_EPS = tl.constexpr(GWM_XGRADCAM_EPS)


@triton.jit
def _relu(x):
    # NaN-propagating, like torch.relu
    return tl.where((x > 0) | (x != x), x, 0.0)


@triton.jit
def _pixels(p0, HW, W, BLOCK: tl.constexpr):
    """Pixels ``p0 .. p0 + BLOCK`` of a plane of ``HW`` pixels and width ``W``: ``(p, mask, h, x)``, int64."""
    p = p0 + tl.arange(0, BLOCK).to(tl.int64)
    return p, p < HW, p // W, p % W


@triton.jit
def _load(ptr, b, c, h, x, sb, sc, sh, sw, m, ACC: tl.constexpr):
    """Element ``(b, c, h, x)`` of a strided ``[B, C, H, W]`` tensor (0 where ``m`` is false), in ACC."""
    return tl.load(ptr + b * sb + c * sc + h * sh + x * sw, mask=m, other=0.0).to(ACC)


@triton.jit
def _store(ptr, b, c, h, x, sb, sc, sh, sw, v, m):
    tl.store(ptr + b * sb + c * sc + h * sh + x * sw, v.to(ptr.dtype.element_ty), mask=m)


@triton.jit
def _plane_mean(g_ptr, b, c, HW, W, sgb, sgc, sgh, sgw, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """mean over the (h, w) plane (b, c) of G, accumulated in ACC."""
    acc = tl.zeros([BLOCK], dtype=ACC)
    for p0 in range(0, HW, BLOCK):
        _, m, h, x = _pixels(p0, HW, W, BLOCK)
        acc += _load(g_ptr, b, c, h, x, sgb, sgc, sgh, sgw, m, ACC)
    return tl.sum(acc, axis=0) / HW


@triton.jit
def _gpp_alpha(gv, s):
    """Grad-CAM++ at one pixel, s the channel's sum of A: ``(a, D)``, ``D = 2 G^2 + s G^3 + eps``
    and ``a = G^2 / D`` (0 where ``G == 0``)."""
    g2 = gv * gv
    d = 2.0 * g2 + s * (g2 * gv) + _GPP_EPS
    return tl.where(gv != 0, g2 / d, 0.0), d


@triton.jit
def _gm(out_ptr, gout_ptr, i, m, ACC: tl.constexpr):
    """``gm = dM * [M > 0]`` at the flat indices i of dM and M (mask m)."""
    o = tl.load(out_ptr + i, mask=m, other=0.0).to(ACC)
    return tl.where(o > 0, tl.load(gout_ptr + i, mask=m, other=0.0).to(ACC), 0.0)


@triton.jit
def _plane_consts(a_ptr, g_ptr, out_ptr, gout_ptr, b, c, HW, W, sab, sac, sah, saw, sgb, sgc, sgh, sgw,
                  XGRAD: tl.constexpr, BWD: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """The constants ``(w, c1, c2, c3)`` of plane (b, c) for Grad-CAM++ or (XGRAD) XGrad-CAM, with
    ``S = sum A``, ``T = sum gm A`` (BWD) and ``r = ReLU(G) a``: XGrad-CAM ``w = sum(G A) / (S + eps)``,
    ``c1 = T / (S + eps)``; Grad-CAM++ ``w = sum r``, ``c1 = -T sum r^2``, ``c2 = T``, ``c3 = S``."""
    s0 = tl.zeros([BLOCK], dtype=ACC)
    s1 = tl.zeros([BLOCK], dtype=ACC)
    s2 = tl.zeros([BLOCK], dtype=ACC)
    for p0 in range(0, HW, BLOCK):
        p, m, h, x = _pixels(p0, HW, W, BLOCK)
        av = _load(a_ptr, b, c, h, x, sab, sac, sah, saw, m, ACC)
        s0 += av
        if XGRAD:
            s1 += _load(g_ptr, b, c, h, x, sgb, sgc, sgh, sgw, m, ACC) * av
        if BWD:
            s2 += _gm(out_ptr, gout_ptr, b * HW + p, m, ACC) * av
    s = tl.sum(s0, axis=0)
    t = tl.sum(s2, axis=0)
    if XGRAD:
        den = s + _XGRAD_EPS
        w = tl.sum(s1, axis=0) / den
        c1 = t / den
    else:
        r0 = tl.zeros([BLOCK], dtype=ACC)
        r1 = tl.zeros([BLOCK], dtype=ACC)
        for p0 in range(0, HW, BLOCK):
            _, m, h, x = _pixels(p0, HW, W, BLOCK)
            gv = _load(g_ptr, b, c, h, x, sgb, sgc, sgh, sgw, m, ACC)
            alpha, _ = _gpp_alpha(gv, s)
            r = _relu(gv) * alpha
            r0 += r
            r1 += r * r
        w = tl.sum(r0, axis=0)
        c1 = -(t * tl.sum(r1, axis=0))
    return w, c1, t, s


@triton.jit
def _channel_weight_kernel(a_ptr, g_ptr, w_ptr, C, HW, W, sab, sac, sah, saw, sgb, sgc, sgh, sgw,
                           MEAN: tl.constexpr, XGRAD: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """One program per (b, c): the channel weight of Grad-CAM (MEAN), XGrad-CAM (XGRAD) or Grad-CAM++."""
    bc = tl.program_id(0).to(tl.int64)
    b = bc // C
    c = bc % C
    if MEAN:
        w = _plane_mean(g_ptr, b, c, HW, W, sgb, sgc, sgh, sgw, ACC, BLOCK)
    else:
        w, _, _, _ = _plane_consts(a_ptr, g_ptr, g_ptr, g_ptr, b, c, HW, W, sab, sac, sah, saw, sgb, sgc, sgh, sgw,
                                   XGRAD, False, ACC, BLOCK)
    tl.store(w_ptr + bc, w)


@triton.jit
def _gwm_fwd_kernel(
    a_ptr, g_ptr, w_ptr, out_ptr, C, HW, W,
    sab, sac, sah, saw, sgb, sgc, sgh, sgw,
    MODE: tl.constexpr, PER_CHANNEL: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr,
):
    b, p, m = batch_blocks(HW, BLOCK)
    h = p // W
    x = p % W
    a_p = a_ptr + (b * sab + h * sah + x * saw)
    g_p = g_ptr + (b * sgb + h * sgh + x * sgw)
    acc = tl.zeros([BLOCK], dtype=ACC)
    for c in range(C):
        av = tl.load(a_p, mask=m, other=0.0).to(ACC)
        if PER_CHANNEL:
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
    gm = _gm(out_ptr, gout_ptr, b * HW + p, m, ACC)
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
def _gwm_bwd_plane_kernel(
    a_ptr, g_ptr, out_ptr, gout_ptr, da_ptr, dg_ptr, C, HW, W,
    sab, sac, sah, saw, sgb, sgc, sgh, sgw,
    sdab, sdac, sdah, sdaw, sdgb, sdgc, sdgh, sdgw,
    MEAN: tl.constexpr, XGRAD: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr,
):
    # One program per (b, c) plane of a per-channel mode.
    # Grad-CAM (MEAN): w = mean(G); dA = gm * w while reducing dw = sum(gm * A); then dG = dw / HW.
    # XGrad-CAM (XGRAD), Grad-CAM++: the plane's constants (_plane_consts), then
    #   XGrad-CAM: dA = gm w + k (G - w), dG = k A;  Grad-CAM++: dA = gm w + c1, dG = T dr/dG.
    bc = tl.program_id(0).to(tl.int64)
    b = bc // C
    c = bc % C
    if MEAN:
        w = _plane_mean(g_ptr, b, c, HW, W, sgb, sgc, sgh, sgw, ACC, BLOCK)
        acc = tl.zeros([BLOCK], dtype=ACC)
        for p0 in range(0, HW, BLOCK):
            p, m, h, x = _pixels(p0, HW, W, BLOCK)
            gm = _gm(out_ptr, gout_ptr, b * HW + p, m, ACC)
            acc += gm * _load(a_ptr, b, c, h, x, sab, sac, sah, saw, m, ACC)
            _store(da_ptr, b, c, h, x, sdab, sdac, sdah, sdaw, gm * w, m)
        dw = tl.sum(acc, axis=0) / HW
        for p0 in range(0, HW, BLOCK):
            _, m, h, x = _pixels(p0, HW, W, BLOCK)
            _store(dg_ptr, b, c, h, x, sdgb, sdgc, sdgh, sdgw, tl.zeros([BLOCK], dtype=ACC) + dw, m)
    else:
        w, c1, t, s = _plane_consts(a_ptr, g_ptr, out_ptr, gout_ptr, b, c, HW, W, sab, sac, sah, saw,
                                    sgb, sgc, sgh, sgw, XGRAD, True, ACC, BLOCK)
        for p0 in range(0, HW, BLOCK):
            p, m, h, x = _pixels(p0, HW, W, BLOCK)
            gm = _gm(out_ptr, gout_ptr, b * HW + p, m, ACC)
            gv = _load(g_ptr, b, c, h, x, sgb, sgc, sgh, sgw, m, ACC)
            if XGRAD:
                da = gm * w + c1 * (gv - w)
                dg = c1 * _load(a_ptr, b, c, h, x, sab, sac, sah, saw, m, ACC)
            else:
                alpha, d = _gpp_alpha(gv, s)
                da = gm * w + c1
                dg = t * tl.where(gv > 0, alpha * (2.0 * gv * gv + 3.0 * _GPP_EPS) / d, 0.0)
            _store(da_ptr, b, c, h, x, sdab, sdac, sdah, sdaw, da, m)
            _store(dg_ptr, b, c, h, x, sdgb, sdgc, sdgh, sdgw, dg, m)


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
    strides = (*activation.stride(), *gradient.stride())
    if code in _PER_CHANNEL:
        _channel_weight_kernel[(B * C,)](activation, gradient, w, C, HW, W, *strides, MEAN=code == _GRADCAM,
                                         XGRAD=code == _XGRADCAM, ACC=acc, BLOCK=block)
    _gwm_fwd_kernel[batch_blocks_grid(B, HW, block)](
        activation, gradient, w, out, C, HW, W, *strides,
        MODE=code, PER_CHANNEL=code in _PER_CHANNEL, ACC=acc, BLOCK=block,
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
    if code in _PER_CHANNEL:
        _gwm_bwd_plane_kernel[(B * C,)](
            activation, gradient, out, grad_out, grad_a, grad_g, C, HW, W, *strides,
            MEAN=code == _GRADCAM, XGRAD=code == _XGRADCAM, ACC=acc, BLOCK=block,
        )
    else:
        _gwm_bwd_kernel[batch_blocks_grid(B, HW, block)](
            activation, gradient, out, grad_out, grad_a, grad_g, C, HW, W, *strides,
            MODE=code, ACC=acc, BLOCK=block,
        )
    return grad_a, grad_g
