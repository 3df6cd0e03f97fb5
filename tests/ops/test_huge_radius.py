"""Sizes past the image or past memory (issue 13 items 16 and 20): any radius, up to and
beyond int64, gives the whole-image window exactly as a radius equal to the image's size does,
on every backend, and never reaches the kernels' index arithmetic unbounded; an output size
no tensor can hold is a clear error."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close

import camfast

HUGE = [2 ** 31, 2 ** 63 - 1, 2 ** 80]


@pytest.mark.parametrize("radius", HUGE)
def test_box_filter_huge_radius_is_the_image_mean(backend, device, radius):
    x = torch.rand(2, 3, 5, 7, dtype=torch.float64, device=device)
    out = camfast.ops.box_filter(x, radius)
    assert_close(out, x.mean(dim=(2, 3), keepdim=True).expand_as(x).contiguous(), what=f"r={radius} on {backend}")
    ones = camfast.ops.box_filter(torch.ones(1, 1, 4, 6, device=device), radius)
    assert torch.equal(ones, torch.ones_like(ones))


@pytest.mark.parametrize("radius", HUGE)
def test_box_filter_gradient_with_a_huge_radius(backend, device, radius):
    x = torch.rand(1, 2, 4, 5, dtype=torch.float64, device=device, requires_grad=True)
    (g_huge,) = torch.autograd.grad(camfast.ops.box_filter(x, radius).sum(), x)
    (g_size,) = torch.autograd.grad(camfast.ops.box_filter(x, 5).sum(), x)
    assert_close(g_huge, g_size, what=f"grad r={radius} on {backend}")


def test_direct_op_call_with_the_largest_int64_radius(backend, device):
    x = torch.rand(1, 1, 3, 4, dtype=torch.float64, device=device)
    out = torch.ops.camfast.box_filter(x, 2 ** 63 - 1)
    assert_close(out, camfast.ops.box_filter(x, 4), what=backend)


@pytest.mark.parametrize("subsample", [1, 2])
@pytest.mark.parametrize("radius", HUGE)
def test_guided_filter_huge_radius_equals_the_image_size(backend, device, radius, subsample):
    gen = torch.Generator().manual_seed(0)
    guide = torch.rand(2, 3, 9, 8, dtype=torch.float64, generator=gen).to(device)
    src = torch.rand(2, 1, 9, 8, dtype=torch.float64, generator=gen).to(device)
    got = camfast.ops.guided_filter(guide, src, radius, 1e-2, subsample=subsample)
    want = camfast.ops.guided_filter(guide, src, 9, 1e-2, subsample=subsample)
    assert torch.isfinite(got).all()
    assert_close(got, want, what=f"r={radius} s={subsample} on {backend}")


def test_guided_filter_reflect_still_rejects_a_radius_past_the_image():
    with pytest.raises(ValueError, match="border='reflect' needs a radius smaller than the image"):
        camfast.ops.guided_filter(torch.rand(1, 1, 6, 6), torch.rand(1, 1, 6, 6), 2 ** 63 - 1, 1e-2, border="reflect")


def test_upsample_aggregate_size_past_what_a_tensor_holds():
    """Issue 13 item 20: a size whose output no tensor can hold is a ValueError naming size
    (torch's own message was 'Storage size calculation overflowed')."""
    with pytest.raises(ValueError, match=r"size \(1099511627776, 1099511627776\) asks for an output of"):
        camfast.ops.upsample_aggregate([torch.rand(1, 4, 4)], (2 ** 40, 2 ** 40))
