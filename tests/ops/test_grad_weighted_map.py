"""camfast::grad_weighted_map on every backend against the pure-PyTorch reference."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import LAYOUTS, TOLERANCES, assert_close, make_layout
from hypothesis import given, settings
from hypothesis import strategies as st

import camfast
from camfast.ops import grad_weighted_map, use_backend
from camfast.ops.reference import grad_weighted_map as ref

MODES = ["zoom", "gradcam", "layercam"]
ODD_SHAPES = [(3, 37, 5, 9), (1, 1, 1, 1), (1, 5, 1, 1), (2, 1, 7, 3), (1, 16, 1, 13), (4, 3, 9, 1)]


def make_inputs(shape, dtype, device, seed=0):
    """A ~ N(0,1), G ~ N(0,1)/sqrt(C): the channel sum, and so the map, is of order one."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(shape, generator=gen, dtype=torch.float64)
    g = torch.randn(shape, generator=gen, dtype=torch.float64) / math.sqrt(shape[1])
    return a.to(device=device, dtype=dtype), g.to(device=device, dtype=dtype)


def expected_with_grads(a, g, mode, grad_out):
    """Reference forward, and the gradients autograd derives from it (not ref.backward)."""
    a = a.detach().clone().requires_grad_(True)
    g = g.detach().clone().requires_grad_(True)
    out = ref.forward(a, g, mode)
    da, dg = torch.autograd.grad(out, (a, g), grad_out)
    return out.detach(), da, dg


def check_against_reference(a, g, mode, dtype, seed=1):
    a = a.detach().requires_grad_(True)
    g = g.detach().requires_grad_(True)
    out = grad_weighted_map(a, g, mode)
    gen = torch.Generator().manual_seed(seed)
    grad_out = torch.randn(out.shape, generator=gen).to(device=out.device, dtype=out.dtype)
    da, dg = torch.autograd.grad(out, (a, g), grad_out)
    exp_out, exp_da, exp_dg = expected_with_grads(a, g, mode, grad_out)
    assert_close(out, exp_out, dtype, f"{mode} forward")
    assert_close(da, exp_da, dtype, f"{mode} d/dactivation")
    assert_close(dg, exp_dg, dtype, f"{mode} d/dgradient")
    return out, da, dg


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", ODD_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_reference(backend, device, dtype, mode, shape):
    a, g = make_inputs(shape, dtype, device)
    check_against_reference(a, g, mode, dtype)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts(backend, device, mode, layout):
    a, g = make_inputs((2, 19, 6, 7), torch.float32, device)
    a_l, g_l = make_layout(a, layout), make_layout(g, layout)
    out, da, dg = check_against_reference(a_l, g_l, mode, torch.float32)
    # gradients come back in the layout of their input (channels-last stays channels-last)
    if layout == "channels_last":
        assert da.is_contiguous(memory_format=torch.channels_last)
        assert dg.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("mode", MODES)
def test_mixed_layouts_and_half_channels_last(backend, device, mode):
    a, g = make_inputs((2, 11, 5, 6), torch.float16, device)
    check_against_reference(make_layout(a, "channels_last"), make_layout(g, "strided"), mode, torch.float16)
    a, g = make_inputs((2, 11, 5, 6), torch.bfloat16, device)
    check_against_reference(make_layout(a, "contiguous"), make_layout(g, "channels_last"), mode, torch.bfloat16)


@pytest.mark.parametrize("mode", MODES)
def test_expanded_gradient(backend, device, mode):
    """A stride-0 (broadcast) gradient, as a caller holding per-channel weights passes it."""
    a, g = make_inputs((2, 8, 5, 6), torch.float32, device)
    g = g[:, :, :1, :1].expand_as(a)
    check_against_reference(a, g, mode, torch.float32)


@pytest.mark.parametrize("mode", MODES)
def test_large_shape(backend, device, mode):
    # H*W = 1551: more than one Triton block and one CPU pixel tile per image
    a, g = make_inputs((3, 40, 33, 47), torch.float32, device)
    check_against_reference(a, g, mode, torch.float32)


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_float64(backend, device, mode):
    a, g = make_inputs((2, 2, 3, 3), torch.float64, device, seed=3)
    a.requires_grad_(True)
    g.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, y: grad_weighted_map(x, y, mode), (a, g), eps=1e-6, atol=1e-8)


def test_reference_backward_matches_autograd(device, dtype):
    """The explicit reference backward (the spec of every kernel's backward) against autograd."""
    for mode in MODES:
        a, g = make_inputs((2, 7, 4, 3), dtype, device, seed=5)
        out = ref.forward(a, g, mode)
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(2)).to(out)
        _, exp_da, exp_dg = expected_with_grads(a, g, mode, grad_out)
        da, dg = ref.backward(grad_out, a, g, out, mode)
        assert_close(da, exp_da, dtype, f"{mode} reference d/dactivation")
        assert_close(dg, exp_dg, dtype, f"{mode} reference d/dgradient")


def test_hand_computed_values(backend, device):
    # One pixel, two channels: A = (2, -1), G = (3, 4).
    a = torch.tensor([2.0, -1.0], device=device).view(1, 2, 1, 1)
    g = torch.tensor([3.0, 4.0], device=device).view(1, 2, 1, 1)
    assert grad_weighted_map(a, g, "zoom").item() == 2.0  # 6 - 4
    assert grad_weighted_map(a, g, "layercam").item() == 2.0  # relu(3)*2 + relu(4)*-1
    assert grad_weighted_map(-a, g, "zoom").item() == 0.0  # ReLU
    # Two pixels, one channel: G mean = 1, A = (3, -5) -> gradcam (3, 0); zoom (0*3, 2*-5) -> (0, 0)
    a = torch.tensor([3.0, -5.0], device=device).view(1, 1, 1, 2)
    g = torch.tensor([0.0, 2.0], device=device).view(1, 1, 1, 2)
    assert grad_weighted_map(a, g, "gradcam").flatten().tolist() == [3.0, 0.0]
    assert grad_weighted_map(a, -g, "layercam").flatten().tolist() == [0.0, 0.0]


def test_nan_propagates(backend, device):
    a, g = make_inputs((1, 4, 3, 3), torch.float32, device)
    a[0, 2, 1, 1] = float("nan")
    for mode in MODES:
        out = grad_weighted_map(a, g, mode)
        assert torch.isnan(out[0, 1, 1]), mode
        exp = ref.forward(a, g, mode)
        assert torch.equal(torch.isnan(out), torch.isnan(exp)), mode


def test_deterministic(backend, device):
    a, g = make_inputs((3, 40, 17, 19), torch.float32, device)
    for mode in MODES:
        assert torch.equal(grad_weighted_map(a, g, mode), grad_weighted_map(a, g, mode)), mode


def test_gradient_only_where_required(backend, device):
    a, g = make_inputs((2, 3, 4, 4), torch.float32, device)
    a.requires_grad_(True)
    out = grad_weighted_map(a, g, "zoom")
    assert out.requires_grad
    out.sum().backward()
    assert a.grad is not None and g.grad is None
    with torch.no_grad():
        assert not grad_weighted_map(a, g, "zoom").requires_grad


# ---------------------------------------------------------------- torch.library integration
@pytest.mark.parametrize("mode", MODES)
def test_opcheck(backend, device, mode):
    a, g = make_inputs((2, 5, 3, 4), torch.float32, device)
    samples = [
        (a.clone().requires_grad_(True), g.clone().requires_grad_(True), mode),
        (make_layout(a, "channels_last").requires_grad_(True), make_layout(g, "strided"), mode),
    ]
    for args in samples:
        torch.library.opcheck(torch.ops.camfast.grad_weighted_map.default, args)
    out = grad_weighted_map(a, g, mode)
    torch.library.opcheck(
        torch.ops.camfast.grad_weighted_map_backward.default, (torch.randn_like(out), a, g, out, mode)
    )


@pytest.mark.slow
def test_torch_compile_fullgraph_matches_eager(backend, device):
    """The op traces into a full graph (fake kernel) and gives eager's values and gradients."""
    if backend == "triton" and device.type == "cpu":
        pytest.skip("inductor on CPU with the Triton interpreter adds nothing over the native run")

    def loss_fn(a, g):
        m = grad_weighted_map(a * 2.0, g, "zoom") + grad_weighted_map(a, g, "gradcam")
        return (m / (m.amax(dim=(1, 2), keepdim=True) + 1e-6)).square().mean(), m

    compiled = torch.compile(loss_fn, fullgraph=True)
    a, g = make_inputs((2, 6, 5, 7), torch.float32, device)
    results = []
    for fn in (loss_fn, compiled):
        x = a.clone().requires_grad_(True)
        y = g.clone().requires_grad_(True)
        loss, m = fn(x, y)
        loss.backward()
        results.append((loss.detach(), m.detach(), x.grad, y.grad))
    for eager, comp, what in zip(results[0], results[1], ("loss", "map", "d/da", "d/dg")):
        assert_close(comp, eager, torch.float32, f"compiled {what}")


# ---------------------------------------------------------------- property-based
@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 3), C=st.integers(1, 24), H=st.integers(1, 12), W=st.integers(1, 12),
    mode=st.sampled_from(MODES), layout=st.sampled_from(LAYOUTS),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]), seed=st.integers(0, 2**16),
)
def test_random_shapes_native(B, C, H, W, mode, layout, dtype, seed):
    if camfast.ops.available_backends("cpu")[0] != "native":
        pytest.skip("camfast._C not loaded")
    a, g = make_inputs((B, C, H, W), dtype, "cpu", seed)
    with use_backend("native"):
        check_against_reference(make_layout(a, layout), make_layout(g, layout), mode, dtype, seed)


@settings(max_examples=10, deadline=None)
@given(
    B=st.integers(1, 2), C=st.integers(1, 9), H=st.integers(1, 9), W=st.integers(1, 9),
    mode=st.sampled_from(MODES), layout=st.sampled_from(LAYOUTS), seed=st.integers(0, 2**16),
)
def test_random_shapes_triton(B, C, H, W, mode, layout, seed):
    if "triton" not in camfast.ops.available_backends("cuda" if torch.cuda.is_available() else "cpu"):
        pytest.skip("triton not available")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a, g = make_inputs((B, C, H, W), torch.float32, device, seed)
    with use_backend("triton"):
        check_against_reference(make_layout(a, layout), make_layout(g, layout), mode, torch.float32, seed)


def test_tolerance_table_is_tight_enough_to_catch_a_wrong_kernel():
    """A kernel off by one float32 ulp per channel passes; one that drops a channel fails."""
    a, g = make_inputs((2, 16, 5, 5), torch.float32, "cpu")
    exp = ref.forward(a, g, "zoom")
    dropped = ref.forward(a[:, 1:], g[:, 1:], "zoom")
    with pytest.raises(AssertionError):
        assert_close(dropped, exp, torch.float32)
    atol, rtol = TOLERANCES[torch.float32]
    assert atol <= 1e-5 and rtol <= 1e-5


@pytest.mark.parametrize("mode", MODES)
def test_outputs_above_streaming_threshold(backend, device, mode):
    """Outputs of 16 MiB and more take the native CPU kernel's streaming-store path; an odd
    H*W misaligns every plane, which exercises its scalar head and tail."""
    if backend == "triton" and device.type == "cpu":
        pytest.skip("too large for the Triton interpreter")
    a, g = make_inputs((2, 128, 129, 129), torch.float32, device)  # 17 MB
    check_against_reference(a, g, mode, torch.float32)
