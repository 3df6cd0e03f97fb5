"""Grad-CAM++ (Chattopadhay, Sarkar, Howlader, Balasubramanian, WACV 2018; METHODS.md "More
per-layer weightings"), with pytorch-grad-cam 1.5.7's closed form of the paper's eq. 19."""

from __future__ import annotations

import torch
from torch import Tensor

from camfast.methods.engine import WeightingRule
from camfast.methods.gradcam import single_layer_cam
from camfast.methods.registry import register

#: The constant in the denominator of ``alpha`` (pytorch-grad-cam's ``eps``).
EPS = 1e-6


def gradcampp_terms(activation: Tensor, gradient: Tensor) -> Tensor:
    """``T_c = w_c A_c`` with Grad-CAM++'s channel weight (eq. 19, exponential output assumed)::

        alpha = G^2 / (2 G^2 + (sum_hw A_c) G^3 + 1e-6),   alpha = 0 where G == 0
        w_c   = sum_hw ReLU(G) * alpha

    ``(B, C, h, w) -> (B, C, h, w)``; the map is ``ReLU(sum_c T_c)`` (:func:`gradcampp_weights`).
    The weights are computed in float64: the denominator cancels where ``(sum A) G`` nears
    ``-2`` (activations that are not non-negative, e.g. a linear bottleneck's), which turns
    float32 rounding of the sums into visible differences of the map.
    """
    a = activation.double()
    g = gradient.double()
    g2 = g * g
    alpha = g2 / (2 * g2 + a.sum(dim=(2, 3), keepdim=True) * (g2 * g) + EPS)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    w = (g.clamp_min(0) * alpha).sum(dim=(2, 3), keepdim=True)
    return (w * a).to(activation.dtype)


def gradcampp_weights(activation: Tensor, gradient: Tensor) -> Tensor:
    """Grad-CAM++'s map ``M = ReLU(sum_c w_c A_c)`` with ``w_c`` of :func:`gradcampp_terms`.
    ``(B, C, h, w) -> (B, h, w)``."""
    return gradcampp_terms(activation, gradient).sum(1).clamp_min(0)


#: Not routed to the fused ``camfast::grad_weighted_map`` mode ``"gradcampp"``: that kernel
#: computes the weights in float32 (channel sums in double), and near the pole ``S_c G = -2``
#: its map differs from this float64-weight rule by up to 2.6e-5 relative (zero-mean test
#: activations), more than pytorch-grad-cam parity (1e-5) allows on real models. The mode is
#: there for direct use (``camfast.ops.grad_weighted_map(a, g, "gradcampp")``), tested against
#: the op's reference.
RULE = WeightingRule(gradcampp_weights, channel_terms=gradcampp_terms)


@register("grad-cam-plus-plus", display="Grad-CAM++", kind="gradient", rule=RULE, compat="GradCAMPlusPlus",
          summary="channel weights from positive gradients weighted by second/third-order terms, one layer "
                  "(Chattopadhay et al. 2018)")
def grad_cam_plus_plus(model, x, target=None, layer=None, output_size=None, *, return_layers=False,
                       reshape_transform=None, output_fn=None, create_graph=False):
    """Grad-CAM++ on one layer (:func:`gradcampp_weights`), or on a list of layers fused by max.

    Arguments and result as for :func:`camfast.grad_cam`.

    Example:
        >>> cams = camfast.grad_cam_plus_plus(model.eval(), images, target=281)  # (B, H, W)
    """
    return single_layer_cam(model, x, target, layer, RULE, output_size, return_layers, reshape_transform, output_fn,
                            create_graph)
