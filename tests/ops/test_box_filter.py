"""camfast::box_filter: what the op contract (test_op_contract.py) does not cover: the
reference against a brute-force window mean, radii larger than the image, precision on a large
image, and random shapes of every layout against the brute force."""

from __future__ import annotations

import pytest
import torch
from helpers import LAYOUTS, assert_close, make_layout
from hypothesis import given, settings
from hypothesis import strategies as st
from ops.op_specs import box_input as make_x

from camfast.ops import box_filter
from camfast.ops.reference import box_filter as ref


def brute(x: torch.Tensor, r: int) -> torch.Tensor:
    """Explicit loops over the truncated windows, float64."""
    B, C, H, W = x.shape
    out = torch.empty(x.shape, dtype=torch.float64)
    xd = x.double().cpu()
    for i in range(H):
        for j in range(W):
            out[:, :, i, j] = xd[:, :, max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1].mean(dim=(2, 3))
    return out


def test_reference_is_the_window_mean():
    x = make_x((2, 3, 7, 9), torch.float64, "cpu")
    for r in (0, 1, 2, 4, 8, 30):
        torch.testing.assert_close(ref.forward(x, r), brute(x, r), atol=1e-12, rtol=1e-12)


def test_radius_larger_than_image(backend, device):
    x = make_x((1, 2, 5, 6), torch.float64, device)
    out = box_filter(x, 100)
    assert_close(out, x.mean(dim=(2, 3), keepdim=True).expand_as(x).contiguous(), torch.float64, "image mean")
    out = box_filter(x[:, :, :1], 7)  # one row, 6 columns, r >= W - 1: the row mean
    assert_close(out, x[:, :, :1].mean(dim=3, keepdim=True).expand(1, 2, 1, 6).contiguous(), torch.float64, "row")
    assert_close(box_filter(x, 0), x, torch.float64, "identity")


def test_large_image_precision(backend, device):
    if backend == "triton" and device.type == "cpu":
        pytest.skip("interpreter: too slow for 200x300")
    x = make_x((1, 2, 200, 300), torch.float32, device) + 100.0  # running sums drift if carried in float32
    assert_close(box_filter(x, 8), ref.forward(x, 8), torch.float32, "large")


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 2), C=st.integers(1, 4), H=st.integers(1, 10), W=st.integers(1, 10), r=st.integers(0, 12),
       layout=st.sampled_from(LAYOUTS), seed=st.integers(0, 2**16))
def test_random_shapes_native_vs_brute(B, C, H, W, r, layout, seed):
    x = make_layout(make_x((B, C, H, W), torch.float64, "cpu", seed), layout)
    torch.testing.assert_close(box_filter(x, r), brute(x, r), atol=1e-12, rtol=1e-12)
