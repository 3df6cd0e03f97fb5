"""LayerCAM (Jiang, Zhang, Hou, Cheng, Wei, TIP 2021; METHODS.md "LayerCAM")."""

from __future__ import annotations

from torch import Tensor

from camfast.methods.engine import WeightingRule, gradient_cam
from camfast.methods.registry import register


def layercam_terms(activation: Tensor, gradient: Tensor) -> Tensor:
    """``T_c = ReLU(G_c) * A_c`` (LayerCAM's map is ``ReLU(sum_c T_c)``). ``(B, C, h, w) -> (B, C, h, w)``."""
    return gradient.clamp_min(0) * activation


def layercam_weights(activation: Tensor, gradient: Tensor) -> Tensor:
    """``M_l = ReLU(sum_c ReLU(G_c) * A_c)``: only positive gradients weight the activations.
    ``(B, C, h, w) -> (B, h, w)``."""
    return layercam_terms(activation, gradient).sum(1).clamp_min(0)


RULE = WeightingRule(layercam_weights, kernel_mode="layercam", channel_terms=layercam_terms)


@register("layer-cam", display="LayerCAM", kind="gradient", rule=RULE, multi_layer=True, compat="LayerCAM",
          summary="positive-gradient weighting per location, every layer fused by max (Jiang et al. 2021)")
def layer_cam(model, x, target=None, layers=None, fuse="max", output_size=None, *, return_layers=False,
              reshape_transform=None, output_fn=None, create_graph=False):
    """LayerCAM: ``M_l = ReLU(sum_c ReLU(G_c) * A_c)`` per layer (:func:`layercam_weights`),
    fused like :func:`camfast.zoom_cam`. Arguments and result as for :func:`camfast.zoom_cam`."""
    return gradient_cam(model, x, target, layers, RULE, fuse=fuse, output_size=output_size,
                        return_layers=return_layers, reshape_transform=reshape_transform, output_fn=output_fn,
                        create_graph=create_graph)
