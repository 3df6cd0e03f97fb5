"""Benchmark cases of ``camfast::guided_filter``: a 3-channel guide, the forward.

Shape ``(B, C, H, W)`` of ``src``; the guide is ``[B, 3, H, W]``. Default ``(4, 1, 448, 448)``:
issue 4's setting. ``eps = 1e-2``, radii 2, 8 and 32, each with ``border="truncate"``
(camfast's default, He et al.'s truncated windows) and ``border="reflect"``, where
``kornia.filters.guided_blur(guide, src, 2r+1, eps)`` computes the same function and is
timed beside it (the like-for-like row). Issue 4's targets, checked by ``run.py`` through
the speed-up column only for the eager reference, are read from the table: native at least
10x faster than kornia (reflect, r=8) and native's time for r=2 and r=32 within 1.3x.
Bytes model: read guide and src once, write the output once.
"""

from __future__ import annotations

import functools

import torch

import camfast
from camfast.ops.reference import guided_filter as reference
from harness import Case, Inputs, Shape, nbytes, on_backend, randn

OP = "guided_filter"
DEFAULT_SHAPE: Shape = (4, 1, 448, 448)
QUICK_SHAPE: Shape = (1, 2, 40, 48)
RADII = (2, 8, 32)
EPS = 1e-2
TARGETS: list = []


def _inputs(shape: Shape, dtype: torch.dtype, device: torch.device) -> Inputs:
    B, C, H, W = shape
    return randn((B, 3, H, W), dtype, device, seed=1), randn(shape, dtype, device, seed=2)


def _bytes(inputs: Inputs) -> int:
    return 2 * nbytes(*inputs) - nbytes(inputs[0]) + nbytes(inputs[1])


def _op(guide, src, r, border):
    return camfast.ops.guided_filter(guide, src, r, EPS, 1, border)


def _ref(guide, src, r, border):
    return reference.forward(guide, src, r, EPS, 1, border)


def _kornia(guide, src, r):
    import kornia

    return kornia.filters.guided_blur(guide, src, 2 * r + 1, EPS)


def make_cases() -> list[Case]:
    cases = []
    for border in ("truncate", "reflect"):
        for r in RADII:
            providers = {name: on_backend(name, functools.partial(_op, r=r, border=border))
                         for name in ("native", "triton")}
            providers["reference"] = functools.partial(_ref, r=r, border=border)
            if border == "reflect":
                providers["kornia"] = functools.partial(_kornia, r=r)
            cases.append(Case(
                op=OP, name=f"{border}-r{r}", setup=_inputs, providers=providers,
                reference=functools.partial(_ref, r=r, border=border), bytes_moved=_bytes,
                params={"border": border, "radius": str(r)},
            ))
    return cases
