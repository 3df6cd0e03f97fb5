"""Triton backend of ``camfast::upsample_aggregate``.

Layers, as in Liger-Kernel: private ``@triton.jit`` kernels, then launchers that pick block
sizes and grids (``forward``/``backward``), called by the custom op in
``camfast/ops/upsample_aggregate.py``. The maps reach the kernels as a tuple of tensors
(with tuples of their sizes and element strides), so no copy or concatenation is made and
any layout is read in place; the kernels specialise on the number of layers ``L`` and
unroll their loop over it. Offsets are computed in int64; the per-pixel kernels fold the
batch into grid axis 0 (``_launch.batch_blocks_grid``), and the launchers run on the maps'
device (``_launch.on_input_device``).

* ``_ua_stats_kernel``: one program per sample of one layer: NaN-propagating min and max
  (and, for the backward, how many pixels attain each).
* ``_ua_fwd_kernel``: a block of output pixels per program; every layer is sampled at its
  4 source pixels, normalised, interpolated (torch's index/weight formulas, W inner, H
  outer) and reduced in registers; the output is written once.
* ``_ua_bwd_scatter_kernel``: the same walk finds the winning layer (reduce=max), then
  ``dout`` times the bilinear weights is atomically added into ``dL/dN_l`` (a float32
  workspace, float64 for float64; the atomics' order makes the last bits nondeterministic
  on a GPU). The default backward.
* The deterministic backward, taken under ``torch.use_deterministic_algorithms(True)``
  (``backward(..., deterministic=True)``): ``_ua_winner_kernel`` writes the winning layer
  of every output pixel (reduce=max; the same walk), then per layer the transpose of the
  separable interpolation is *gathered* in two passes, no atomics: ``_ua_bwd_cols_kernel``
  ``T[b, y, j] = sum_x wx(x, j) g_l[b, y, x]`` (the output columns ``x`` whose taps reach
  source column ``j``: a window of ``2 W / w + 5`` candidates, each checked against the
  same ``_tap`` formulas), then ``_ua_bwd_rows_kernel`` ``dL/dN_l[b, i, j] = sum_y wy(y, i)
  T[b, y, j]``. Every sum runs in a fixed order, so the result is bitwise reproducible.
  About ``2 H W`` reads per layer (plus ``O(H w_l)``); the scatter issues ``4 H W`` atomics,
  and when upsampling 7 -> 224 about 4000 of them land on each source pixel (serialised in
  L2). Performance plan (issue 14, item 11): which is faster on a GPU is for the GPU
  benchmark to say (``triton`` vs ``triton-gather`` rows of ``benchmarks/run.py
  upsample_aggregate --device cuda``, run by ``scripts/gpu-check.sh``); until measured the
  scatter stays the default. If the gather wins, make it the only Triton backward and port
  the same two passes to the native CUDA backward (``backward_scatter_kernel`` in
  ``csrc/cuda/upsample_aggregate_cuda.cu``), which makes native deterministic too (then its
  entry in ``camfast.ops._dispatch.NONDETERMINISTIC_BACKWARD`` goes).
* ``_ua_bwd_norm_kernel``: one program per sample of one layer: the two sums of the
  normalisation's gradient, then ``dL/dM_l`` written with the gradient's strides.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from camfast.ops._spec import UA_EPS, UA_NORMALIZES, UA_REDUCES
from camfast.ops.triton._launch import batch_blocks, batch_blocks_grid, flat_grid, on_input_device

_MAX, _MEAN, _SUM = UA_REDUCES["max"], UA_REDUCES["mean"], UA_REDUCES["sum"]
_MINMAX = UA_NORMALIZES["minmax"]

#: Launch options of every kernel that interpolates: no fused multiply-add (Triton contracts
#: ``a * b + c`` by default), so each product and sum is rounded on its own and the values,
#: and the winner of reduce="max", are bit-identical to the reference's
#: (``camfast/ops/reference/upsample_aggregate.py``, ``upsample``) and the native kernels'.
_EXACT = {"enable_fp_fusion": False}


@triton.jit
def _div(a, b):
    """``a / b`` rounded to nearest, as the reference and the native kernels divide (Triton's
    float32 ``/`` need not be on a GPU)."""
    if a.dtype == tl.float32:
        q = tl.math.div_rn(a, b)
    else:
        q = a / b
    return q


@triton.jit
def _tap(d, n_in, n_out, ACC: tl.constexpr):
    """torch's compute_source_index_and_lambda (align_corners=False): i0, i1, l0, l1."""
    scale = _div(tl.cast(n_in, ACC), tl.cast(n_out, ACC))
    src = scale * (d.to(ACC) + 0.5) - 0.5
    src = tl.maximum(src, 0.0)
    i0 = tl.minimum(src.to(tl.int64), n_in - 1)  # truncation is floor: src >= 0
    l1 = tl.minimum(tl.maximum(src - i0.to(ACC), 0.0), 1.0)
    i1 = i0 + tl.where(i0 < n_in - 1, 1, 0)
    same = n_in == n_out  # an exact copy, as torch does
    i0 = tl.where(same, d, i0)
    i1 = tl.where(same, d, i1)
    l1 = tl.where(same, 0.0, l1)
    return i0, i1, 1.0 - l1, l1


@triton.jit
def _normalize(v, stats_ptr, bl, NORM: tl.constexpr, EPS: tl.constexpr):
    if NORM == 0:
        mn = tl.load(stats_ptr + bl * 2)
        mx = tl.load(stats_ptr + bl * 2 + 1)
        rng = mx - mn
        v = tl.where(rng == 0, 0.0, _div(v - mn, rng + EPS))  # a constant map gives 0; NaN propagates
    return v


@triton.jit
def _sample(m_ptr, h, w, sb, sh, sw, stats_ptr, b, l, y, x, H, W, mask,
            L: tl.constexpr, NORM: tl.constexpr, EPS: tl.constexpr, ACC: tl.constexpr):
    """The upsampled, normalised value of one layer at output pixels (b, y, x)."""
    r0, r1, h0, h1 = _tap(y, h, H, ACC)
    c0, c1, w0, w1 = _tap(x, w, W, ACC)
    base = m_ptr + b * sb
    bl = b * L + l
    v00 = _normalize(tl.load(base + r0 * sh + c0 * sw, mask=mask, other=0.0).to(ACC), stats_ptr, bl, NORM, EPS)
    v01 = _normalize(tl.load(base + r0 * sh + c1 * sw, mask=mask, other=0.0).to(ACC), stats_ptr, bl, NORM, EPS)
    v10 = _normalize(tl.load(base + r1 * sh + c0 * sw, mask=mask, other=0.0).to(ACC), stats_ptr, bl, NORM, EPS)
    v11 = _normalize(tl.load(base + r1 * sh + c1 * sw, mask=mask, other=0.0).to(ACC), stats_ptr, bl, NORM, EPS)
    return (v00 * w0 + v01 * w1) * h0 + (v10 * w0 + v11 * w1) * h1


@triton.jit
def _weight(whi, wlo, ACC: tl.constexpr):
    # A float weight arrives as two float32 halves (hi + lo), so float64 keeps ~48 bits.
    return tl.cast(whi, ACC) + tl.cast(wlo, ACC)


@triton.jit
def _ua_stats_kernel(m_ptr, stats_ptr, l, L, h, w, sb, sh, sw,
                     COUNTS: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    hw = h * w
    base = m_ptr + b * sb
    mn = tl.full([BLOCK], float("inf"), ACC)
    mx = tl.full([BLOCK], float("-inf"), ACC)
    nan = tl.zeros([BLOCK], tl.int32)
    for p0 in range(0, hw, BLOCK):
        p = p0 + tl.arange(0, BLOCK).to(tl.int64)
        mask = p < hw
        v = tl.load(base + (p // w) * sh + (p % w) * sw, mask=mask, other=0.0).to(ACC)
        mn = tl.where(mask, tl.minimum(mn, v), mn)
        mx = tl.where(mask, tl.maximum(mx, v), mx)
        nan = nan | (mask & (v != v)).to(tl.int32)
    any_nan = tl.max(nan, axis=0) > 0
    vmin = tl.where(any_nan, float("nan"), tl.min(mn, axis=0))
    vmax = tl.where(any_nan, float("nan"), tl.max(mx, axis=0))
    bl = b * L + l
    tl.store(stats_ptr + bl * 2, vmin)
    tl.store(stats_ptr + bl * 2 + 1, vmax)
    if COUNTS:
        cmin = tl.zeros([BLOCK], ACC)
        cmax = tl.zeros([BLOCK], ACC)
        for p0 in range(0, hw, BLOCK):
            p = p0 + tl.arange(0, BLOCK).to(tl.int64)
            mask = p < hw
            v = tl.load(base + (p // w) * sh + (p % w) * sw, mask=mask, other=0.0).to(ACC)
            cmin += tl.where(mask & (v == vmin), 1.0, 0.0)
            cmax += tl.where(mask & (v == vmax), 1.0, 0.0)
        counts = stats_ptr + 2 * tl.num_programs(0) * L
        tl.store(counts + bl * 2, tl.sum(cmin, axis=0))
        tl.store(counts + bl * 2 + 1, tl.sum(cmax, axis=0))


@triton.jit
def _ua_fwd_kernel(maps, hs, ws, sbs, shs, sws, whis, wlos, stats_ptr, out_ptr, H, W,
                   L: tl.constexpr, REDUCE: tl.constexpr, NORM: tl.constexpr, EPS: tl.constexpr,
                   ACC: tl.constexpr, BLOCK: tl.constexpr):
    b, p, mask = batch_blocks(H * W, BLOCK)
    y = p // W
    x = p % W
    acc = tl.zeros([BLOCK], ACC)
    for l in tl.static_range(L):
        v = _sample(maps[l], hs[l], ws[l], sbs[l], shs[l], sws[l], stats_ptr, b, l, y, x, H, W, mask,
                    L, NORM, EPS, ACC)
        if REDUCE == 0:
            if l == 0:
                acc = v
            else:
                acc = tl.where((v > acc) | ((v != v) & (acc == acc)), v, acc)  # the first NaN wins
        elif REDUCE == 2:
            acc += v * _weight(whis[l], wlos[l], ACC)
        else:
            acc += v
    if REDUCE == 1:
        acc = acc / L
    tl.store(out_ptr + b * H * W + p, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _winner(maps, hs, ws, sbs, shs, sws, stats_ptr, b, y, x, H, W, mask,
            L: tl.constexpr, NORM: tl.constexpr, EPS: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """The layer attaining the maximum at output pixels (b, y, x): the first on ties, the
    first NaN if any (the forward's reduce=max)."""
    best = tl.zeros([BLOCK], ACC)
    win = tl.zeros([BLOCK], tl.int32)
    for l in tl.static_range(L):
        v = _sample(maps[l], hs[l], ws[l], sbs[l], shs[l], sws[l], stats_ptr, b, l, y, x, H, W, mask,
                    L, NORM, EPS, ACC)
        if l == 0:
            best = v
        else:
            take = (v > best) | ((v != v) & (best == best))
            best = tl.where(take, v, best)
            win = tl.where(take, l, win)
    return win


@triton.jit
def _scatter(gn_ptr, h, w, b, y, x, H, W, g, mask, ACC: tl.constexpr):
    r0, r1, h0, h1 = _tap(y, h, H, ACC)
    c0, c1, w0, w1 = _tap(x, w, W, ACC)
    base = gn_ptr + b * h * w
    tl.atomic_add(base + r0 * w + c0, h0 * w0 * g, mask=mask)
    tl.atomic_add(base + r0 * w + c1, h0 * w1 * g, mask=mask)
    tl.atomic_add(base + r1 * w + c0, h1 * w0 * g, mask=mask)
    tl.atomic_add(base + r1 * w + c1, h1 * w1 * g, mask=mask)


@triton.jit
def _ua_bwd_scatter_kernel(maps, hs, ws, sbs, shs, sws, whis, wlos, gn_offs, stats_ptr, gout_ptr, gn_ptr, H, W,
                           L: tl.constexpr, REDUCE: tl.constexpr, NORM: tl.constexpr, EPS: tl.constexpr,
                           ACC: tl.constexpr, BLOCK: tl.constexpr):
    b, p, mask = batch_blocks(H * W, BLOCK)
    y = p // W
    x = p % W
    g = tl.load(gout_ptr + b * H * W + p, mask=mask, other=0.0).to(ACC)
    if REDUCE == 0:
        win = _winner(maps, hs, ws, sbs, shs, sws, stats_ptr, b, y, x, H, W, mask, L, NORM, EPS, ACC, BLOCK)
        for l in tl.static_range(L):
            _scatter(gn_ptr + gn_offs[l], hs[l], ws[l], b, y, x, H, W, g, mask & (win == l), ACC)
    else:
        for l in tl.static_range(L):
            if REDUCE == 1:
                gl = g / L
            else:
                gl = g * _weight(whis[l], wlos[l], ACC)
            _scatter(gn_ptr + gn_offs[l], hs[l], ws[l], b, y, x, H, W, gl, mask, ACC)


@triton.jit
def _first_output(j, n_in, n_out):
    """A lower bound on the first output index whose taps (``_tap``) reach source index ``j``:
    the exact bound is ``ceil(((2j - 1) n_out - n_in) / (2 n_in))`` (the source coordinate
    reaches ``j - 1``); this is one to two below it, a margin for the float rounding of
    ``_tap``. In integers, non-negative operands only."""
    num = tl.maximum((2 * j - 1) * n_out - n_in, 0)
    return tl.maximum(num // (2 * n_in) - 1, 0)


@triton.jit
def _gathered(d, j, n_in, n_out, g, ACC: tl.constexpr):
    """What output index ``d`` (value ``g``) sends to source index ``j`` through its two taps:
    exactly the terms the scatter adds there (both when the taps coincide), nothing else."""
    i0, i1, l0, l1 = _tap(d, n_in, n_out, ACC)
    return tl.where(i0 == j, l0 * g, 0.0) + tl.where(i1 == j, l1 * g, 0.0)


@triton.jit
def _ua_winner_kernel(maps, hs, ws, sbs, shs, sws, stats_ptr, win_ptr, H, W,
                      L: tl.constexpr, NORM: tl.constexpr, EPS: tl.constexpr, ACC: tl.constexpr,
                      BLOCK: tl.constexpr):
    b, p, mask = batch_blocks(H * W, BLOCK)
    win = _winner(maps, hs, ws, sbs, shs, sws, stats_ptr, b, p // W, p % W, H, W, mask, L, NORM, EPS, ACC, BLOCK)
    tl.store(win_ptr + b * H * W + p, win.to(tl.int8), mask=mask)


@triton.jit
def _ua_bwd_cols_kernel(gout_ptr, win_ptr, t_ptr, l, whi, wlo, N, W, w, SPAN,
                        L: tl.constexpr, REDUCE: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """``T[b, y, j] = sum_x wx(x, j) g_l[b, y, x]`` for one layer (``N = B H w`` elements)."""
    t = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = t < N
    j = t % w
    row = t // w  # b * H + y
    x0 = _first_output(j, w, W)
    acc = tl.zeros([BLOCK], ACC)
    for k in range(0, SPAN):
        x = x0 + k
        m = mask & (x < W)
        g = tl.load(gout_ptr + row * W + x, mask=m, other=0.0).to(ACC)
        if REDUCE == 0:
            g = tl.where(tl.load(win_ptr + row * W + x, mask=m, other=-1) == l, g, 0.0)
        elif REDUCE == 1:
            g = g / L
        else:
            g = g * _weight(whi, wlo, ACC)
        acc += tl.where(m, _gathered(x, j, w, W, g, ACC), 0.0)
    tl.store(t_ptr + t, acc, mask=mask)


@triton.jit
def _ua_bwd_rows_kernel(t_ptr, gn_ptr, N, H, h, w, SPAN, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """``dL/dN_l[b, i, j] = sum_y wy(y, i) T[b, y, j]`` for one layer (``N = B h w`` elements)."""
    t = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = t < N
    j = t % w
    i = (t // w) % h
    b = t // (h * w)
    y0 = _first_output(i, h, H)
    acc = tl.zeros([BLOCK], ACC)
    for k in range(0, SPAN):
        y = y0 + k
        m = mask & (y < H)
        v = tl.load(t_ptr + (b * H + y) * w + j, mask=m, other=0.0)
        acc += tl.where(m, _gathered(y, i, h, H, v, ACC), 0.0)
    tl.store(gn_ptr + t, acc, mask=mask)


@triton.jit
def _ua_bwd_norm_kernel(m_ptr, dm_ptr, gn_ptr, stats_ptr, l, L, h, w, sb, sh, sw, dsb, dsh, dsw,
                        NORM: tl.constexpr, EPS: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    B = tl.num_programs(0)
    hw = h * w
    gn = gn_ptr + b * hw
    if NORM == 0:
        bl = b * L + l
        mn = tl.load(stats_ptr + bl * 2)
        mx = tl.load(stats_ptr + bl * 2 + 1)
        cmin = tl.load(stats_ptr + 2 * B * L + bl * 2)
        cmax = tl.load(stats_ptr + 2 * B * L + bl * 2 + 1)
        rng = mx - mn
        d = rng + EPS
        s0 = tl.zeros([BLOCK], ACC)
        sn = tl.zeros([BLOCK], ACC)
        for p0 in range(0, hw, BLOCK):
            p = p0 + tl.arange(0, BLOCK).to(tl.int64)
            mask = p < hw
            v = tl.load(m_ptr + b * sb + (p // w) * sh + (p % w) * sw, mask=mask, other=0.0).to(ACC)
            g = tl.load(gn + p, mask=mask, other=0.0)
            s0 += g
            sn += g * tl.where(mask, (v - mn) / d, 0.0)
        s0_ = tl.sum(s0, axis=0)
        sn_ = tl.sum(sn, axis=0)
        dmin = (sn_ - s0_) / d / cmin  # dL/dmin, shared among the tied minima
        dmax = -sn_ / d / cmax  # dL/dmax, shared among the tied maxima
    for p0 in range(0, hw, BLOCK):
        p = p0 + tl.arange(0, BLOCK).to(tl.int64)
        mask = p < hw
        g = tl.load(gn + p, mask=mask, other=0.0)
        if NORM == 0:
            v = tl.load(m_ptr + b * sb + (p // w) * sh + (p % w) * sw, mask=mask, other=0.0).to(ACC)
            r = g / d + tl.where(v == mn, dmin, 0.0) + tl.where(v == mx, dmax, 0.0)
            g = tl.where(rng == 0, 0.0, r)  # a constant map: no gradient
        tl.store(dm_ptr + b * dsb + (p // w) * dsh + (p % w) * dsw, g.to(dm_ptr.dtype.element_ty), mask=mask)


def _acc(x: Tensor):
    return tl.float64 if x.dtype == torch.float64 else tl.float32


def _acc_torch(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _block(n: int, device: torch.device) -> int:
    # Large blocks keep the number of programs small; on CPU tensors (the interpreter, where
    # a program costs a Python loop iteration and a block is one numpy array) larger still.
    return max(16, min(1024 if device.type == "cuda" else 16384, triton.next_power_of_2(n)))


def _weights(weights: Sequence[float] | None, n: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Each weight as float32 (hi, lo) halves: Triton passes Python floats as float32."""
    ws = [1.0] * n if weights is None else [float(w) for w in weights]
    hi = torch.tensor(ws, dtype=torch.float64).float()
    lo = (torch.tensor(ws, dtype=torch.float64) - hi.double()).float()
    return tuple(hi.tolist()), tuple(lo.tolist())


def _layer_args(maps: Sequence[Tensor]):
    return (
        tuple(maps),
        tuple(m.shape[1] for m in maps),
        tuple(m.shape[2] for m in maps),
        tuple(m.stride(0) for m in maps),
        tuple(m.stride(1) for m in maps),
        tuple(m.stride(2) for m in maps),
    )


def _stats(maps: Sequence[Tensor], counts: bool) -> Tensor:
    B, L = maps[0].shape[0], len(maps)
    stats = maps[0].new_empty((4 * B * L if counts else 2 * B * L,), dtype=_acc_torch(maps[0]))
    for i, m in enumerate(maps):
        _ua_stats_kernel[(B,)](
            m, stats, i, L, m.shape[1], m.shape[2], *m.stride(),
            COUNTS=counts, ACC=_acc(m), BLOCK=_block(m.shape[1] * m.shape[2], m.device),
        )
    return stats


def _span(n_in: int, n_out: int) -> int:
    """How many output indices ``_ua_bwd_*_kernel`` try per source index, from ``_first_output``
    on: the taps of at most ``2 n_out / n_in + 1`` of them reach one source index, plus the
    margins of ``_first_output`` and of the float rounding (see its docstring)."""
    return 2 * n_out // n_in + 5


@on_input_device
def forward(maps: Sequence[Tensor], size: tuple[int, int], reduce: str, normalize: str,
            weights: Sequence[float] | None) -> Tensor:
    first = maps[0]
    B, (H, W), L = first.shape[0], size, len(maps)
    out = first.new_empty((B, H, W))
    norm = UA_NORMALIZES[normalize]
    stats = _stats(maps, counts=False) if norm == _MINMAX else first.new_empty((1,), dtype=_acc_torch(first))
    block = _block(H * W, first.device)
    _ua_fwd_kernel[batch_blocks_grid(B, H * W, block)](
        *_layer_args(maps), *_weights(weights, L), stats, out, H, W,
        L=L, REDUCE=UA_REDUCES[reduce], NORM=norm, EPS=UA_EPS, ACC=_acc(first), BLOCK=block, **_EXACT,
    )
    return out


def _gather_dn(grad_out: Tensor, maps: Sequence[Tensor], stats: Tensor, gn: Tensor, offs: Sequence[int],
               reduce: int, norm: int, weights: Sequence[float] | None) -> None:
    """``dL/dN_l`` of every layer into ``gn`` (at ``offs``), gathered: no atomics, fixed order."""
    first = maps[0]
    B, H, W = grad_out.shape
    L, acc = len(maps), _acc(first)
    win = grad_out  # unused unless reduce=max
    if reduce == _MAX:
        win = torch.empty((B, H, W), dtype=torch.int8, device=first.device)
        block = _block(H * W, first.device)
        _ua_winner_kernel[batch_blocks_grid(B, H * W, block)](
            *_layer_args(maps), stats, win, H, W, L=L, NORM=norm, EPS=UA_EPS, ACC=acc, BLOCK=block, **_EXACT,
        )
    whi, wlo = _weights(weights, L)
    t = torch.empty((B * H * max(m.shape[2] for m in maps),), dtype=_acc_torch(first), device=first.device)
    for i, m in enumerate(maps):
        h, w = m.shape[1], m.shape[2]
        n = B * H * w
        block = _block(n, first.device)
        _ua_bwd_cols_kernel[flat_grid(n, block)](grad_out, win, t, i, whi[i], wlo[i], n, W, w, _span(w, W),
                                                 L=L, REDUCE=reduce, ACC=acc, BLOCK=block, **_EXACT)
        n = B * h * w
        block = _block(n, first.device)
        _ua_bwd_rows_kernel[flat_grid(n, block)](t, gn[offs[i]:], n, H, h, w, _span(h, H), ACC=acc, BLOCK=block,
                                                 **_EXACT)


@on_input_device
def backward(grad_out: Tensor, maps: Sequence[Tensor], reduce: str, normalize: str,
             weights: Sequence[float] | None, deterministic: bool | None = None) -> list[Tensor]:
    """``dL/dM_l`` of every layer. ``deterministic`` (default: whether
    ``torch.are_deterministic_algorithms_enabled()``) gathers ``dL/dN`` in a fixed order
    instead of scattering it with atomics (see the module docstring)."""
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
    first = maps[0]
    B, H, W = grad_out.shape
    L = len(maps)
    grad_out = grad_out.contiguous()
    norm = UA_NORMALIZES[normalize]
    acc, acc_t = _acc(first), _acc_torch(first)
    stats = _stats(maps, counts=True) if norm == _MINMAX else first.new_empty((1,), dtype=acc_t)
    sizes = [m.shape[1] * m.shape[2] for m in maps]
    offs = [0]
    for s in sizes[:-1]:
        offs.append(offs[-1] + B * s)
    if deterministic:
        gn = torch.empty((B * sum(sizes),), dtype=acc_t, device=first.device)  # dL/dN of every layer
        _gather_dn(grad_out, maps, stats, gn, offs, UA_REDUCES[reduce], norm, weights)
    else:
        gn = torch.zeros((B * sum(sizes),), dtype=acc_t, device=first.device)
        block = _block(H * W, first.device)
        _ua_bwd_scatter_kernel[batch_blocks_grid(B, H * W, block)](
            *_layer_args(maps), *_weights(weights, L), tuple(offs), stats, grad_out, gn, H, W,
            L=L, REDUCE=UA_REDUCES[reduce], NORM=norm, EPS=UA_EPS, ACC=acc, BLOCK=block, **_EXACT,
        )
    grads = [torch.empty_like(m) for m in maps]
    for i, (m, g) in enumerate(zip(maps, grads)):
        _ua_bwd_norm_kernel[(B,)](
            m, g, gn[offs[i]:], stats, i, L, m.shape[1], m.shape[2], *m.stride(), *g.stride(),
            NORM=norm, EPS=UA_EPS, ACC=acc, BLOCK=_block(sizes[i], first.device),
        )
    return grads
