"""Which layers a CAM method looks at: automatic discovery and resolution of user choices.

``find_layers(model)`` returns module names, shallowest first:

* residual networks (torchvision ResNet's ``BasicBlock``/``Bottleneck``; MobileNet's
  ``InvertedResidual``; EfficientNet's ``MBConv``/``MBConvBlock``; any module class whose name
  ends in ``Block`` with a ``downsample``/shortcut): the stem's last activation and every
  block's output;
* plain CNNs (VGG, an ``nn.Sequential`` of convolutions): every activation module that
  follows a convolution (possibly through a normalisation layer). On VGG16 these are the 13
  post-conv ReLU outputs that Zoom-CAM's official code uses.

Discovery is static (module registration order), so it needs no input and runs no model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch import nn

__all__ = ["default_layer", "find_layers", "resolve_layers"]

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.Hardswish, nn.ELU, nn.Mish, nn.PReLU,
                nn.Hardtanh, nn.SELU, nn.CELU)
_CONVS = (nn.Conv2d,)
_NORMS = (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm, nn.SyncBatchNorm)
_BLOCK_NAMES = re.compile(r"(BasicBlock|Bottleneck|InvertedResidual|MBConv|MBConvBlock|FusedMBConv|ResidualBlock)$")


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


def find_layers(model: nn.Module) -> list[str]:
    """The layers camfast hooks by default for multi-layer methods, shallowest first.

    Args:
        model: a CNN classifier (``nn.Module``).

    Returns:
        Module names as in ``model.named_modules()``.

    Raises:
        ValueError: when no convolutional feature layer can be found; pass ``layers=`` then.

    Example:
        >>> camfast.find_layers(torchvision.models.vgg16())[:3]
        ['features.1', 'features.3', 'features.6']
    """
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
    """``(name, module)`` pairs for ``layers`` (names, modules, or None for ``find_layers``)."""
    named = dict(model.named_modules())
    if layers is None:
        return [(n, named[n]) for n in find_layers(model)]
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    by_id = {id(m): n for n, m in named.items()}
    out: list[tuple[str, nn.Module]] = []
    for item in layers:
        if isinstance(item, str):
            if item not in named:
                close = [n for n in named if n.endswith(item) or item in n][:5]
                hint = f"; did you mean one of {close}?" if close else ""
                raise ValueError(f"{argument}: the model has no module named {item!r}{hint}")
            out.append((item, named[item]))
        elif isinstance(item, nn.Module):
            if id(item) not in by_id:
                raise ValueError(f"{argument}: module {type(item).__name__} is not part of the model")
            out.append((by_id[id(item)] or type(item).__name__, item))
        else:
            raise TypeError(f"{argument} must hold module names or nn.Module objects, got {type(item).__name__}")
    if not out:
        raise ValueError(f"{argument} must not be empty")
    return out
