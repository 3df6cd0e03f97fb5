"""XGrad-CAM (Fu, Hu, Wang, Zhang, Zhou, Su, BMVC 2020; METHODS.md "More per-layer weightings")."""

from __future__ import annotations

from torch import Tensor

from camfast.methods.engine import WeightingRule
from camfast.methods.gradcam import single_layer_cam
from camfast.methods.registry import register


def xgradcam_terms(activation: Tensor, gradient: Tensor) -> Tensor:
    """``T_c = w_c A_c`` with ``w_c = sum_hw(G_c * A_c) / (sum_hw A_c + 1e-7)`` (XGrad-CAM's map is
    ``ReLU(sum_c T_c)``). ``(B, C, h, w) -> (B, C, h, w)``."""
    w = (gradient * activation).sum(dim=(2, 3), keepdim=True) / (activation.sum(dim=(2, 3), keepdim=True) + 1e-7)
    return w * activation


def xgradcam_weights(activation: Tensor, gradient: Tensor) -> Tensor:
    """``M = ReLU(sum_c w_c A_c)`` with ``w_c = sum_hw(G_c * A_c) / (sum_hw A_c + 1e-7)``: the
    gradient weighted by the activation's share of the channel. ``(B, C, h, w) -> (B, h, w)``."""
    return xgradcam_terms(activation, gradient).sum(1).clamp_min(0)


#: fused: ``camfast::grad_weighted_map`` mode ``"xgradcam"`` computes the same map in one pass over
#: ``A`` and ``G`` for the channel sums and one over ``A`` for the map (tests/methods/test_registry.py
#: checks it against :func:`xgradcam_weights` on every backend).
RULE = WeightingRule(xgradcam_weights, kernel_mode="xgradcam", channel_terms=xgradcam_terms)


@register("x-grad-cam", display="XGrad-CAM", kind="gradient", rule=RULE, compat="XGradCAM",
          summary="axiom-based channel weights sum(G*A)/sum(A), one layer (Fu et al. 2020)")
def x_grad_cam(model, x, target=None, layer=None, output_size=None, *, return_layers=False,
               reshape_transform=None, output_fn=None, create_graph=False):
    """XGrad-CAM on one layer (:func:`xgradcam_weights`). Arguments as for :func:`camfast.grad_cam`."""
    return single_layer_cam(model, x, target, layer, RULE, output_size, return_layers, reshape_transform, output_fn,
                            create_graph)
