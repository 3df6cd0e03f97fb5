"""The engine every CAM method runs on: inputs, targets, hooks, streaming gradients, fusion.

This module is camfast's internal method API (public names, documented, stable within the
package): a method file composes these pieces and registers itself with
:func:`camfast.methods.registry.register`. Nothing here knows any method by name.

Gradient methods (:func:`gradient_cam`) run one forward and one backward for the batch:

0. the model is unwrapped (data-parallel, ``torch.compile``) and in eval mode for the pass,
   every module's ``training`` flag restored after it (:mod:`camfast.methods.state`);
1. forward hooks (acting only on the calling thread's forward) keep each chosen layer's
   output ``A_l``, decide once how it is laid out as ``(B, C, h, w)`` (tokens,
   channels-last: :mod:`camfast.methods.tokens`) and register a tensor hook on it;
2. the target score ``S = sum_b target_b(output_b)`` is differentiated with
   ``torch.autograd.grad`` towards the *input* only (towards the layer's output when a
   single layer is hooked: the backward then stops there), so no parameter gradient is
   computed or accumulated (``.grad``, ``requires_grad`` and ``model.training`` are left
   as they were);
3. as soon as the gradient ``G_l = dS/dA_l`` reaches layer ``l`` during that backward, its
   tensor hook turns ``(A_l, G_l)`` into the layer's map with the method's
   :class:`WeightingRule` (a fused ``camfast::grad_weighted_map`` mode when the rule has
   one, else its Python function) and lets the gradient go: no list of all layers'
   gradients is ever held (streaming); a layer the gradient never reaches (no path from
   it to the score, or only to its non-patch tokens) is an error, not a blank map;
4. the per-layer maps are min-max normalised, bilinearly upsampled and fused by
   ``camfast::upsample_aggregate`` without materialising every upsampled layer
   (:func:`fuse_maps`).

Forward-only methods (EigenCAM, Score-CAM) use :func:`layer_activations` (one forward in
``torch.no_grad`` keeping the layers' outputs) and :func:`target_classes`; every method's
per-layer maps become its result through :func:`assemble_cam`. Classifier-weight methods
(CAM and its relatives) use :func:`classifier_head` and :func:`pooled_features` (one
forward, no backward). What a ``target`` may be (one class, several per image, names,
callables, regions of a segmentation, detections) is :mod:`camfast.methods.targets`
(:func:`~camfast.methods.targets.score_plan`); what a model output may be is
:func:`model_output`. Hooks are removed in every case
(errors, KeyboardInterrupt).
"""

from __future__ import annotations

import numbers
import operator
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from camfast.methods.detection import is_detections
from camfast.methods.layers import resolve_layers
from camfast.methods.state import cam_mode, input_for, unwrap
from camfast.methods.targets import ClassSets, Target, class_names_of, class_sets, is_multi_target, score_plan, target_score
from camfast.methods.tokens import ModelHints, SpatialLayout, infer_layout, model_hints
from camfast.nn import ThresholdedAvgPool2d
from camfast.ops import grad_weighted_map, upsample_aggregate

__all__ = [
    "CAMResult", "ClassifierHead", "Layers", "OutputSize", "WeightingRule", "assemble_cam", "check_input",
    "classifier_head", "class_maps", "fuse_maps", "gradient_cam", "gradient_layer_maps", "layer_activations",
    "logits_of", "model_output", "pooled_features", "predict", "result_size", "target_classes", "unit_scale",
]

Layers = str | nn.Module | Iterable[str | nn.Module] | None
OutputSize = int | Sequence[int] | None


class CAMResult(NamedTuple):
    """What the CAM functions return with ``return_layers=True``.

    Attributes:
        cam: ``(B, H, W)`` float32 map in [0, 1]; with several classes per image
            ``(B, K, H, W)`` (a ``(B, K)`` target) or a list of ``(K_b, H, W)`` (one class
            list per image).
        layer_maps: per-layer maps ``{name: (B, h_l, w_l)}`` before normalisation (laid out
            as ``cam`` with several classes).
        logits: the model output used for the score (detached).
        targets: ``(B,)`` class indices (``(B, K)`` or a list of ``(K_b,)``), or None when the
            target was given as callables.
    """

    cam: Tensor
    layer_maps: dict[str, Tensor]
    logits: Tensor
    targets: Tensor | None


# ------------------------------------------------------------------------------ inputs
def check_input(x: object) -> Tensor:
    """``x`` as a batch of images ``(B, C, H, W)`` (floating, non-empty), else a clear error."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must be a batch of images (B, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("x must hold at least one image")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating tensor, got {x.dtype}")
    return x


def result_size(x: Tensor, size: OutputSize) -> tuple[int, int]:
    """``(H, W)`` of a method's result: ``size`` (an int or a pair of ints), default the input's."""
    if size is None:
        return int(x.shape[-2]), int(x.shape[-1])
    items = [size, size] if isinstance(size, numbers.Integral) else size
    try:
        if isinstance(items, (str, bytes)) or isinstance(size, bool):
            raise TypeError
        h, w = (operator.index(s) for s in items)
        if any(isinstance(s, bool) for s in items):
            raise TypeError
    except (TypeError, ValueError):
        raise TypeError(f"output_size must be a positive int or (H, W) of ints, got {size!r}") from None
    if min(h, w) <= 0:
        raise ValueError(f"output_size must be positive, got {size!r}")
    return h, w


def model_output(out: Any, output_fn: Callable[[Any], Any] | None = None) -> Tensor | list:
    """The scores in a model output: a tensor ``(B, K)`` or ``(B, K, ...)`` (dense), or a
    detector's list of per-image dicts (:mod:`camfast.methods.detection`).

    Without ``output_fn``: a tensor as it is; an object with a ``.logits`` tensor (Hugging
    Face outputs, torchvision's ``InceptionOutputs``); a mapping's ``"logits"`` or ``"out"``
    tensor (torchvision segmentation models); the one ``(B, K)`` tensor of a tuple or list.
    Anything else, or a tuple with several candidates, is a ``TypeError`` asking for
    ``output_fn``."""
    if output_fn is not None:
        out = output_fn(out)
    if isinstance(out, Tensor) or is_detections(out):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(out, Mapping):
        for key in ("logits", "out"):
            if isinstance(out.get(key), Tensor):
                return out[key]
    if isinstance(out, (tuple, list)):
        found = [o for o in out if isinstance(o, Tensor) and o.dim() == 2]
        if len(found) == 1:
            return found[0]
        shapes = [tuple(o.shape) if isinstance(o, Tensor) else type(o).__name__ for o in out][:6]
        raise TypeError(
            f"the model returned a {type(out).__name__} of {len(out)} items {shapes}, "
            f"{'several' if found else 'none'} of them (B, num_classes) scores; pass output_fn=... to pick "
            "the logits (e.g. output_fn=lambda out: out[0])"
        )
    raise TypeError(
        f"the model returned {type(out).__name__}, not a tensor of class scores; pass "
        "output_fn=... to pick the logits (e.g. output_fn=lambda out: out[0])"
    )


def logits_of(out: Any, output_fn: Callable[[Any], Tensor] | None) -> Tensor:
    """The ``(B, num_classes)`` scores in a model output (:func:`model_output`, then a 2-D check)."""
    out = model_output(out, output_fn)
    if not isinstance(out, Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"expected the model's class scores as (B, num_classes), got shape {shape}")
    return out


def predict(model: nn.Module, x: Tensor, output_fn: Callable[[Any], Tensor] | None = None) -> Tensor:
    """The model's ``(B, num_classes)`` scores for ``x`` (detached), in one forward under
    ``torch.no_grad`` with the model unwrapped and in eval mode (:func:`camfast.methods.state.cam_mode`:
    a training-mode model's BatchNorm statistics are not updated)."""
    with cam_mode(model) as net, torch.no_grad():
        return logits_of(net(input_for(net, x)), output_fn).detach()


# ------------------------------------------------------------------------------ gradient methods
@dataclass(frozen=True)
class WeightingRule:
    """How a gradient method turns one layer's activation and gradient into its map.

    Attributes:
        function: ``(A, G) -> M``, ``(B, C, h, w)`` pairs to ``(B, h, w)``: the readable
            definition in plain PyTorch (differentiable; it works at once for a new method).
        kernel_mode: the ``camfast::grad_weighted_map`` mode computing the same map in one
            fused pass, when one exists (tests check it against ``function``); None runs
            ``function``.
        channel_terms: ``(A, G) -> T``, ``(B, C, h, w)`` pairs to the ``(B, C, h, w)`` terms
            whose channel sum is the map before its ReLU (``M = ReLU(sum_c T_c)``; for a
            channel weighting ``T_c = w_c A_c``), when the map has that form: what
            pytorch-grad-cam's ``eigen_smooth`` projects (:mod:`camfast.compat`).
    """

    function: Callable[[Tensor, Tensor], Tensor]
    kernel_mode: str | None = None
    channel_terms: Callable[[Tensor, Tensor], Tensor] | None = None

    def __call__(self, activation: Tensor, gradient: Tensor) -> Tensor:
        if self.kernel_mode is not None:
            return grad_weighted_map(activation, gradient, self.kernel_mode)
        return self.function(activation, gradient)


_REDUCED = (torch.float16, torch.bfloat16)


class _LayerTap:
    """A forward hook that keeps one layer's output and maps it as its gradient arrives.

    It acts only on forwards run by the thread that created it (another thread's forward of
    the same model passes through untouched), lays the output out as ``(B, C, h, w)`` once
    (:func:`camfast.methods.tokens.infer_layout`) and applies that layout to the gradient."""

    def __init__(self, name: str, module: nn.Module, rule: WeightingRule,
                 reshape_transform: Callable[[Tensor], Tensor] | None, create_graph: bool,
                 image: tuple[int, int], hints: ModelHints) -> None:
        self.name = name
        self.module = module
        self.rule = rule
        self.reshape_transform = reshape_transform
        self.create_graph = create_graph
        self.image = image
        self.hints = hints
        self.thread = threading.get_ident()
        self.layout: SpatialLayout | None = None
        self.activation: Tensor | None = None
        self.version = 0
        self.calls = 0
        self.map: Tensor | None = None
        self.reach: Tensor | None = None  # max |G| over the patch positions of the last backward
        self.reach_all: Tensor | None = None  # max |G| over the whole output
        self.drops_positions = False  # the layout drops non-patch tokens (set with the layout)
        self.spatial: tuple[int, int] | None = None
        self.keep_activation = False  # several backwards (one per round of classes) reuse it

    def forward_hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if threading.get_ident() != self.thread:
            return  # another thread's forward of the same model: not ours
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError(
                f"layer {self.name!r} ran more than once in one forward pass; choose layers that run once"
            )
        if isinstance(output, Tensor):
            self.layout = infer_layout(self.name, self.module, tuple(output.shape), self.image, self.hints,
                                       self.reshape_transform)
        else:
            output = self._from_container(output)
            self.layout = SpatialLayout("nchw")  # the transform's result, as it is
        self.drops_positions = self.layout.kind not in ("nchw", "nhwc")
        self.activation = output
        self.version = output._version
        feat = self._features(output.detach())
        self.spatial = (int(feat.shape[-2]), int(feat.shape[-1]))
        if output.requires_grad:
            output.register_hook(self.gradient_hook)

    def _from_container(self, output: Any) -> Tensor:
        """A layer returning a dict, tuple or list (a detector's feature pyramid, the module
        pytorch-grad-cam's detection tutorial hooks): for a method without gradients
        (EigenCAM, Score-CAM), ``reshape_transform(output)`` gives its ``(B, C, h, w)`` at once
        (e.g. every level resized to one size and concatenated). A gradient never arrives at
        such a combination (it is not on the path to the score), so gradient methods need a
        layer with a tensor output."""
        kind = type(output).__name__
        if self.rule is not None or self.reshape_transform is None:
            why = ("gradient methods need a layer with a tensor output" if self.rule is not None else
                   "pass reshape_transform=... that turns it into one (B, C, h, w) tensor")
            raise TypeError(f"layer {self.name!r} returned {kind}, not a tensor: {why} (or hook one of its "
                            "submodules, e.g. one pyramid level)")
        t = self.reshape_transform(output)
        if not isinstance(t, Tensor) or t.dim() != 4:
            raise ValueError(f"reshape_transform turned the {kind} of layer {self.name!r} into "
                             f"{tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}, not (B, C, h, w)")
        return t

    def _features(self, t: Tensor) -> Tensor:
        assert self.layout is not None
        t = self.layout(t)
        if t.dim() != 4:
            raise ValueError(
                f"layer {self.name!r} gives shape {tuple(t.shape)} after reshape_transform, not (B, C, h, w)"
            )
        return t

    def gradient_hook(self, grad: Tensor) -> None:
        act = self.activation
        if act is None:
            # Already mapped, or a later backward through a create_graph=True graph: the
            # hook stays on the tensor but has nothing more to do.
            return
        if act._version != self.version:
            raise RuntimeError(
                f"the output of layer {self.name!r} was modified in place after it was recorded "
                "(an inplace activation after it?); hook the following layer instead"
            )
        if not self.create_graph:
            act, grad = act.detach(), grad.detach()
        a, g = self._features(act), self._features(grad)
        if a.dtype in _REDUCED or g.dtype in _REDUCED:
            # float16/bfloat16 (autocast, a half model): the map is made in float32 from the
            # model's own tensors (a transient float32 copy of this one layer's A and G), so it
            # carries the model's rounding and none of its own (tests/methods/test_any_model.py)
            a, g = a.float(), g.float()
        elif g.dtype != a.dtype:
            g = g.to(a.dtype)
        if self.drops_positions:
            # Only a layout that drops part of the output (non-patch tokens) can hide the
            # gradient from the map: max |G| over the patch positions and over the whole output.
            # A (B, C, h, w) layout keeps every position, so no extra pass over G is made.
            self.reach = torch.linalg.vector_norm(g.detach(), float("inf"))
            self.reach_all = torch.linalg.vector_norm(grad.detach(), float("inf"))
        with torch.set_grad_enabled(self.create_graph):
            self.map = self.rule(a, g)
        if not self.keep_activation:
            self.activation = None  # the gradient and our reference to the activation go now


def _zero_map(x: Tensor, tap: _LayerTap) -> Tensor:
    """The map of a layer the score of a round does not depend on."""
    assert tap.spatial is not None
    return x.new_zeros((x.shape[0], *tap.spatial), dtype=torch.float32)


def _no_gradient(name: str) -> RuntimeError:
    return RuntimeError(
        f"the gradient of the target score never reaches layer {name!r} (no path from it to the score, or "
        "only to its non-patch tokens, e.g. a vision transformer's last block under a class-token head): "
        "its map would be blank; choose a layer the score depends on (camfast.find_layers(model) lists "
        "ones it reaches)"
    )


def _check_reached(names: list[str], zero: list[list[bool]], zero_all: list[list[bool]]) -> None:
    """A layer whose gradient reaches only its non-patch tokens in every round is an error (a
    vision transformer's last block under a class-token head, pytorch-grad-cam #513: its map
    would be blank for a structural reason). ``zero[l][j]``: layer ``l``'s gradient is zero
    at every patch position in round ``j``; ``zero_all``: at every position at all.

    A gradient that is zero everywhere (a score that does not depend on the image: zero
    weights, an empty target region, no detection matching the reference) gives a zero map,
    like any constant map; so does a layer not reached in some rounds only (a detection scored
    from another pyramid level): the fusion of the other layers is unchanged by it."""
    for n, z, za in zip(names, zero, zero_all):
        if all(z) and not all(za):
            raise _no_gradient(n)


def detach_output(out: Tensor | list) -> Tensor | list:
    if isinstance(out, Tensor):
        return out.detach()
    return [{k: (v.detach() if isinstance(v, Tensor) else v) for k, v in d.items()} for d in out]


def gradient_layer_maps(
    model: nn.Module, x: Tensor, target: Target, layers: list[tuple[str, nn.Module]], rule: WeightingRule,
    reshape_transform: Callable[[Tensor], Tensor] | None = None,
    output_fn: Callable[[Any], Tensor] | None = None, create_graph: bool = False,
) -> tuple[list[Tensor], Tensor, Tensor | ClassSets | None]:
    """One forward and a streaming backward: ``(per-layer maps, model output, targets)``.

    ``layers`` are ``(name, module)`` pairs (:func:`camfast.methods.layers.resolve_layers`);
    each map is ``rule(A_l, G_l)`` as ``(B, h_l, w_l)``, with ``A_l`` and ``G_l`` laid out
    as ``(B, C, h, w)`` by :mod:`camfast.methods.tokens` (or ``reshape_transform``). The model
    runs unwrapped and in eval mode (:func:`camfast.methods.state.cam_mode`). What is
    differentiated is :func:`camfast.methods.targets.score_plan`'s: with several targets per
    image the forward still runs once, then one backward per round (image ``b``'s ``j``-th
    target in round ``j``, all images at once): maps are ``(R, B, h_l, w_l)`` and the targets
    a :class:`ClassSets`.

    Raises:
        ValueError: a non-finite model output (naming the image and the class).
        RuntimeError: a layer that did not run, or that the gradient does not reach.
    """
    H, W = int(x.shape[-2]), int(x.shape[-1])
    with cam_mode(model) as net:
        hints = model_hints(net)
        taps = [_LayerTap(name, module, rule, reshape_transform, create_graph, (H, W), hints)
                for name, module in layers]
        handles = []
        rounds: list[list[Tensor]] = [[] for _ in taps]
        reach: list[list[Tensor | bool | None]] = [[] for _ in taps]
        reach_all: list[list[Tensor | bool | None]] = [[] for _ in taps]
        try:
            for tap, (_, module) in zip(taps, layers):
                handles.append(module.register_forward_hook(tap.forward_hook))
            # Gradients are needed even when the caller is in no_grad or inference_mode; an
            # inference tensor as input is cloned into a normal one.
            with torch.inference_mode(False), torch.enable_grad():
                # Differentiate towards the input only: every hooked layer lies between it and
                # the score, so each tap's hook fires, and no parameter gradient is computed.
                if x.is_inference():
                    x = x.clone()
                x = input_for(net, x)
                x_in = x if x.requires_grad else x.detach().requires_grad_(True)
                output = model_output(net(x_in), output_fn)
                plan = score_plan(output, target, class_names_of(net))
                multi = plan.sets is not None
                for tap in taps:
                    tap.keep_activation = multi
                scores = [s.sum() for s in plan.scores]
                if scores and not scores[0].requires_grad:
                    raise RuntimeError("the target score does not depend on the input: is the model frozen in "
                                       "no_grad, or did no detection match the target?")
                wrt = x_in
                act = taps[0].activation if len(taps) == 1 else None
                if act is not None and act.requires_grad and act._version == taps[0].version:
                    # One layer (Grad-CAM): the backward stops at that layer's output instead of
                    # running through every layer below it (its hook fires all the same). Not
                    # when the output was modified in place: the input then, and the hook raises.
                    wrt = act
                del act
                for j, score in enumerate(scores):
                    last = j == len(scores) - 1
                    torch.autograd.grad(score, (wrt,), retain_graph=create_graph or not last,
                                        create_graph=create_graph, allow_unused=True)
                    for tap, kept, got, got_all in zip(taps, rounds, reach, reach_all):
                        if tap.map is None:  # not reached in this round: a zero map (an error if never)
                            kept.append(_zero_map(x, tap))
                            got.append(None)
                            got_all.append(None)
                        else:
                            kept.append(tap.map)
                            got.append(tap.reach if tap.drops_positions else True)
                            got_all.append(tap.reach_all if tap.drops_positions else True)
                        tap.map = tap.reach = tap.reach_all = None
        finally:
            for h in handles:
                h.remove()
            for tap in taps:
                tap.activation = None
    for tap, got in zip(taps, reach):
        if tap.calls == 0:
            raise RuntimeError(f"layer {tap.name!r} did not run in the forward pass")
        if got and all(r is None for r in got):
            raise _no_gradient(tap.name)
    checked = [i for i, tap in enumerate(taps) if tap.drops_positions]
    if scores and checked:  # one synchronisation for every such layer and round: zero[l][j], zero_all[l][j]
        none = x.new_zeros((), dtype=torch.float32)
        zero = (torch.stack([torch.stack([none if r is None else r.float() for r in got])
                             for got in [reach[i] for i in checked] + [reach_all[i] for i in checked]])
                == 0).tolist()
        _check_reached([taps[i].name for i in checked], zero[:len(checked)], zero[len(checked):])
    maps = []
    for tap, kept in zip(taps, rounds):
        if multi:
            maps.append(torch.stack(kept) if kept else x.new_zeros((0, x.shape[0], *tap.spatial)))
        else:
            maps.append(kept[0])
    return maps, detach_output(output), plan.sets if multi else plan.targets


def unit_scale(m: Tensor) -> Tensor:
    """``m / max|m|`` per sample (float32): min-max normalisation's fixed ``eps`` (1e-7) is then
    negligible whatever the maps' magnitude (gradients of an untrained network are ~1e-6)."""
    m = m.float()
    scale = m.detach().abs().amax(dim=(-2, -1), keepdim=True)
    return m / scale.clamp_min(torch.finfo(torch.float32).tiny)


def fuse_maps(maps: list[Tensor], size: tuple[int, int], fuse: str = "max") -> Tensor:
    """Per-layer maps ``(B, h_l, w_l)`` -> ``(B, H, W)`` in [0, 1]: each unit-scaled and
    min-max normalised, bilinearly upsampled, fused by ``fuse`` (``"max"`` or ``"mean"``),
    normalised again when there is more than one layer."""
    if fuse not in ("max", "mean"):
        raise ValueError(f"fuse must be 'max' or 'mean', got {fuse!r}")
    maps = [unit_scale(m) for m in maps]
    fused = upsample_aggregate(maps, size, reduce=fuse, normalize="minmax")
    if len(maps) > 1:  # back to [0, 1] after fusing; a single normalised layer already is
        fused = upsample_aggregate([fused], size, reduce="max", normalize="minmax")
    return fused


def gradient_cam(model: nn.Module, x: Tensor, target: Target, layers: Layers, rule: WeightingRule, *,
                 fuse: str = "max", output_size: OutputSize = None, return_layers: bool = False,
                 reshape_transform: Callable[[Tensor], Tensor] | None = None,
                 output_fn: Callable[[Any], Tensor] | None = None, create_graph: bool = False,
                 argument: str = "layers", single: bool = False):
    """A whole gradient method: check, resolve ``layers`` (None: ``find_layers``), stream the
    per-layer maps with ``rule``, fuse them. Returns ``(B, H, W)`` or a :class:`CAMResult`.

    ``single=True``: ``layers`` must be one module name or module (named ``argument``)."""
    if single and not isinstance(layers, (str, nn.Module)):
        raise TypeError(f"{argument} must be a module name or an nn.Module, got {type(layers).__name__}")
    x = check_input(x)
    size = result_size(x, output_size)
    chosen = resolve_layers(model, layers, argument)
    maps, logits, idx = gradient_layer_maps(model, x, target, chosen, rule, reshape_transform, output_fn,
                                            create_graph)
    return assemble_cam([name for name, _ in chosen], maps, logits, idx, size, fuse, return_layers)


def assemble_cam(names: Sequence[str], maps: list[Tensor], logits: Tensor, idx: Tensor | ClassSets | None,
                 size: tuple[int, int], fuse: str = "max", return_layers: bool = False):
    """A method's result from its per-layer maps: fused (:func:`fuse_maps`) to ``(B, H, W)``, or
    a :class:`CAMResult` with ``return_layers``.

    ``maps`` are ``(B, h_l, w_l)`` per layer named ``names`` with ``idx`` the ``(B,)`` classes
    (or None for callables), or ``(R, B, h_l, w_l)`` with ``idx`` a :class:`ClassSets`
    (several classes per image: every (class, image) pair fused at once)."""
    if isinstance(idx, ClassSets):
        R, B = idx.rounds.shape
        fused = fuse_maps([m.reshape(R * B, *m.shape[2:]) for m in maps], size, fuse) if R else \
            logits.new_zeros((0, *size), dtype=torch.float32)
        out = idx.assemble(fused.reshape(R, B, *size))
        if return_layers:
            return CAMResult(out, {name: idx.assemble(m) for name, m in zip(names, maps)}, logits, idx.indices())
        return out
    out = fuse_maps(maps, size, fuse)
    if return_layers:
        return CAMResult(out, dict(zip(names, maps)), logits, idx)
    return out


# ------------------------------------------------------------------------------ forward-only methods
def layer_activations(model: nn.Module, x: Tensor, layers: list[tuple[str, nn.Module]],
                      reshape_transform: Callable[[Tensor], Tensor] | None = None,
                      output_fn: Callable[[Any], Tensor] | None = None, detections: bool = False
                      ) -> tuple[list[Tensor], Tensor | list]:
    """One forward in ``torch.no_grad``: ``(each layer's output as (B, C, h, w), logits)``.

    For methods that need no gradient (EigenCAM, Score-CAM). ``layers`` are ``(name, module)``
    pairs (:func:`camfast.methods.layers.resolve_layers`); each must run once and its output
    must not be modified in place afterwards (as for :func:`gradient_layer_maps`). A layer may
    return a dict, tuple or list when ``reshape_transform`` turns it into one tensor (a
    detector's feature pyramid). With ``detections``, a detector's list of per-image dicts is
    returned in place of the logits.
    """
    H, W = int(x.shape[-2]), int(x.shape[-1])
    with cam_mode(model) as net:
        hints = model_hints(net)
        taps = [_LayerTap(name, module, None, reshape_transform, False, (H, W), hints) for name, module in layers]
        handles = []
        try:
            for tap, (_, module) in zip(taps, layers):
                handles.append(module.register_forward_hook(tap.forward_hook))
            with torch.inference_mode(False), torch.no_grad():
                out = net(input_for(net, x.clone() if x.is_inference() else x))
                found = model_output(out, output_fn)
                logits = found if detections and is_detections(found) else logits_of(found, None)
            acts = []
            for tap in taps:
                if tap.calls == 0:
                    raise RuntimeError(f"layer {tap.name!r} did not run in the forward pass")
                assert tap.activation is not None
                if tap.activation._version != tap.version:
                    raise RuntimeError(
                        f"the output of layer {tap.name!r} was modified in place after it was recorded "
                        "(an inplace activation after it?); hook the following layer instead"
                    )
                acts.append(tap._features(tap.activation))
        finally:
            for h in handles:
                h.remove()
            for tap in taps:
                tap.activation = None
    return acts, logits


def target_classes(logits: Tensor, target: Target, model: nn.Module) -> Tensor | ClassSets | None:
    """The classes of ``target`` for a method that runs no backward: a :class:`ClassSets` for
    several classes per image (:func:`is_multi_target`), else the ``(B,)`` indices (None for
    callables)."""
    if is_multi_target(target):
        return class_sets(logits, target, class_names_of(model))
    return target_score(logits, target, class_names_of(model))[1]


# ------------------------------------------------------------------------------ classifier weights
_POOLS = (nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, ThresholdedAvgPool2d)


class ClassifierHead(NamedTuple):
    """A "global pooling, then linear" head: the pooling's name and module, and the linear layer."""

    pool_name: str
    pool: nn.Module
    linear: nn.Linear


def classifier_head(model: nn.Module, method: str = "camfast.cam") -> ClassifierHead:
    """The global pooling module and the linear layer after it (last of each, in order)."""
    modules = list(unwrap(model).named_modules())
    linears = [(i, n, m) for i, (n, m) in enumerate(modules) if isinstance(m, nn.Linear)]
    pools = [(i, n, m) for i, (n, m) in enumerate(modules) if isinstance(m, _POOLS)]
    if linears and pools:
        li, _, linear = linears[-1]
        before = [p for p in pools if p[0] < li]
        if before:
            return ClassifierHead(before[-1][1], before[-1][2], linear)
    raise ValueError(
        f"{method} needs a global pooling followed by a linear classifier and found none in "
        f"{type(model).__name__} (looked for nn.AdaptiveAvgPool2d / nn.AvgPool2d / "
        "camfast.nn.ThresholdedAvgPool2d registered before an nn.Linear); use grad_cam for other models"
    )


def pooled_features(model: nn.Module, x: Tensor, head: ClassifierHead,
                    output_fn: Callable[[Any], Tensor] | None = None,
                    capture: dict[str, nn.Module] | None = None,
                    keep: Callable[[Tensor], bool] | None = None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """One forward in ``torch.no_grad``: ``(logits, features entering the pooling, captured)``.

    ``capture`` names layers whose outputs are kept too (those for which ``keep(output)`` is
    true, when given).
    """
    got: list[Tensor] = []
    outs: dict[str, Tensor] = {}
    thread = threading.get_ident()  # another thread's forward of the same model is not ours

    def keep_output(name: str, out: Any) -> None:
        if threading.get_ident() == thread and isinstance(out, Tensor) and (keep is None or keep(out)):
            outs[name] = out

    def keep_input(module: nn.Module, inputs: Any) -> None:
        if threading.get_ident() == thread:
            got.append(inputs[0])

    hooks = [head.pool.register_forward_pre_hook(keep_input)]
    for n, m in (capture or {}).items():
        hooks.append(m.register_forward_hook(lambda mod, i, o, n=n: keep_output(n, o)))
    try:
        with cam_mode(model) as net, torch.no_grad():
            logits = logits_of(net(input_for(net, x)), output_fn)
    finally:
        for h in hooks:
            h.remove()
    if len(got) != 1 or got[0].dim() != 4:
        raise ValueError(f"the pooling module {head.pool_name!r} did not receive one (B, C, h, w) input")
    feats = got[0]
    if feats.shape[1] != head.linear.in_features:
        raise ValueError(
            f"features entering {head.pool_name!r} have {feats.shape[1]} channels but the "
            f"classifier expects {head.linear.in_features}"
        )
    return logits, feats, outs


def class_maps(model: nn.Module, x: Tensor) -> Tensor:
    """All classes' maps ``(B, K, h, w)`` float32 of a classifier: the model's own
    ``class_maps(x)`` method when it has one, else ``W @ features`` of its
    :func:`classifier_head` (one forward, no gradient)."""
    own = getattr(unwrap(model), "class_maps", None)
    if callable(own):
        with cam_mode(model), torch.no_grad():
            return own(x).float()
    head = classifier_head(model)
    _, feats, _ = pooled_features(model, x, head)
    return torch.einsum("bchw,kc->bkhw", feats.float(), head.linear.weight.detach().float())
