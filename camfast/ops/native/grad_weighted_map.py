"""Native launcher for ``camfast::grad_weighted_map`` (csrc/cpu/*_cpu.cpp, csrc/cuda/*.cu)."""

from __future__ import annotations

import torch
from torch import Tensor

from camfast.ops._spec import GWM_MODES, GWM_WORKSPACE
from camfast.ops.native._launch import DTYPE_CODES, acc_dtype, device_args, lib


def forward(activation: Tensor, gradient: Tensor, mode: str) -> Tensor:
    B, C, H, W = activation.shape
    out = activation.new_empty((B, H, W))
    workspace = activation.new_empty((GWM_WORKSPACE * B * C,), dtype=acc_dtype(activation))
    dev, index, stream = device_args(activation)
    lib().grad_weighted_map_forward(
        dev, index, DTYPE_CODES[activation.dtype], GWM_MODES[mode], (B, C, H, W),
        activation.data_ptr(), activation.stride(), gradient.data_ptr(), gradient.stride(),
        out.data_ptr(), workspace.data_ptr(), stream,
    )
    return out


def backward(grad_out: Tensor, activation: Tensor, gradient: Tensor, out: Tensor, mode: str,
             grad_a: Tensor | None = None, grad_g: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(dA, dG)``, written into ``grad_a``/``grad_g`` when given (same shape and dtype as
    the inputs, any strides, no overlap; the benchmarks use this to time the kernel alone)."""
    B, C, H, W = activation.shape
    # the kernel reads grad_out and out as [B, H, W] contiguous, in the inputs' dtype
    grad_out = grad_out.to(activation.dtype).contiguous()
    out = out.to(activation.dtype).contiguous()
    grad_a = torch.empty_like(activation) if grad_a is None else grad_a
    grad_g = torch.empty_like(gradient) if grad_g is None else grad_g
    for name, t, like in (("grad_a", grad_a, activation), ("grad_g", grad_g, gradient)):
        if t.shape != like.shape or t.dtype != like.dtype or t.device != like.device:
            raise ValueError(f"{name} must match the shape, dtype and device of its input")
    workspace = activation.new_empty((GWM_WORKSPACE * B * C,), dtype=acc_dtype(activation))
    dev, index, stream = device_args(activation)
    lib().grad_weighted_map_backward(
        dev, index, DTYPE_CODES[activation.dtype], GWM_MODES[mode], (B, C, H, W),
        activation.data_ptr(), activation.stride(), gradient.data_ptr(), gradient.stride(),
        out.data_ptr(), grad_out.data_ptr(), grad_a.data_ptr(), grad_a.stride(),
        grad_g.data_ptr(), grad_g.stride(), workspace.data_ptr(), stream,
    )
    return grad_a, grad_g
