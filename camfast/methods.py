"""One-call class activation maps: ``zoom_cam``, ``grad_cam``, ``layer_cam`` and ``cam``.

The gradient methods run one forward and one backward for the whole batch:

1. forward hooks keep each chosen layer's output ``A_l`` (and register a tensor hook on it);
2. the target score ``S = sum_b target_b(output_b)`` is differentiated with
   ``torch.autograd.grad`` towards the *input* only (towards the layer's output when a
   single layer is hooked: the backward then stops there), so no parameter gradient is
   computed or accumulated (``.grad``, ``requires_grad`` and ``model.training`` are left
   as they were);
3. as soon as the gradient ``G_l = dS/dA_l`` reaches layer ``l`` during that backward, its
   tensor hook turns ``(A_l, G_l)`` into the layer's map with the fused
   ``camfast::grad_weighted_map`` op and lets the gradient go: no list of all layers'
   gradients is ever held (streaming);
4. the per-layer maps are min-max normalised, bilinearly upsampled and fused by
   ``camfast::upsample_aggregate`` without materialising every upsampled layer.

Hooks are removed in every case (errors, KeyboardInterrupt).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from camfast.layers import find_layers, resolve_layers
from camfast.ops import grad_weighted_map, upsample_aggregate

__all__ = ["CAMResult", "cam", "find_layers", "grad_cam", "layer_cam", "zoom_cam"]

Target = int | Sequence[int] | Tensor | Callable[[Tensor], Tensor] | Sequence[Callable[[Tensor], Tensor]] | None
Layers = str | nn.Module | Iterable[str | nn.Module] | None


class CAMResult(NamedTuple):
    """What the CAM functions return with ``return_layers=True``.

    Attributes:
        cam: ``(B, H, W)`` float32 map in [0, 1].
        layer_maps: per-layer maps ``{name: (B, h_l, w_l)}`` before normalisation.
        logits: the model output used for the score (detached).
        targets: ``(B,)`` class indices, or None when the target was given as callables.
    """

    cam: Tensor
    layer_maps: dict[str, Tensor]
    logits: Tensor
    targets: Tensor | None


# ------------------------------------------------------------------------------ inputs
def _check_input(x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must be a batch of images (B, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("x must hold at least one image")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating tensor, got {x.dtype}")
    return x


def _output_size(x: Tensor, output_size: int | Sequence[int] | None) -> tuple[int, int]:
    if output_size is None:
        return int(x.shape[-2]), int(x.shape[-1])
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    size = tuple(int(s) for s in output_size)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"output_size must be a positive int or (H, W), got {output_size!r}")
    return size  # type: ignore[return-value]


def _logits(out: Any, output_fn: Callable[[Any], Tensor] | None) -> Tensor:
    if output_fn is not None:
        out = output_fn(out)
    if not isinstance(out, Tensor):
        raise TypeError(
            f"the model returned {type(out).__name__}, not a tensor of class scores; pass "
            "output_fn=... to pick the logits (e.g. output_fn=lambda out: out[0])"
        )
    if out.dim() != 2:
        raise ValueError(f"expected the model's class scores as (B, num_classes), got shape {tuple(out.shape)}")
    return out


def _score(logits: Tensor, target: Target) -> tuple[Tensor, Tensor | None]:
    """The scalar to differentiate, ``sum_b target_b(logits_b)``, and the class indices."""
    B, K = logits.shape
    if callable(target):
        target = [target] * B
    if isinstance(target, (list, tuple)) and target and all(callable(t) for t in target):
        if len(target) != B:
            raise ValueError(f"target: {len(target)} callables for a batch of {B}")
        return torch.stack([torch.as_tensor(t(logits[b])).sum() for b, t in enumerate(target)]).sum(), None
    if target is None:
        idx = logits.detach().argmax(dim=1)
    elif isinstance(target, int):
        idx = torch.full((B,), target, dtype=torch.long, device=logits.device)
    else:
        idx = torch.as_tensor(target, device=logits.device)
        if idx.dim() != 1 or idx.numel() != B or idx.dtype.is_floating_point:
            raise ValueError(f"target must be None, an int, {B} class indices or callables; got {target!r}")
        idx = idx.long()
    if bool(((idx < 0) | (idx >= K)).any()):
        raise ValueError(f"target class out of range [0, {K}): {idx.tolist()}")
    return logits.gather(1, idx[:, None]).sum(), idx


# ------------------------------------------------------------------------------ engine
class _LayerTap:
    """A forward hook that keeps one layer's output and maps it as its gradient arrives."""

    def __init__(self, name: str, mode: str, reshape_transform: Callable[[Tensor], Tensor] | None,
                 create_graph: bool) -> None:
        self.name = name
        self.mode = mode
        self.reshape_transform = reshape_transform
        self.create_graph = create_graph
        self.activation: Tensor | None = None
        self.version = 0
        self.calls = 0
        self.map: Tensor | None = None
        self.spatial: tuple[int, int] | None = None

    def forward_hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError(
                f"layer {self.name!r} ran more than once in one forward pass; choose layers that run once"
            )
        if not isinstance(output, Tensor):
            raise TypeError(f"layer {self.name!r} returned {type(output).__name__}; camfast needs a tensor output")
        self.activation = output
        self.version = output._version
        feat = self._features(output.detach())
        self.spatial = (int(feat.shape[-2]), int(feat.shape[-1]))
        if output.requires_grad:
            output.register_hook(self.gradient_hook)

    def _features(self, t: Tensor) -> Tensor:
        if self.reshape_transform is not None:
            t = self.reshape_transform(t)
        if t.dim() != 4:
            raise ValueError(
                f"layer {self.name!r} gives shape {tuple(t.shape)}, not (B, C, h, w); "
                "pass reshape_transform=... for token outputs (vision transformers)"
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
        if g.dtype != a.dtype:
            g = g.to(a.dtype)
        with torch.set_grad_enabled(self.create_graph):
            self.map = grad_weighted_map(a, g, self.mode)
        self.activation = None  # the gradient and our reference to the activation go now


def _run_gradient_method(
    model: nn.Module, x: Tensor, target: Target, layers: list[tuple[str, nn.Module]], mode: str,
    reshape_transform: Callable[[Tensor], Tensor] | None, output_fn: Callable[[Any], Tensor] | None,
    create_graph: bool,
) -> tuple[list[Tensor], Tensor, Tensor | None]:
    taps = [_LayerTap(name, mode, reshape_transform, create_graph) for name, _ in layers]
    handles = []
    try:
        for tap, (_, module) in zip(taps, layers):
            handles.append(module.register_forward_hook(tap.forward_hook))
        with torch.enable_grad():
            # Differentiate towards the input only: every hooked layer lies between it and
            # the score, so each tap's hook fires, and no parameter gradient is computed.
            x_in = x if x.requires_grad else x.detach().requires_grad_(True)
            logits = _logits(model(x_in), output_fn)
            score, idx = _score(logits, target)
            if not score.requires_grad:
                raise RuntimeError("the target score does not depend on the input: is the model frozen in no_grad?")
            wrt = x_in
            act = taps[0].activation if len(taps) == 1 else None
            if act is not None and act.requires_grad and act._version == taps[0].version:
                # One layer (Grad-CAM): the backward stops at that layer's output instead of
                # running through every layer below it (its hook fires all the same). Not
                # when the output was modified in place: the input then, and the hook raises.
                wrt = act
            del act
            torch.autograd.grad(score, (wrt,), create_graph=create_graph, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
        for tap in taps:
            tap.activation = None
    maps = []
    for tap in taps:
        if tap.calls == 0:
            raise RuntimeError(f"layer {tap.name!r} did not run in the forward pass")
        if tap.map is None:  # the layer does not influence the score: its map is zero
            assert tap.spatial is not None
            tap.map = x.new_zeros((x.shape[0], *tap.spatial), dtype=torch.float32)
        maps.append(tap.map)
    return maps, logits.detach(), idx


def _unit_scale(m: Tensor) -> Tensor:
    """``m / max|m|`` per sample (float32): min-max normalisation's fixed ``eps`` (1e-7) is then
    negligible whatever the maps' magnitude (gradients of an untrained network are ~1e-6)."""
    m = m.float()
    scale = m.detach().abs().amax(dim=(-2, -1), keepdim=True)
    return m / scale.clamp_min(torch.finfo(torch.float32).tiny)


def _fuse(maps: list[Tensor], size: tuple[int, int], fuse: str) -> Tensor:
    if fuse not in ("max", "mean"):
        raise ValueError(f"fuse must be 'max' or 'mean', got {fuse!r}")
    maps = [_unit_scale(m) for m in maps]
    fused = upsample_aggregate(maps, size, reduce=fuse, normalize="minmax")
    if len(maps) > 1:  # back to [0, 1] after fusing; a single normalised layer already is
        fused = upsample_aggregate([fused], size, reduce="max", normalize="minmax")
    return fused


def _gradient_cam(model, x, target, layers, mode, fuse, output_size, return_layers, reshape_transform,
                  output_fn, create_graph, argument="layers"):
    x = _check_input(x)
    size = _output_size(x, output_size)
    chosen = resolve_layers(model, layers, argument)
    maps, logits, idx = _run_gradient_method(model, x, target, chosen, mode, reshape_transform, output_fn,
                                             create_graph)
    out = _fuse(maps, size, fuse)
    if return_layers:
        return CAMResult(out, {name: m for (name, _), m in zip(chosen, maps)}, logits, idx)
    return out


def zoom_cam(model: nn.Module, x: Tensor, target: Target = None, layers: Layers = None, fuse: str = "max",
             output_size: int | Sequence[int] | None = None, *, return_layers: bool = False,
             reshape_transform: Callable[[Tensor], Tensor] | None = None,
             output_fn: Callable[[Any], Tensor] | None = None, create_graph: bool = False):
    """Zoom-CAM (Shi et al., ICPR 2020): per-activation gradient weighting over all layers.

    For each layer ``l``: ``M_l = ReLU(sum_c G_c * A_c)``, min-max normalised, bilinearly
    upsampled to the output size and fused by element-wise max (``fuse="max"``, the paper's
    choice) or mean; the result is normalised to [0, 1].

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
        return_layers: return a :class:`CAMResult` with the per-layer maps too.
        reshape_transform: turns a layer output (and its gradient) into ``(B, C, h, w)``,
            e.g. for vision-transformer tokens.
        output_fn: picks the class scores from a model output that is not a tensor.
        create_graph: keep the maps differentiable (for training losses).

    Returns:
        ``(B, H, W)`` float32 in [0, 1] (a constant map is all zeros), or a ``CAMResult``.

    Example:
        >>> cam = camfast.zoom_cam(model.eval(), images)   # (B, H, W)
    """
    return _gradient_cam(model, x, target, layers, "zoom", fuse, output_size, return_layers, reshape_transform,
                         output_fn, create_graph)


def layer_cam(model: nn.Module, x: Tensor, target: Target = None, layers: Layers = None, fuse: str = "max",
              output_size: int | Sequence[int] | None = None, *, return_layers: bool = False,
              reshape_transform: Callable[[Tensor], Tensor] | None = None,
              output_fn: Callable[[Any], Tensor] | None = None, create_graph: bool = False):
    """LayerCAM (Jiang et al., TIP 2021): ``M_l = ReLU(sum_c ReLU(G_c) * A_c)`` per layer,
    fused like :func:`zoom_cam`. Arguments and result as for :func:`zoom_cam`."""
    return _gradient_cam(model, x, target, layers, "layercam", fuse, output_size, return_layers,
                         reshape_transform, output_fn, create_graph)


def grad_cam(model: nn.Module, x: Tensor, target: Target = None, layer: str | nn.Module | None = None,
             output_size: int | Sequence[int] | None = None, *, return_layers: bool = False,
             reshape_transform: Callable[[Tensor], Tensor] | None = None,
             output_fn: Callable[[Any], Tensor] | None = None, create_graph: bool = False):
    """Grad-CAM (Selvaraju et al., ICCV 2017) on one layer: ``M = ReLU(sum_c mean_hw(G_c) A_c)``.

    ``layer`` defaults to the deepest layer of ``camfast.find_layers(model)``. The map is
    min-max normalised and bilinearly upsampled. Other arguments as for :func:`zoom_cam`.
    """
    if layer is None:
        layer = find_layers(model)[-1]
    if not isinstance(layer, (str, nn.Module)):
        raise TypeError(f"layer must be a module name or an nn.Module, got {type(layer).__name__}")
    return _gradient_cam(model, x, target, layer, "gradcam", "max", output_size, return_layers,
                         reshape_transform, output_fn, create_graph, argument="layer")


# ------------------------------------------------------------------------------ CAM (Zhou 2016)
_POOLS = (nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d)


def _classifier(model: nn.Module) -> tuple[str, nn.Module, nn.Linear]:
    """The global pooling module and the linear layer after it (last of each, in order)."""
    modules = list(model.named_modules())
    linears = [(i, n, m) for i, (n, m) in enumerate(modules) if isinstance(m, nn.Linear)]
    pools = [(i, n, m) for i, (n, m) in enumerate(modules)
             if isinstance(m, _POOLS) or type(m).__name__ == "ThresholdedAvgPool2d"]
    if linears and pools:
        li, _, linear = linears[-1]
        before = [p for p in pools if p[0] < li]
        if before:
            return before[-1][1], before[-1][2], linear
    raise ValueError(
        f"camfast.cam needs a global pooling followed by a linear classifier and found none in "
        f"{type(model).__name__} (looked for nn.AdaptiveAvgPool2d / nn.AvgPool2d / ThresholdedAvgPool2d "
        "registered before an nn.Linear); use grad_cam for other models"
    )


def cam(model: nn.Module, x: Tensor, target: Target = None, clamp_negative_weights: bool = False,
        output_size: int | Sequence[int] | None = None, *, return_layers: bool = False,
        output_fn: Callable[[Any], Tensor] | None = None):
    """CAM (Zhou et al., CVPR 2016) from the classifier weights after global pooling.

    ``M = sum_c W[target, c] * F_c`` with ``F`` the features entering the global pooling
    and ``W`` the following linear layer's weight; no gradient is computed (one forward, in
    ``torch.no_grad``). ``clamp_negative_weights=True`` uses ``max(W, 0)`` (NWC, Bae et al.
    2020). The map is min-max normalised and bilinearly upsampled to the output size.

    Raises:
        ValueError: if the model has no "global pooling then linear" head.
    """
    x = _check_input(x)
    size = _output_size(x, output_size)
    pool_name, pool, linear = _classifier(model)
    captured: list[Tensor] = []

    def pre_hook(module, inputs):
        captured.append(inputs[0])

    handle = pool.register_forward_pre_hook(pre_hook)
    try:
        with torch.no_grad():
            logits = _logits(model(x), output_fn)
    finally:
        handle.remove()
    if len(captured) != 1 or captured[0].dim() != 4:
        raise ValueError(f"camfast.cam: the pooling module {pool_name!r} did not receive one (B, C, h, w) input")
    feats = captured[0]
    if feats.shape[1] != linear.in_features:
        raise ValueError(
            f"camfast.cam: features entering {pool_name!r} have {feats.shape[1]} channels but the "
            f"classifier expects {linear.in_features}"
        )
    if target is not None and (callable(target) or (isinstance(target, (list, tuple)) and target
                                                   and callable(target[0]))):
        raise TypeError("camfast.cam takes class indices as target, not callables")
    _, idx = _score(logits, target)
    w = linear.weight.detach()[idx].to(torch.float32)  # (B, C)
    if clamp_negative_weights:
        w = w.clamp_min(0)
    m = torch.einsum("bchw,bc->bhw", feats.to(torch.float32), w)
    out = upsample_aggregate([_unit_scale(m)], size, reduce="max", normalize="minmax")
    if return_layers:
        return CAMResult(out, {pool_name: m}, logits, idx)
    return out
