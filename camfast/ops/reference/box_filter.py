"""Reference ``camfast::box_filter``: the mean over truncated ``(2r+1)^2`` windows.

Plain PyTorch and valid for any radius: window sums are differences of a cumulative sum at
clamped indices, divided by the true pixel count of each (border-truncated) window. (Not
``F.avg_pool2d(padding=r, count_include_pad=False)``: it needs ``r <= kernel // 2`` and
``r < size``, so it cannot express a radius larger than the image.) Computed in float64
whatever the input dtype (prefix sums lose digits in float32), then cast back.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _axis_windows(n: int, r: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """For each position i of an axis of n pixels: the window [lo, hi) = [max(i-r,0), min(i+r,n-1)+1)."""
    i = torch.arange(n, device=device)
    return (i - r).clamp(min=0), (i + r).clamp(max=n - 1) + 1


def box_sum(x: Tensor, r: int, dim: int) -> tuple[Tensor, Tensor]:
    """Truncated window sums of ``x`` along ``dim`` and the window sizes (an int64 vector)."""
    n = x.shape[dim]
    lo, hi = _axis_windows(n, r, x.device)
    zero = torch.zeros_like(x.narrow(dim, 0, 1))
    prefix = torch.cat([zero, torch.cumsum(x, dim)], dim)
    return prefix.index_select(dim, hi) - prefix.index_select(dim, lo), hi - lo


def counts(H: int, W: int, r: int, device: torch.device) -> Tensor:
    """N[y, x]: pixels in the truncated window around (y, x), float64 ``[H, W]``."""
    lo, hi = _axis_windows(H, r, device)
    nh = (hi - lo).double()
    lo, hi = _axis_windows(W, r, device)
    nw = (hi - lo).double()
    return nh[:, None] * nw[None, :]


def box_mean(x: Tensor, r: int) -> Tensor:
    """``out[..., y, x] = mean of x over |i-y| <= r, |j-x| <= r`` inside the image (any dtype kept)."""
    s, _ = box_sum(x, r, -2)
    s, _ = box_sum(s, r, -1)
    return s / counts(x.shape[-2], x.shape[-1], r, x.device).to(x.dtype)


def forward(x: Tensor, radius: int) -> Tensor:
    return box_mean(x.double(), radius).to(x.dtype)


def backward(grad_out: Tensor, radius: int) -> Tensor:
    """The adjoint: the windows are symmetric, so dx = (unnormalised box sum)(grad / N)."""
    g = grad_out.double() / counts(grad_out.shape[-2], grad_out.shape[-1], radius, grad_out.device)
    s, _ = box_sum(g, radius, -2)
    s, _ = box_sum(s, radius, -1)
    return s.to(grad_out.dtype)
