"""Native launcher for ``camfast::thresholded_avg_pool2d`` (csrc/cpu/*_cpu.cpp, csrc/cuda/*.cu)."""

from __future__ import annotations

import torch
from torch import Tensor

from camfast.ops.native._launch import DTYPE_CODES, acc_dtype, device_args, lib


def forward(x: Tensor, theta: float) -> tuple[Tensor, Tensor, Tensor]:
    B, C, H, W = x.shape
    pooled = x.new_empty((B, C))
    tau = x.new_empty((B, C), dtype=acc_dtype(x))
    count = torch.empty_like(tau)
    dev, index, stream = device_args(x)
    lib().thresholded_avg_pool2d_forward(
        dev, index, DTYPE_CODES[x.dtype], (B, C, H, W), x.data_ptr(), x.stride(), float(theta),
        pooled.data_ptr(), tau.data_ptr(), count.data_ptr(), stream,
    )
    return pooled, tau, count


def backward(grad_out: Tensor, x: Tensor, tau: Tensor, count: Tensor, grad_x: Tensor | None = None) -> Tensor:
    """``dx`` in ``x``'s layout, written into ``grad_x`` when given (same shape, dtype and
    device as ``x``, any strides, no overlap)."""
    B, C, H, W = x.shape
    grad_out = grad_out.to(x.dtype).contiguous()
    tau = tau.contiguous()
    count = count.contiguous()
    grad_x = torch.empty_like(x) if grad_x is None else grad_x
    if grad_x.shape != x.shape or grad_x.dtype != x.dtype or grad_x.device != x.device:
        raise ValueError("grad_x must match the shape, dtype and device of x")
    dev, index, stream = device_args(x)
    lib().thresholded_avg_pool2d_backward(
        dev, index, DTYPE_CODES[x.dtype], (B, C, H, W), x.data_ptr(), x.stride(), tau.data_ptr(),
        count.data_ptr(), grad_out.data_ptr(), grad_x.data_ptr(), grad_x.stride(), stream,
    )
    return grad_x
