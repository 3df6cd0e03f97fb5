"""``camfast::grad_weighted_map``: the per-layer map of Grad-CAM, Zoom-CAM, LayerCAM, Grad-CAM++
and XGrad-CAM.

Defined once as a ``torch.library`` custom op with a fake (meta) kernel for
``torch.compile`` and an explicit backward op. The backend (native, triton, reference) is
chosen at run time by ``camfast.ops._backend``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from camfast.ops._dispatch import implementation
from camfast.ops._spec import GWM_MODES
from camfast.ops._validate import check_choice, check_is_tensor, check_like, check_same, check_tensor

_OP = "grad_weighted_map"


def _check(activation: Tensor, gradient: Tensor, mode: str) -> None:
    # Runs inside the op (eager) and its fake kernel (torch.compile): direct calls of
    # torch.ops.camfast.grad_weighted_map are checked too, before any kernel sees the data.
    check_tensor("activation", activation, 4, "[B, C, H, W]")
    check_tensor("gradient", gradient, 4, "[B, C, H, W]")
    check_same("gradient", gradient, "activation", activation)
    check_choice("mode", mode, tuple(GWM_MODES))


def _check_backward(grad_out: Tensor, activation: Tensor, gradient: Tensor, out: Tensor, mode: str) -> None:
    # Inside the backward op and its fake kernel: a direct call of
    # torch.ops.camfast.grad_weighted_map_backward is checked before a kernel reads or writes.
    _check(activation, gradient, mode)
    B, _, H, W = activation.shape
    check_like("grad_out", grad_out, (B, H, W), "activation", activation)
    check_like("out", out, (B, H, W), "activation", activation, dtype=activation.dtype)


@torch.library.custom_op("camfast::grad_weighted_map", mutates_args=())
def _forward_op(activation: Tensor, gradient: Tensor, mode: str) -> Tensor:
    _check(activation, gradient, mode)
    return implementation(_OP, activation.device).forward(activation, gradient, mode)


@_forward_op.register_fake
def _(activation: Tensor, gradient: Tensor, mode: str) -> Tensor:
    _check(activation, gradient, mode)
    B, _, H, W = activation.shape
    return activation.new_empty((B, H, W))


@torch.library.custom_op("camfast::grad_weighted_map_backward", mutates_args=())
def _backward_op(grad_out: Tensor, activation: Tensor, gradient: Tensor, out: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    _check_backward(grad_out, activation, gradient, out, mode)
    return implementation(_OP, activation.device).backward(grad_out, activation, gradient, out, mode)


@_backward_op.register_fake
def _(grad_out: Tensor, activation: Tensor, gradient: Tensor, out: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    _check_backward(grad_out, activation, gradient, out, mode)
    return torch.empty_like(activation), torch.empty_like(gradient)


def _setup_context(ctx, inputs, output) -> None:
    activation, gradient, mode = inputs
    ctx.save_for_backward(activation, gradient, output)
    ctx.mode = mode


def _autograd_backward(ctx, grad_out: Tensor):
    activation, gradient, out = ctx.saved_tensors
    grad_a, grad_g = _backward_op(grad_out, activation, gradient, out, ctx.mode)
    return (
        grad_a if ctx.needs_input_grad[0] else None,
        grad_g if ctx.needs_input_grad[1] else None,
        None,
    )


_forward_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def grad_weighted_map(activation: Tensor, gradient: Tensor, mode: str = "zoom") -> Tensor:
    """Per-layer class activation map from an activation and its gradient.

    With ``A = activation`` and ``G = gradient = dS/dA`` (``S`` the target class score):

    * ``"zoom"``     : ``M = ReLU(sum_c G_c * A_c)`` -- Zoom-CAM's per-activation weighting
      (Shi et al., ICPR 2020; the same map as HiResCAM). One fused pass over ``A`` and ``G``.
    * ``"gradcam"``  : ``M = ReLU(sum_c mean_hw(G_c) * A_c)`` -- Grad-CAM (Selvaraju et al. 2017).
      One pass over ``G`` for the channel weights, one over ``A``.
    * ``"layercam"`` : ``M = ReLU(sum_c ReLU(G_c) * A_c)`` -- LayerCAM (Jiang et al. 2021).
    * ``"gradcampp"``: ``M = ReLU(sum_c w_c * A_c)`` with ``w_c = sum_hw ReLU(G) * a`` and
      ``a = G^2 / (2 G^2 + (sum_hw A_c) G^3 + 1e-6)``, ``a = 0`` where ``G == 0`` -- Grad-CAM++
      (Chattopadhay et al. 2018, eq. 19; METHODS.md "More per-layer weightings").
    * ``"xgradcam"`` : ``M = ReLU(sum_c w_c * A_c)`` with
      ``w_c = sum_hw(G * A) / (sum_hw A_c + 1e-7)`` -- XGrad-CAM (Fu et al. 2020).

    The last three weight each channel by one number: one pass over ``A`` and ``G`` for the
    channel sums, one over ``A`` for the map. The epsilons are pytorch-grad-cam 1.5.7's.

    Args:
        activation: ``(B, C, H, W)`` float32, float64, float16 or bfloat16; any strides
            (contiguous, channels-last, sliced views).
        gradient: same shape, dtype and device as ``activation``.
        mode: ``"zoom"``, ``"gradcam"``, ``"layercam"``, ``"gradcampp"`` or ``"xgradcam"``.

    Returns:
        ``(B, H, W)`` map in the input dtype, non-negative (NaN inputs propagate).
        Accumulation is in float32 (float64 for float64 inputs). Differentiable with
        respect to both inputs; the ReLU's derivative at 0 is taken as 0.

    Raises:
        TypeError: a non-tensor, an integer or complex dtype, or mismatched dtypes.
        ValueError: a rank other than 4, mismatched shapes or devices, an empty tensor,
            or an unknown mode.

    Example:
        >>> a = torch.randn(2, 64, 14, 14)
        >>> g = torch.randn(2, 64, 14, 14)
        >>> camfast.ops.grad_weighted_map(a, g, "zoom").shape
        torch.Size([2, 14, 14])
    """
    # Types the op schema cannot take (a list, an int mode) are caught here; everything else
    # is checked once, inside the op.
    check_is_tensor("activation", activation)
    check_is_tensor("gradient", gradient)
    check_choice("mode", mode, tuple(GWM_MODES))
    return _forward_op(activation, gradient, mode)
