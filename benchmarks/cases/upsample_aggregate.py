"""Benchmark cases of ``camfast::upsample_aggregate``: Zoom-CAM's fusion, forward and backward.

Shape ``(B, L, S)``: ``L`` maps ``[B, S/2^L, S/2^L], ..., [B, S/2, S/2]`` (a VGG/ResNet-like
pyramid) fused into ``[B, S, S]``; the default ``(8, 5, 224)`` has maps of 7, 14, 28, 56 and
112 pixels a side. Modes: ``max`` (Zoom-CAM) and ``mean``, both with ``normalize="minmax"``.

Forward times ``camfast.ops.upsample_aggregate(maps, (S, S), reduce)``; backward times the
backward op alone, ``torch.ops.camfast.upsample_aggregate_backward(dout, maps, ...)`` (the
reference providers time ``reference.backward`` on the same arguments), and ``triton-gather``
the Triton backend's deterministic gather backward (``deterministic=True``; the default
``triton`` row scatters with atomics), to tell which should be the default on a GPU. Providers take the
maps (and ``dout``) as separate tensors, so the harness's float64 check converts them all.

With ``reduce="max"`` the gradient of a pixel goes to one layer; where two layers are within
a rounding error of each other a float32 kernel may legitimately pick the other one than the
float64 reference, so the setup redraws the maps (a new seed) until no output pixel has such
a near-tie.

Bytes models (the least traffic each direction needs):

* forward:  read every map, write ``out`` ``[B, S, S]``;
* backward: read ``dout`` and every map, write every map's gradient.
"""

from __future__ import annotations

import functools

import torch

import camfast
from camfast.ops.reference import upsample_aggregate as reference
from harness import Case, Inputs, Shape, Target, nbytes, randn, standard_providers

OP = "upsample_aggregate"
MODES = ("max", "mean")
DIRECTIONS = ("forward", "backward")

#: Zoom-CAM on a 224 x 224 input: 5 layers of 7..112 pixels a side, a batch of 8.
DEFAULT_SHAPE: Shape = (8, 5, 224)
QUICK_SHAPE: Shape = (2, 3, 56)

TARGETS = [
    Target("native", "cpu", min_speedup=3.0, shape=DEFAULT_SHAPE, dtype=torch.float32),
]

#: Two layers closer than this somewhere (in float64) count as a near-tie (see above).
NEAR_TIE = 3e-7


def layer_sizes(shape: Shape) -> list[int]:
    B, L, S = shape
    return [max(1, S >> k) for k in range(L, 0, -1)]


def _near_tie(maps: list[torch.Tensor], size: int) -> bool:
    if len(maps) < 2:
        return False
    ups = torch.stack([reference.upsample(reference.normalize_map(m.double(), "minmax"), (size, size)) for m in maps])
    top = ups.topk(2, dim=0).values
    gap = top[0] - top[1]
    return bool(((gap > 0) & (gap < NEAR_TIE)).any())


def make_maps(shape: Shape, dtype: torch.dtype, device: torch.device, reduce: str) -> list[torch.Tensor]:
    """Standard normal maps, redrawn while reduce=max has a near-tie (at most 100 draws)."""
    B, _, S = shape
    for seed in range(100):
        maps = [randn((B, s, s), dtype, device, seed=100 * seed + i) for i, s in enumerate(layer_sizes(shape))]
        if reduce != "max" or torch.device(device).type == "meta" or not _near_tie(maps, S):
            break
    return maps


def forward_inputs(shape: Shape, dtype: torch.dtype, device: torch.device, reduce: str) -> Inputs:
    """The maps, one tensor each."""
    return tuple(make_maps(shape, dtype, device, reduce))


def backward_inputs(shape: Shape, dtype: torch.dtype, device: torch.device, reduce: str) -> Inputs:
    """``(dout, *maps)`` with ``dout`` standard normal ``[B, S, S]``."""
    B, _, S = shape
    return (randn((B, S, S), dtype, device, seed=7), *make_maps(shape, dtype, device, reduce))


def forward_bytes(inputs: Inputs) -> int:
    first = inputs[0]
    S = 2 * inputs[-1].shape[-1]
    return nbytes(*inputs) + first.shape[0] * S * S * first.element_size()


def backward_bytes(inputs: Inputs) -> int:
    return nbytes(*inputs) + nbytes(*inputs[1:])


def _size(maps) -> tuple[int, int]:
    S = 2 * maps[-1].shape[-1]
    return S, S


def _forward_op(*maps, reduce):
    return camfast.ops.upsample_aggregate(maps, _size(maps), reduce, "minmax")


def _forward_reference(*maps, reduce):
    return reference.forward(maps, _size(maps), reduce, "minmax")


def _backward_op(grad_out, *maps, reduce):
    return torch.ops.camfast.upsample_aggregate_backward(grad_out, list(maps), reduce, "minmax", None)


def _backward_reference(grad_out, *maps, reduce):
    return reference.backward(grad_out, maps, reduce, "minmax")


def _backward_triton_gather(grad_out, *maps, reduce):
    from camfast.ops.triton import upsample_aggregate as triton_ua  # imports triton: only when it runs

    return triton_ua.backward(grad_out, list(maps), reduce, "minmax", None, deterministic=True)


_DIRECTIONS = {
    "forward": (forward_inputs, _forward_op, _forward_reference, forward_bytes),
    "backward": (backward_inputs, _backward_op, _backward_reference, backward_bytes),
}


def make_cases() -> list[Case]:
    """One case per (mode, direction), forward before backward within a mode."""
    cases = []
    for reduce in MODES:
        for direction in DIRECTIONS:
            setup, op_call, reference_fn, bytes_moved = _DIRECTIONS[direction]
            ref = functools.partial(reference_fn, reduce=reduce)
            providers = standard_providers(functools.partial(op_call, reduce=reduce), ref)
            if direction == "backward":
                providers["triton-gather"] = functools.partial(_backward_triton_gather, reduce=reduce)
            cases.append(Case(
                op=OP,
                name=f"{reduce}-{direction}",
                setup=functools.partial(setup, reduce=reduce),
                providers=providers,
                reference=ref,
                bytes_moved=bytes_moved,
                params={"mode": reduce, "direction": direction},
            ))
    return cases
