"""Turning tensors into the raw arguments ``camfast._C`` takes: pointers, strides, codes."""

from __future__ import annotations

import torch
from torch import Tensor

from camfast import _ext
from camfast.ops._spec import DEVICES, DTYPES

#: ``torch.dtype`` -> its kernel code (camfast/ops/codes.json).
DTYPE_CODES = {getattr(torch, name): code for name, code in DTYPES.items()}


def lib():
    if _ext.native is None:  # resolve() never picks native then; this guards direct calls
        raise RuntimeError(f"camfast._C is not loaded ({_ext.native_error})")
    return _ext.native


def device_args(x: Tensor) -> tuple[int, int, int]:
    """``(device code, device index, stream handle)`` for a kernel launch on ``x``'s device."""
    if x.device.type == "cuda":
        index = x.device.index if x.device.index is not None else torch.cuda.current_device()
        return DEVICES["cuda"], index, torch.cuda.current_stream(x.device).cuda_stream
    if x.device.type == "cpu":
        return DEVICES["cpu"], 0, 0
    raise RuntimeError(f"no native kernels for device type {x.device.type!r}")


def acc_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32
