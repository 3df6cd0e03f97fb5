"""Native launcher for ``camfast::box_filter`` (csrc/cpu/box_filter_cpu.cpp, csrc/cuda/box_filter_cuda.cu)."""

from __future__ import annotations

import torch
from torch import Tensor

from camfast.ops.native._launch import DTYPE_CODES, acc_dtype, device_args, lib


def _run(x: Tensor, radius: int, backward: bool) -> Tensor:
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    # CUDA: the horizontal sums go through a B*C*H*W workspace; the CPU kernel keeps its own.
    ws = x.new_empty((x.numel() if x.device.type == "cuda" else 1,), dtype=acc_dtype(x))
    dev, index, stream = device_args(x)
    lib().box_filter(dev, index, DTYPE_CODES[x.dtype], backward, tuple(x.shape), int(radius), x.data_ptr(),
                     x.stride(), out.data_ptr(), out.stride(), ws.data_ptr(), stream)
    return out


def forward(x: Tensor, radius: int) -> Tensor:
    return _run(x, radius, False)


def backward(grad_out: Tensor, radius: int) -> Tensor:
    return _run(grad_out, radius, True)
