"""Zoom-CAM (Shi, Khademi, Li, Xu, ICPR 2020; ``seeds/001``; METHODS.md "Zoom-CAM").

Per-activation gradient weighting over all layers, fused by element-wise max.
"""

from __future__ import annotations

from torch import Tensor

from camfast.methods.engine import WeightingRule, gradient_cam
from camfast.methods.registry import register


def zoom_terms(activation: Tensor, gradient: Tensor) -> Tensor:
    """``T_c = G_c * A_c`` (Zoom-CAM's and HiResCAM's map is ``ReLU(sum_c T_c)``).
    ``(B, C, h, w) -> (B, C, h, w)``."""
    return gradient * activation


def zoom_weights(activation: Tensor, gradient: Tensor) -> Tensor:
    """``M_l = ReLU(sum_c G_c * A_c)``: each activation weighted by its own gradient
    (METHODS.md "Zoom-CAM", eq. 2; the same map as HiResCAM's). ``(B, C, h, w) -> (B, h, w)``."""
    return zoom_terms(activation, gradient).sum(1).clamp_min(0)


RULE = WeightingRule(zoom_weights, kernel_mode="zoom", channel_terms=zoom_terms)


@register("zoom-cam", display="Zoom-CAM", kind="gradient", rule=RULE, multi_layer=True, compat="ZoomCAM",
          summary="per-activation gradient weighting, every layer fused by max (Shi et al. 2020)")
def zoom_cam(model, x, target=None, layers=None, fuse="max", output_size=None, *, return_layers=False,
             reshape_transform=None, output_fn=None, create_graph=False):
    """Zoom-CAM: per-activation gradient weighting over all layers.

    For each layer ``l``: ``M_l = ReLU(sum_c G_c * A_c)`` (:func:`zoom_weights`), min-max
    normalised, bilinearly upsampled to the output size and fused by element-wise max
    (``fuse="max"``, the paper's choice) or mean; the result is normalised to [0, 1].

    Args:
        model: classifier returning ``(B, num_classes)`` scores (or use ``output_fn``).
        x: ``(B, 3, H, W)`` images, on the model's device. Need not require grad; may be
            called inside ``torch.no_grad()`` and under autocast.
        target: None (each sample's top class), an int, one class per sample (sequence or
            1-D tensor), or callables taking one sample's output and returning a scalar
            (pytorch-grad-cam's ``ClassifierOutputTarget`` works unchanged).
        layers: module names or modules; None uses ``camfast.find_layers(model)``.
        fuse: ``"max"`` or ``"mean"``.
        output_size: ``(H, W)`` of the result; defaults to the input's.
        return_layers: return a :class:`~camfast.methods.engine.CAMResult` with the
            per-layer maps too.
        reshape_transform: turns a layer output (and its gradient) into ``(B, C, h, w)``,
            e.g. for vision-transformer tokens.
        output_fn: picks the class scores from a model output that is not a tensor.
        create_graph: keep the maps differentiable (for training losses).

    Returns:
        ``(B, H, W)`` float32 in [0, 1] (a constant map is all zeros), or a ``CAMResult``.

    Example:
        >>> cam = camfast.zoom_cam(model.eval(), images)   # (B, H, W)
    """
    return gradient_cam(model, x, target, layers, RULE, fuse=fuse, output_size=output_size,
                        return_layers=return_layers, reshape_transform=reshape_transform, output_fn=output_fn,
                        create_graph=create_graph)
