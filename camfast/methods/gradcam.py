"""Grad-CAM (Selvaraju et al., ICCV 2017) and HiResCAM (Draelos & Carin 2020) on one layer
(METHODS.md "Grad-CAM")."""

from __future__ import annotations

from torch import Tensor

from camfast.methods.engine import WeightingRule, gradient_cam
from camfast.methods.layers import default_layer
from camfast.methods.registry import register
from camfast.methods.zoomcam import RULE as ELEMENTWISE_RULE


def gradcam_weights(activation: Tensor, gradient: Tensor) -> Tensor:
    """``M = ReLU(sum_c alpha_c A_c)`` with ``alpha_c = mean_hw(G_c)``: one weight per channel.
    ``(B, C, h, w) -> (B, h, w)``."""
    alpha = gradient.mean(dim=(2, 3), keepdim=True)
    return (alpha * activation).sum(1).clamp_min(0)


RULE = WeightingRule(gradcam_weights, kernel_mode="gradcam")


def single_layer_cam(model, x, target, layer, rule: WeightingRule, output_size, return_layers, reshape_transform,
                     output_fn, create_graph):
    """A gradient method on one layer (default: :func:`camfast.methods.layers.default_layer`, the
    last convolutional feature map before the global pooling, the Grad-CAM paper's rule)."""
    if layer is None:
        layer = default_layer(model)
    return gradient_cam(model, x, target, layer, rule, fuse="max", output_size=output_size,
                        return_layers=return_layers, reshape_transform=reshape_transform, output_fn=output_fn,
                        create_graph=create_graph, argument="layer", single=True)


@register("grad-cam", display="Grad-CAM", kind="gradient", rule=RULE, compat="GradCAM",
          summary="channel weights from the spatial mean of the gradient, one layer (Selvaraju et al. 2017)")
def grad_cam(model, x, target=None, layer=None, output_size=None, *, return_layers=False,
             reshape_transform=None, output_fn=None, create_graph=False):
    """Grad-CAM on one layer: ``M = ReLU(sum_c mean_hw(G_c) A_c)`` (:func:`gradcam_weights`).

    ``layer`` (a module name or module) defaults to the paper's choice, the last convolutional
    feature map before the global pooling (:func:`camfast.methods.layers.default_layer`; on
    EfficientNet-Lite0 the head activation, where Grad-CAM equals CAM up to normalisation). The map is min-max normalised and bilinearly upsampled.
    Other arguments as for :func:`camfast.zoom_cam`.
    """
    return single_layer_cam(model, x, target, layer, RULE, output_size, return_layers, reshape_transform, output_fn,
                            create_graph)


@register("hires-cam", display="HiResCAM", kind="gradient", rule=ELEMENTWISE_RULE, compat="HiResCAM",
          summary="element-wise gradient x activation, one layer (Draelos & Carin 2020)")
def hires_cam(model, x, target=None, layer=None, output_size=None, *, return_layers=False,
              reshape_transform=None, output_fn=None, create_graph=False):
    """HiResCAM on one layer: ``M = ReLU(sum_c G_c * A_c)`` (Zoom-CAM's per-layer map,
    :func:`camfast.methods.zoomcam.zoom_weights`, on a single layer). Arguments as for
    :func:`grad_cam`."""
    return single_layer_cam(model, x, target, layer, ELEMENTWISE_RULE, output_size, return_layers,
                            reshape_transform, output_fn, create_graph)
