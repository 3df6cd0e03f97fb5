"""Multi-scale, flip-augmented CAM of a classifier: Puzzle-CAM's pseudo-label inference
(Jo & Yu, ICIP 2021; METHODS.md "Puzzle-CAM" and "The WSSS pseudo-label recipe")."""

from __future__ import annotations

import torch

from camfast.methods.engine import CAMResult, check_input, class_maps, logits_of, result_size
from camfast.methods.registry import register
from camfast.methods.targets import class_names_of, class_sets, is_multi_target, target_indices
from camfast.ops import upsample_aggregate
from camfast.puzzle import multiscale_cam


class _ClassMaps(torch.nn.Module):
    """The classifier as a class-map model, for :func:`camfast.multiscale_cam`."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return class_maps(self.model, x)


@register("multiscale-cam", display="Multi-scale CAM", kind="classifier-weight",
          summary="class maps summed over scales 0.5-2 and flips, per-class max normalised (Puzzle-CAM inference)")
def multiscale_class_cam(model, x, target=None, scales=(0.5, 1.0, 1.5, 2.0), flip=True, output_size=None, *,
                         return_layers=False, output_fn=None):
    """The target class's map from :func:`camfast.multiscale_cam` on the model's class maps
    (its own ``class_maps`` method, else classifier weights times the pooled features).

    Arguments as for :func:`camfast.cam`, plus ``scales`` and ``flip``
    (:func:`camfast.multiscale_cam`). The map is min-max normalised and resized to the
    output size.
    """
    x = check_input(x)
    size = result_size(x, output_size)
    maps = multiscale_cam(_ClassMaps(model), x, scales=scales, flip=flip)  # (B, K, H, W), every class
    logits = None
    if target is None or return_layers or is_multi_target(target):
        with torch.no_grad():
            logits = logits_of(model(x), output_fn).detach()
    rows = torch.arange(x.shape[0], device=maps.device)
    if is_multi_target(target):  # every class's map is there already
        sets = class_sets(logits, target, class_names_of(model))
        R, B = sets.rounds.shape
        m = torch.stack([maps[rows, sets.rounds[j].clamp_min(0).to(maps.device)] for j in range(R)]).float() if R \
            else maps.new_zeros((0, B, *maps.shape[2:]))
        out = upsample_aggregate([m.reshape(R * B, *m.shape[2:])], size, reduce="max",
                                 normalize="minmax").reshape(R, B, *size) if R else m.new_zeros((0, B, *size))
        if return_layers:
            return CAMResult(sets.assemble(out), {"multiscale": sets.assemble(m)}, logits, sets.indices())
        return sets.assemble(out)
    idx = target_indices(logits if logits is not None else maps.new_zeros(maps.shape[:2]), target,
                         "camfast.multiscale_class_cam", class_names_of(model))
    m = maps[rows, idx.to(maps.device)].float()
    out = upsample_aggregate([m], size, reduce="max", normalize="minmax")
    if return_layers:
        return CAMResult(out, {"multiscale": m}, logits, idx)
    return out
