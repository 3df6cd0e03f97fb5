"""Kernel accuracy against the float64 references (issue 13 items 17 and 18).

Item 17: the native float32 guided filter on guides far from zero (the products I I^T used to
round, in float32, to more than the guide's local variance) and with a huge eps (the 3x3
closed form used to overflow to inf / inf).
Item 18: the Triton box filter's float32 running sums (``[1e8]*50 + [0.5]*50``, radius 3,
gave -0.375 for 0.5), the Triton guided filter on a gray image copied to 3 channels at
``eps = 1e-6`` (off by 0.11; native 5e-8) and on a constant guide at ``eps = 1e-30`` (NaN):
the same accuracy contract on the native and Triton backends.
"""

from __future__ import annotations

import pytest
import torch

from helpers import assert_close, require_backend

from camfast.ops import box_filter, guided_filter, use_backend
from camfast.ops.reference import box_filter as box_ref
from camfast.ops.reference import guided_filter as gf_ref

KERNELS = ("native", "triton")
CPU = torch.device("cpu")


def _rel_err(out: torch.Tensor, want: torch.Tensor) -> float:
    return ((out.double() - want).abs().max() / want.abs().max()).item()


def _gf_case(G, offset, scale, C=2, H=40, W=48, seed=0):
    gen = torch.Generator().manual_seed(seed)
    g = offset + scale * torch.rand((2, G, H, W), generator=gen, dtype=torch.float64)
    p = torch.rand((2, C, H, W), generator=gen, dtype=torch.float64)
    return g, p


@pytest.mark.parametrize(
    "G, offset, scale, radius, subsample",
    [(1, 100.0, 1.0, 3, 1), (1, 100.0, 1.0, 3, 2), (3, 1000.0, 1.0, 4, 1), (3, 1000.0, 1.0, 8, 4),
     (3, 1000.0, 1000.0, 8, 4), (1, -3e4, 1.0, 2, 1)],
)
@pytest.mark.parametrize("backend", KERNELS)
def test_guided_filter_float32_guide_with_a_large_offset(backend, G, offset, scale, radius, subsample):
    require_backend(backend, CPU)
    g, p = _gf_case(G, offset, scale)
    eps = 1e-3
    want = gf_ref.forward(g.float().double(), p.float().double(), radius, eps, subsample, "truncate")
    with use_backend(backend):
        out = guided_filter(g.float(), p.float(), radius, eps, subsample=subsample)
    assert out.dtype == torch.float32
    err = _rel_err(out, want)
    assert err < 1e-4, f"{backend}: relative error {err:.3g} (G={G}, guide {offset} + {scale} U(0,1), s={subsample})"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("G", [1, 3])
@pytest.mark.parametrize("eps", [1e300, 1e150])
@pytest.mark.parametrize("backend", KERNELS)
def test_guided_filter_huge_eps_is_finite(backend, G, eps, dtype):
    require_backend(backend, CPU)
    g, p = _gf_case(G, 0.0, 1.0, H=20, W=24)
    g, p = g.to(dtype), p.to(dtype)
    want = gf_ref.forward(g.double(), p.double(), 2, eps, 1, "truncate")
    assert torch.isfinite(want).all()
    with use_backend(backend):
        out = guided_filter(g, p, 2, eps)
    assert torch.isfinite(out).all(), f"{backend} eps={eps}: non-finite output"
    assert _rel_err(out, want) < 1e-5


# ---------------------------------------------------------------- item 18: the same contract on Triton
@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("axis", ["rows", "columns"])
def test_box_filter_small_values_after_large_ones(backend, axis):
    require_backend(backend, CPU)
    x = torch.tensor([1e8] * 50 + [0.5] * 50, dtype=torch.float32).view(1, 1, 1, 100)
    if axis == "columns":
        x = x.transpose(2, 3).contiguous()
    with use_backend(backend):
        out = box_filter(x, 3)
    tail = out.flatten()[53:]  # windows of 0.5 only
    assert torch.equal(tail, torch.full_like(tail, 0.5)), f"{backend} {axis}: {tail[:4].tolist()} for 0.5"
    assert_close(out, box_ref.forward(x, 3), what=f"{backend} {axis}")


@pytest.mark.parametrize("backend", KERNELS)
def test_guided_filter_gray_guide_copied_to_three_channels(backend):
    """Sigma = v 1 1^T + eps Id is nearly singular at eps = 1e-6; the filter is then the scalar
    guided filter with eps / 3 (a = c 1 / (3 v + eps), so a^T I = c I / (v + eps / 3))."""
    require_backend(backend, CPU)
    gen = torch.Generator().manual_seed(3)
    gray = torch.rand((2, 1, 24, 28), generator=gen, dtype=torch.float64)
    p = torch.rand((2, 2, 24, 28), generator=gen, dtype=torch.float64)
    eps = 1e-6
    want = gf_ref.forward(gray, p, 3, eps / 3, 1, "truncate")
    with use_backend(backend):
        out = guided_filter(gray.float().expand(-1, 3, -1, -1).contiguous(), p.float(), 3, eps)
    err = (out.double() - want).abs().max().item()
    assert err < 1e-5, f"{backend}: max error {err:.3g} (native 5e-8 when found, Triton 0.11)"


@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("G", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_guided_filter_constant_guide_tiny_eps(backend, G, dtype):
    """A constant guide has no variance: a = 0 and b = mean(p) for any eps > 0, so
    q = mean(mean(p)); eps = 1e-30 gave NaN on Triton."""
    require_backend(backend, CPU)
    gen = torch.Generator().manual_seed(4)
    p = torch.rand((2, 2, 20, 24), generator=gen, dtype=torch.float64)
    g = torch.full((2, G, 20, 24), 0.7, dtype=torch.float64)
    want = box_ref.forward(box_ref.forward(p, 2), 2)
    with use_backend(backend):
        out = guided_filter(g.to(dtype), p.to(dtype), 2, 1e-30)
    assert torch.isfinite(out).all(), f"{backend}: non-finite output"
    assert_close(out, want.to(dtype), what=f"{backend} G={G}")
