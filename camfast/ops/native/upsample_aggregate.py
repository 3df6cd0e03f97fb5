"""Native launcher for ``camfast::upsample_aggregate`` (csrc/cpu/*_cpu.cpp, csrc/cuda/*.cu)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from camfast.ops._spec import UA_NORMALIZES, UA_REDUCES
from camfast.ops.native._launch import DTYPE_CODES, acc_dtype, device_args, lib


def _layer_args(maps: Sequence[Tensor], weights: Sequence[float] | None):
    """Per-layer raw arguments: data pointers, ``(h, w)``, element strides, weights."""
    return (
        [m.data_ptr() for m in maps],
        [tuple(m.shape[1:]) for m in maps],
        [m.stride() for m in maps],
        [1.0] * len(maps) if weights is None else [float(w) for w in weights],
    )


def forward(maps: Sequence[Tensor], size: tuple[int, int], reduce: str, normalize: str,
            weights: Sequence[float] | None) -> Tensor:
    first = maps[0]
    B, (H, W), L = first.shape[0], size, len(maps)
    out = first.new_empty((B, H, W))
    workspace = first.new_empty((2 * B * L,), dtype=acc_dtype(first))
    dev, index, stream = device_args(first)
    lib().upsample_aggregate_forward(
        dev, index, DTYPE_CODES[first.dtype], UA_REDUCES[reduce], UA_NORMALIZES[normalize], (B, H, W),
        *_layer_args(maps, weights), out.data_ptr(), workspace.data_ptr(), stream,
    )
    return out


def backward(grad_out: Tensor, maps: Sequence[Tensor], reduce: str, normalize: str,
             weights: Sequence[float] | None) -> list[Tensor]:
    first = maps[0]
    B, H, W = grad_out.shape
    L = len(maps)
    grad_out = grad_out.to(first.dtype).contiguous()  # the kernel reads [B, H, W] contiguous, maps' dtype
    grads = [torch.empty_like(m) for m in maps]
    # CUDA scatter-adds dL/dN_l into the workspace; the CPU kernel keeps it per thread.
    n = 4 * B * L + (B * sum(m.shape[1] * m.shape[2] for m in maps) if first.device.type == "cuda" else 0)
    workspace = first.new_empty((n,), dtype=acc_dtype(first))
    dev, index, stream = device_args(first)
    lib().upsample_aggregate_backward(
        dev, index, DTYPE_CODES[first.dtype], UA_REDUCES[reduce], UA_NORMALIZES[normalize], (B, H, W),
        *_layer_args(maps, weights), grad_out.data_ptr(), [g.data_ptr() for g in grads],
        [g.stride() for g in grads], workspace.data_ptr(), stream,
    )
    return grads
