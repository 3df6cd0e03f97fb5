"""A layer's output as ``(B, C, h, w)`` maps: token sequences, channels-last tensors, NCHW.

Gradient methods weight a layer's activation ``A`` by its gradient ``G``, both laid out as
``(B, C, h, w)``. Vision transformers and some CNNs give other layouts; the rule that maps
each to ``(B, C, h, w)`` is decided once per layer and call from the output's shape, the
input's ``(H, W)`` and what the model declares (:class:`ModelHints`), and then applied to
``A`` and ``G`` alike (:class:`SpatialLayout`):

* ``(B, N, C)`` tokens (ViT, DeiT, Swin in some implementations): ``N = k + h * w`` with
  ``k`` leading non-patch tokens (class, distillation, register tokens) that are dropped, and
  ``(h, w)`` the patch grid. ``k`` is the model's ``num_prefix_tokens`` (timm) or the count of
  its ``cls_token`` / ``class_token`` / ``dist_token`` / ``reg_token`` / ``register_tokens``
  parameters; the grid is ``(H // p, W // p)`` for the model's patch size ``p``
  (``patch_embed.patch_size``, ``patch_size``, ``config.patch_size``) when that fits, else the
  only ``(k, h, w)`` with ``0 <= k <= 16`` whose grid is the input divided by one integer
  stride (exact division preferred, then floor or ceiling). Several fits, or none: a
  ``ValueError`` naming the layer, the shape and the ``reshape_transform`` to pass.
* ``(B, H', W', C)`` channels-last outputs (timm's and torchvision's Swin blocks; an
  ``nn.Linear`` or ``nn.LayerNorm`` applied to a channels-last tensor, as inside ConvNeXt
  blocks): permuted to ``(B, C, H', W')``. A 4-D output is channels-last when the module is
  one of those kinds, or when its dims 1-2 fit the input's grid and dims 2-3 do not.
* any other 4-D output is ``(B, C, h, w)`` as it is.

``reshape_transform=`` given by the user replaces the whole rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

__all__ = ["MAX_PREFIX_TOKENS", "ModelHints", "SpatialLayout", "infer_layout", "model_hints"]

#: The most leading non-patch tokens a token layout is searched for (class + distillation +
#: registers) when the model does not declare its count.
MAX_PREFIX_TOKENS = 16

_TOKEN_PARAMS = ("cls_token", "class_token", "dist_token", "reg_token", "register_tokens")
_CHANNELS_LAST_BLOCKS = ("SwinTransformerBlock", "SwinTransformerBlockV2", "SwinTransformerStage", "PatchMerging",
                         "PatchMergingV2")


@dataclass(frozen=True)
class ModelHints:
    """What a model declares about its tokens: leading non-patch tokens and patch size."""

    prefix_tokens: int | None = None
    patch_size: tuple[int, int] | None = None


def _pair(v: object) -> tuple[int, int] | None:
    if isinstance(v, int) and not isinstance(v, bool) and v > 0:
        return v, v
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(i, int) and i > 0 for i in v):
        return int(v[0]), int(v[1])
    return None


def model_hints(model: nn.Module) -> ModelHints:
    """The model's declared prefix-token count and patch size (None where it declares none)."""
    prefix = getattr(model, "num_prefix_tokens", None)
    if not isinstance(prefix, int) or isinstance(prefix, bool) or prefix < 0:
        prefix = None
        found = 0
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in _TOKEN_PARAMS and p.dim() >= 2:
                found += int(p.shape[-2])
        prefix = found if found else None
    patch = None
    for owner in (getattr(model, "patch_embed", None), model, getattr(model, "config", None)):
        patch = _pair(getattr(owner, "patch_size", None)) if owner is not None else None
        if patch is not None:
            break
    return ModelHints(prefix, patch)


@dataclass(frozen=True)
class SpatialLayout:
    """How one layer's output becomes ``(B, C, h, w)``.

    Attributes:
        kind: ``"nchw"`` (as it is), ``"nhwc"`` (permuted), ``"tokens"`` (``prefix`` leading
            tokens dropped, the rest a row-major ``grid``), ``"custom"`` (``transform``).
        prefix: leading non-patch tokens (``"tokens"``).
        grid: ``(h, w)`` of the patch tokens (``"tokens"``).
        transform: the user's ``reshape_transform`` (``"custom"``).
    """

    kind: str
    prefix: int = 0
    grid: tuple[int, int] = (0, 0)
    transform: Callable[[Tensor], Tensor] | None = None

    def __call__(self, t: Tensor) -> Tensor:
        if self.kind == "nchw":
            return t
        if self.kind == "nhwc":
            return t.permute(0, 3, 1, 2)
        if self.kind == "tokens":
            h, w = self.grid
            return t[:, self.prefix:].reshape(t.shape[0], h, w, t.shape[-1]).permute(0, 3, 1, 2)
        assert self.transform is not None
        return self.transform(t)


def _stride_fits(h: int, w: int, H: int, W: int, exact: bool) -> bool:
    """Whether ``(h, w)`` is ``(H, W)`` divided by one integer stride ``s`` (exactly, or with
    the floor or the ceiling of each side)."""
    if h <= 0 or w <= 0 or h > H or w > W:
        return False
    if exact:
        return H % h == 0 and W % w == 0 and H // h == W // w
    lo = max(1, math.floor(H / (h + 1)))
    hi = math.ceil(H / max(h - 1, 0.5))
    for s in range(lo, hi + 1):
        if h in (H // s, -(-H // s)) and w in (W // s, -(-W // s)):
            return True
    return False


def _grid_fits(h: int, w: int, H: int, W: int) -> bool:
    return _stride_fits(h, w, H, W, exact=False)


def _token_candidates(N: int, H: int, W: int, prefixes: range | tuple[int, ...], exact: bool) -> list[tuple[int, int, int]]:
    out = []
    for k in prefixes:
        n = N - k
        if n <= 0:
            continue
        for h in range(1, math.isqrt(n) + 1):
            if n % h:
                continue
            for hh, ww in {(h, n // h), (n // h, h)}:
                if _stride_fits(hh, ww, H, W, exact):
                    out.append((k, hh, ww))
    return sorted(set(out))


def _token_layout(name: str, shape: tuple[int, ...], image: tuple[int, int], hints: ModelHints) -> SpatialLayout:
    N = shape[1]
    H, W = image
    k = hints.prefix_tokens
    if k is not None and hints.patch_size is not None:
        p, q = hints.patch_size
        for gh, gw in {(H // p, W // q), (-(-H // p), -(-W // q))}:
            if gh > 0 and gw > 0 and N == k + gh * gw:
                return SpatialLayout("tokens", k, (gh, gw))
    stages: list[range | tuple[int, ...]] = [(k,)] if k is not None else []
    stages.append(range(0, MAX_PREFIX_TOKENS + 1))
    for prefixes in stages:
        for exact in (True, False):
            found = _token_candidates(N, H, W, prefixes, exact)
            if len(found) == 1:
                kk, gh, gw = found[0]
                return SpatialLayout("tokens", kk, (gh, gw))
            if len(found) > 1:
                raise ValueError(_ambiguous(name, shape, image, found))
    raise ValueError(
        f"layer {name!r} gives tokens of shape {shape} for a {H}x{W} input and no count of leading "
        f"non-patch tokens (0-{MAX_PREFIX_TOKENS}) leaves a patch grid that fits the input; "
        "pass reshape_transform=... that turns it into (B, C, h, w), or choose another layer"
    )


def _ambiguous(name: str, shape: tuple[int, ...], image: tuple[int, int], found: list[tuple[int, int, int]]) -> str:
    options = ", ".join(f"{k} leading tokens + a {h}x{w} grid" for k, h, w in found[:4])
    k, h, w = found[0]
    return (f"layer {name!r} gives tokens of shape {shape} for a {image[0]}x{image[1]} input, which camfast "
            f"cannot lay out unambiguously ({options}); pass reshape_transform=, e.g. "
            f"lambda t: t[:, {k}:].reshape(t.shape[0], {h}, {w}, t.shape[-1]).permute(0, 3, 1, 2)")


def _channels_last_module(module: nn.Module) -> bool:
    kind = type(module).__name__
    if kind in _CHANNELS_LAST_BLOCKS:
        return True
    if isinstance(module, nn.Linear):
        return True
    # nn.LayerNorm over the last dim (timm's LayerNorm2d, a subclass, normalises dim 1)
    return isinstance(module, nn.LayerNorm) and not kind.endswith("2d")


def infer_layout(name: str, module: nn.Module, shape: tuple[int, ...], image: tuple[int, int], hints: ModelHints,
                 reshape_transform: Callable[[Tensor], Tensor] | None = None) -> SpatialLayout:
    """The :class:`SpatialLayout` of layer ``name`` whose output has ``shape`` for an input of
    ``image = (H, W)`` (rules in the module docstring). Raises ``ValueError`` naming the layer
    when the shape cannot be laid out, or only ambiguously."""
    if reshape_transform is not None:
        return SpatialLayout("custom", transform=reshape_transform)
    H, W = image
    if len(shape) == 3:
        return _token_layout(name, shape, image, hints)
    if len(shape) == 4:
        nchw = _grid_fits(shape[2], shape[3], H, W)
        nhwc = _grid_fits(shape[1], shape[2], H, W)
        if _channels_last_module(module):
            if nhwc:
                return SpatialLayout("nhwc")
            if type(module).__name__ not in _CHANNELS_LAST_BLOCKS and not isinstance(module, nn.Linear) and nchw:
                return SpatialLayout("nchw")
            raise ValueError(
                f"layer {name!r} ({type(module).__name__}) gives shape {shape}, channels-last for a "
                f"{H}x{W} input, but its dims 1-2 do not fit the input; pass reshape_transform=..."
            )
        if nhwc and not nchw:
            return SpatialLayout("nhwc")
        return SpatialLayout("nchw")
    raise ValueError(
        f"layer {name!r} gives shape {shape}, not (B, C, h, w), (B, h, w, C) or (B, tokens, C); "
        "pass reshape_transform=... that turns it into (B, C, h, w), or choose another layer"
    )
