"""``camfast::box_filter``: the mean over the ``(2r+1)^2`` window, truncated at the borders.

Defined once as a ``torch.library`` custom op with a fake kernel for ``torch.compile`` and an
explicit backward op; the backend (native, triton, reference) is chosen at run time by
``camfast.ops._backend``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from camfast.ops._dispatch import implementation
from camfast.ops._validate import Option, bounded_radius, check_int, check_tensor

_OP = "box_filter"


def _check(x: Tensor, radius: Option, name: str = "x") -> int:
    # Inside the ops (forward: x; backward: grad_out) and their fake kernels: the radius as an int.
    check_tensor(name, x, 4, "[B, C, H, W]")
    return check_int("radius", radius, 0)


@torch.library.custom_op("camfast::box_filter", mutates_args=())
def _forward_op(x: Tensor, radius: Option) -> Tensor:
    radius = _check(x, radius)
    return implementation(_OP, x.device).forward(x, bounded_radius(radius, x.shape[-2], x.shape[-1]))


@_forward_op.register_fake
def _(x: Tensor, radius: Option) -> Tensor:
    _check(x, radius)
    return torch.empty_like(x, memory_format=torch.contiguous_format)  # every backend returns contiguous


@torch.library.custom_op("camfast::box_filter_backward", mutates_args=())
def _backward_op(grad_out: Tensor, radius: Option) -> Tensor:
    radius = _check(grad_out, radius, "grad_out")
    return implementation(_OP, grad_out.device).backward(
        grad_out, bounded_radius(radius, grad_out.shape[-2], grad_out.shape[-1]))


@_backward_op.register_fake
def _(grad_out: Tensor, radius: Option) -> Tensor:
    _check(grad_out, radius, "grad_out")
    return torch.empty_like(grad_out, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output) -> None:
    ctx.radius = inputs[1]


def _autograd_backward(ctx, grad_out: Tensor):
    return _backward_op(grad_out, ctx.radius), None


_forward_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def box_filter(x: Tensor, radius: int) -> Tensor:
    """Box mean of radius ``radius`` with windows truncated at the image border.

    ``out[b, c, y, x] = (1 / N(y, x)) * sum_{|i - y| <= r, |j - x| <= r, inside} x[b, c, i, j]``
    with ``N(y, x) = nh(y) * nw(x)`` the true pixel count of the truncated window
    (METHODS.md, "The guided filter": all its means are this filter). O(1) per pixel whatever
    the radius: running sums (native, Triton) or cumulative sums (reference).

    Args:
        x: ``(B, C, H, W)``, float32, float64, float16 or bfloat16, any strides.
        radius: an int ``>= 0``. ``0`` is the identity. A radius larger than the image is
            allowed: the windows simply truncate, so with ``radius >= H - 1`` every column
            becomes its mean over the whole height (and likewise for ``W``); with both, every
            pixel holds the image mean.

    Returns:
        ``(B, C, H, W)`` in ``x``'s dtype, contiguous; running sums are carried in double
        (native and Triton alike) and each window sum stored once in float32 (float64 for
        float64), so small values after large ones keep their digits; the reference computes
        in float64.

        Differentiable: the backward is the adjoint, the unnormalised box sum of
        ``grad / N`` over the same windows (they are symmetric), also O(1) per pixel.

    Raises:
        TypeError: ``x`` not a floating tensor, ``radius`` not an int.
        ValueError: ``x`` not 4-D or empty, ``radius < 0``.

    Example:
        >>> camfast.ops.box_filter(torch.ones(1, 1, 4, 5), 2).unique()
        tensor([1.])
    """
    _check(x, radius)
    return _forward_op(x, bounded_radius(radius.__index__(), x.shape[-2], x.shape[-1]))
