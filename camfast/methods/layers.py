"""Which layers a CAM method looks at: automatic discovery and resolution of user choices.

``find_layers(model)`` returns module names, shallowest first, by the first rule that fits
(data-parallel and ``torch.compile`` wrappers are looked through, :mod:`camfast.methods.state`):

* **detectors** with a feature pyramid (torchvision's Faster R-CNN, RetinaNet, FCOS): the
  pyramid's outputs ``backbone.fpn.layer_blocks.{i}``, P2..P5 from the finest to the coarsest;
* **vision transformers** (one sequence of attention blocks, each with a first norm and an
  attention module: timm's ViT / DeiT ``blocks``, torchvision's ViT ``encoder.layers``,
  Hugging Face ViT ``encoder.layer``): every block's output, except that when the model reads
  its class from the class token (timm ``global_pool='token'``, torchvision and Hugging Face
  ViTs; DeiT's distillation token too) the last block's output carries no gradient on its
  patch tokens (only the class token reaches the head), so the last block's *first norm*
  (``norm1`` / ``ln_1`` / ``layernorm_before``: the input of the attention through which the
  class token reads the patches) takes its place. Token outputs are laid out as maps by
  :mod:`camfast.methods.tokens`;
* **networks of blocks**: the stem's last activation module (when there is one) and every
  block's output. Blocks are, by class name: residual blocks (torchvision and timm
  ``BasicBlock``/``Bottleneck``, torchvision RegNet's ``ResBottleneckBlock``, timm RegNet's
  ``Bottleneck``/``PreBottleneck``), MobileNet / EfficientNet blocks (``InvertedResidual``, ``MBConv``,
  ``FusedMBConv``, lukemelas' ``MBConvBlock``, timm's ``EdgeResidual``,
  ``DepthwiseSeparableConv``, ``ConvBnAct``, ``UniversalInvertedResidual``, ``MobileAttention``), ConvNeXt blocks
  (timm ``ConvNeXtBlock``, torchvision ``CNBlock``), Swin blocks (timm and torchvision
  ``SwinTransformerBlock``(``V2``), channels-last outputs, permuted) and DenseNet's dense
  blocks (timm ``DenseBlock``, torchvision ``_DenseBlock``: each block's concatenated output);
* **plain CNNs** (VGG, an ``nn.Sequential`` of convolutions): every activation module that
  follows a convolution (possibly through a normalisation layer). On VGG16 these are the 13
  post-conv ReLU outputs that Zoom-CAM's official code uses.

Discovery is static (module registration order), so it needs no input and runs no model.
Layers inside a block (a ConvNeXt block's ``mlp.fc1``, which works on channels-last tensors,
or a transformer's attention internals) are never chosen.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch import nn

from camfast.methods.detection import detection_layers
from camfast.methods.state import unwrap
from camfast.methods.tokens import model_hints

__all__ = ["default_layer", "find_layers", "resolve_layers"]

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.Hardswish, nn.ELU, nn.Mish, nn.PReLU,
                nn.Hardtanh, nn.SELU, nn.CELU)
_CONVS = (nn.Conv2d,)
_NORMS = (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm, nn.SyncBatchNorm)
_BLOCK_NAMES = re.compile(
    r"(BasicBlock|Bottleneck|PreBottleneck|ResBottleneckBlock|InvertedResidual|MBConv|MBConvBlock|FusedMBConv|ResidualBlock"
    r"|EdgeResidual|DepthwiseSeparableConv|ConvBnAct|UniversalInvertedResidual|CondConvResidual|MobileAttention"
    r"|ConvNeXtBlock|CNBlock|SwinTransformerBlock|SwinTransformerBlockV2|DenseBlock|_DenseBlock)$")
#: (first norm, attention) attribute pairs of a transformer block: timm, torchvision, Hugging Face.
_ATTENTION_BLOCKS = (("norm1", "attn"), ("ln_1", "self_attention"), ("layernorm_before", "attention"))


def _is_activation(m: nn.Module) -> bool:
    return isinstance(m, _ACTIVATIONS) or type(m).__name__ in {"Swish", "MemoryEfficientSwish", "HardSwish"}


def _blocks(model: nn.Module) -> list[str]:
    found: list[str] = []
    for name, m in model.named_modules():
        if not name or not _BLOCK_NAMES.search(type(m).__name__):
            continue
        if any(name.startswith(parent + ".") for parent in found):
            continue  # nested inside a block already chosen
        found.append(name)
    return found


def _post_conv_activations(model: nn.Module) -> list[str]:
    """Activation modules that directly follow a convolution (through norms) in a Sequential
    or in a module's registration order."""
    chosen: list[str] = []
    for parent_name, parent in model.named_modules():
        prev_kind = None
        for child_name, child in parent.named_children():
            if isinstance(child, _CONVS):
                prev_kind = "conv"
            elif isinstance(child, _NORMS) and prev_kind == "conv":
                prev_kind = "conv"
            elif _is_activation(child) and prev_kind == "conv":
                chosen.append(f"{parent_name}.{child_name}" if parent_name else child_name)
                prev_kind = None
            else:
                prev_kind = None
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return sorted(set(chosen), key=order.__getitem__)


def _first_norm(block: nn.Module) -> str | None:
    for norm, attn in _ATTENTION_BLOCKS:
        if isinstance(getattr(block, norm, None), nn.Module) and isinstance(getattr(block, attn, None), nn.Module):
            return norm
    return None


def _transformer_layers(model: nn.Module) -> list[str] | None:
    """The vision-transformer rule (module docstring), or None when the model has not exactly
    one sequence of attention blocks."""
    found = [(name, m) for name, m in model.named_modules()
             if isinstance(m, (nn.Sequential, nn.ModuleList)) and len(m) > 0
             and all(_first_norm(c) is not None for c in m.children())
             and not any(type(c).__name__.startswith("Swin") for c in m.children())]
    if len(found) != 1:
        return None
    name, seq = found[0]
    blocks = [(f"{name}.{child}" if name else child, c) for child, c in seq.named_children()]
    layers = [n for n, _ in blocks]
    prefix = model_hints(model).prefix_tokens or 0
    if prefix > 0 and getattr(model, "global_pool", "token") == "token":
        last_name, last = blocks[-1]
        layers[-1] = f"{last_name}.{_first_norm(last)}"
    return layers


def find_layers(model: nn.Module) -> list[str]:
    """The layers camfast hooks by default for multi-layer methods, shallowest first (the
    rule per family is in the module docstring).

    Args:
        model: a classifier, segmentation model or detector (``nn.Module``; wrappers are
            looked through).

    Returns:
        Module names as in ``model.named_modules()`` (of the wrapped module for wrappers).

    Raises:
        ValueError: when no feature layer can be found; pass ``layers=`` then.

    Example:
        >>> camfast.find_layers(torchvision.models.vgg16())[:3]
        ['features.1', 'features.3', 'features.6']
        >>> camfast.find_layers(timm.create_model("vit_tiny_patch16_224"))[-2:]
        ['blocks.10', 'blocks.11.norm1']
    """
    model = unwrap(model)
    for rule in (detection_layers, _transformer_layers):
        layers = rule(model)
        if layers:
            return layers
    blocks = _blocks(model)
    if blocks:
        first = list(dict(model.named_modules())).index(blocks[0])
        stem = [
            name for i, (name, m) in enumerate(model.named_modules())
            if i < first and name and _is_activation(m) and not any(name.startswith(b + ".") for b in blocks)
        ]
        return stem[-1:] + blocks
    layers = _post_conv_activations(model)
    if not layers:
        layers = [name for name, m in model.named_modules() if isinstance(m, _CONVS)]
    if not layers:
        raise ValueError(
            f"camfast could not find convolutional feature layers in {type(model).__name__}; "
            "pass layers=[...] (module names or modules) explicitly"
        )
    return layers


def default_layer(model: nn.Module) -> str:
    """The one layer single-layer methods (Grad-CAM, HiResCAM, XGrad-CAM, ...) hook by default.

    Selvaraju et al.'s rule: the last convolutional feature map before the global pooling.
    That is the last activation that follows a convolution (through a normalisation layer)
    registered after the deepest of :func:`find_layers` (outside it) and before the first
    pooling or linear module after it: on EfficientNet-Lite0 the head's activation
    (``_head_act``, the map entering the pooling, where Grad-CAM reproduces CAM), on
    MobileNetV2 ``features.18.2``. Where there is none (ResNet, VGG, transformers: the last
    block's or activation's output already is that map) it is ``find_layers(model)[-1]``.

    Raises:
        ValueError: as :func:`find_layers`.
    """
    model = unwrap(model)
    layers = find_layers(model)
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    last = layers[-1]
    stop = next((order[n] for n, m in model.named_modules()
                 if order[n] > order[last] and not n.startswith(last + ".")
                 and (isinstance(m, nn.Linear) or "Pool" in type(m).__name__)), len(order))
    after = [n for n in _post_conv_activations(model)
             if order[last] < order[n] < stop and not n.startswith(last + ".")]
    return after[-1] if after else last


def resolve_layers(model: nn.Module, layers: str | nn.Module | Iterable[str | nn.Module] | None,
                   argument: str = "layers") -> list[tuple[str, nn.Module]]:
    """``(name, module)`` pairs for ``layers`` (names, modules, or None for ``find_layers``).

    Names are those of the module inside a data-parallel or ``torch.compile`` wrapper; the
    wrapper's own names (``module.layer4``, ``_orig_mod.layer4``) are accepted too."""
    wrapper = dict(model.named_modules()) if isinstance(model, nn.Module) else {}
    model = unwrap(model)
    named = dict(model.named_modules())
    inner_name = {id(m): n for n, m in named.items()}
    for n, m in wrapper.items():  # the wrapper's spelling of an inner module
        if n not in named and id(m) in inner_name:
            named.setdefault(n, m)
    if layers is None:
        return [(n, named[n]) for n in find_layers(model)]
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    by_id = inner_name
    out: list[tuple[str, nn.Module]] = []
    for item in layers:
        if isinstance(item, str):
            if item not in named:
                close = [n for n in named if n.endswith(item) or item in n][:5]
                hint = f"; did you mean one of {close}?" if close else ""
                raise ValueError(f"{argument}: the model has no module named {item!r}{hint}")
            out.append((inner_name.get(id(named[item]), item) or item, named[item]))
        elif isinstance(item, nn.Module):
            if id(item) not in by_id:
                raise ValueError(f"{argument}: module {type(item).__name__} is not part of the model")
            out.append((by_id[id(item)] or type(item).__name__, item))
        else:
            raise TypeError(f"{argument} must hold module names or nn.Module objects, got {type(item).__name__}")
    if not out:
        raise ValueError(f"{argument} must not be empty")
    return out
