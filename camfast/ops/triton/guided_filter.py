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

Accuracy: the native kernel's contract (``csrc/cpu/guided_filter_cpu.cpp``). The guide is
centred per image and channel (its float64 mean subtracted: the filter is invariant to that
shift, and products ``I I^T`` of a guide far from zero would round to more than its local
variance); products, box sums (the Triton box filter's float64 running sums), the solve and
the final combination are computed in float64 and stored between the steps in the
accumulator dtype (float32; float64 for float64 inputs). The 3x3 system is scaled by
``1 / trace`` before its adjugate and determinant are formed (no overflow for a huge eps or
guide). A window without measurable variance (``var(I) <= 0``, the trace of ``Sigma`` for a
3-channel guide) gets ``a = 0``, ``b = mean(p)`` for any ``eps > 0``: a constant guide with
``eps = 1e-30`` gave NaN. (A gray image copied to 3 channels at ``eps = 1e-6``, a nearly
singular ``Sigma + eps Id``, was off by 0.11 in float32.)
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
from camfast.ops.triton.box_filter import narrow, widen

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
def _offset(b, y, x, sb, sc, sh, sw):
    """The offset of pixel (b, 0, y, x) of a strided [B, C, H, W] tensor and its channel stride (int64)."""
    return b * sb + y * sh + x * sw, tl.cast(sc, tl.int64)


@triton.jit
def _centred(ptr, shift_ptr, m, ACC: tl.constexpr):
    """The guide values at ``ptr`` minus their channel's mean at ``shift_ptr``, float64."""
    return widen(tl.load(ptr, mask=m, other=0.0), ACC) - tl.load(shift_ptr, mask=m, other=0.0)


@triton.jit
def _centred_guide(g_ptr, shift_ptr, NPIX, HW, W, gsb, gsc, gsh, gsw,
                   G: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """This program's pixels (:func:`_pixels`) and the guide there minus its per-image channel
    mean ``shift`` ([B, G] float64), in float64: ``i1``, ``i2`` repeat ``i0`` when G == 1."""
    HW = tl.cast(HW, tl.int64)
    t, m, b, pix, y, x = _pixels(NPIX, HW, W, BLOCK)
    gbase, gsc = _offset(b, y, x, gsb, gsc, gsh, gsw)
    i0 = _centred(g_ptr + gbase, shift_ptr + b * G, m, ACC)
    i1 = i0
    i2 = i0
    if G == 3:
        i1 = _centred(g_ptr + gbase + gsc, shift_ptr + b * G + 1, m, ACC)
        i2 = _centred(g_ptr + gbase + 2 * gsc, shift_ptr + b * G + 2, m, ACC)
    return m, b, pix, y, x, HW, i0, i1, i2


@triton.jit
def _products_kernel(p_ptr, psb, psc, psh, psw, out_ptr, g_ptr, shift_ptr, NPIX, C, HW, W, gsb, gsc, gsh, gsw,
                     G: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    m, b, pix, y, x, HW, i0, i1, i2 = _centred_guide(g_ptr, shift_ptr, NPIX, HW, W, gsb, gsc, gsh, gsw, G, ACC, BLOCK)
    pbase, psc = _offset(b, y, x, psb, psc, psh, psw)
    K = G + G * (G + 1) // 2 + C + G * C
    obase = b * K * HW + pix
    if G == 1:
        tl.store(out_ptr + obase, i0.to(ACC), mask=m)
        tl.store(out_ptr + obase + HW, (i0 * i0).to(ACC), mask=m)
        o = 2
    else:
        tl.store(out_ptr + obase, i0.to(ACC), mask=m)
        tl.store(out_ptr + obase + HW, i1.to(ACC), mask=m)
        tl.store(out_ptr + obase + 2 * HW, i2.to(ACC), mask=m)
        tl.store(out_ptr + obase + 3 * HW, (i0 * i0).to(ACC), mask=m)
        tl.store(out_ptr + obase + 4 * HW, (i0 * i1).to(ACC), mask=m)
        tl.store(out_ptr + obase + 5 * HW, (i0 * i2).to(ACC), mask=m)
        tl.store(out_ptr + obase + 6 * HW, (i1 * i1).to(ACC), mask=m)
        tl.store(out_ptr + obase + 7 * HW, (i1 * i2).to(ACC), mask=m)
        tl.store(out_ptr + obase + 8 * HW, (i2 * i2).to(ACC), mask=m)
        o = 9
    for c in range(0, C):
        v = widen(tl.load(p_ptr + pbase + c * psc, mask=m, other=0.0), ACC)
        tl.store(out_ptr + obase + (o + c) * HW, v.to(ACC), mask=m)
        q = obase + (o + C + c * G) * HW
        tl.store(out_ptr + q, (i0 * v).to(ACC), mask=m)
        if G == 3:
            tl.store(out_ptr + q + HW, (i1 * v).to(ACC), mask=m)
            tl.store(out_ptr + q + 2 * HW, (i2 * v).to(ACC), mask=m)


@triton.jit
def _variance(v):
    """A diagonal entry of ``Sigma`` rounded below zero is zero (NaN stays NaN)."""
    return tl.where(v < 0.0, 0.0, v)


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
    eps = tl.load(eps_ptr)  # float64 tensor argument: a Python float would arrive as float32
    mu0 = widen(tl.load(m_ptr + mb, mask=m, other=0.0), ACC)
    if G == 1:
        var = widen(tl.load(m_ptr + mb + HW, mask=m, other=0.0), ACC) - mu0 * mu0
        inv = tl.where(var <= 0.0, 0.0, 1.0 / (var + eps))  # no measurable variance: a = 0 (NaN stays)
        for c in range(0, C):
            pm = widen(tl.load(m_ptr + mb + (2 + c) * HW, mask=m, other=0.0), ACC)
            ip = widen(tl.load(m_ptr + mb + (2 + C + c) * HW, mask=m, other=0.0), ACC)
            a = (ip - mu0 * pm) * inv
            tl.store(out_ptr + ob + (2 * c) * HW, a.to(ACC), mask=m)
            tl.store(out_ptr + ob + (2 * c + 1) * HW, (pm - a * mu0).to(ACC), mask=m)
    else:
        mu1 = widen(tl.load(m_ptr + mb + HW, mask=m, other=0.0), ACC)
        mu2 = widen(tl.load(m_ptr + mb + 2 * HW, mask=m, other=0.0), ACC)
        v00 = _variance(widen(tl.load(m_ptr + mb + 3 * HW, mask=m, other=0.0), ACC) - mu0 * mu0)
        t01 = widen(tl.load(m_ptr + mb + 4 * HW, mask=m, other=0.0), ACC) - mu0 * mu1
        t02 = widen(tl.load(m_ptr + mb + 5 * HW, mask=m, other=0.0), ACC) - mu0 * mu2
        v11 = _variance(widen(tl.load(m_ptr + mb + 6 * HW, mask=m, other=0.0), ACC) - mu1 * mu1)
        t12 = widen(tl.load(m_ptr + mb + 7 * HW, mask=m, other=0.0), ACC) - mu1 * mu2
        v22 = _variance(widen(tl.load(m_ptr + mb + 8 * HW, mask=m, other=0.0), ACC) - mu2 * mu2)
        # Sigma + eps Id scaled by 1 / trace (entries <= 1 in magnitude): its adjugate and
        # determinant cannot overflow for a huge eps or guide
        tr = v00 + v11 + v22 + 3.0 * eps
        itr = 1.0 / tr
        s00, s01, s02 = (v00 + eps) * itr, t01 * itr, t02 * itr
        s11, s12, s22 = (v11 + eps) * itr, t12 * itr, (v22 + eps) * itr
        # adjugate of the symmetric matrix, then its determinant
        c00 = s11 * s22 - s12 * s12
        c01 = s02 * s12 - s01 * s22
        c02 = s01 * s12 - s02 * s11
        c11 = s00 * s22 - s02 * s02
        c12 = s01 * s02 - s00 * s12
        c22 = s00 * s11 - s01 * s01
        idet = itr / (s00 * c00 + s01 * c01 + s02 * c02)
        flat = v00 + v11 + v22 <= 0.0  # no measurable variance: a = 0 (NaN stays)
        for c in range(0, C):
            pm = widen(tl.load(m_ptr + mb + (9 + c) * HW, mask=m, other=0.0), ACC)
            q = mb + (9 + C + 3 * c) * HW
            w0 = widen(tl.load(m_ptr + q, mask=m, other=0.0), ACC) - mu0 * pm
            w1 = widen(tl.load(m_ptr + q + HW, mask=m, other=0.0), ACC) - mu1 * pm
            w2 = widen(tl.load(m_ptr + q + 2 * HW, mask=m, other=0.0), ACC) - mu2 * pm
            a0 = tl.where(flat, 0.0, (c00 * w0 + c01 * w1 + c02 * w2) * idet)
            a1 = tl.where(flat, 0.0, (c01 * w0 + c11 * w1 + c12 * w2) * idet)
            a2 = tl.where(flat, 0.0, (c02 * w0 + c12 * w1 + c22 * w2) * idet)
            o = ob + (4 * c) * HW
            tl.store(out_ptr + o, a0.to(ACC), mask=m)
            tl.store(out_ptr + o + HW, a1.to(ACC), mask=m)
            tl.store(out_ptr + o + 2 * HW, a2.to(ACC), mask=m)
            tl.store(out_ptr + o + 3 * HW, (pm - a0 * mu0 - a1 * mu1 - a2 * mu2).to(ACC), mask=m)


@triton.jit
def _apply_kernel(ab_ptr, out_ptr, osb, osc, osh, osw, g_ptr, shift_ptr, NPIX, C, HW, W, gsb, gsc, gsh, gsw,
                  G: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    m, b, pix, y, x, HW, i0, i1, i2 = _centred_guide(g_ptr, shift_ptr, NPIX, HW, W, gsb, gsc, gsh, gsw, G, ACC, BLOCK)
    ab = b * (G + 1) * C * HW + pix
    obase, osc = _offset(b, y, x, osb, osc, osh, osw)
    for c in range(0, C):
        o = ab + ((G + 1) * c) * HW
        q = widen(tl.load(ab_ptr + o, mask=m, other=0.0), ACC) * i0
        q += widen(tl.load(ab_ptr + o + G * HW, mask=m, other=0.0), ACC)
        if G == 3:
            q += widen(tl.load(ab_ptr + o + HW, mask=m, other=0.0), ACC) * i1
            q += widen(tl.load(ab_ptr + o + 2 * HW, mask=m, other=0.0), ACC) * i2
        tl.store(out_ptr + obase + c * osc, narrow(q, ACC, out_ptr.dtype.element_ty), mask=m)


def _acc(dtype: torch.dtype) -> tuple[torch.dtype, tl.dtype]:
    return (torch.float64, tl.float64) if dtype == torch.float64 else (torch.float32, tl.float32)


def guide_means(guide: Tensor) -> Tensor:
    """The mean of every image and channel of ``guide``, float64 ``[B, G]`` (contiguous)."""
    return (guide.sum((2, 3), dtype=torch.float64) / (guide.shape[2] * guide.shape[3])).contiguous()


def _box_mean(x: Tensor, r: int, border: str) -> Tensor:
    """Box means of a contiguous ``[B, K, H, W]`` accumulator-dtype tensor (Triton kernels)."""
    if border == "truncate":
        return tbox.forward(x, r)
    H, W = x.shape[-2:]
    padded = F.pad(x, (r, r, r, r), mode="reflect").contiguous()
    return tbox.forward(padded, r)[:, :, r:r + H, r:r + W].contiguous()


@on_input_device
def coefficient_means(guide: Tensor, src: Tensor, radius: int, eps: float, border: str, shift: Tensor) -> Tensor:
    """``mean(a_c)`` (G values) then ``mean(b_c)`` for every channel c: ``[B, (G+1) C, H, W]``,
    for the guide centred by ``shift`` (:func:`guide_means`): ``b`` is that of ``I - shift``."""
    B, G, H, W = guide.shape
    C = src.shape[1]
    acc, ACC = _acc(src.dtype)
    K = G + G * (G + 1) // 2 + C + G * C
    npix = B * H * W
    grid = flat_grid(npix, _BLOCK)
    prods = torch.empty((B, K, H, W), dtype=acc, device=src.device)
    _products_kernel[grid](src, *src.stride(), prods, guide, shift, npix, C, H * W, W, *guide.stride(),
                           G=G, ACC=ACC, BLOCK=_BLOCK)
    means = _box_mean(prods, radius, border)
    coef = torch.empty((B, (G + 1) * C, H, W), dtype=acc, device=src.device)
    eps_t = device_scalar(eps, torch.float64, src.device)
    _coef_kernel[grid](means, coef, eps_t, npix, C, H * W, G=G, ACC=ACC, BLOCK=_BLOCK)
    return _box_mean(coef, radius, border)


@on_input_device
def apply(coef_means: Tensor, guide: Tensor, shift: Tensor, out_dtype: torch.dtype) -> Tensor:
    """``q_c = mean(a_c)^T (I - shift) + mean(b_c)`` (``coef_means`` contiguous ``[B, (G+1) C, H, W]``
    from :func:`coefficient_means` with the same ``shift``)."""
    B, G, H, W = guide.shape
    C = coef_means.shape[1] // (G + 1)
    _, ACC = _acc(coef_means.dtype)
    out = torch.empty((B, C, H, W), dtype=out_dtype, device=guide.device)
    npix = B * H * W
    _apply_kernel[flat_grid(npix, _BLOCK)](coef_means, out, *out.stride(), guide, shift, npix, C, H * W, W,
                                           *guide.stride(), G=G, ACC=ACC, BLOCK=_BLOCK)
    return out


@on_input_device
def forward(guide: Tensor, src: Tensor, radius: int, eps: float, subsample: int, border: str) -> Tensor:
    if subsample == 1:
        shift = guide_means(guide)
        return apply(coefficient_means(guide, src, radius, eps, border, shift), guide, shift, src.dtype)
    acc, _ = _acc(src.dtype)
    H, W = guide.shape[-2:]
    size = ref.low_res_size(H, W, subsample)
    # resized in the accumulator dtype after centring (a large offset would round there)
    guide = (guide.double() - guide_means(guide)[:, :, None, None]).to(acc)
    gs = F.interpolate(guide, size=size, mode="bilinear", align_corners=False)
    ps = F.interpolate(src.to(acc), size=size, mode="bilinear", align_corners=False)
    shift = guide_means(gs)
    coef = coefficient_means(gs, ps, ref.low_res_radius(radius, subsample), eps, border, shift)
    coef = F.interpolate(coef, size=(H, W), mode="bilinear", align_corners=False).contiguous()
    return apply(coef, guide, shift, src.dtype)


@on_input_device
def backward(grad_out: Tensor, guide: Tensor, src: Tensor, radius: int, eps: float, subsample: int, border: str,
             need_guide: bool, need_src: bool) -> tuple[Tensor, Tensor]:
    return ref.backward(grad_out, guide, src, radius, eps, subsample, border, need_guide, need_src)
