"""What the methods accept and the errors they give (issue 13 item 20): each bad argument gets a
message naming it and saying what is accepted; numpy integers and class names work."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from models import resnet_like, seeded

import camfast

METHODS = [camfast.zoom_cam, camfast.grad_cam, camfast.cam]


@pytest.fixture(scope="module")
def model():
    return seeded(resnet_like)


def x(b=2):
    return torch.randn(b, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("method", METHODS, ids=lambda f: f.__name__)
def test_inference_mode_and_inference_tensors(model, method):
    want = method(model, x())
    with torch.inference_mode():
        inside = method(model, x())
        frozen = x()
    assert frozen.is_inference()
    got = method(model, frozen)  # an inference tensor as input, outside the mode
    torch.testing.assert_close(inside, want)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("size, error, match", [
    (2.5, TypeError, "output_size must be a positive int or"),
    (True, TypeError, "output_size must be a positive int or"),
    ("32", TypeError, "output_size"),
    ((0, 4), ValueError, "output_size must be positive"),
    ((1, 2, 3), TypeError, "output_size"),
])
def test_bad_output_size(model, size, error, match):
    with pytest.raises(error, match=match):
        camfast.zoom_cam(model, x(), output_size=size)


def test_numpy_and_tensor_sizes_work(model):
    assert camfast.zoom_cam(model, x(), output_size=np.int64(9)).shape == (2, 9, 9)
    assert camfast.zoom_cam(model, x(), output_size=(np.int32(5), 7)).shape == (2, 5, 7)


@pytest.mark.parametrize("method", METHODS, ids=lambda f: f.__name__)
def test_numpy_integers_and_arrays_as_targets(model, method):
    want = method(model, x(), target=[1, 1])
    torch.testing.assert_close(method(model, x(), target=np.int64(1)), want)
    torch.testing.assert_close(method(model, x(), target=np.array([1, 1])), want)
    torch.testing.assert_close(method(model, x(), target=torch.tensor(1)), want)


@pytest.mark.parametrize("target, error, match", [
    ("cat", TypeError, "target 'cat' is a name but the model has no class names"),
    (2 ** 63, ValueError, r"target class 9223372036854775808 out of range \[0, 5\)"),
    (-1, ValueError, "out of range"),
    ([1, 2, 3], ValueError, "3 classes for a batch of 2"),
    (1.5, TypeError, "target must be None"),
    (torch.tensor([0.5, 1.0]), TypeError, "target must be None"),
    (True, TypeError, "target must be None"),
    ({"a": 1}, TypeError, "target must be None"),
])
@pytest.mark.parametrize("method", METHODS, ids=lambda f: f.__name__)
def test_bad_targets_name_the_argument(model, method, target, error, match):
    with pytest.raises(error, match=match):
        method(model, x(), target=target)


@pytest.mark.parametrize("method", METHODS, ids=lambda f: f.__name__)
def test_class_names_when_the_model_has_them(method):
    net = seeded(resnet_like)
    net.class_names = ["plane", "car", "bird", "cat", "deer"]
    torch.testing.assert_close(method(net, x(), target="Cat"), method(net, x(), target=3))
    torch.testing.assert_close(method(net, x(), target=["cat", "car"]), method(net, x(), target=[3, 1]))
    with pytest.raises(ValueError, match="unknown class name 'ca'; did you mean"):
        method(net, x(), target="ca")
