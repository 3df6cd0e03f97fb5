"""``camfast::thresholded_avg_pool2d``: thresholded average pooling (TAP, Rethinking CAM).

Defined once as a ``torch.library`` custom op with a fake (meta) kernel for
``torch.compile`` and an explicit backward op. The backend (native, triton, reference) is
chosen at run time by ``camfast.ops._backend``.

The op returns ``(pooled, tau, count)``: the per-channel threshold and kept count are
saved for the backward, which is then one pass over ``x`` (``dx = dy * [x > tau] / N``).
The public function returns ``pooled`` only.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from camfast.ops._dispatch import implementation
from camfast.ops._validate import Option, check_is_tensor, check_like, check_tensor

_OP = "thresholded_avg_pool2d"


def check_theta(theta: object) -> float:
    """``theta`` as a float in [0, 1] (TAP's threshold ratio), else a TypeError/ValueError naming it."""
    if isinstance(theta, bool) or not isinstance(theta, numbers.Real):
        raise TypeError(f"theta must be a float in [0, 1], got {type(theta).__name__}")
    theta = float(theta)
    if not (0.0 <= theta <= 1.0):  # also rejects NaN
        raise ValueError(f"theta must be a float in [0, 1], got {theta!r}")
    return theta


def _check(x: Tensor, theta: Option) -> float:
    # Runs inside the op (eager) and its fake kernel (torch.compile): theta as a float.
    check_tensor("x", x, 4, "[B, C, H, W]")
    return check_theta(theta)


def _acc(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check_backward(grad_out: Tensor, x: Tensor, tau: Tensor, count: Tensor) -> None:
    # Inside the backward op and its fake kernel: tau and count are the forward's outputs
    # ([B, C] in the accumulator dtype), grad_out the gradient of pooled.
    check_tensor("x", x, 4, "[B, C, H, W]")
    B, C = x.shape[0], x.shape[1]
    check_like("grad_out", grad_out, (B, C), "x", x)
    check_like("tau", tau, (B, C), "x", x, dtype=_acc(x))
    check_like("count", count, (B, C), "x", x, dtype=_acc(x))


@torch.library.custom_op("camfast::thresholded_avg_pool2d", mutates_args=())
def _forward_op(x: Tensor, theta: Option) -> tuple[Tensor, Tensor, Tensor]:
    theta = _check(x, theta)
    return implementation(_OP, x.device).forward(x, theta)


@_forward_op.register_fake
def _(x: Tensor, theta: Option) -> tuple[Tensor, Tensor, Tensor]:
    _check(x, theta)
    B, C = x.shape[0], x.shape[1]
    return x.new_empty((B, C)), x.new_empty((B, C), dtype=_acc(x)), x.new_empty((B, C), dtype=_acc(x))


@torch.library.custom_op("camfast::thresholded_avg_pool2d_backward", mutates_args=())
def _backward_op(grad_out: Tensor, x: Tensor, tau: Tensor, count: Tensor) -> Tensor:
    _check_backward(grad_out, x, tau, count)
    return implementation(_OP, x.device).backward(grad_out, x, tau, count)


@_backward_op.register_fake
def _(grad_out: Tensor, x: Tensor, tau: Tensor, count: Tensor) -> Tensor:
    _check_backward(grad_out, x, tau, count)
    return torch.empty_like(x)


def _setup_context(ctx, inputs, output) -> None:
    x, _ = inputs
    _, tau, count = output
    ctx.save_for_backward(x, tau, count)
    ctx.mark_non_differentiable(tau, count)


def _autograd_backward(ctx, grad_out: Tensor, _grad_tau, _grad_count):
    x, tau, count = ctx.saved_tensors
    return _backward_op(grad_out, x, tau, count), None


_forward_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def thresholded_avg_pool2d(x: Tensor, theta: float = 0.1) -> Tensor:
    """Thresholded average pooling (TAP) of every channel to one value.

    Bae, Noh, Kim, "Rethinking Class Activation Mapping for Weakly Supervised Object
    Localization" (ECCV 2020), a replacement for global average pooling. For each sample
    and channel ``f_k = x[b, k]``::

        tau_k    = theta * max_hw f_k
        keep     = f_k > tau_k                  (strict: a value equal to tau is not kept)
        N_k      = count(keep), or 1 when nothing is kept (the channel then pools to 0)
        pooled_k = sum_hw(f_k * keep) / N_k

    Fused: one pass over a channel finds its maximum, a second sums and counts the kept
    values (the plane is still in cache); the backward writes ``dy * keep / N`` in one pass.

    ``theta = 0`` keeps the strictly positive values (``f > 0``); ``theta = 1`` keeps
    nothing (no value exceeds the maximum), so every finite channel pools to 0. A channel
    whose maximum is ``<= 0`` (all zero, or all negative) keeps nothing and pools to 0 with
    a zero gradient: for ``max < 0``, ``tau = theta * max >= max`` (``0 <= theta <= 1``),
    so no value is above it although ``tau`` is negative.
    Non-finite channels: if ``max_hw f_k`` is NaN (any NaN in the channel), ``+inf``, or
    ``-inf`` (all ``-inf``) the channel pools to **NaN** with a zero gradient; a ``-inf`` in
    a channel with a finite maximum is not kept. The same on every backend.

    Args:
        x: ``(B, C, H, W)`` float32, float64, float16 or bfloat16; any strides
            (contiguous, channels-last, sliced views).
        theta: a float in ``[0, 1]`` (default 0.1, the paper's).

    Returns:
        ``(B, C)`` in ``x``'s dtype; sums and the threshold are computed in float32
        (float64 for float64 input). Differentiable in ``x``: ``d pooled_k / d f_k(p) =
        keep(p) / N_k``, no gradient through ``tau`` or ``N``; the gradient has ``x``'s
        layout (channels-last stays channels-last).

    Raises:
        TypeError: ``x`` not a tensor or not floating, ``theta`` not a real number.
        ValueError: a rank other than 4, an empty tensor, ``theta`` outside ``[0, 1]`` or NaN.

    Example:
        >>> f = torch.relu(torch.randn(2, 512, 7, 7))
        >>> camfast.ops.thresholded_avg_pool2d(f, theta=0.1).shape
        torch.Size([2, 512])
    """
    check_is_tensor("x", x)
    theta = check_theta(theta)
    return _forward_op(x, theta)[0]
