"""``camfast::neighbour_stencil``: ``a * x + w * (K x) + c``, ``K`` the 3 x 3 binomial window.

The fused step of ROAD's noisy linear imputation (``camfast.evaluation.faithfulness``): its
operator, its residual and a damped Jacobi sweep of its multigrid preconditioner are each
this one op with other coefficient tensors, one pass over the planes instead of the eight to
ten of the same arithmetic written as PyTorch ops. Defined once as a ``torch.library`` custom
op with a fake kernel for ``torch.compile`` and an explicit backward op; the backend (native,
triton, reference) is chosen at run time by ``camfast.ops._backend``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from camfast.ops._dispatch import implementation
from camfast.ops._validate import check_like, check_same, check_tensor

_OP = "neighbour_stencil"
_NAMES = ("x", "a", "w", "c")


def _check(x: Tensor, a: Tensor, w: Tensor, c: Tensor) -> None:
    check_tensor("x", x, 4, "[B, C, H, W]")
    for name, t in zip(_NAMES[1:], (a, w, c)):
        check_tensor(name, t, 4, "[B, C, H, W]")
        check_same(name, t, "x", x)


def _check_backward(grad_out: Tensor, x: Tensor, a: Tensor, w: Tensor) -> None:
    _check(x, a, w, x)
    check_like("grad_out", grad_out, x.shape, "x", x, x.dtype)


@torch.library.custom_op("camfast::neighbour_stencil", mutates_args=())
def _forward_op(x: Tensor, a: Tensor, w: Tensor, c: Tensor) -> Tensor:
    _check(x, a, w, c)
    return implementation(_OP, x.device).forward(x, a, w, c)


@_forward_op.register_fake
def _(x: Tensor, a: Tensor, w: Tensor, c: Tensor) -> Tensor:
    _check(x, a, w, c)
    return torch.empty_like(x, memory_format=torch.contiguous_format)  # every backend returns contiguous


@torch.library.custom_op("camfast::neighbour_stencil_backward", mutates_args=())
def _backward_op(grad_out: Tensor, x: Tensor, a: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    _check_backward(grad_out, x, a, w)
    return implementation(_OP, x.device).backward(grad_out, x, a, w)


@_backward_op.register_fake
def _(grad_out: Tensor, x: Tensor, a: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    _check_backward(grad_out, x, a, w)
    return tuple(torch.empty_like(x, memory_format=torch.contiguous_format) for _ in range(3))


def _setup_context(ctx, inputs, output) -> None:
    x, a, w, _ = inputs
    ctx.save_for_backward(x, a, w)


def _autograd_backward(ctx, grad_out: Tensor):
    x, a, w = ctx.saved_tensors
    dx, da, dw = _backward_op(grad_out.contiguous(), x, a, w)
    need = ctx.needs_input_grad
    return (dx if need[0] else None), (da if need[1] else None), (dw if need[2] else None), \
        (grad_out if need[3] else None)


_forward_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def unchecked_kernel(device: torch.device):
    """The forward of the backend chosen now for ``device`` (``camfast.ops.use_backend``
    honoured), called without the op's checks and ``torch.library`` dispatch: for a solver that
    makes the arguments itself and calls the op thousands of times on small planes (ROAD's
    multigrid), where those cost about 20 us a call. Not differentiable, not traceable by
    ``torch.compile``; arguments as :func:`neighbour_stencil` takes them, unchecked."""
    return implementation(_OP, device).forward


def neighbour_stencil(x: Tensor, a: Tensor, w: Tensor, c: Tensor) -> Tensor:
    """``out = a * x + w * (K x) + c``, elementwise, with ``K`` the binomial 3 x 3 window.

    ``(K x)[b, ch, i, j] = sum_{|di|, |dj| <= 1} k[di] k[dj] x[b, ch, i + di, j + dj]`` with
    ``k = (1, 2, 1)`` (weights 1 2 1 / 2 4 2 / 1 2 1) over the positions inside the image: the
    window is cut at the border (as zero padding). ``a``, ``w`` and ``c`` are per-pixel
    coefficients of ``x``'s shape; pass a constant or a per-image field as a stride-0 view
    (``t.expand_as(x)``), which the kernels read without copying.

    ROAD's 8-neighbour weights (1/6 direct, 1/12 diagonal) are ``(K - 4) / 12``, so its
    imputation operator ``d u - sum_j w_ij u_j`` is ``(d + 1/3) u - (K u) / 12``: ``a = d + 1/3``,
    ``w = -1/12``, ``c = 0``; a damped Jacobi sweep ``u + s (r - A u)`` is ``a = 1 - s (d + 1/3)``,
    ``w = s / 12``, ``c = s r``.

    Args:
        x: ``(B, C, H, W)``, float32, float64, float16 or bfloat16, any strides.
        a, w, c: the same shape, dtype and device as ``x``; any strides (zero included).

    Returns:
        ``(B, C, H, W)`` in ``x``'s dtype, contiguous. The window sum and the combination are
        computed in float32 (float64 for float64 inputs) and stored once; the reference
        computes in float64.

        Differentiable in all four: ``K`` is symmetric, so ``dx = a g + K (w g)``,
        ``da = g x``, ``dw = g (K x)``, ``dc = g``.

    Raises:
        TypeError: a tensor that is not floating, or dtypes that differ.
        ValueError: a tensor not 4-D or empty, shapes or devices that differ (the message
            names the argument).

    Example:
        >>> x = torch.zeros(1, 1, 3, 3); x[0, 0, 1, 1] = 1
        >>> one = torch.ones(()).expand_as(x); zero = torch.zeros(()).expand_as(x)
        >>> camfast.ops.neighbour_stencil(x, zero, one, zero)[0, 0]
        tensor([[1., 2., 1.],
                [2., 4., 2.],
                [1., 2., 1.]])
    """
    _check(x, a, w, c)
    return _forward_op(x, a, w, c)
