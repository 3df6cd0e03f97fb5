"""camfast::thresholded_avg_pool2d: what the op contract (test_op_contract.py) does not
cover: a large plane, hand-computed values, the strict threshold, channels that keep nothing,
non-finite channels, determinism, the compiled module's raw-argument checks, the tolerance's
power to catch a non-strict threshold; and the camfast.nn module and converter built on it."""

from __future__ import annotations

import pytest
import torch
from helpers import TOLERANCES, assert_close
from models import mobilenet_like, plain_cnn, resnet_like, seeded, vgg_like
from ops.op_specs import THRESHOLDED_AVG_POOL2D, check_against_reference
from ops.op_specs import tap_input as make_input
from torch import nn

import camfast
from camfast.ops import thresholded_avg_pool2d as tap
from camfast.ops.reference import thresholded_avg_pool2d as ref


def test_large_plane(backend, device):
    # H*W = 1551: several Triton blocks per plane
    check_against_reference(THRESHOLDED_AVG_POOL2D, (make_input((2, 5, 33, 47), torch.float32, device), 0.1),
                            torch.float32)


# ---------------------------------------------------------------- hand-computed values, edge cases
def test_hand_computed_values(backend, device):
    # max 10, theta 0.25 -> tau 2.5: keep 10, 4, 3 (not 2, 1, -5) -> 17 / 3
    x = torch.tensor([10.0, 4.0, 3.0, 2.0, 1.0, -5.0], device=device).view(1, 1, 2, 3).requires_grad_(True)
    out = tap(x, 0.25)
    assert out.shape == (1, 1)
    torch.testing.assert_close(out, torch.tensor([[17.0 / 3.0]], device=device))
    out.sum().backward()
    exp = torch.tensor([1, 1, 1, 0, 0, 0], dtype=torch.float32, device=device).view(1, 1, 2, 3) / 3
    torch.testing.assert_close(x.grad, exp)


def test_tie_at_threshold_is_not_kept(backend, device):
    # max 4, theta 0.5 -> tau exactly 2: the 2s are not kept (strict >)
    x = torch.tensor([4.0, 2.0, 2.0, 3.0], device=device).view(1, 1, 2, 2).requires_grad_(True)
    out = tap(x, 0.5)
    assert out.item() == 3.5
    out.sum().backward()
    assert x.grad.flatten().tolist() == [0.5, 0.0, 0.0, 0.5]


def test_theta_zero_keeps_positive_values_only(backend, device):
    x = torch.tensor([3.0, 0.0, -1.0, 1.0], device=device).view(1, 1, 2, 2)
    assert tap(x, 0.0).item() == 2.0  # (3 + 1) / 2; the 0 is not > 0
    # theta = 1 keeps nothing: no value exceeds the maximum
    assert tap(x, 1.0).item() == 0.0


@pytest.mark.parametrize("theta", [0.0, 0.1, 0.9])
def test_channel_with_nothing_kept_pools_to_zero(backend, device, theta):
    """All-zero and all-negative channels: for max < 0, tau = theta*max >= max, so nothing is
    kept although tau is negative; N = 1, the output and gradient are 0."""
    x = torch.stack([
        torch.zeros(3, 4),
        -torch.arange(1.0, 13.0).view(3, 4),             # all negative, distinct
        torch.full((3, 4), -2.0),                        # all negative, constant
        torch.arange(12.0).view(3, 4) - 20.0,            # all negative, max -9
    ]).unsqueeze(0).to(device).requires_grad_(True)
    out = tap(x, theta)
    assert out.tolist() == [[0.0, 0.0, 0.0, 0.0]]
    out.sum().backward()
    assert torch.count_nonzero(x.grad) == 0
    _, _, count = ref.forward(x.detach(), theta)
    assert count.tolist() == [[1.0, 1.0, 1.0, 1.0]]


def test_mixed_sign_channel_negative_values_never_kept(backend, device):
    x = torch.tensor([-0.1, 5.0, -7.0, 0.4], device=device).view(1, 1, 1, 4)
    assert tap(x, 0.0).item() == pytest.approx(2.7)  # (5 + 0.4) / 2
    assert tap(x, 0.1).item() == 5.0  # tau = 0.5


def test_non_finite_channels(backend, device):
    """A channel holding NaN, +inf, or only -inf pools to NaN with a zero gradient; a -inf in a
    channel with a finite maximum is not kept; other channels are unaffected."""
    x = make_input((2, 5, 3, 4), torch.float32, device).abs()
    x[0, 1, 1, 2] = float("nan")
    x[0, 2, 0, 0] = float("inf")
    x[1, 3] = float("-inf")
    x[1, 4, 2, 3] = float("-inf")
    for theta in (0.0, 0.1):
        xg = x.clone().requires_grad_(True)
        out = tap(xg, theta)
        exp, _, _ = ref.forward(x, theta)
        nan = torch.isnan(out)
        assert nan.tolist() == [[False, True, True, False, False], [False, False, False, True, False]], theta
        assert torch.equal(nan, torch.isnan(exp))
        assert_close(out, exp, torch.float32, "finite channels")
        out.nan_to_num(0.0).sum().backward()
        for b, c in ((0, 1), (0, 2), (1, 3)):
            assert torch.count_nonzero(xg.grad[b, c]) == 0, (theta, b, c)
        assert xg.grad[1, 4, 2, 3] == 0 and torch.isfinite(xg.grad).all()


def test_deterministic(backend, device):
    x = make_input((2, 70, 9, 11), torch.float32, device)
    assert torch.equal(tap(x, 0.1), tap(x, 0.1))


def test_no_grad_and_requires_grad(backend, device):
    x = make_input((2, 3, 4, 4), torch.float32, device).requires_grad_(True)
    assert tap(x).requires_grad
    with torch.no_grad():
        assert not tap(x).requires_grad


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("theta,exc", [(-0.1, ValueError), (1.5, ValueError), (float("nan"), ValueError),
                                       (True, TypeError), ("0.1", TypeError), (None, TypeError)])
def test_module_rejects_bad_theta(theta, exc):
    """The function's checks are the op contract's (op_specs); the module checks at construction."""
    with pytest.raises(exc, match="theta must be a float in"):
        camfast.nn.ThresholdedAvgPool2d(theta)


def test_native_binding_rejects_bad_raw_args():
    if camfast._ext.native is None:
        pytest.skip("camfast._C not loaded")
    x = torch.rand(1, 2, 3, 3)
    o = torch.empty(1, 2)
    with pytest.raises(ValueError, match="theta"):
        camfast._ext.native.thresholded_avg_pool2d_forward(0, 0, 0, (1, 2, 3, 3), x.data_ptr(), x.stride(), 1.5,
                                                           o.data_ptr(), o.data_ptr(), o.data_ptr(), 0)
    with pytest.raises(ValueError, match="null"):
        camfast._ext.native.thresholded_avg_pool2d_forward(0, 0, 0, (1, 2, 3, 3), 0, x.stride(), 0.1,
                                                           o.data_ptr(), o.data_ptr(), o.data_ptr(), 0)


def test_tolerance_catches_a_non_strict_threshold():
    """A kernel that keeps ties (>=) or ignores the threshold differs from the reference by
    more than the table's tolerance on a typical input."""
    x = make_input((2, 16, 7, 7), torch.float32, "cpu")
    exp = ref.forward(x, 0.5)[0]
    mean = x.mean(dim=(2, 3))
    with pytest.raises(AssertionError):
        assert_close(mean, exp, torch.float32)
    atol, rtol = TOLERANCES[torch.float32]
    assert atol <= 1e-5 and rtol <= 1e-5


# ---------------------------------------------------------------- camfast.nn
def test_module_shapes_and_values():
    x = make_input((2, 6, 5, 5), torch.float32, "cpu")
    pool = camfast.nn.ThresholdedAvgPool2d(0.2)
    assert pool(x).shape == (2, 6)
    assert torch.equal(camfast.nn.ThresholdedAvgPool2d(0.2, flatten=False)(x), pool(x)[:, :, None, None])
    assert "theta=0.2" in repr(pool)
    with pytest.raises(TypeError, match="flatten"):
        camfast.nn.ThresholdedAvgPool2d(0.1, flatten=1)


def test_theta_zero_with_positive_input_equals_gap():
    x = torch.rand(2, 6, 5, 5) + 0.1
    torch.testing.assert_close(camfast.nn.ThresholdedAvgPool2d(0.0)(x), torch.flatten(nn.AdaptiveAvgPool2d(1)(x), 1))


@pytest.mark.parametrize("factory", [resnet_like, mobilenet_like, vgg_like, plain_cnn])
def test_convert_to_tap_small_models(factory):
    model = seeded(factory)
    x = torch.rand(2, 3, 32, 32)
    tap_model = camfast.nn.convert_to_tap(model, theta=0.1)
    assert tap_model is not model
    assert any(isinstance(m, nn.AdaptiveAvgPool2d) for m in model.modules())  # the original is untouched
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in tap_model.modules())
    pools = [m for m in tap_model.modules() if isinstance(m, camfast.nn.ThresholdedAvgPool2d)]
    assert len(pools) == 1 and pools[0].theta == 0.1
    out = tap_model(x)
    assert out.shape == model(x).shape
    out.sum().backward()
    # NWC CAM on the converted model: camfast.cam finds ThresholdedAvgPool2d as the pooling
    res = camfast.cam(tap_model, x, clamp_negative_weights=True)
    assert res.shape == (2, 32, 32) and torch.isfinite(res).all()


def test_convert_to_tap_inplace_and_errors():
    model = seeded(plain_cnn)
    assert camfast.nn.convert_to_tap(model, 0.2, inplace=True) is model
    assert isinstance(model[6], camfast.nn.ThresholdedAvgPool2d)
    with pytest.raises(ValueError, match="no global average pooling"):
        camfast.nn.convert_to_tap(model)  # already converted
    with pytest.raises(ValueError, match="no global average pooling"):
        camfast.nn.convert_to_tap(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(7)))
    with pytest.raises(ValueError, match="theta"):
        camfast.nn.convert_to_tap(seeded(plain_cnn), theta=2.0)
    with pytest.raises(TypeError, match="model"):
        camfast.nn.convert_to_tap("resnet")


def test_convert_to_tap_torchvision():
    from peers import torchvision

    tv = torchvision()
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32)
    # (model, CAM applies): MobileNetV3's head is an MLP (576 -> 1024 -> classes), so CAM
    # from the last linear layer is not defined for it; the conversion still is.
    for model, has_cam in ((tv.models.resnet18(num_classes=4), True),
                           (tv.models.mobilenet_v3_small(num_classes=4), False),
                           (tv.models.efficientnet_b0(num_classes=4), True)):
        model.eval()
        converted = camfast.nn.convert_to_tap(model, theta=0.1)
        assert isinstance(converted.avgpool, camfast.nn.ThresholdedAvgPool2d)
        assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d)
        assert converted(x).shape == (1, 4)
        if has_cam:
            res = camfast.cam(converted, x, clamp_negative_weights=True)
            assert res.shape == (1, 32, 32) and torch.isfinite(res).all()
