"""Triton backend of ``camfast::box_filter`` (and the box means of the Triton guided filter).

Two kernels, as the native CUDA ones: ``_rows_kernel`` gives each program a block of
(b, c, y) rows and carries the horizontal running sums along x (vectorised over the rows of
the block); ``_cols_kernel`` gives each program a block of (b, c, x) columns and carries the
vertical running sums along y. Both O(1) per pixel whatever the radius; the horizontal sums
go through a workspace in the accumulator dtype. ``BACKWARD`` scales the input by 1 / N
instead of the output (the adjoint, see ``camfast/ops/box_filter.py``). Offsets are int64
(the strides and sizes are cast once, so ``i * stride`` cannot wrap past 2^31 elements).

Accuracy: the native kernel's contract (``csrc/cpu/box_sum_cpu.h``). The running sums and
the 1 / N scalings are float64 whatever the input dtype; the workspace holds each window
sum rounded once to the accumulator dtype (float32; float64 for float64 inputs). A float32
running sum loses the small values after large ones leave the window (``[1e8]*50 +
[0.5]*50``, radius 3, gave -0.375 for 0.5); in float64 the error stays at the last bits of
the window sum. Values reach float64 through the accumulator dtype (:func:`widen`): the
interpreter cannot cast bfloat16 to float64 directly.

Performance plan (issue 14, item 11; not done: no GPU has measured these kernels yet, and
a rewrite that only the interpreter has run would be a guess). The rows pass, here and in
``csrc/cuda/box_filter_cuda.cu`` (``rows_kernel``: one thread per row), walks each row
sequentially with neighbouring lanes on neighbouring *rows*: every warp load touches 32
cache lines ``W`` elements apart (uncoalesced), and only ``B*C*H`` lanes exist (28672 for
the benchmark's [8, 16, 224, 224], about a tenth of an H100's resident threads). Planned:

1. rows pass as a prefix sum along ``x`` over ``[ROWS, BLOCK_W]`` tiles loaded along the row
   (coalesced): ``tl.cumsum(tile, axis=1)`` plus the carry of the tiles to its left, written
   to the workspace ``P`` (accumulator dtype); in CUDA a warp-shuffle scan over 32-column
   chunks (or a shared-memory tile) with the same carry;
2. columns pass as now (lanes on neighbouring columns: coalesced), reading the horizontal
   window sums as ``P[y, min(x + r, W - 1)] - P[y, x - r - 1]`` (two coalesced, L2-resident
   loads) for the rows entering and leaving the vertical window.

A float32 prefix sum loses the window's digits after large values (the accuracy contract
above): the scan and its carry stay float64 (or compensated), and check
against ``tests`` (their tolerance table) and ``benchmarks/run.py box_filter --device cuda``
(``scripts/gpu-check.sh``) before making it the default.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from camfast.ops.triton._launch import flat_grid, on_input_device

_BLOCK = 128


@triton.jit
def widen(v, ACC: tl.constexpr):
    """``v`` (float16, bfloat16, float32 or float64) as float64, through ``ACC`` (float32, or
    float64 for float64 data): one cast chain that the interpreter runs for every dtype."""
    return v.to(ACC).to(tl.float64)


@triton.jit
def narrow(v, ACC: tl.constexpr, OUT: tl.constexpr):
    """A float64 value stored as ``OUT``, rounded once to ``ACC`` first (as the native
    kernels do: double -> float -> half)."""
    return v.to(ACC).to(OUT)


@triton.jit
def _inv_count(i, n, r):
    lo = tl.maximum(i - r, 0)
    hi = tl.minimum(i + r, n - 1)
    return 1.0 / (hi - lo + 1).to(tl.float64)


@triton.jit
def _rows_kernel(x_ptr, ws_ptr, NROWS, C, H, W, r, sb, sc, sh, sw,
                 BACKWARD: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    sw = tl.cast(sw, tl.int64)
    t = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = t < NROWS
    y = t % H
    bc = t // H
    base = (bc // C) * sb + (bc % C) * sc + y * sh
    sy = _inv_count(y, H, r)
    s = tl.zeros([BLOCK], dtype=tl.float64)
    last = tl.minimum(r, W - 1)
    for i in range(0, last + 1):
        v = widen(tl.load(x_ptr + base + i * sw, mask=m, other=0.0), ACC)
        if BACKWARD:
            v = v * sy * _inv_count(i, W, r)
        s += v
    for i in range(0, W):
        tl.store(ws_ptr + t * W + i, s.to(ACC), mask=m)
        a = t * 0 + (i + r + 1)
        va = widen(tl.load(x_ptr + base + a * sw, mask=m & (a < W), other=0.0), ACC)
        d = t * 0 + (i - r)
        vd = widen(tl.load(x_ptr + base + d * sw, mask=m & (d >= 0), other=0.0), ACC)
        if BACKWARD:
            va = tl.where(a < W, va * sy * _inv_count(tl.minimum(a, W - 1), W, r), 0.0)
            vd = tl.where(d >= 0, vd * sy * _inv_count(tl.maximum(d, 0), W, r), 0.0)
        s += va - vd


@triton.jit
def _cols_kernel(ws_ptr, out_ptr, NCOLS, C, H, W, r, sb, sc, sh, sw,
                 BACKWARD: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    W = tl.cast(W, tl.int64)
    sh = tl.cast(sh, tl.int64)
    t = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = t < NCOLS
    x = t % W
    bc = t // W
    col = bc * H * W + x
    obase = (bc // C) * sb + (bc % C) * sc + x * sw
    sx = _inv_count(x, W, r)
    s = tl.zeros([BLOCK], dtype=tl.float64)
    last = tl.minimum(r, H - 1)
    for i in range(0, last + 1):
        s += widen(tl.load(ws_ptr + col + i * W, mask=m, other=0.0), ACC)
    for y in range(0, H):
        if BACKWARD:
            v = s
        else:
            v = s * sx * _inv_count(y, H, r)
        tl.store(out_ptr + obase + y * sh, narrow(v, ACC, out_ptr.dtype.element_ty), mask=m)
        a = t * 0 + (y + r + 1)
        d = t * 0 + (y - r)
        s += widen(tl.load(ws_ptr + col + a * W, mask=m & (a < H), other=0.0), ACC)
        s -= widen(tl.load(ws_ptr + col + d * W, mask=m & (d >= 0), other=0.0), ACC)


def _run(x: Tensor, radius: int, backward: bool, out_dtype: torch.dtype | None = None) -> Tensor:
    B, C, H, W = x.shape
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    ACC = tl.float64 if acc == torch.float64 else tl.float32
    ws = torch.empty((B * C * H * W,), dtype=acc, device=x.device)
    out = torch.empty((B, C, H, W), dtype=out_dtype or x.dtype, device=x.device)
    nrows, ncols = B * C * H, B * C * W
    _rows_kernel[flat_grid(nrows, _BLOCK)](x, ws, nrows, C, H, W, radius, *x.stride(),
                                               BACKWARD=backward, ACC=ACC, BLOCK=_BLOCK)
    _cols_kernel[flat_grid(ncols, _BLOCK)](ws, out, ncols, C, H, W, radius, *out.stride(),
                                               BACKWARD=backward, ACC=ACC, BLOCK=_BLOCK)
    return out


@on_input_device
def forward(x: Tensor, radius: int) -> Tensor:
    return _run(x, radius, False)


@on_input_device
def backward(grad_out: Tensor, radius: int) -> Tensor:
    return _run(grad_out, radius, True)
