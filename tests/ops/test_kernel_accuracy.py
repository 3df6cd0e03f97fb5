"""Kernel accuracy against the float64 references (issue 13 item 17).

The native float32 guided filter on guides far from zero (the products I I^T used to
round, in float32, to more than the guide's local variance) and with a huge eps (the 3x3
closed form used to overflow to inf / inf). The Triton guided filter is item 18 (another
branch), so these run on the native backend only.
"""

from __future__ import annotations

import pytest
import torch

from camfast.ops import guided_filter, use_backend
from camfast.ops.reference import guided_filter as gf_ref


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
def test_guided_filter_float32_guide_with_a_large_offset(G, offset, scale, radius, subsample):
    g, p = _gf_case(G, offset, scale)
    eps = 1e-3
    want = gf_ref.forward(g.float().double(), p.float().double(), radius, eps, subsample, "truncate")
    with use_backend("native"):
        out = guided_filter(g.float(), p.float(), radius, eps, subsample=subsample)
    assert out.dtype == torch.float32
    err = _rel_err(out, want)
    assert err < 1e-4, f"relative error {err:.3g} (G={G}, guide {offset} + {scale} U(0,1), s={subsample})"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("G", [1, 3])
@pytest.mark.parametrize("eps", [1e300, 1e150])
def test_guided_filter_huge_eps_is_finite(G, eps, dtype):
    g, p = _gf_case(G, 0.0, 1.0, H=20, W=24)
    g, p = g.to(dtype), p.to(dtype)
    want = gf_ref.forward(g.double(), p.double(), 2, eps, 1, "truncate")
    assert torch.isfinite(want).all()
    with use_backend("native"):
        out = guided_filter(g, p, 2, eps)
    assert torch.isfinite(out).all(), f"eps={eps}: non-finite output"
    assert _rel_err(out, want) < 1e-5
