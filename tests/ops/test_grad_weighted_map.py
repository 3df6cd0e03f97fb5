"""camfast::grad_weighted_map: what the op contract (test_op_contract.py) does not cover:
large shapes, hand-computed values, NaN, determinism, partial gradients, the tolerance
table's power to catch a wrong kernel, the native streaming-store path."""

from __future__ import annotations

import pytest
import torch
from helpers import TOLERANCES, assert_close
from ops.op_specs import GRAD_WEIGHTED_MAP, GWM_MODES, check_against_reference
from ops.op_specs import gwm_inputs as make_inputs

from camfast.ops import grad_weighted_map
from camfast.ops.reference import grad_weighted_map as ref

MODES = list(GWM_MODES)


def check(a, g, mode, dtype):
    return check_against_reference(GRAD_WEIGHTED_MAP, (a, g, mode), dtype)


@pytest.mark.parametrize("mode", MODES)
def test_large_shape(backend, device, mode):
    # H*W = 1551: more than one Triton block and one CPU pixel tile per image
    a, g = make_inputs((3, 40, 33, 47), torch.float32, device)
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
    a, g = make_inputs((2, 128, 129, 129), torch.float32, device)  # 17 MB
    check(a, g, mode, torch.float32)
