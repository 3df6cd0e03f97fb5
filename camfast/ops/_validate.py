"""Input checks at the boundary between Python and the kernels.

Every op calls these once, before any backend runs, so a kernel never sees a tensor it
was not written for. Errors name the argument: ``TypeError`` for wrong types and dtypes,
``ValueError`` for wrong ranks, shapes, devices, empty tensors and bad options.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

#: The annotation of an op's int and float options in its ``torch.library`` schema (there
#: ``Scalar``). For an ``int`` or ``float`` schema argument torch converts ``True`` to ``1`` /
#: ``1.0`` before the op's own checks run, so ``torch.ops.camfast.box_filter(x, True)`` was a
#: radius of 1; a ``Scalar`` reaches the op as the Python object it was, and :func:`check_int`
#: and the float checks reject a bool (and an int option given as a float) by name.
Option = torch.types.Number


def check_is_tensor(name: str, x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def check_tensor(name: str, x: object, ndim: int | None = None, layout: str = "") -> torch.Tensor:
    """A floating tensor of rank ``ndim`` (shape written ``layout`` in messages), non-empty."""
    x = check_is_tensor(name, x)
    if x.dtype not in FLOAT_DTYPES:
        allowed = ", ".join(str(d).replace("torch.", "") for d in FLOAT_DTYPES)
        raise TypeError(f"{name} must have a floating dtype ({allowed}), got {x.dtype}")
    if x.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {x.layout}")
    if ndim is not None and x.dim() != ndim:
        shape = f" {layout}" if layout else ""
        raise ValueError(f"{name} must have {ndim} dimensions{shape}, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    return x


def check_same(name: str, x: torch.Tensor, ref_name: str, ref: torch.Tensor, shape: bool = True) -> None:
    """``x`` matches ``ref`` in device, dtype and (optionally) shape."""
    if x.device != ref.device:
        raise ValueError(f"{name} is on {x.device} but {ref_name} is on {ref.device}; they must share a device")
    if x.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but {ref_name} has {ref.dtype}; they must match")
    if shape and x.shape != ref.shape:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)} but {ref_name} has {tuple(ref.shape)}; they must match"
        )


def check_like(name: str, x: object, shape: Sequence[object], ref_name: str, ref: torch.Tensor,
               dtype: torch.dtype | None = None) -> torch.Tensor:
    """A tensor a backward op reads beside ``ref`` (a gradient, a saved output): floating, of
    exactly ``shape`` (``None`` entries take any size), on ``ref``'s device and, when ``dtype``
    is given, of that dtype. Without ``dtype`` any floating dtype is taken: the kernels
    convert it to the inputs' dtype (autograd always passes that one)."""
    x = check_tensor(name, x, len(shape))
    if x.device != ref.device:
        raise ValueError(f"{name} is on {x.device} but {ref_name} is on {ref.device}; they must share a device")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype} for {ref_name} of dtype {ref.dtype}, got {x.dtype}")
    if any(want is not None and got != want for got, want in zip(x.shape, shape)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} has shape {tuple(x.shape)} but must have shape {want} for {ref_name} "
                         f"of shape {tuple(ref.shape)}")
    return x


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_tensor_list(name: str, xs: object, ndim: int, layout: str, max_len: int | None = None) -> list[torch.Tensor]:
    """A non-empty list/tuple of floating tensors of rank ``ndim`` sharing dtype, device and
    the leading (batch) size; entries are named ``name[i]`` in messages."""
    if not isinstance(xs, (list, tuple)):
        raise TypeError(f"{name} must be a list or tuple of tensors, got {type(xs).__name__}")
    if len(xs) == 0:
        raise ValueError(f"{name} must not be empty: pass at least one tensor {layout}")
    if max_len is not None and len(xs) > max_len:
        raise ValueError(f"{name} has {len(xs)} entries; at most {max_len} are supported")
    for i, x in enumerate(xs):
        check_is_tensor(f"{name}[{i}]", x)
    first = check_tensor(f"{name}[0]", xs[0], ndim, layout)
    for i, x in enumerate(xs[1:], start=1):
        check_tensor(f"{name}[{i}]", x, ndim, layout)
        check_same(f"{name}[{i}]", x, f"{name}[0]", first, shape=False)
        if x.shape[0] != first.shape[0]:
            raise ValueError(
                f"{name}[{i}] has batch size {x.shape[0]} but {name}[0] has {first.shape[0]}; they must match"
            )
    return list(xs)


def check_size2(name: str, size: object) -> tuple[int, int]:
    """A pair of positive ints ``(H, W)`` (a list, tuple or torch.Size; SymInts when tracing)."""
    ok = isinstance(size, (list, tuple)) and len(size) == 2 and all(
        isinstance(s, (int, torch.SymInt)) and not isinstance(s, bool) for s in size
    )
    if not ok:
        raise ValueError(f"{name} must be a pair of positive ints (H, W), got {size!r}")
    if not all(s > 0 for s in size):
        raise ValueError(f"{name} must be a pair of positive ints (H, W), got {tuple(size)!r}")
    return size[0], size[1]


def check_int(name: str, value: object, minimum: int) -> int:
    """A Python int (or integer scalar, never a bool) ``>= minimum``."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = value.__index__()
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def bounded_radius(radius: int, height: int, width: int) -> int:
    """A window radius capped at the image's larger side: a truncated window of any larger
    radius already covers every row or column, so the result is the same, and the kernels'
    index arithmetic (int64) never sees a radius it cannot hold."""
    return min(radius, max(height, width))


def check_positive_float(name: str, value: object) -> float:
    """A finite real number ``> 0``."""
    import math

    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite float > 0, got {value}")
    return value
