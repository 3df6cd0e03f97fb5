"""``torch.nn`` modules of camfast: thresholded average pooling and a model converter.

``ThresholdedAvgPool2d`` replaces global average pooling by TAP (Bae, Noh, Kim, ECCV 2020,
"Rethinking Class Activation Mapping for WSOL"); ``convert_to_tap`` swaps it into an
existing classifier. :func:`camfast.cam` recognises the module as the model's global pooling.
"""

from __future__ import annotations

import copy
import numbers

from torch import Tensor, nn

from camfast.ops.thresholded_avg_pool2d import check_theta, thresholded_avg_pool2d

__all__ = ["ThresholdedAvgPool2d", "convert_to_tap"]


class ThresholdedAvgPool2d(nn.Module):
    """Thresholded average pooling: ``(B, C, H, W) -> (B, C)`` (or ``(B, C, 1, 1)``).

    Each channel averages only its values above ``theta * max_hw`` (strictly); see
    :func:`camfast.ops.thresholded_avg_pool2d` for the definition, gradient and NaN rules.

    Args:
        theta: threshold ratio in ``[0, 1]`` (default 0.1, the paper's).
        flatten: ``True`` (default) returns ``(B, C)``, a drop-in for
            ``nn.AdaptiveAvgPool2d(1)`` followed by ``torch.flatten(x, 1)``; ``False`` returns
            ``(B, C, 1, 1)``, a drop-in for a bare ``nn.AdaptiveAvgPool2d(1)`` in a model whose
            forward flattens afterwards (torchvision's ResNet, EfficientNet, MobileNet).

    Example:
        >>> pool = camfast.nn.ThresholdedAvgPool2d(theta=0.1)
        >>> pool(torch.rand(2, 512, 7, 7)).shape
        torch.Size([2, 512])
    """

    def __init__(self, theta: float = 0.1, flatten: bool = True) -> None:
        super().__init__()
        if not isinstance(flatten, bool):
            raise TypeError(f"flatten must be a bool, got {type(flatten).__name__}")
        self.theta = check_theta(theta)
        self.flatten = flatten

    def forward(self, x: Tensor) -> Tensor:
        out = thresholded_avg_pool2d(x, self.theta)
        return out if self.flatten else out[:, :, None, None]

    def extra_repr(self) -> str:
        return f"theta={self.theta}, flatten={self.flatten}"


def _is_global_avg_pool(m: nn.Module) -> bool:
    if type(m) is not nn.AdaptiveAvgPool2d:
        return False
    size = m.output_size
    if isinstance(size, numbers.Integral):
        return size == 1
    return tuple(size) == (1, 1)


def convert_to_tap(model: nn.Module, theta: float = 0.1, inplace: bool = False) -> nn.Module:
    """Replace every global average pooling (``nn.AdaptiveAvgPool2d(1)`` or ``(1, 1)``) of
    ``model`` by ``ThresholdedAvgPool2d(theta, flatten=False)``.

    The replacement returns ``(B, C, 1, 1)`` like the module it replaces, so the model's
    forward (torchvision ResNet/EfficientNet/MobileNet ``avgpool`` then ``torch.flatten``,
    or an ``nn.Flatten`` in a plain ``nn.Sequential``) is unchanged. Other pooling layers
    (``AdaptiveAvgPool2d(7)``, max pooling, ``AvgPool2d``) are left alone.

    Args:
        model: any ``nn.Module``.
        theta: TAP threshold ratio in ``[0, 1]``.
        inplace: modify ``model`` itself; by default a deep copy is converted and returned.

    Returns:
        The converted model (``model`` itself when ``inplace=True``).

    Raises:
        ValueError: ``theta`` outside ``[0, 1]``, or no global average pooling in ``model``.
        TypeError: ``model`` not an ``nn.Module``, ``theta`` not a number.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    theta = check_theta(theta)
    if not isinstance(inplace, bool):
        raise TypeError(f"inplace must be a bool, got {type(inplace).__name__}")
    targets = [name for name, m in model.named_modules() if name and _is_global_avg_pool(m)]
    if not targets:
        raise ValueError(
            f"convert_to_tap found no global average pooling (nn.AdaptiveAvgPool2d(1)) in "
            f"{type(model).__name__}; pooling inside forward() (F.adaptive_avg_pool2d, x.mean) "
            "cannot be swapped: add a ThresholdedAvgPool2d to the model by hand"
        )
    if not inplace:
        model = copy.deepcopy(model)
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, ThresholdedAvgPool2d(theta, flatten=False))
    return model
