"""Benchmark cases of ``camfast::grad_weighted_map``: every mode, forward and backward.

Forward times ``camfast.ops.grad_weighted_map(A, G, mode)``; backward times the backward op
alone, ``torch.ops.camfast.grad_weighted_map_backward(dM, A, G, M, mode)``, on a precomputed
output ``M`` and upstream gradient ``dM`` (the reference providers time
``reference.backward`` on the same arguments).

Bytes models (the least traffic each direction needs):

* forward:  read ``A`` and ``G``, write ``M`` ``[B, H, W]``;
* backward: read ``dM``, ``A``, ``G`` and ``M``, write ``dA`` and ``dG``.

The per-channel modes with the channel sum of ``A`` in their weight (``gradcampp``,
``xgradcam``) read ``A`` once for the sums and once for the map, so their forward can reach at
most about two thirds of the copy bandwidth the model counts; their ``A`` is post-ReLU
(``|N(0, 1)|``), as a layer's activation is: a zero-mean ``A`` has channel sums near zero,
where these weights amplify rounding without bound and no correctness check can pass.
"""

from __future__ import annotations

import functools

import torch

import camfast
from camfast.ops._spec import GWM_MODES
from camfast.ops.reference import grad_weighted_map as reference
from harness import Case, Inputs, Shape, Target, nbytes, randn, standard_providers

OP = "grad_weighted_map"
MODES = tuple(GWM_MODES)
DIRECTIONS = ("forward", "backward")

#: A ResNet-50 layer-2 sized batch: 102.8 MB per float32 tensor, well above the 32 MB L3.
DEFAULT_SHAPE: Shape = (32, 256, 56, 56)
QUICK_SHAPE: Shape = (4, 32, 28, 28)

TARGETS = [
    Target("native", "cpu", min_speedup=3.0, min_copy_fraction=0.6, shape=DEFAULT_SHAPE, dtype=torch.float32),
    *(Target(p, "cuda", min_copy_fraction=0.7, shape=DEFAULT_SHAPE, dtype=torch.float32) for p in ("native", "triton")),
]


#: modes whose channel weight takes sum_hw A: benchmarked on post-ReLU activations
SUM_MODES = ("gradcampp", "xgradcam")


def forward_inputs(shape: Shape, dtype: torch.dtype, device: torch.device, mode: str) -> Inputs:
    """``(A, G, mode)`` with ``A``, ``G`` standard normal ``[B, C, H, W]`` (``A = |N(0, 1)|``
    for :data:`SUM_MODES`)."""
    a = randn(shape, dtype, device, seed=0)
    if mode in SUM_MODES and a.device.type != "meta":
        a = a.abs_()
    return a, randn(shape, dtype, device, seed=1), mode


def backward_inputs(shape: Shape, dtype: torch.dtype, device: torch.device, mode: str) -> Inputs:
    """``(dM, A, G, M, mode)``: the forward's inputs, its output ``M`` and a normal ``dM``."""
    a, g, _ = forward_inputs(shape, dtype, device, mode)
    out = reference.forward(a, g, mode)
    return randn(out.shape, dtype, device, seed=2), a, g, out, mode


def forward_bytes(inputs: Inputs) -> int:
    a, g, _ = inputs
    B, _, H, W = a.shape
    return nbytes(a, g) + B * H * W * a.element_size()


def backward_bytes(inputs: Inputs) -> int:
    grad_out, a, g, out, _ = inputs
    return nbytes(grad_out, a, g, out) + nbytes(a, g)


def _backward_op(grad_out, a, g, out, mode):
    return torch.ops.camfast.grad_weighted_map_backward(grad_out, a, g, out, mode)


_PREALLOCATED: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _native_kernel_backward(grad_out, a, g, out, mode):
    """The native backward kernel writing into outputs allocated once: the op's time minus
    the first touch of fresh memory (a diagnostic row; the op's own row is the figure)."""
    from camfast.ops.native import grad_weighted_map as native

    key = (tuple(a.shape), a.dtype, a.device)
    if key not in _PREALLOCATED:
        _PREALLOCATED.clear()
        _PREALLOCATED[key] = (torch.empty_like(a), torch.empty_like(g))
    grad_a, grad_g = _PREALLOCATED[key]
    return native.backward(grad_out, a, g, out, mode, grad_a=grad_a, grad_g=grad_g)


_DIRECTIONS = {
    "forward": (forward_inputs, camfast.ops.grad_weighted_map, reference.forward, forward_bytes),
    "backward": (backward_inputs, _backward_op, reference.backward, backward_bytes),
}


def _providers(direction, op_call, reference_fn):
    providers = standard_providers(op_call, reference_fn)
    if direction == "backward" and camfast._ext.native is not None:
        providers["native-kernel"] = _native_kernel_backward
    return providers


def make_cases() -> list[Case]:
    """One case per (mode, direction), forward before backward within a mode."""
    cases = []
    for mode in MODES:
        for direction in DIRECTIONS:
            setup, op_call, reference_fn, bytes_moved = _DIRECTIONS[direction]
            cases.append(Case(
                op=OP,
                name=f"{mode}-{direction}",
                setup=functools.partial(setup, mode=mode),
                providers=_providers(direction, op_call, reference_fn),
                reference=reference_fn,
                bytes_moved=bytes_moved,
                params={"mode": mode, "direction": direction},
            ))
    return cases
