"""Reference ``camfast::neighbour_stencil``: ``a * x + w * (K x) + c`` with ``K`` the 3 x 3
binomial window ``[1, 2, 1]^T [1, 2, 1]`` cut at the image border.

Plain PyTorch: ``K x`` is a depthwise ``conv2d`` of the zero-padded planes (the padding is
exactly the truncation: positions outside the image contribute nothing). Computed in float64
whatever the input dtype, then cast back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: The window's weights: the outer product of ``[1, 2, 1]`` with itself (centre 4, sum 16).
WEIGHTS = ((1.0, 2.0, 1.0), (2.0, 4.0, 2.0), (1.0, 2.0, 1.0))


def window_sum(x: Tensor) -> Tensor:
    """``(K x)[b, c, i, j] = sum_{|di|, |dj| <= 1, inside} k[di] k[dj] x[b, c, i + di, j + dj]``
    for ``x (B, C, H, W)``, in ``x``'s dtype."""
    B, C, H, W = x.shape
    k = torch.tensor(WEIGHTS, dtype=x.dtype, device=x.device).view(1, 1, 3, 3)
    return F.conv2d(x.reshape(B * C, 1, H, W), k, padding=1).reshape(B, C, H, W)


def forward(x: Tensor, a: Tensor, w: Tensor, c: Tensor) -> Tensor:
    xd = x.double()
    out = a.double() * xd + w.double() * window_sum(xd) + c.double()
    return out.to(x.dtype).contiguous()


def backward(grad_out: Tensor, x: Tensor, a: Tensor, w: Tensor) -> tuple[Tensor, ...]:
    """``(dx, da, dw)``: ``K`` is symmetric (``j`` is in ``i``'s window iff ``i`` is in
    ``j``'s, with the same weight), so ``dx = a g + K (w g)``; ``da = g x``; ``dw = g (K x)``.
    (``dc = g``.)"""
    g = grad_out.double()
    xd, ad, wd = x.double(), a.double(), w.double()
    dx = ad * g + window_sum(wd * g)
    return tuple(t.to(x.dtype).contiguous() for t in (dx, g * xd, g * window_sum(xd)))
