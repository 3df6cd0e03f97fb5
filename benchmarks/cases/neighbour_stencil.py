"""Benchmark cases of ``camfast::neighbour_stencil``: ``a * x + w * (K x) + c``, forward and backward.

Shape ``(B, C, H, W)``; the default ``(8, 16, 224, 224)`` (25 MB per float32 tensor, five of
them in the forward) is above the cache. Cases:

* ``full-forward``: four full tensors ``x, a, w, c``; bytes: read the four, write ``out``.
* ``full-backward``: ``torch.ops.camfast.neighbour_stencil_backward(g, x, a, w)``; bytes: read
  ``g, x, a, w``, write ``dx, da, dw``.
* ``road-forward``: ROAD's operator as ``camfast.evaluation.faithfulness`` passes it: ``a`` one
  ``[1, 1, H, W]`` field for every plane, ``w`` and ``c`` constants, all stride-0 views of
  ``x``'s shape; bytes: read ``x`` and the field once, write ``out`` (a constant is one
  element).
"""

from __future__ import annotations

import math

import torch

import camfast
from camfast.ops.reference import neighbour_stencil as reference
from harness import Case, Inputs, Shape, Target, nbytes, randn, standard_providers

OP = "neighbour_stencil"
DEFAULT_SHAPE: Shape = (8, 16, 224, 224)
QUICK_SHAPE: Shape = (2, 3, 32, 40)

#: A goal, not a test (printed PASS/MISS): the eager reference computes in float64 through a
#: depthwise conv2d; the native CPU kernel measured 21x (backward) to 62x (road) on a 2-core Xeon.
TARGETS = [Target("native", "cpu", min_speedup=10.0, shape=DEFAULT_SHAPE, dtype=torch.float32)]


def _full(shape: Shape, dtype: torch.dtype, device: torch.device) -> Inputs:
    return tuple(randn(shape, dtype, device, seed=i) for i in range(4))


def _road(shape: Shape, dtype: torch.dtype, device: torch.device) -> Inputs:
    """``(u, d + 1/3, -1/12, 0)``: ``a`` a per-pixel field shared by every plane (``d`` drawn
    in [0.5, 1], the neighbour-weight sum's range inside the image), read through stride 0."""
    x = randn(shape, dtype, device, seed=0)
    field = randn((1, 1, *shape[2:]), dtype, device, seed=1)
    if field.device.type != "meta":
        field = field.abs_().clamp_(max=1.0).mul_(0.5).add_(0.5 + 1 / 3)
    w = torch.full((1, 1, 1, 1), -1 / 12, dtype=dtype, device=device)
    c = torch.zeros((1, 1, 1, 1), dtype=dtype, device=device)
    return (x, *(t.expand(shape) for t in (field, w, c)))


def stored_bytes(t: torch.Tensor) -> int:
    """The bytes of the elements ``t`` views (a stride-0 dimension adds none)."""
    return t.element_size() * math.prod(n for n, s in zip(t.shape, t.stride()) if s != 0)


def _bytes(inputs: Inputs) -> int:
    """Each input read once (its distinct elements), the output (``x``'s size) written once."""
    return sum(stored_bytes(t) for t in inputs) + nbytes(inputs[0])


def _backward_bytes(inputs: Inputs) -> int:
    """``g, x, a, w`` read once, ``dx, da, dw`` written once."""
    return 7 * nbytes(inputs[0])


def _fwd(x, a, w, c):
    return camfast.ops.neighbour_stencil(x, a, w, c)


def _bwd(g, x, a, w):
    return torch.ops.camfast.neighbour_stencil_backward(g, x, a, w)


def make_cases() -> list[Case]:
    return [
        Case(op=OP, name="full-forward", setup=_full, providers=standard_providers(_fwd, reference.forward),
             reference=reference.forward, bytes_moved=_bytes, params={"coef": "full", "direction": "forward"}),
        Case(op=OP, name="full-backward", setup=_full, providers=standard_providers(_bwd, reference.backward),
             reference=reference.backward, bytes_moved=_backward_bytes,
             params={"coef": "full", "direction": "backward"}),
        Case(op=OP, name="road-forward", setup=_road, providers=standard_providers(_fwd, reference.forward),
             reference=reference.forward, bytes_moved=_bytes, params={"coef": "road", "direction": "forward"}),
    ]
