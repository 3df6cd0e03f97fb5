"""Triton backend of ``camfast::box_filter`` (and the box means of the Triton guided filter).

Two kernels, as the native CUDA ones: ``_rows_kernel`` gives each program a block of
(b, c, y) rows and carries the horizontal running sums along x (vectorised over the rows of
the block); ``_cols_kernel`` gives each program a block of (b, c, x) columns and carries the
vertical running sums along y. Both O(1) per pixel whatever the radius; the horizontal sums
go through an accumulator-dtype workspace. ``BACKWARD`` scales the input by 1 / N instead of
the output (the adjoint, see ``camfast/ops/box_filter.py``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

_BLOCK = 128


@triton.jit
def _inv_count(i, n, r, ACC: tl.constexpr):
    lo = tl.maximum(i - r, 0)
    hi = tl.minimum(i + r, n - 1)
    return 1.0 / (hi - lo + 1).to(ACC)


@triton.jit
def _rows_kernel(x_ptr, ws_ptr, NROWS, C, H, W, r, sb, sc, sh, sw,
                 BACKWARD: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    t = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = t < NROWS
    y = t % H
    bc = t // H
    base = (bc // C) * sb + (bc % C) * sc + y * sh
    sy = _inv_count(y, H, r, ACC)
    s = tl.zeros([BLOCK], dtype=ACC)
    last = tl.minimum(r, W - 1)
    for i in range(0, last + 1):
        v = tl.load(x_ptr + base + i * sw, mask=m, other=0.0).to(ACC)
        if BACKWARD:
            v = v * sy * _inv_count(i, W, r, ACC)
        s += v
    for i in range(0, W):
        tl.store(ws_ptr + t * W + i, s, mask=m)
        a = t * 0 + (i + r + 1)
        va = tl.load(x_ptr + base + a * sw, mask=m & (a < W), other=0.0).to(ACC)
        d = t * 0 + (i - r)
        vd = tl.load(x_ptr + base + d * sw, mask=m & (d >= 0), other=0.0).to(ACC)
        if BACKWARD:
            va = tl.where(a < W, va * sy * _inv_count(tl.minimum(a, W - 1), W, r, ACC), 0.0)
            vd = tl.where(d >= 0, vd * sy * _inv_count(tl.maximum(d, 0), W, r, ACC), 0.0)
        s += va - vd


@triton.jit
def _cols_kernel(ws_ptr, out_ptr, NCOLS, C, H, W, r, sb, sc, sh, sw,
                 BACKWARD: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    t = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = t < NCOLS
    x = t % W
    bc = t // W
    col = bc * H * W + x
    obase = (bc // C) * sb + (bc % C) * sc + x * sw
    sx = _inv_count(x, W, r, ACC)
    s = tl.zeros([BLOCK], dtype=ACC)
    last = tl.minimum(r, H - 1)
    for i in range(0, last + 1):
        s += tl.load(ws_ptr + col + i * W, mask=m, other=0.0)
    for y in range(0, H):
        if BACKWARD:
            v = s
        else:
            v = s * sx * _inv_count(y, H, r, ACC)
        tl.store(out_ptr + obase + y * sh, v.to(out_ptr.dtype.element_ty), mask=m)
        a = t * 0 + (y + r + 1)
        d = t * 0 + (y - r)
        s += tl.load(ws_ptr + col + a * W, mask=m & (a < H), other=0.0)
        s -= tl.load(ws_ptr + col + d * W, mask=m & (d >= 0), other=0.0)


def _run(x: Tensor, radius: int, backward: bool, out_dtype: torch.dtype | None = None) -> Tensor:
    B, C, H, W = x.shape
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    ACC = tl.float64 if acc == torch.float64 else tl.float32
    ws = torch.empty((B * C * H * W,), dtype=acc, device=x.device)
    out = torch.empty((B, C, H, W), dtype=out_dtype or x.dtype, device=x.device)
    nrows, ncols = B * C * H, B * C * W
    _rows_kernel[(triton.cdiv(nrows, _BLOCK),)](x, ws, nrows, C, H, W, radius, *x.stride(),
                                               BACKWARD=backward, ACC=ACC, BLOCK=_BLOCK)
    _cols_kernel[(triton.cdiv(ncols, _BLOCK),)](ws, out, ncols, C, H, W, radius, *out.stride(),
                                               BACKWARD=backward, ACC=ACC, BLOCK=_BLOCK)
    return out


def forward(x: Tensor, radius: int) -> Tensor:
    return _run(x, radius, False)


def backward(grad_out: Tensor, radius: int) -> Tensor:
    return _run(grad_out, radius, True)
