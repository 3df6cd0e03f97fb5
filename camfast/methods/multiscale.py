"""Multi-scale, flip-augmented maps for every method: the WSSS pseudo-label recipe of IRN
(Ahn, Cho, Kwak, CVPR 2019; METHODS.md "The WSSS pseudo-label recipe") and Puzzle-CAM's
inference (Jo & Yu, ICIP 2021).

:func:`scale_sum` is the one implementation of the scale/flip loop: at each scale the images
and their horizontal flips run as one batch, the flipped maps are flipped back and added,
and every scale's maps are resized bilinearly (``align_corners=False``) and summed.
:func:`multiscale` applies it to any registered method, with IRN's two outputs;
:func:`camfast.multiscale_cam` (Puzzle-CAM) is it on a model's class maps, and the
registered ``multiscale-cam`` row is it on a classifier's class maps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from camfast.methods.engine import CAMResult, check_input, class_maps, predict, result_size
from camfast.methods.registry import MethodSpec, get, register
from camfast.methods.targets import class_names_of, class_sets, is_multi_target, target_indices
from camfast.ops import upsample_aggregate

__all__ = ["IRN_SCALES", "MultiScaleResult", "check_scales", "multiscale", "multiscale_class_cam", "scale_sum"]

#: IRN's scales (step/make_cam.py); Puzzle-CAM lists the same set as (0.5, 1.0, 1.5, 2.0).
IRN_SCALES = (1.0, 0.5, 1.5, 2.0)
_EPS = 1e-5  # IRN's and Puzzle-CAM's per-class normalisation: map / (max + 1e-5)


def check_scales(scales: object) -> tuple[float, ...]:
    """``scales`` as a non-empty tuple of positive floats, else a ValueError naming it."""
    if not isinstance(scales, (list, tuple)) or len(scales) == 0:
        raise ValueError(f"scales must be a non-empty sequence of positive numbers, got {scales!r}")
    out = []
    for s in scales:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not s > 0 or not math.isfinite(s):
            raise ValueError(f"scales must hold positive numbers, got {s!r}")
        out.append(float(s))
    return tuple(out)


def scale_sum(maps_at: Callable[[Tensor], Tensor], x: Tensor, scales: Sequence[float], flip: bool,
              sizes: Sequence[tuple[int, int]], image_mode: str = "bilinear") -> list[Tensor]:
    """``sum_s resize(maps(x_s) + flip(maps(flip(x_s))))`` to each of ``sizes``.

    Args:
        maps_at: ``(N, C, h, w) -> (N, K, h', w')`` non-negative maps of a batch (called once
            per distinct scale, on the images and their flips together).
        x: ``(B, C, H, W)`` images.
        scales: resize factors (``(round(H*s), round(W*s))``); scales that resize to the same
            size share one call, counted as often as listed.
        flip: add the horizontal flip at each scale.
        sizes: the output sizes (each scale's maps are resized to every one of them).
        image_mode: ``"bilinear"`` or ``"bicubic"`` for resizing the images.

    Returns:
        One ``(B, K, *size)`` float tensor per entry of ``sizes``.
    """
    if image_mode not in ("bilinear", "bicubic"):
        raise ValueError(f"image_mode must be 'bilinear' or 'bicubic'; got {image_mode!r}")
    b, _, h, w = x.shape
    groups: dict[tuple[int, int], int] = {}
    for s in check_scales(list(scales)):
        size = (max(1, round(h * s)), max(1, round(w * s)))
        groups[size] = groups.get(size, 0) + 1
    totals: list[Tensor | None] = [None] * len(sizes)
    for size, count in groups.items():
        xs = x if size == (h, w) else F.interpolate(x, size=size, mode=image_mode, align_corners=False)
        batch = torch.cat([xs, xs.flip(-1)]) if flip else xs
        maps = maps_at(batch)
        cam = maps[:b] + maps[b:].flip(-1) if flip else maps
        for i, out_size in enumerate(sizes):
            resized = F.interpolate(cam, size=out_size, mode="bilinear", align_corners=False)
            if count > 1:
                resized = resized * count
            totals[i] = resized if totals[i] is None else totals[i] + resized
    return [t for t in totals if t is not None]


def per_class_max(maps: Tensor) -> Tensor:
    """Each ``(h, w)`` map divided by its maximum + 1e-5 (IRN, Puzzle-CAM)."""
    return maps / (maps.amax(dim=(-2, -1), keepdim=True) + _EPS)


class MultiScaleResult(NamedTuple):
    """What :func:`multiscale` returns (IRN's ``make_cam.py`` outputs).

    Attributes:
        cam: at stride 4, ``(ceil(H/4), ceil(W/4))``: ``(B, K, h4, w4)`` for a ``(B, K)``
            or one-class-per-image target (``K = 1``), or one ``(K_b, h4, w4)`` per image.
        high_res: at the input size, laid out as ``cam`` (IRN: resized to
            ``ceil(H/16) * 16`` then cropped).
        targets: the classes, laid out as ``cam``'s first axes.
    """

    cam: Tensor | list[Tensor]
    high_res: Tensor | list[Tensor]
    targets: Tensor | list[Tensor]


def _padded(out: Tensor | list[Tensor], rounds: int) -> Tensor:
    """A method's result in any target layout as ``(N, R, h, w)`` (zero past an image's classes)."""
    if isinstance(out, Tensor):
        return out[:, None] if out.dim() == 3 else out
    first = next((o for o in out if o.numel()), None)
    h, w = (first.shape[-2:] if first is not None else (1, 1))
    padded = out[0].new_zeros((len(out), rounds, h, w)) if out else torch.zeros(0, rounds, h, w)
    for i, o in enumerate(out):
        padded[i, : o.shape[0]] = o
    return padded


def multiscale(method: str | MethodSpec | Callable[..., Any], model, x: Tensor, target=None,
               scales: Sequence[float] = IRN_SCALES, flip: bool = True, *, image_mode: str = "bilinear",
               output_fn=None, **options) -> MultiScaleResult:
    """Any registered method over several scales with flips, combined as IRN does.

    At each scale the method runs once on the images and their flips (one batch, every class
    of ``target`` at once); its maps (for CAM, ``ReLU(W F)`` before any normalisation,
    IRN's exact definition; for the other methods their ``[0, 1]`` maps at that scale's
    input size) are flipped back, added, resized to the stride-4 size and to the input size
    and summed over the scales; each class's map is then divided by its maximum + 1e-5.

    Args:
        method: a registry name (any spelling), row or method function.
        model, x: as for the method; ``x`` ``(B, C, H, W)``.
        target: the classes, in any form the methods take (usually each image's labels, one
            list per image, as IRN keeps only the labelled classes); None: the top class of
            each image at the original size.
        scales: resize factors (IRN's ``(1.0, 0.5, 1.5, 2.0)`` by default).
        flip: add the horizontal flip at each scale.
        image_mode: how the images are resized (``"bilinear"``; IRN resizes with PIL bicubic).
        **options: passed to the method (e.g. ``layers=``).

    Returns:
        :class:`MultiScaleResult`.
    """
    spec = method if isinstance(method, MethodSpec) else get(method)
    x = check_input(x)
    B, _, H, W = x.shape
    if target is None:
        target = predict(model, x, output_fn).argmax(dim=1)
    if output_fn is not None:
        options["output_fn"] = output_fn
    raw = spec.raw_map
    layout: dict[str, Any] = {}

    def target_for(n: int):
        if n == B:
            return target
        if isinstance(target, Tensor) or hasattr(target, "__array__") and not isinstance(target, (list, tuple)):
            t = torch.as_tensor(target)
            return t if t.dim() == 0 else torch.cat([t, t])
        if isinstance(target, (list, tuple)):
            return list(target) + list(target)
        return target  # an int or a name: the same for every image

    def maps_at(batch: Tensor) -> Tensor:
        res = spec(model, batch, target_for(batch.shape[0]), return_layers=True, **options)
        layout.setdefault("targets", res.targets)
        counts = [t.numel() for t in res.targets] if isinstance(res.targets, list) else None
        rounds = max(counts, default=0) if counts is not None else None
        if counts is not None and not rounds:
            return x.new_zeros((batch.shape[0], 0, *batch.shape[-2:]), dtype=torch.float32)
        if not raw:
            return _padded(res.cam, rounds or 1)
        return _padded(next(iter(res.layer_maps.values())), rounds or 1).float().clamp_min(0)

    strided = (math.ceil(H / 4), math.ceil(W / 4))
    up = (math.ceil(H / 16) * 16, math.ceil(W / 16) * 16)
    with torch.no_grad():
        cam, high = scale_sum(maps_at, x, scales, flip, [strided, up], image_mode)
    cam, high = per_class_max(cam), per_class_max(high[..., :H, :W])
    targets = layout["targets"]
    if isinstance(targets, list):
        targets = targets[:B]
        return MultiScaleResult([cam[b, : t.numel()] for b, t in enumerate(targets)],
                                [high[b, : t.numel()] for b, t in enumerate(targets)], targets)
    targets = targets[:B]
    if targets.dim() == 1:
        cam, high = cam[:, 0], high[:, 0]
    return MultiScaleResult(cam, high, targets)


class _ClassMaps(torch.nn.Module):
    """The classifier as a class-map model."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return class_maps(self.model, x)


@register("multiscale-cam", display="Multi-scale CAM", kind="classifier-weight",
          summary="class maps summed over scales 0.5-2 and flips, per-class max normalised (Puzzle-CAM inference)")
def multiscale_class_cam(model, x, target=None, scales=(0.5, 1.0, 1.5, 2.0), flip=True, output_size=None, *,
                         return_layers=False, output_fn=None):
    """The target classes' maps from :func:`camfast.multiscale_cam` on the model's class maps
    (its own ``class_maps`` method, else classifier weights times the pooled features).

    Arguments as for :func:`camfast.cam`, plus ``scales`` and ``flip``. The map is min-max
    normalised and resized to the output size.
    """
    x = check_input(x)
    size = result_size(x, output_size)
    cm = _ClassMaps(model)
    with torch.no_grad():
        (maps,) = scale_sum(lambda b: F.relu(cm(b)), x, scales, flip, [tuple(x.shape[-2:])])
    maps = per_class_max(maps)  # (B, K, H, W), every class
    logits = None
    if target is None or return_layers or is_multi_target(target):
        logits = predict(model, x, output_fn)
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
