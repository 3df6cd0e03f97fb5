"""Benchmark cases of ``camfast::thresholded_avg_pool2d``: forward + backward together.

``forward-backward`` times ``y = tap(x, 0.1); dx = autograd.grad(y, x, dy)`` (the training
step's use); the providers return ``(y, dx)``, checked against the reference in float64.
``gap-forward-backward`` times the same with ``nn.AdaptiveAvgPool2d(1)`` + flatten, the
global average pooling TAP replaces: the issue's target is TAP (native) within 1.5x of it
in the same run (compare the two tables' ``native`` and ``adaptive_avg_pool2d`` rows).

Run both shapes of the issue:

    python benchmarks/run.py thresholded_avg_pool2d                       # [64,2048,7,7]
    python benchmarks/run.py thresholded_avg_pool2d --shape 32,512,28,28

Bytes model (least traffic): forward reads ``x`` and writes ``[B, C]``; backward reads
``x`` (for the mask) and ``dy`` and writes ``dx``. GAP's backward needs no read of ``x``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import camfast
from camfast.ops.reference import thresholded_avg_pool2d as reference
from harness import Case, Inputs, Shape, Target, nbytes, randn, standard_providers

OP = "thresholded_avg_pool2d"
THETA = 0.1

#: ResNet-50's last stage: 25.7 MB per float32 tensor (x and dx: 51 MB, above the 32 MB L3).
DEFAULT_SHAPE: Shape = (64, 2048, 7, 7)
QUICK_SHAPE: Shape = (4, 64, 7, 7)

TARGETS = [
    Target("native", "cpu", min_speedup=3.0, shape=DEFAULT_SHAPE, dtype=torch.float32),
    Target("native", "cpu", min_speedup=3.0, shape=(32, 512, 28, 28), dtype=torch.float32),
]


def inputs(shape: Shape, dtype: torch.dtype, device: torch.device) -> Inputs:
    """``(x, dy)``: x = ReLU(N(0,1)) features, dy ~ N(0,1) ``[B, C]``."""
    x = randn(shape, dtype, device, seed=0)
    if x.device.type != "meta":
        x = x.relu_()
    return x, randn(tuple(shape[:2]), dtype, device, seed=1)


def _fwd_bwd(pool):
    def run(x, dy):
        x = x.detach().requires_grad_(True)
        y = pool(x)
        (dx,) = torch.autograd.grad(y, (x,), dy)
        return y.detach(), dx
    return run


def _tap_reference(x, dy):
    """The reference forward and its explicit backward (what the op's backend would run)."""
    y, tau, count = reference.forward(x, THETA)
    return y, reference.backward(dy, x, tau, count)


def _gap(x):
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def bytes_moved(inp: Inputs) -> int:
    x, dy = inp
    return 3 * nbytes(x) + 2 * nbytes(dy)


def make_cases() -> list[Case]:
    providers = standard_providers(_fwd_bwd(lambda x: camfast.ops.thresholded_avg_pool2d(x, THETA)), _tap_reference)
    gap = _fwd_bwd(_gap)
    return [
        Case(op=OP, name="forward-backward", setup=inputs, providers=providers, reference=_tap_reference,
             bytes_moved=bytes_moved, params={"direction": "forward-backward", "pool": "tap"}),
        Case(op=OP, name="gap-forward-backward", setup=inputs, providers={"adaptive_avg_pool2d": gap},
             reference=gap, bytes_moved=bytes_moved, params={"direction": "forward-backward", "pool": "gap"}),
    ]
