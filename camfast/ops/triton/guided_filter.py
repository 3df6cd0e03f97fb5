"""Triton backend of ``camfast::guided_filter``: fused per-pixel kernels around Triton box means.

Four steps, no per-pixel matrix tensor:

1. ``_products_kernel``: the ``K = G + G(G+1)/2 + C + G C`` products of every pixel
   (``I``, the upper triangle of ``I I^T``, ``p``, ``I p``) into one ``[B, K, H, W]`` tensor;
2. their box means (the Triton box-filter kernels, ``camfast/ops/triton/box_filter.py``);
3. ``_coef_kernel``: per pixel, ``Sigma = mean(I I^T) - mu mu^T + eps Id`` solved in closed form
   (the adjugate of the symmetric 3x3 matrix over its determinant; a division for a scalar
   guide) for every channel ``c``: ``a_c``, ``b_c = mean(p_c) - a_c^T mu`` into
   ``[B, (G+1) C, H, W]``; then the box means of those;
4. ``_apply_kernel``: ``q_c = mean(a_c)^T I + mean(b_c)`` with the full-resolution guide.

Everything runs in the accumulator dtype (float32; float64 for float64 inputs).
``border="reflect"`` pads each box-mean input with torch's reflect padding and keeps the
interior of the truncated-window means (where no window is cut, so the divisor is
``(2r+1)^2``): kornia's convention. ``subsample > 1`` computes steps 1-3 on the resized grid
and resizes the means of the coefficients with ``F.interpolate`` before step 4. Every
gradient uses the float64 reference.

Offsets are int64: every kernel casts the plane size ``HW`` and the channel strides once, so
``(o + c) * HW`` and ``c * stride`` cannot wrap past 2^31 elements per sample. The launchers
(``coefficient_means``, ``apply``, ``forward``, ``backward``) run on the inputs' device
(``_launch.on_input_device``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

from camfast.ops.reference import guided_filter as ref
from camfast.ops.triton import box_filter as tbox
from camfast.ops.triton._launch import device_scalar, flat_grid, on_input_device

_BLOCK = 1024


@triton.jit
def _pixels(NPIX, HW, W, BLOCK: tl.constexpr):
    """This program's BLOCK flat pixel indices ``t`` over (B, H, W): the mask, the image
    index ``b``, the index ``pix`` within the image and its row and column."""
    t = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    b = t // HW
    pix = t % HW
    return t, t < NPIX, b, pix, pix // W, pix % W


@triton.jit
def _products_kernel(g_ptr, p_ptr, out_ptr, NPIX, C, HW, W, gsb, gsc, gsh, gsw, psb, psc, psh, psw,
                     G: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    HW, gsc, psc = tl.cast(HW, tl.int64), tl.cast(gsc, tl.int64), tl.cast(psc, tl.int64)
    t, m, b, pix, y, x = _pixels(NPIX, HW, W, BLOCK)
    gbase = b * gsb + y * gsh + x * gsw
    pbase = b * psb + y * psh + x * psw
    K = G + G * (G + 1) // 2 + C + G * C
    obase = b * K * HW + pix
    i0 = tl.load(g_ptr + gbase, mask=m, other=0.0).to(ACC)
    if G == 1:
        tl.store(out_ptr + obase, i0, mask=m)
        tl.store(out_ptr + obase + HW, i0 * i0, mask=m)
        o = 2
    else:
        i1 = tl.load(g_ptr + gbase + gsc, mask=m, other=0.0).to(ACC)
        i2 = tl.load(g_ptr + gbase + 2 * gsc, mask=m, other=0.0).to(ACC)
        tl.store(out_ptr + obase, i0, mask=m)
        tl.store(out_ptr + obase + HW, i1, mask=m)
        tl.store(out_ptr + obase + 2 * HW, i2, mask=m)
        tl.store(out_ptr + obase + 3 * HW, i0 * i0, mask=m)
        tl.store(out_ptr + obase + 4 * HW, i0 * i1, mask=m)
        tl.store(out_ptr + obase + 5 * HW, i0 * i2, mask=m)
        tl.store(out_ptr + obase + 6 * HW, i1 * i1, mask=m)
        tl.store(out_ptr + obase + 7 * HW, i1 * i2, mask=m)
        tl.store(out_ptr + obase + 8 * HW, i2 * i2, mask=m)
        o = 9
    for c in range(0, C):
        v = tl.load(p_ptr + pbase + c * psc, mask=m, other=0.0).to(ACC)
        tl.store(out_ptr + obase + (o + c) * HW, v, mask=m)
        q = obase + (o + C + c * G) * HW
        tl.store(out_ptr + q, i0 * v, mask=m)
        if G == 3:
            tl.store(out_ptr + q + HW, i1 * v, mask=m)
            tl.store(out_ptr + q + 2 * HW, i2 * v, mask=m)


@triton.jit
def _coef_kernel(m_ptr, out_ptr, eps_ptr, NPIX, C, HW, G: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    HW = tl.cast(HW, tl.int64)
    t = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = t < NPIX
    b = t // HW
    pix = t % HW
    K = G + G * (G + 1) // 2 + C + G * C
    mb = b * K * HW + pix
    ob = b * (G + 1) * C * HW + pix
    eps = tl.load(eps_ptr).to(ACC)  # a tensor argument: a Python float would arrive as float32
    mu0 = tl.load(m_ptr + mb, mask=m, other=0.0)
    if G == 1:
        var = tl.load(m_ptr + mb + HW, mask=m, other=1.0) - mu0 * mu0
        inv = 1.0 / (var + eps)
        for c in range(0, C):
            pm = tl.load(m_ptr + mb + (2 + c) * HW, mask=m, other=0.0)
            ip = tl.load(m_ptr + mb + (2 + C + c) * HW, mask=m, other=0.0)
            a = (ip - mu0 * pm) * inv
            tl.store(out_ptr + ob + (2 * c) * HW, a, mask=m)
            tl.store(out_ptr + ob + (2 * c + 1) * HW, pm - a * mu0, mask=m)
    else:
        mu1 = tl.load(m_ptr + mb + HW, mask=m, other=0.0)
        mu2 = tl.load(m_ptr + mb + 2 * HW, mask=m, other=0.0)
        s00 = tl.load(m_ptr + mb + 3 * HW, mask=m, other=1.0) - mu0 * mu0 + eps
        s01 = tl.load(m_ptr + mb + 4 * HW, mask=m, other=0.0) - mu0 * mu1
        s02 = tl.load(m_ptr + mb + 5 * HW, mask=m, other=0.0) - mu0 * mu2
        s11 = tl.load(m_ptr + mb + 6 * HW, mask=m, other=1.0) - mu1 * mu1 + eps
        s12 = tl.load(m_ptr + mb + 7 * HW, mask=m, other=0.0) - mu1 * mu2
        s22 = tl.load(m_ptr + mb + 8 * HW, mask=m, other=1.0) - mu2 * mu2 + eps
        # adjugate of the symmetric matrix Sigma + eps Id, then its determinant
        c00 = s11 * s22 - s12 * s12
        c01 = s02 * s12 - s01 * s22
        c02 = s01 * s12 - s02 * s11
        c11 = s00 * s22 - s02 * s02
        c12 = s01 * s02 - s00 * s12
        c22 = s00 * s11 - s01 * s01
        idet = 1.0 / (s00 * c00 + s01 * c01 + s02 * c02)
        for c in range(0, C):
            pm = tl.load(m_ptr + mb + (9 + c) * HW, mask=m, other=0.0)
            q = mb + (9 + C + 3 * c) * HW
            v0 = tl.load(m_ptr + q, mask=m, other=0.0) - mu0 * pm
            v1 = tl.load(m_ptr + q + HW, mask=m, other=0.0) - mu1 * pm
            v2 = tl.load(m_ptr + q + 2 * HW, mask=m, other=0.0) - mu2 * pm
            a0 = (c00 * v0 + c01 * v1 + c02 * v2) * idet
            a1 = (c01 * v0 + c11 * v1 + c12 * v2) * idet
            a2 = (c02 * v0 + c12 * v1 + c22 * v2) * idet
            o = ob + (4 * c) * HW
            tl.store(out_ptr + o, a0, mask=m)
            tl.store(out_ptr + o + HW, a1, mask=m)
            tl.store(out_ptr + o + 2 * HW, a2, mask=m)
            tl.store(out_ptr + o + 3 * HW, pm - a0 * mu0 - a1 * mu1 - a2 * mu2, mask=m)


@triton.jit
def _apply_kernel(ab_ptr, g_ptr, out_ptr, NPIX, C, HW, W, gsb, gsc, gsh, gsw, osb, osc, osh, osw,
                  G: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    HW, gsc, osc = tl.cast(HW, tl.int64), tl.cast(gsc, tl.int64), tl.cast(osc, tl.int64)
    t, m, b, pix, y, x = _pixels(NPIX, HW, W, BLOCK)
    gbase = b * gsb + y * gsh + x * gsw
    obase = b * osb + y * osh + x * osw
    ab = b * (G + 1) * C * HW + pix
    i0 = tl.load(g_ptr + gbase, mask=m, other=0.0).to(ACC)
    if G == 3:
        i1 = tl.load(g_ptr + gbase + gsc, mask=m, other=0.0).to(ACC)
        i2 = tl.load(g_ptr + gbase + 2 * gsc, mask=m, other=0.0).to(ACC)
    for c in range(0, C):
        o = ab + ((G + 1) * c) * HW
        q = tl.load(ab_ptr + o, mask=m, other=0.0) * i0 + tl.load(ab_ptr + o + G * HW, mask=m, other=0.0)
        if G == 3:
            q += tl.load(ab_ptr + o + HW, mask=m, other=0.0) * i1
            q += tl.load(ab_ptr + o + 2 * HW, mask=m, other=0.0) * i2
        tl.store(out_ptr + obase + c * osc, q.to(out_ptr.dtype.element_ty), mask=m)


def _acc(dtype: torch.dtype) -> tuple[torch.dtype, tl.dtype]:
    return (torch.float64, tl.float64) if dtype == torch.float64 else (torch.float32, tl.float32)


def _box_mean(x: Tensor, r: int, border: str) -> Tensor:
    """Box means of a contiguous ``[B, K, H, W]`` accumulator-dtype tensor (Triton kernels)."""
    if border == "truncate":
        return tbox.forward(x, r)
    H, W = x.shape[-2:]
    padded = F.pad(x, (r, r, r, r), mode="reflect").contiguous()
    return tbox.forward(padded, r)[:, :, r:r + H, r:r + W].contiguous()


@on_input_device
def coefficient_means(guide: Tensor, src: Tensor, radius: int, eps: float, border: str) -> Tensor:
    """``mean(a_c)`` (G values) then ``mean(b_c)`` for every channel c: ``[B, (G+1) C, H, W]``."""
    B, G, H, W = guide.shape
    C = src.shape[1]
    acc, ACC = _acc(src.dtype)
    K = G + G * (G + 1) // 2 + C + G * C
    npix = B * H * W
    grid = flat_grid(npix, _BLOCK)
    prods = torch.empty((B, K, H, W), dtype=acc, device=src.device)
    _products_kernel[grid](guide, src, prods, npix, C, H * W, W, *guide.stride(), *src.stride(),
                           G=G, ACC=ACC, BLOCK=_BLOCK)
    means = _box_mean(prods, radius, border)
    coef = torch.empty((B, (G + 1) * C, H, W), dtype=acc, device=src.device)
    eps_t = device_scalar(eps, acc, src.device)
    _coef_kernel[grid](means, coef, eps_t, npix, C, H * W, G=G, ACC=ACC, BLOCK=_BLOCK)
    return _box_mean(coef, radius, border)


@on_input_device
def apply(coef_means: Tensor, guide: Tensor, out_dtype: torch.dtype) -> Tensor:
    """``q_c = mean(a_c)^T I + mean(b_c)`` (``coef_means`` contiguous ``[B, (G+1) C, H, W]``)."""
    B, G, H, W = guide.shape
    C = coef_means.shape[1] // (G + 1)
    _, ACC = _acc(coef_means.dtype)
    out = torch.empty((B, C, H, W), dtype=out_dtype, device=guide.device)
    npix = B * H * W
    _apply_kernel[flat_grid(npix, _BLOCK)](coef_means, guide, out, npix, C, H * W, W, *guide.stride(),
                                                *out.stride(), G=G, ACC=ACC, BLOCK=_BLOCK)
    return out


@on_input_device
def forward(guide: Tensor, src: Tensor, radius: int, eps: float, subsample: int, border: str) -> Tensor:
    if subsample == 1:
        return apply(coefficient_means(guide, src, radius, eps, border), guide, src.dtype)
    acc, _ = _acc(src.dtype)
    H, W = guide.shape[-2:]
    size = ref.low_res_size(H, W, subsample)
    gs = F.interpolate(guide.to(acc), size=size, mode="bilinear", align_corners=False)
    ps = F.interpolate(src.to(acc), size=size, mode="bilinear", align_corners=False)
    coef = coefficient_means(gs, ps, ref.low_res_radius(radius, subsample), eps, border)
    coef = F.interpolate(coef, size=(H, W), mode="bilinear", align_corners=False).contiguous()
    return apply(coef, guide, src.dtype)


@on_input_device
def backward(grad_out: Tensor, guide: Tensor, src: Tensor, radius: int, eps: float, subsample: int, border: str,
             need_guide: bool, need_src: bool) -> tuple[Tensor, Tensor]:
    return ref.backward(grad_out, guide, src, radius, eps, subsample, border, need_guide, need_src)
