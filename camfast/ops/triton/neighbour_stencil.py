"""Triton backend of ``camfast::neighbour_stencil``: ``a * x + w * (K x) + c``, ``K`` the 3 x 3 binomial window.

One kernel, ``_stencil_kernel``: each program takes a ``[BLOCK_H, BLOCK_W]`` tile of one
``(b, c)`` plane (the planes and their tiles all on grid axis 0, ``_launch.flat_grid``) and
reads the window as nine masked, shifted tile loads of ``x`` (a neighbour outside the image
loads 0, which is exactly the window cut at the border), then the tile of each coefficient,
and stores the output tile once. Every tensor is read through its own element strides, so
contiguous, channels-last, strided, transposed and stride-0 (expanded) inputs need no copy;
the output is a new contiguous tensor. Offsets are int64 (the program id and the row and
column indices are int64, so ``i * stride`` cannot wrap past 2^31 elements).

The coefficient terms are optional (``HAS_A``, ``HAS_W``, ``HAS_C``: ``a = 0``, ``w = 1``,
``c = 0`` when absent, neither loaded nor multiplied), which is how the backward reuses the
kernel (``K`` is symmetric, see ``camfast/ops/neighbour_stencil.py``):
``dx = K(w g) + a g`` is the kernel on ``x' = w g`` with ``c' = a g``, ``dw = g (K x)`` the
kernel on ``x`` with ``w' = g``, and ``da = g x`` one elementwise product. Leaving a term out
rather than passing a zero keeps ``0 * inf`` out of the gradients (``dw`` at an infinite
``x`` is ``g * inf``, as in the reference, not NaN).

Accuracy: values are loaded and combined in the accumulator dtype (float32; float64 for
float64 inputs; a 16-bit load is widened straight to float32, which the interpreter runs),
the window sum in the native kernels' order (the vertical sums ``x[i-1] + 2 x[i] + x[i+1]``
of three columns, then ``v[j-1] + 2 v[j] + v[j+1]``), and each output is rounded once to its
dtype. For
16-bit inputs the backward forms ``w g`` and ``a g`` in float32 (exact products of two
16-bit values), so ``dx``, ``da`` and ``dw`` are each rounded once. Triton may contract
``a * x + w * k + c`` into fused multiply-adds on a GPU (one rounding fewer than the native
CPU kernel; within the op's tolerances).

Performance (unmeasured on a GPU; only the interpreter has run this kernel): tiles of up
to 2048 elements (up to 128 columns wide), so a warp's loads run along a row when the
input's last stride is 1 and the nine shifted loads of ``x`` overlap in L1/L2: about one
DRAM read per input element and one write per output, at the default four warps. A plane
much smaller than a tile (7 x 7) leaves most lanes masked; packing several planes into a
tile, and the tile shape and warp count, are for ``benchmarks/run.py neighbour_stencil
--device cuda`` (``scripts/gpu-check.sh``) to decide.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from camfast.ops.triton._launch import flat_grid, on_input_device

#: The most elements in a tile, and the widest tile (columns).
_TILE = 2048
_MAX_BLOCK_W = 128


@triton.jit
def _tap(ptr, off, m, ACC: tl.constexpr):
    """The masked tile ``ptr[off]`` in ``ACC`` (0 where ``m`` is false: outside the image)."""
    return tl.load(ptr + off, mask=m, other=0.0).to(ACC)


@triton.jit
def _column_sum(x_ptr, base, up, mid, down, col, mu, mm, md, ACC: tl.constexpr):
    """``x[i-1, j] + 2 x[i, j] + x[i+1, j]`` over the tile for the column offsets ``col``
    (``up``/``mid``/``down`` the row offsets, ``mu``/``mm``/``md`` the masks with the
    columns' folded in)."""
    s = _tap(x_ptr, base + up + col, mu, ACC) + 2.0 * _tap(x_ptr, base + mid + col, mm, ACC)
    return s + _tap(x_ptr, base + down + col, md, ACC)


@triton.jit
def _stencil_kernel(
    x_ptr, a_ptr, w_ptr, c_ptr, out_ptr, C, H, W, TILES_W, TILES,
    sxb, sxc, sxh, sxw, sab, sac, sah, saw, swb, swc, swh, sww, scb, scc, sch, scw,
    HAS_A: tl.constexpr, HAS_W: tl.constexpr, HAS_C: tl.constexpr,
    ACC: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    plane = pid // TILES
    tile = pid % TILES
    b = plane // C
    ch = plane % C
    i = (tile // TILES_W) * BLOCK_H + tl.arange(0, BLOCK_H).to(tl.int64)[:, None]  # [BLOCK_H, 1]
    j = (tile % TILES_W) * BLOCK_W + tl.arange(0, BLOCK_W).to(tl.int64)[None, :]  # [1, BLOCK_W]
    row_in = i < H
    col_in = j < W
    m = row_in & col_in
    # the window's rows and columns, and whether each is inside the image
    mu = row_in & (i >= 1)
    md = (i + 1) < H
    ml = col_in & (j >= 1)
    mr = (j + 1) < W
    base = b * sxb + ch * sxc
    up = (i - 1) * sxh
    mid = i * sxh
    down = (i + 1) * sxh
    left = (j - 1) * sxw
    centre = j * sxw
    right = (j + 1) * sxw
    vl = _column_sum(x_ptr, base, up, mid, down, left, mu & ml, row_in & ml, md & ml, ACC)
    vc = _column_sum(x_ptr, base, up, mid, down, centre, mu & col_in, m, md & col_in, ACC)
    vr = _column_sum(x_ptr, base, up, mid, down, right, mu & mr, row_in & mr, md & mr, ACC)
    out = vl + 2.0 * vc + vr  # (K x) over the tile
    if HAS_W:
        out = _tap(w_ptr, b * swb + ch * swc + i * swh + j * sww, m, ACC) * out
    if HAS_A:
        xv = _tap(x_ptr, base + mid + centre, m, ACC)
        out = _tap(a_ptr, b * sab + ch * sac + i * sah + j * saw, m, ACC) * xv + out
    if HAS_C:
        out = out + _tap(c_ptr, b * scb + ch * scc + i * sch + j * scw, m, ACC)
    tl.store(out_ptr + plane * H * W + i * W + j, out.to(out_ptr.dtype.element_ty), mask=m)


def _acc(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _blocks(H: int, W: int) -> tuple[int, int]:
    """The tile ``(BLOCK_H, BLOCK_W)``: powers of two, at most ``_TILE`` elements, at most
    ``_MAX_BLOCK_W`` wide, and no larger than the plane needs."""
    block_w = min(triton.next_power_of_2(W), _MAX_BLOCK_W)
    block_h = min(triton.next_power_of_2(H), max(_TILE // block_w, 1))
    return block_h, block_w


def _run(x: Tensor, a: Tensor | None, w: Tensor | None, c: Tensor | None, out_dtype: torch.dtype) -> Tensor:
    """``a * x + w * (K x) + c`` (an absent ``a`` or ``c`` is 0, an absent ``w`` is 1) as a new
    contiguous ``out_dtype`` tensor, computed in the accumulator dtype of ``x``."""
    B, C, H, W = x.shape
    out = torch.empty((B, C, H, W), dtype=out_dtype, device=x.device)
    block_h, block_w = _blocks(H, W)
    tiles_w = triton.cdiv(W, block_w)
    tiles = triton.cdiv(H, block_h) * tiles_w
    ACC = tl.float64 if _acc(x) == torch.float64 else tl.float32
    coeffs = [t if t is not None else x for t in (a, w, c)]  # an absent term's pointer is never read
    _stencil_kernel[flat_grid(B * C * tiles, 1)](
        x, *coeffs, out, C, H, W, tiles_w, tiles, *x.stride(), *(s for t in coeffs for s in t.stride()),
        HAS_A=a is not None, HAS_W=w is not None, HAS_C=c is not None, ACC=ACC, BLOCK_H=block_h, BLOCK_W=block_w,
    )
    return out


@on_input_device
def forward(x: Tensor, a: Tensor, w: Tensor, c: Tensor) -> Tensor:
    return _run(x, a, w, c, x.dtype)


@on_input_device
def backward(grad_out: Tensor, x: Tensor, a: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(dx, da, dw) = (K(w g) + a g, g x, g (K x))`` in ``x``'s dtype, contiguous, each
    rounded once: the products of 16-bit values are formed in float32 (exact)."""
    acc = _acc(x)
    g = grad_out.to(acc)
    dx = _run(w.to(acc) * g, None, None, a.to(acc) * g, x.dtype)
    da = torch.mul(g, x.to(acc), out=torch.empty(x.shape, dtype=x.dtype, device=x.device))
    dw = _run(x, None, grad_out, None, x.dtype)
    return dx, da, dw
