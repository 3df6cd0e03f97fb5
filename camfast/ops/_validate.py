"""Input checks at the boundary between Python and the kernels.

Every op calls these once, before any backend runs, so a kernel never sees a tensor it
was not written for. Errors name the argument: ``TypeError`` for wrong types and dtypes,
``ValueError`` for wrong ranks, shapes, devices, empty tensors and bad options.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


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


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value
