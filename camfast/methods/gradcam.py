"""Grad-CAM (Selvaraju et al., ICCV 2017) and HiResCAM (Draelos & Carin 2020) on one layer
(METHODS.md "Grad-CAM")."""

from __future__ import annotations

from torch import Tensor, nn

from camfast.methods.engine import WeightingRule, gradient_cam
from camfast.methods.layers import default_layer
from camfast.methods.registry import register
from camfast.methods.zoomcam import RULE as ELEMENTWISE_RULE


def gradcam_terms(activation: Tensor, gradient: Tensor) -> Tensor:
    """``T_c = alpha_c A_c`` with ``alpha_c = mean_hw(G_c)`` (Grad-CAM's map is ``ReLU(sum_c T_c)``).
    ``(B, C, h, w) -> (B, C, h, w)``."""
    return gradient.mean(dim=(2, 3), keepdim=True) * activation


def gradcam_weights(activation: Tensor, gradient: Tensor) -> Tensor:
    """``M = ReLU(sum_c alpha_c A_c)`` with ``alpha_c = mean_hw(G_c)``: one weight per channel.
    ``(B, C, h, w) -> (B, h, w)``."""
    return gradcam_terms(activation, gradient).sum(1).clamp_min(0)


RULE = WeightingRule(gradcam_weights, kernel_mode="gradcam", channel_terms=gradcam_terms)


def check_layer_choice(layer: object) -> None:
    """``layer`` of a one-layer method: None, a module name or module, or a list/tuple of them."""
    if layer is not None and not isinstance(layer, (str, nn.Module, list, tuple)):
        raise TypeError(f"layer must be a module name, an nn.Module or a list of them, got {type(layer).__name__}")


def single_layer_cam(model, x, target, layer, rule: WeightingRule, output_size, return_layers, reshape_transform,
                     output_fn, create_graph):
    """A gradient method on one layer (default: :func:`camfast.methods.layers.default_layer`, the
    last convolutional feature map before the global pooling, the Grad-CAM paper's rule), or on
    a list of layers whose maps are fused by max as :func:`camfast.zoom_cam` fuses them."""
    check_layer_choice(layer)
    return gradient_cam(model, x, target, default_layer(model) if layer is None else layer, rule, fuse="max",
                        output_size=output_size, return_layers=return_layers, reshape_transform=reshape_transform,
                        output_fn=output_fn, create_graph=create_graph, argument="layer")


@register("grad-cam", display="Grad-CAM", kind="gradient", rule=RULE, compat="GradCAM",
          summary="channel weights from the spatial mean of the gradient, one layer (Selvaraju et al. 2017)")
def grad_cam(model, x, target=None, layer=None, output_size=None, *, return_layers=False,
             reshape_transform=None, output_fn=None, create_graph=False):
    """Grad-CAM on one layer: ``M = ReLU(sum_c mean_hw(G_c) A_c)`` (:func:`gradcam_weights`).

    ``layer`` (a module name or module) defaults to the paper's choice, the last convolutional
    feature map before the global pooling (:func:`camfast.methods.layers.default_layer`; on
    EfficientNet-Lite0 the head activation, where Grad-CAM equals CAM up to normalisation); a
    list of layers gives their maps fused by max (as :func:`camfast.zoom_cam`). The map is
    min-max normalised and bilinearly upsampled.
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
