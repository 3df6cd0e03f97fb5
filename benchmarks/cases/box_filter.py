"""Benchmark cases of ``camfast::box_filter``: forward and backward at several radii.

Shape ``(B, C, H, W)``; the default ``(8, 16, 224, 224)`` (25 MB in float32) is above the
cache. Radii 2, 8 and 32: a running-sum kernel takes the same time for all of them.
Bytes model: read ``x`` (or ``dout``) once, write the output once.
"""

from __future__ import annotations

import functools

import torch

import camfast
from camfast.ops.reference import box_filter as reference
from harness import Case, Inputs, Shape, Target, nbytes, randn, standard_providers

OP = "box_filter"
DEFAULT_SHAPE: Shape = (8, 16, 224, 224)
QUICK_SHAPE: Shape = (2, 3, 32, 40)
RADII = (2, 8, 32)

TARGETS = [Target("native", "cpu", min_speedup=3.0, shape=DEFAULT_SHAPE, dtype=torch.float32)]


def _inputs(shape: Shape, dtype: torch.dtype, device: torch.device) -> Inputs:
    return (randn(shape, dtype, device),)


def _bytes(inputs: Inputs) -> int:
    return 2 * nbytes(*inputs)


def _fwd(x, r):
    return camfast.ops.box_filter(x, r)


def _bwd(g, r):
    return torch.ops.camfast.box_filter_backward(g, r)


def make_cases() -> list[Case]:
    cases = []
    for r in RADII:
        for direction, op_call, ref in (("forward", _fwd, reference.forward), ("backward", _bwd, reference.backward)):
            ref_r = functools.partial(ref, radius=r)
            cases.append(Case(
                op=OP, name=f"r{r}-{direction}", setup=_inputs,
                providers=standard_providers(functools.partial(op_call, r=r), lambda x, f=ref_r: f(x)),
                reference=lambda x, f=ref_r: f(x), bytes_moved=_bytes,
                params={"radius": str(r), "direction": direction},
            ))
    return cases
