"""A drop-in for pytorch-grad-cam's classes (``GradCAM``, ``HiResCAM``, ``LayerCAM``, ...).

There is one class here for every gradient or forward-only method of
:mod:`camfast.methods.registry` that has a pytorch-grad-cam name (its ``compat`` field): a
gradient method's class is made from its per-layer weighting rule, a forward-only method's
(EigenCAM, Score-CAM) from its function's per-layer maps, so a newly registered method
appears here without an edit.

The classes here take pytorch-grad-cam's constructor and call (``cam = GradCAM(model,
target_layers, reshape_transform=None)``; ``cam(input_tensor, targets)`` gives a float32
numpy array ``(B, H, W)``; usable as a context manager) and give its numbers (tested to
1e-5 against grad-cam 1.5.7), computed with camfast's engine: one forward and one backward
for the batch, each layer's map made by the fused ``camfast::grad_weighted_map`` op as its
gradient streams through the backward, and the layers resized and averaged by
``camfast::upsample_aggregate``.

The post-processing is pytorch-grad-cam's, step for step:

1. per layer: the map (with its ReLU), then per image ``(m - min) / (max(m - min) + 1e-7)``,
   then a bilinear resize to the input's ``(H, W)`` (OpenCV's default ``INTER_LINEAR``,
   whose values are those of ``F.interpolate(..., "bilinear", align_corners=False)``);
2. over layers: the mean (of maps that are already non-negative), then the same per-image
   normalisation once more, without resizing. With one layer this second normalisation is
   still applied, as pytorch-grad-cam does.

``eigen_smooth=True`` replaces each layer's map by the first-principal-component projection
(:func:`camfast.methods.eigencam.eigen_projection`, pytorch-grad-cam's ``get_2d_projection``)
of the method's per-channel terms before the channel sum (``w_c A_c``; ``G_c A_c`` for
HiResCAM and ``ZoomCAM``, ``ReLU(G_c) A_c`` for LayerCAM: the rule's ``channel_terms``), then
its ReLU; EigenCAM and EigenGradCAM are projections already and ignore it, as in
pytorch-grad-cam. ``aug_smooth=True`` is pytorch-grad-cam's test-time augmentation (its
``ttach`` transforms, written here in torch): the mean over ``{identity, horizontal flip} x
{0.9, 1, 1.1}`` (the input multiplied; :data:`AUG_SMOOTH_TRANSFORMS`, pytorch-grad-cam
1.5.7's default) of the maps of the transformed inputs, each flipped back; ``outputs`` is
then the last transform's model output, as in pytorch-grad-cam.

``ZoomCAM`` is that pipeline with Zoom-CAM's per-layer map (``ReLU(sum_c G_c * A_c)``, the
same map as HiResCAM's), so its results equal ``HiResCAM``'s. Zoom-CAM as published fuses
the layers by element-wise maximum: that is :func:`camfast.zoom_cam` (``fuse="max"``);
``compat.ZoomCAM`` is only the pytorch-grad-cam-style wrapper, with its mean over layers.

Differences from pytorch-grad-cam, all deliberate:

* The constructor calls ``model.eval()``, as pytorch-grad-cam's does (needed for equal
  numbers with batch norm or dropout). Nothing else about the model changes: no hook stays
  on it between calls, and no parameter gradient is computed, so parameters' ``.grad`` are
  left as they were (pytorch-grad-cam zeroes them and then fills them by ``backward``).
* ``targets`` may be omitted (it means each image's top class, as ``targets=None`` does);
  when given it must hold one callable per image (pytorch-grad-cam silently uses the first
  ``len(targets)`` images). :class:`ClassifierOutputTarget` is provided here, and
  pytorch-grad-cam's own targets work unchanged, including ones on outputs that are not
  ``(B, num_classes)`` (segmentation targets).
* ``ScoreCAM`` scores the masked images in batches of camfast's default size (sized to the
  memory) unless the instance has a ``batch_size`` attribute (pytorch-grad-cam reads the
  same attribute, default 16), with no progress bar.
* ``__exit__`` does not swallow ``IndexError`` (pytorch-grad-cam prints and suppresses it).
* Each layer must run once per forward pass and produce a ``(B, C, h, w)`` tensor (after
  ``reshape_transform``); 3-D (volumetric) inputs are not supported. A layer whose output
  is modified in place afterwards (a convolution followed by ``ReLU(inplace=True)``) is an
  error naming it (pytorch-grad-cam silently reads the modified values): hook the
  activation instead.

This module imports neither pytorch-grad-cam nor OpenCV nor torchvision.

Example:
    >>> from camfast.compat import GradCAM, ClassifierOutputTarget
    >>> with GradCAM(model, target_layers=[model.layer4[-1]]) as cam:
    ...     maps = cam(input_tensor=images, targets=[ClassifierOutputTarget(281)] * len(images))
    >>> maps.shape, maps.dtype
    ((2, 224, 224), dtype('float32'))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from camfast.methods import registry
from camfast.methods.detection import is_detections
from camfast.methods.eigencam import eigen_projection
from camfast.methods.engine import WeightingRule, check_input, gradient_layer_maps
from camfast.methods.layers import resolve_layers
from camfast.ops import upsample_aggregate

_EPS = 1e-7  # pytorch-grad-cam's scale_cam_image: img / (1e-7 + max(img)); the same in upsample_aggregate

#: ``aug_smooth``'s transforms ``(horizontal flip, factor)``, in ttach's order: pytorch-grad-cam
#: 1.5.7's default ``tta.Compose([tta.HorizontalFlip(), tta.Multiply(factors=[0.9, 1, 1.1])])``.
AUG_SMOOTH_TRANSFORMS = tuple((flip, factor) for flip in (False, True) for factor in (0.9, 1.0, 1.1))


class ClassifierOutputTarget:
    """The score of one class: ``output[category]`` for one image's ``(num_classes,)`` output
    (``output[:, category]`` for a batch), like pytorch-grad-cam's class of the same name."""

    def __init__(self, category: int) -> None:
        self.category = category

    def __call__(self, model_output: Tensor) -> Tensor:
        if model_output.dim() == 1:
            return model_output[self.category]
        return model_output[:, self.category]

    def __repr__(self) -> str:
        return f"ClassifierOutputTarget({self.category!r})"


def _augment(x: Tensor, flip: bool, factor: float) -> Tensor:
    """ttach's ``HorizontalFlip`` then ``Multiply`` on ``(B, C, H, W)`` images (factor 1: unchanged)."""
    if flip:
        x = x.flip(-1)
    return x * factor if factor != 1 else x


def _normalize(m: Tensor) -> Tensor:
    """Per image: ``(m - min) / (max(m - min) + 1e-7)`` (scale_cam_image without resizing)."""
    m = m - m.amin(dim=(-2, -1), keepdim=True)
    return m / (m.amax(dim=(-2, -1), keepdim=True) + _EPS)


class _BaseCAM:
    """pytorch-grad-cam's ``BaseCAM`` interface on camfast's engine (see the module doc)."""

    def __init__(self, model: nn.Module, target_layers: Sequence[nn.Module | str],
                 reshape_transform: Callable[[Tensor], Tensor] | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if isinstance(target_layers, (nn.Module, str)):
            raise TypeError(
                "target_layers must be a list of layers, e.g. target_layers=[model.layer4[-1]], "
                f"got a single {type(target_layers).__name__}"
            )
        if not isinstance(target_layers, (list, tuple)):
            raise TypeError(f"target_layers must be a list of nn.Module (or module names), got "
                            f"{type(target_layers).__name__}")
        if reshape_transform is not None and not callable(reshape_transform):
            raise TypeError(f"reshape_transform must be callable or None, got {type(reshape_transform).__name__}")
        self._layers = resolve_layers(model, list(target_layers), "target_layers")
        self.model = model
        self.model.eval()  # as pytorch-grad-cam's BaseCAM does
        self.target_layers = list(target_layers)
        self.reshape_transform = reshape_transform
        param = next(model.parameters(), None)
        self.device = param.device if param is not None else None
        self.outputs: Tensor | None = None  # the model output of the last call (detached)

    # -- context manager: nothing to release (no hook outlives a call) -------------------
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, exc_tb) -> bool:
        return False

    def __repr__(self) -> str:
        return f"camfast.compat.{type(self).__name__}(target_layers={[n for n, _ in self._layers]})"

    # -- the call -------------------------------------------------------------------------
    def __call__(self, input_tensor: Tensor, targets: Sequence[Callable[[Tensor], Tensor]] | None = None,
                 aug_smooth: bool = False, eigen_smooth: bool = False) -> np.ndarray:
        """Maps ``(B, H, W)`` float32 in [0, 1) for ``input_tensor`` ``(B, C, H, W)``.

        Args:
            input_tensor: the images; moved to the model's device.
            targets: None (each image's top class) or one callable per image taking that
                image's model output and returning a scalar (``ClassifierOutputTarget(i)``).
            aug_smooth: pytorch-grad-cam's test-time augmentation (see the module doc).
            eigen_smooth: each layer's map from the first principal component of the
                method's per-channel terms (see the module doc).
        """
        for name, value in (("aug_smooth", aug_smooth), ("eigen_smooth", eigen_smooth)):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, got {type(value).__name__}")
        if aug_smooth:
            return self.forward_augmentation_smoothing(input_tensor, targets, bool(eigen_smooth))
        return self.forward(input_tensor, targets, bool(eigen_smooth))

    def forward(self, input_tensor: Tensor, targets: Sequence[Callable[[Tensor], Tensor]] | None = None,
                eigen_smooth: bool = False) -> np.ndarray:
        x = self._input(input_tensor)
        return self._maps(x, targets, eigen_smooth).cpu().numpy()

    def forward_augmentation_smoothing(self, input_tensor: Tensor,
                                       targets: Sequence[Callable[[Tensor], Tensor]] | None = None,
                                       eigen_smooth: bool = False) -> np.ndarray:
        """The mean of the maps over :data:`AUG_SMOOTH_TRANSFORMS`, each flipped back.

        One call per transform on the batch, as pytorch-grad-cam runs them: a convolution's
        last bits depend on the batch size, and EigenCAM's sign on those bits."""
        x = self._input(input_tensor)
        maps = []
        for flip, factor in AUG_SMOOTH_TRANSFORMS:
            m = self._maps(_augment(x, flip, factor), targets, eigen_smooth)
            maps.append(m.flip(-1) if flip else m)
        return torch.stack(maps).mean(0).cpu().numpy()

    def _input(self, input_tensor: Tensor) -> Tensor:
        x = check_input(input_tensor)
        return x.to(self.device) if self.device is not None else x

    def _maps(self, x: Tensor, targets, eigen_smooth: bool) -> Tensor:
        target, output_fn = self._target(targets, int(x.shape[0]))
        maps, logits = self._layer_maps(x, target, output_fn, eigen_smooth)
        self.outputs = logits.reshape(logits.shape[0], *output_fn.shape[1:]) if output_fn.shape is not None else logits
        return self._aggregate(maps, (int(x.shape[-2]), int(x.shape[-1])))

    def _layer_maps(self, x: Tensor, target, output_fn: "_Flatten", eigen_smooth: bool
                    ) -> tuple[list[Tensor], Tensor]:
        """Each target layer's map ``(B, h, w)`` (after its ReLU) and the model output."""
        raise NotImplementedError

    def _target(self, targets, batch: int):
        output_fn = _Flatten(targets is not None)
        if targets is None:
            return None, output_fn
        if callable(targets) or not isinstance(targets, (list, tuple)):
            raise TypeError(
                "targets must be None or a list with one callable per image, e.g. "
                f"[ClassifierOutputTarget(281)] * {batch}; got {type(targets).__name__}"
            )
        if not all(callable(t) for t in targets):
            bad = next(t for t in targets if not callable(t))
            raise TypeError(
                f"targets must hold callables (e.g. ClassifierOutputTarget({bad!r}) for a class index), "
                f"got {type(bad).__name__}"
            )
        if len(targets) != batch:
            raise ValueError(f"targets has {len(targets)} entries for a batch of {batch} images; give one per image")
        # The engine takes (B, K) outputs; other shapes travel flattened and each target sees
        # its image's output in the model's shape again.
        return [output_fn.unflattening(t) for t in targets], output_fn

    @staticmethod
    def _aggregate(maps: list[Tensor], size: tuple[int, int]) -> Tensor:
        maps = [m.detach().float() for m in maps]
        # Per layer: normalise, resize bilinearly; then the mean over layers (all fused).
        # max(0) before the mean is a no-op here: normalised maps are non-negative.
        fused = upsample_aggregate(maps, size, reduce="mean", normalize="minmax")
        return _normalize(fused)


class _GradientCAM(_BaseCAM):
    """A gradient method: its weighting rule on the streamed ``(A, G)`` of each layer."""

    _rule: WeightingRule  # set by each subclass (made from the method registry below)

    def _layer_maps(self, x, target, output_fn, eigen_smooth):
        rule = self._rule
        if eigen_smooth:
            terms = rule.channel_terms
            if terms is None:
                raise ValueError(f"eigen_smooth=True: {type(self).__name__}'s weighting rule has no channel_terms "
                                 "(the per-channel terms the smoothing projects)")
            rule = WeightingRule(lambda a, g: eigen_projection(terms(a, g)).clamp_min(0))
        maps, logits, _ = gradient_layer_maps(self.model, x, target, self._layers, rule, self.reshape_transform,
                                              output_fn, create_graph=False)
        return maps, logits


class _ForwardCAM(_BaseCAM):
    """A forward-only method (EigenCAM, Score-CAM): its function's per-layer maps."""

    _spec: registry.MethodSpec  # set by each subclass (made from the method registry below)

    def _layer_maps(self, x, target, output_fn, eigen_smooth):
        spec = self._spec
        kwargs: dict[str, Any] = {"layers" if spec.accepts("layers") else "layer": [m for _, m in self._layers]}
        if eigen_smooth and spec.accepts("eigen_smooth"):  # else the map is a projection already (EigenCAM)
            kwargs["eigen_smooth"] = True
        if getattr(self, "batch_size", None) is not None and spec.accepts("batch_size"):
            kwargs["batch_size"] = self.batch_size  # pytorch-grad-cam's ScoreCAM reads this attribute
        res = spec.function(self.model, x, target, return_layers=True, reshape_transform=self.reshape_transform,
                            output_fn=output_fn, **kwargs)
        return list(res.layer_maps.values()), res.logits


class _Flatten:
    """``output_fn`` for the engine: the model output as ``(B, K)``.

    A ``(B, K)`` output passes as it is. With callable targets, any ``(B, ...)`` output is
    flattened to ``(B, -1)`` and the targets are wrapped to see each image's output in its
    own shape; without targets (the top class) the output must be ``(B, num_classes)``.
    """

    def __init__(self, has_targets: bool) -> None:
        self.has_targets = has_targets
        self.shape: torch.Size | None = None

    def __call__(self, out: Any) -> Tensor:
        self.shape = None
        if is_detections(out):  # a detector's per-image dicts: each target scores its image's dict
            if not self.has_targets:
                raise ValueError("a detector has no top class: pass targets=[...] (one callable per image, e.g. "
                                 "pytorch-grad-cam's FasterRCNNBoxScoreTarget)")
            return out
        if not isinstance(out, Tensor):
            raise TypeError(
                f"the model returned {type(out).__name__}, not a tensor; wrap the model so that it "
                "returns a tensor (as pytorch-grad-cam needs too)"
            )
        if out.dim() <= 2:
            return out
        if not self.has_targets:
            raise ValueError(
                f"the model output has shape {tuple(out.shape)}: the default target (the top class) needs "
                "(B, num_classes) scores; pass targets=[...] (one callable per image)"
            )
        self.shape = out.shape
        return out.reshape(out.shape[0], -1)

    def unflattening(self, target: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
        def call(sample: Tensor) -> Tensor:
            if self.shape is not None:
                sample = sample.reshape(self.shape[1:])
            return target(sample)

        return call


_BASES: dict[str, type[_BaseCAM]] = {"gradient": _GradientCAM, "forward-only": _ForwardCAM}


def _compat_class(spec: registry.MethodSpec) -> type[_BaseCAM]:
    """pytorch-grad-cam's class of a registered gradient or forward-only method: its per-layer
    maps in the pipeline above."""
    where = (spec.function.__module__ + "." + spec.rule.function.__name__ if spec.rule is not None
             else spec.function.__module__ + "." + spec.function.__name__)
    doc = (f"{spec.display}: the per-layer map of :func:`camfast.{spec.function.__name__}` "
           f"(:func:`{where}`) in pytorch-grad-cam's pipeline (mean over layers); pytorch-grad-cam's "
           f"``{spec.compat}(model, target_layers, reshape_transform=None)``.")
    attrs: dict[str, Any] = {"__doc__": doc, "__module__": __name__}
    attrs["_rule" if spec.kind == "gradient" else "_spec"] = spec.rule if spec.kind == "gradient" else spec
    return type(spec.compat, (_BASES[spec.kind],), attrs)


def _compat_specs() -> list[registry.MethodSpec]:
    return [s for s in registry.specs() if s.compat and s.kind in _BASES]


# One class per registered gradient or forward-only method with a pytorch-grad-cam name
# (GradCAM, HiResCAM, LayerCAM, ZoomCAM, EigenCAM, ScoreCAM, ...): a method added to the
# registry appears here with no edit. ``ZoomCAM`` is Zoom-CAM's per-layer map
# (``ReLU(sum_c G_c * A_c)``) with pytorch-grad-cam's mean over layers, so its results equal
# ``HiResCAM``'s; Zoom-CAM as published fuses by max: that is :func:`camfast.zoom_cam`.
for _spec in _compat_specs():
    globals()[_spec.compat] = _compat_class(_spec)


def __getattr__(name: str) -> type[_BaseCAM]:
    # A method registered after this module was imported (a user's own) still gets its class.
    for spec in _compat_specs():
        if spec.compat == name:
            cls = globals()[name] = _compat_class(spec)
            return cls
    raise AttributeError(f"module 'camfast.compat' has no attribute {name!r}")


__all__ = ["ClassifierOutputTarget", *sorted(s.compat for s in _compat_specs())]
