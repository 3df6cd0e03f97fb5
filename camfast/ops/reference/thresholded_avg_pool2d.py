"""Reference (pure PyTorch) forward and backward of ``camfast::thresholded_avg_pool2d``.

Thresholded average pooling (TAP; Bae, Noh, Kim, "Rethinking Class Activation Mapping for
Weakly Supervised Object Localization", ECCV 2020), per sample ``b`` and channel ``k`` of
``f = x[b, k]``::

    tau_k    = theta * max_hw f_k
    keep     = f_k > tau_k                      (strict)
    N_k      = count(keep), 1 when nothing is kept
    pooled_k = sum_hw(f_k * keep) / N_k
    d pooled_k / d f_k(x) = keep(x) / N_k       (no gradient through tau or N)

Non-finite channels: when ``max_hw f_k`` is not finite (a NaN anywhere in the channel, a
``+inf``, or a channel that is all ``-inf``) the channel pools to NaN and gets a zero
gradient (``f > tau`` is false everywhere then). A ``-inf`` in a channel whose maximum is
finite is simply not kept.

The forward also returns the two per-channel statistics the backward needs, ``tau`` and
``N`` (``[B, C]`` in the accumulation dtype), so the backward is one pass over ``x``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _acc_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def forward(x: Tensor, theta: float) -> tuple[Tensor, Tensor, Tensor]:
    """``[B,C,H,W] -> (pooled [B,C] in x's dtype, tau [B,C], count [B,C])`` (tau and count in
    float32, float64 for float64 input)."""
    f = x.to(_acc_dtype(x))
    mx = f.amax(dim=(2, 3))  # NaN-propagating
    tau = mx * theta
    keep = f > tau[:, :, None, None]
    count = keep.sum(dim=(2, 3)).to(f.dtype).clamp_min(1.0)
    pooled = torch.where(keep, f, 0.0).sum(dim=(2, 3)) / count
    pooled = torch.where(torch.isfinite(mx), pooled, float("nan"))
    return pooled.to(x.dtype), tau, count


def backward(grad_out: Tensor, x: Tensor, tau: Tensor, count: Tensor) -> Tensor:
    """``dx = grad_out[b, k] * [x > tau_k] / N_k``, in x's dtype and shape (and layout)."""
    f = x.to(_acc_dtype(x))
    scale = (grad_out.to(f.dtype) / count)[:, :, None, None]
    grad = torch.where(f > tau[:, :, None, None], scale, 0.0)
    out = torch.empty_like(x)
    out.copy_(grad)
    return out
