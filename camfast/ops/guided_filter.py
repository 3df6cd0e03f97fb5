"""``camfast::guided_filter``: He et al.'s guided filter (scalar or 3-channel guide), fused.

Defined once as a ``torch.library`` custom op with a fake kernel for ``torch.compile`` and an
explicit backward op (gradients with respect to the guide and the source); the backend
(native, triton, reference) is chosen at run time by ``camfast.ops._backend``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from camfast.ops._dispatch import implementation
from camfast.ops._spec import GF_BORDERS
from camfast.ops._validate import (Option, bounded_radius, check_choice, check_int, check_like,
                                   check_positive_float, check_same, check_tensor)
from camfast.ops.reference.guided_filter import low_res_radius, low_res_size

_OP = "guided_filter"


def _check(guide: Tensor, src: Tensor, radius: Option, eps: Option, subsample: Option,
           border: str) -> tuple[int, float, int]:
    # Inside the ops and their fake kernels: (radius, eps, subsample) as int, float, int.
    check_tensor("guide", guide, 4, "[B, 1|3, H, W]")
    check_tensor("src", src, 4, "[B, C, H, W]")
    check_same("src", src, "guide", guide, shape=False)
    if guide.shape[1] not in (1, 3):
        raise ValueError(f"guide must have 1 or 3 channels [B, 1|3, H, W], got shape {tuple(guide.shape)}")
    if src.shape[0] != guide.shape[0] or src.shape[2:] != guide.shape[2:]:
        raise ValueError(f"src has shape {tuple(src.shape)} but guide has {tuple(guide.shape)}; "
                         "batch, height and width must match")
    radius = check_int("radius", radius, 0)
    eps = check_positive_float("eps", eps)
    subsample = check_int("subsample", subsample, 1)
    check_choice("border", border, tuple(GF_BORDERS))
    if border == "reflect":
        h, w = low_res_size(guide.shape[2], guide.shape[3], subsample)
        rr = low_res_radius(radius, subsample)
        if rr >= h or rr >= w:
            raise ValueError(f"border='reflect' needs a radius smaller than the image (kornia's reflect padding): "
                             f"radius {rr} on a {h}x{w} grid; use border='truncate' for larger radii")
    return radius, eps, subsample


def _check_backward(grad_out: Tensor, guide: Tensor, src: Tensor, radius: Option, eps: Option, subsample: Option,
                    border: str) -> tuple[int, float, int]:
    # Inside the backward op and its fake kernel: grad_out is the gradient of the output (src's shape).
    checked = _check(guide, src, radius, eps, subsample, border)
    check_like("grad_out", grad_out, src.shape, "src", src)
    return checked


@torch.library.custom_op("camfast::guided_filter", mutates_args=())
def _forward_op(guide: Tensor, src: Tensor, radius: Option, eps: Option, subsample: Option, border: str) -> Tensor:
    radius, eps, subsample = _check(guide, src, radius, eps, subsample, border)
    radius = bounded_radius(radius, src.shape[-2], src.shape[-1])  # reflect's check allows only smaller radii
    return implementation(_OP, src.device).forward(guide, src, radius, eps, subsample, border)


@_forward_op.register_fake
def _(guide: Tensor, src: Tensor, radius: Option, eps: Option, subsample: Option, border: str) -> Tensor:
    _check(guide, src, radius, eps, subsample, border)
    return src.new_empty(src.shape)


@torch.library.custom_op("camfast::guided_filter_backward", mutates_args=())
def _backward_op(grad_out: Tensor, guide: Tensor, src: Tensor, radius: Option, eps: Option, subsample: Option,
                 border: str, need_guide: bool, need_src: bool) -> tuple[Tensor, Tensor]:
    radius, eps, subsample = _check_backward(grad_out, guide, src, radius, eps, subsample, border)
    radius = bounded_radius(radius, src.shape[-2], src.shape[-1])
    return implementation(_OP, src.device).backward(grad_out, guide, src, radius, eps, subsample, border,
                                                    need_guide, need_src)


@_backward_op.register_fake
def _(grad_out: Tensor, guide: Tensor, src: Tensor, radius: Option, eps: Option, subsample: Option, border: str,
      need_guide: bool, need_src: bool) -> tuple[Tensor, Tensor]:
    _check_backward(grad_out, guide, src, radius, eps, subsample, border)
    return guide.new_empty(guide.shape), src.new_empty(src.shape)


def _setup_context(ctx, inputs, output) -> None:
    guide, src, radius, eps, subsample, border = inputs
    ctx.save_for_backward(guide, src)
    ctx.args = (radius, eps, subsample, border)


def _autograd_backward(ctx, grad_out: Tensor):
    guide, src = ctx.saved_tensors
    need_guide, need_src = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    dg, ds = _backward_op(grad_out, guide, src, *ctx.args, need_guide, need_src)
    return (dg if need_guide else None), (ds if need_src else None), None, None, None, None


_forward_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def guided_filter(guide: Tensor, src: Tensor, radius: int, eps: float, subsample: int = 1,
                  border: str = "truncate") -> Tensor:
    """Edge-preserving smoothing of ``src`` guided by ``guide`` (He, Sun, Tang, PAMI 2013).

    With ``mean`` the box mean of radius ``r`` (``camfast.ops.box_filter``), per pixel::

        scalar guide:  a = cov(I, p) / (var(I) + eps),            b = mean(p) - a mean(I)
        3-ch guide:    Sigma = mean(I I^T) - mu mu^T,  a = (Sigma + eps Id)^-1 (mean(I p) - mu mean(p)),
                       b = mean(p) - a^T mu
        q = mean(a)^T I + mean(b)

    every channel of ``src`` filtered with the same guide; O(1) per pixel whatever the radius.
    On CPU the default is the native C++ kernel, fused: the 3x3 system is solved per pixel in
    closed form (adjugate, in double) while the box sums stream by, so no per-pixel matrix is
    stored. On CUDA the default is the Triton backend's fused kernels (the products, their box
    means, the closed-form solve and the final combination; no per-pixel matrix either), or
    the reference when Triton is not installed: the native backend has no CUDA kernel for
    this op (on CUDA it would run the reference's formulas).

    Args:
        guide: ``(B, 1, H, W)`` or ``(B, 3, H, W)``, the guidance image ``I``.
        src: ``(B, C, H, W)``, the image ``p`` to filter; same batch, size, dtype and device.
            float32, float64, float16 or bfloat16, any strides.
        radius: int ``>= 0``; window ``(2r+1)^2``. ``0`` returns ``src`` (up to rounding).
        eps: float ``> 0``, the regulariser added to ``var(I)`` (to the diagonal of ``Sigma``),
            in the guide's units squared; same meaning as kornia's ``eps``.
        subsample: int ``>= 1``. ``s > 1`` is the fast guided filter (He & Sun 2015): ``I``
            and ``p`` are resized bilinearly (``F.interpolate``, ``align_corners=False``, no
            antialiasing) to ``(ceil(H/s), ceil(W/s))`` (so ``s`` need not divide the size),
            ``a`` and ``b`` are computed there with radius ``max(1, floor(r/s + 1/2))``, their
            means resized bilinearly back to ``(H, W)`` and applied with the full-size guide.
        border: ``"truncate"`` (default): windows cut at the image border, means divided by the
            true pixel count (METHODS.md); any radius, even larger than the image (the windows
            then cover whole rows/columns). ``"reflect"``: kornia's convention, the image
            mirrored (torch ``"reflect"`` padding) and means divided by ``(2r+1)^2``; equals
            ``kornia.filters.guided_blur(guide, src, 2r+1, eps)``; needs ``radius < H, W``
            (at the subsampled size).

    Returns:
        ``(B, C, H, W)`` in ``src``'s dtype, contiguous. The native and Triton kernels share
        one accuracy contract: the guide centred by its per-image, per-channel mean, box sums
        carried and the 3x3 system solved (scaled by ``1 / trace``) in double, values stored
        between the steps in float32 (float64 for float64); the reference computes in
        float64. A window without measurable variance (``var(I) <= 0``; the trace of
        ``Sigma`` for a 3-channel guide) gets ``a = 0``, ``b = mean(p)`` for any ``eps``, so a
        constant guide gives ``mean(mean(p))`` even for ``eps = 1e-30``.

        Differentiable in ``guide`` and ``src``. The gradient with respect to ``src`` is native
        for ``border="truncate"``, ``subsample=1``: the filter is linear in ``src`` and its
        transpose is ``N * guided_filter(guide, grad / N)`` (N the window pixel counts). The
        gradient with respect to ``guide``, and every gradient for ``"reflect"`` or
        ``subsample > 1``, comes from autograd of the float64 reference on every backend.

    Raises:
        TypeError: non-tensors, non-floating or mismatched dtypes, a non-int radius/subsample.
        ValueError: wrong ranks, a guide with other than 1 or 3 channels, mismatched batch or
            size, devices that differ, ``radius < 0``, ``eps <= 0`` or not finite,
            ``subsample < 1``, an unknown ``border``, ``"reflect"`` with a radius too large.

    Example:
        >>> img = torch.rand(1, 3, 64, 64); cam = torch.rand(1, 1, 64, 64)
        >>> camfast.ops.guided_filter(img, cam, radius=4, eps=1e-2).shape
        torch.Size([1, 1, 64, 64])
    """
    _check(guide, src, radius, eps, subsample, border)
    radius = bounded_radius(radius.__index__(), src.shape[-2], src.shape[-1])
    return _forward_op(guide, src, radius, float(eps), subsample.__index__(), border)
