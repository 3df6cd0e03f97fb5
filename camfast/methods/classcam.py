"""CAM (Zhou, Khosla, Lapedriza, Oliva, Torralba, CVPR 2016) from the classifier weights, and
its negative-weight-clamping variant NWC (Bae, Noh, Kim, ECCV 2020; METHODS.md "CAM" and
"Rethinking-CAM")."""

from __future__ import annotations

import torch
from torch import Tensor

from camfast.methods.engine import CAMResult, check_input, classifier_head, pooled_features, result_size, unit_scale
from camfast.methods.registry import register, register_variant
from camfast.methods.targets import class_names_of, class_sets, is_multi_target, target_indices
from camfast.ops import upsample_aggregate


def cam_weights(features: Tensor, weight: Tensor, clamp_negative_weights: bool = False) -> Tensor:
    """``M = sum_c W[target, c] * F_c`` for features ``(B, C, h, w)`` and the target rows of the
    classifier weight ``(B, C)``; ``max(W, 0)`` with ``clamp_negative_weights`` (NWC)."""
    if clamp_negative_weights:
        weight = weight.clamp_min(0)
    return torch.einsum("bchw,bc->bhw", features.to(torch.float32), weight.to(torch.float32))


@register("cam", display="CAM", kind="classifier-weight", raw_map=True,
          summary="classifier weights times the features before global pooling (Zhou et al. 2016)")
def cam(model, x, target=None, clamp_negative_weights=False, output_size=None, *, return_layers=False,
        output_fn=None):
    """CAM from the classifier weights after global pooling.

    ``M = sum_c W[target, c] * F_c`` (:func:`cam_weights`) with ``F`` the features entering
    the global pooling and ``W`` the following linear layer's weight; no gradient is computed
    (one forward, in ``torch.no_grad``). ``clamp_negative_weights=True`` uses ``max(W, 0)``
    (NWC, Bae et al. 2020). The map is min-max normalised and bilinearly upsampled to the
    output size.

    Args:
        model: a classifier with a global pooling (``nn.AdaptiveAvgPool2d``, ``nn.AvgPool2d``,
            ``camfast.nn.ThresholdedAvgPool2d``) followed by an ``nn.Linear``.
        x, output_size, return_layers, output_fn: as for :func:`camfast.zoom_cam`.
        target: None (top class), an int, one class index per image, or several per image
            (a ``(B, K)`` tensor, or one list per image: all from the one forward); not
            callables.

    Raises:
        ValueError: if the model has no "global pooling then linear" head.
    """
    x = check_input(x)
    size = result_size(x, output_size)
    head = classifier_head(model)
    logits, feats, _ = pooled_features(model, x, head, output_fn)
    weight = head.linear.weight.detach()
    if is_multi_target(target):  # every class of every image from the one forward
        sets = class_sets(logits, target, class_names_of(model))
        R, B = sets.rounds.shape
        m = torch.stack([cam_weights(feats, weight[sets.rounds[j].clamp_min(0)], clamp_negative_weights)
                         for j in range(R)]) if R else feats.new_zeros((0, B, *feats.shape[2:]), dtype=torch.float32)
        out = upsample_aggregate([unit_scale(m.reshape(R * B, *m.shape[2:]))], size, reduce="max",
                                 normalize="minmax").reshape(R, B, *size) if R else m.new_zeros((0, B, *size))
        if return_layers:
            return CAMResult(sets.assemble(out), {head.pool_name: sets.assemble(m)}, logits, sets.indices())
        return sets.assemble(out)
    idx = target_indices(logits, target, "camfast.cam", class_names_of(model))
    m = cam_weights(feats, weight[idx], clamp_negative_weights)
    out = upsample_aggregate([unit_scale(m)], size, reduce="max", normalize="minmax")
    if return_layers:
        return CAMResult(out, {head.pool_name: m}, logits, idx)
    return out


register_variant("cam-nwc", "cam", display="CAM + NWC",
                 summary="CAM with negative classifier weights clamped to zero (Bae et al. 2020)",
                 clamp_negative_weights=True)
