"""camfast::grad_weighted_map: what the op contract (test_op_contract.py) does not cover:
large shapes, hand-computed values, NaN, determinism, partial gradients, the tolerance
table's power to catch a wrong kernel, the native streaming-store path, and Grad-CAM++ and
XGrad-CAM against pytorch-grad-cam 1.5.7's formulas (negative activations, G == 0)."""

from __future__ import annotations

import pytest
import torch
from helpers import TOLERANCES, assert_close
from ops.op_specs import GRAD_WEIGHTED_MAP, GWM_MODES, check_against_reference
from ops.op_specs import gwm_inputs as make_inputs

from camfast.ops import grad_weighted_map
from camfast.ops._spec import GWM_MODES as CODED_MODES
from camfast.ops.reference import grad_weighted_map as ref

MODES = list(GWM_MODES)


def check(a, g, mode, dtype):
    return check_against_reference(GRAD_WEIGHTED_MAP, (a, g, mode), dtype)


@pytest.mark.parametrize("mode", MODES)
def test_large_shape(backend, device, mode):
    # H*W = 1551: more than one Triton block and one CPU pixel tile per image
    a, g = make_inputs((3, 40, 33, 47), torch.float32, device, mode=mode)
    check(a, g, mode, torch.float32)


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
    a, g = make_inputs((2, 128, 129, 129), torch.float32, device, mode=mode)  # 17 MB
    check(a, g, mode, torch.float32)


def test_the_contract_runs_every_mode_of_the_code_table():
    assert tuple(CODED_MODES) == tuple(GWM_MODES)


# ---------------------------------------------------------------- Grad-CAM++ and XGrad-CAM
# pytorch-grad-cam 1.5.7's channel weights (GradCAMPlusPlus / XGradCAM.get_cam_weights) and its
# map (BaseCAM: weights times activations summed over channels, then the ReLU), restated here in
# plain torch, apart from camfast's reference.
def grad_cam_plus_plus_1_5_7(a, g):
    sum_a = a.sum(dim=(2, 3), keepdim=True)
    alpha = g.pow(2) / (2 * g.pow(2) + sum_a * g.pow(3) + 0.000001)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    weights = (torch.clamp(g, min=0) * alpha).sum(dim=(2, 3))
    return torch.clamp((weights[:, :, None, None] * a).sum(dim=1), min=0)


def x_grad_cam_1_5_7(a, g):
    weights = (g * a / (a.sum(dim=(2, 3), keepdim=True) + 1e-7)).sum(dim=(2, 3))
    return torch.clamp((weights[:, :, None, None] * a).sum(dim=1), min=0)


PEER_FORMULAS = {"gradcampp": grad_cam_plus_plus_1_5_7, "xgradcam": x_grad_cam_1_5_7}


def signed_inputs(device, seed=33):
    """float64 ``(A, G)`` ``(2, 6, 3, 5)``: A ~ N(0, 1), so channel sums of either sign; G ~ N(0, 1)
    with zeros: a quarter of the entries, all of channel 1 of sample 0 and all but one pixel of
    channel 2. Drawn away from Grad-CAM++'s pole 2 + S G = 0 (checked)."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(2, 6, 3, 5, generator=gen, dtype=torch.float64)
    g = torch.randn(2, 6, 3, 5, generator=gen, dtype=torch.float64)
    g = torch.where(torch.rand(g.shape, generator=gen, dtype=torch.float64) < 0.25, 0.0, g)
    g[0, 1] = 0
    g[:, 2] = 0
    g[:, 2, 1, 3] = 0.7
    s = a.sum(dim=(2, 3), keepdim=True)
    assert (s < 0).any() and (s > 0).any() and (a < 0).any()
    assert ((2 + s * g).abs()[g != 0] > 0.05).all(), "too near Grad-CAM++'s pole: draw another seed"
    return a.to(device), g.to(device)


@pytest.mark.parametrize("mode", sorted(PEER_FORMULAS))
def test_equals_pytorch_grad_cam_formula(backend, device, mode):
    """Every backend against pytorch-grad-cam 1.5.7's formula, with negative activations, channel
    sums of both signs and G == 0 entries (Grad-CAM++'s a = 0 there), in float64; and the
    gradients against autograd of camfast's reference on the same inputs."""
    a, g = signed_inputs(device)
    want = PEER_FORMULAS[mode](a.cpu(), g.cpu())
    assert (want > 0).any() and (want == 0).any(), "the ReLU should act on part of the map"
    assert_close(grad_weighted_map(a, g, mode).cpu(), want, torch.float64, f"{mode} vs pytorch-grad-cam 1.5.7")
    check(a, g, mode, torch.float64)


@pytest.mark.parametrize("mode", sorted(PEER_FORMULAS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_equals_pytorch_grad_cam_formula_in_low_precision(backend, device, mode, dtype):
    """The same formula on post-ReLU-like activations (the contract's inputs) in float32 and float16."""
    a, g = make_inputs((2, 7, 5, 6), dtype, device, seed=4, mode=mode)
    want = PEER_FORMULAS[mode](a.double().cpu(), g.double().cpu()).to(dtype)
    assert_close(grad_weighted_map(a, g, mode).cpu(), want, dtype, f"{mode} vs pytorch-grad-cam 1.5.7")


def test_gradcampp_and_xgradcam_by_hand(backend, device):
    # one channel, two pixels: A = (3, -1), G = (1, 2): S = 2, sum(G A) = 1, w = 1 / (2 + 1e-7)
    a = torch.tensor([3.0, -1.0], device=device, dtype=torch.float64).view(1, 1, 1, 2)
    g = torch.tensor([1.0, 2.0], device=device, dtype=torch.float64).view(1, 1, 1, 2)
    assert grad_weighted_map(a, g, "xgradcam").flatten().tolist() == pytest.approx([3 / (2 + 1e-7), 0.0], rel=1e-12)
    # A = (1, 1), G = (1, 0): S = 2; a = 1 / (2 + 2 + 1e-6) at the first pixel, 0 where G == 0
    a = torch.tensor([1.0, 1.0], device=device, dtype=torch.float64).view(1, 1, 1, 2)
    g = torch.tensor([1.0, 0.0], device=device, dtype=torch.float64).view(1, 1, 1, 2)
    w = 1 / (4 + 1e-6)
    assert grad_weighted_map(a, g, "gradcampp").flatten().tolist() == pytest.approx([w, w], rel=1e-12)
    # negative gradients carry no weight in Grad-CAM++ (ReLU(G)); in XGrad-CAM they weigh
    # negatively: A = (3, -1), G = (-1, 0) give w = -3 / (2 + 1e-7) and M = ReLU(w A) = (0, -w)
    assert grad_weighted_map(a, -g, "gradcampp").flatten().tolist() == [0.0, 0.0]
    a = torch.tensor([3.0, -1.0], device=device, dtype=torch.float64).view(1, 1, 1, 2)
    w = -3 / (2 + 1e-7)
    assert grad_weighted_map(a, -g, "xgradcam").flatten().tolist() == pytest.approx([0.0, -w], rel=1e-12)
