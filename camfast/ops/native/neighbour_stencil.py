"""Native launcher for ``camfast::neighbour_stencil`` (csrc/cpu/neighbour_stencil_cpu.cpp,
csrc/cuda/neighbour_stencil_cuda.cu). The backward is the forward kernel again (``K`` is
symmetric): ``dx = K(w g) + a g`` and ``dw = g (K x)``, in the accumulator dtype (float32;
float64 for float64) and rounded once; terms they lack are left out of the kernel (a null
pointer), not multiplied by zero, so an infinite value gives what the formulas give."""

from __future__ import annotations

import torch
from torch import Tensor

from camfast.ops.native._launch import DTYPE_CODES, acc_dtype, device_args, lib

_ABSENT = (0, (0, 0, 0, 0))


def _run(x: Tensor, a: Tensor | None, w: Tensor, c: Tensor | None) -> Tensor:
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    dev, index, stream = device_args(x)
    pa, sa = _ABSENT if a is None else (a.data_ptr(), a.stride())
    pc, sc = _ABSENT if c is None else (c.data_ptr(), c.stride())
    lib().neighbour_stencil(dev, index, DTYPE_CODES[x.dtype], tuple(x.shape), x.data_ptr(), x.stride(), pa, sa,
                            w.data_ptr(), w.stride(), pc, sc, out.data_ptr(), stream)
    return out


def forward(x: Tensor, a: Tensor, w: Tensor, c: Tensor) -> Tensor:
    return _run(x, a, w, c)


def backward(grad_out: Tensor, x: Tensor, a: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    acc = acc_dtype(x)
    g, xa, aa, wa = (t.to(acc) for t in (grad_out, x, a, w))
    one = torch.ones((), dtype=acc, device=x.device).expand_as(x)
    dx = _run(wa * g, None, one, aa * g)
    dw = _run(xa, None, g, None)
    return dx.to(x.dtype), (g * xa).to(x.dtype).contiguous(), dw.to(x.dtype)
