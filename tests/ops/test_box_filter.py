"""camfast::box_filter on every backend against the reference and a brute-force window mean."""

from __future__ import annotations

import pytest
import torch
from helpers import LAYOUTS, assert_close, make_layout
from hypothesis import given, settings
from hypothesis import strategies as st

from camfast.ops import box_filter
from camfast.ops.reference import box_filter as ref

SHAPES = [(2, 3, 9, 11), (1, 1, 1, 1), (1, 2, 1, 7), (3, 1, 6, 1), (1, 4, 17, 5)]


def brute(x: torch.Tensor, r: int) -> torch.Tensor:
    """Explicit loops over the truncated windows, float64."""
    B, C, H, W = x.shape
    out = torch.empty(x.shape, dtype=torch.float64)
    xd = x.double().cpu()
    for i in range(H):
        for j in range(W):
            out[:, :, i, j] = xd[:, :, max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1].mean(dim=(2, 3))
    return out


def make_x(shape, dtype, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)


def check(x, r, dtype, seed=1):
    x = x.detach().requires_grad_(True)
    out = box_filter(x, r)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out)
    (dx,) = torch.autograd.grad(out, x, g)
    xr = x.detach().double().requires_grad_(True)
    exp = ref.forward(xr, r)
    (exp_dx,) = torch.autograd.grad(exp, xr, g.double())  # autograd of the reference, not ref.backward
    assert_close(out, exp.to(dtype), dtype, f"r={r} forward")
    assert_close(dx, exp_dx.to(dtype), dtype, f"r={r} backward")


def test_reference_is_the_window_mean():
    x = make_x((2, 3, 7, 9), torch.float64, "cpu")
    for r in (0, 1, 2, 4, 8, 30):
        torch.testing.assert_close(ref.forward(x, r), brute(x, r), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("r", [0, 1, 3, 20])
def test_matches_reference(backend, device, dtype, shape, r):
    x = make_x(shape, dtype, device)
    check(x, r, dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts(backend, device, layout):
    x = make_x((2, 5, 8, 7), torch.float32, device)
    check(make_layout(x, layout), 2, torch.float32)
    x = make_x((2, 5, 8, 7), torch.float32, device)
    check(x[:, :, :1, :1].expand(2, 5, 8, 7), 2, torch.float32)  # stride 0


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


def test_gradcheck_float64(backend, device):
    x = make_x((1, 2, 5, 4), torch.float64, device).requires_grad_(True)
    for r in (1, 3):
        assert torch.autograd.gradcheck(lambda t: box_filter(t, r), (x,), eps=1e-6, atol=1e-8,
                                        fast_mode=backend == "triton")


@pytest.mark.parametrize("bad, err, match", [
    (lambda x: box_filter(x, -1), ValueError, "radius"),
    (lambda x: box_filter(x, 1.5), TypeError, "radius"),
    (lambda x: box_filter(x, True), TypeError, "radius"),
    (lambda x: box_filter(x[0], 1), ValueError, "x must have 4"),
    (lambda x: box_filter(x.long(), 1), TypeError, "x must have a floating"),
    (lambda x: box_filter(x[:, :, :0], 1), ValueError, "x must not be empty"),
    (lambda x: box_filter(x.numpy(), 1), TypeError, "x must be a torch.Tensor"),
])
def test_bad_inputs(bad, err, match):
    x = torch.rand(1, 2, 3, 4)
    with pytest.raises(err, match=match):
        bad(x)


def test_opcheck(backend, device):
    x = make_x((2, 3, 5, 6), torch.float32, device)
    for args in [(x.clone().requires_grad_(True), 2), (make_layout(x, "strided").requires_grad_(True), 7)]:
        torch.library.opcheck(torch.ops.camfast.box_filter.default, args)
    torch.library.opcheck(torch.ops.camfast.box_filter_backward.default, (x, 2))


@pytest.mark.slow
def test_torch_compile_fullgraph_matches_eager(backend, device):
    if backend == "triton" and device.type == "cpu":
        pytest.skip("inductor on CPU with the Triton interpreter adds nothing over the native run")

    def fn(x):
        return (box_filter(x * 2.0, 2) - box_filter(x, 5)).square().mean()

    compiled = torch.compile(fn, fullgraph=True)
    x = make_x((2, 3, 9, 8), torch.float32, device)
    res = []
    for f in (fn, compiled):
        t = x.clone().requires_grad_(True)
        loss = f(t)
        loss.backward()
        res.append((loss.detach(), t.grad))
    assert_close(res[1][0], res[0][0], torch.float32, "loss")
    assert_close(res[1][1], res[0][1], torch.float32, "grad")


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 2), C=st.integers(1, 4), H=st.integers(1, 10), W=st.integers(1, 10), r=st.integers(0, 12),
       layout=st.sampled_from(LAYOUTS), seed=st.integers(0, 2**16))
def test_random_shapes_native_vs_brute(B, C, H, W, r, layout, seed):
    x = make_layout(make_x((B, C, H, W), torch.float64, "cpu", seed), layout)
    torch.testing.assert_close(box_filter(x, r), brute(x, r), atol=1e-12, rtol=1e-12)
