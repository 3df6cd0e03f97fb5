"""Several classes per image in one call (issue 12 item 1): a ``(B, K)`` class tensor gives
``(B, K, H, W)``, one class list per image gives one ``(K_b, H, W)`` stack per image; the result
equals K single-class calls for every registered method, with one forward for the gradient
methods (one backward per round of classes) and no backward at all for CAM."""

from __future__ import annotations

import pytest
import torch
from models import resnet_like, seeded

import camfast
from camfast.methods import registry

SPECS = [s for s in registry.specs() if not s.missing()]
IDS = [s.name for s in SPECS]


@pytest.fixture(scope="module")
def model():
    return seeded(resnet_like)


def x(b=3):
    return torch.randn(b, 3, 32, 40, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_k_classes_equal_k_single_calls(model, spec):
    t = torch.tensor([[1, 3, 0], [0, 2, 2], [4, 4, 1]])
    allk = spec(model, x(), t)
    assert allk.shape == (3, 3, 32, 40) and allk.dtype == torch.float32
    singles = torch.stack([spec(model, x(), t[:, k]) for k in range(3)], 1)
    torch.testing.assert_close(allk, singles, atol=1e-5, rtol=0)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_one_list_per_image_with_different_lengths(model, spec):
    got = spec(model, x(), [[1, 3], [], [4]])
    assert isinstance(got, list) and [tuple(m.shape) for m in got] == [(2, 32, 40), (0, 32, 40), (1, 32, 40)]
    torch.testing.assert_close(got[0][1], spec(model, x(), [3, 3, 3])[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(got[2][0], spec(model, x(), 4)[2], atol=1e-5, rtol=0)
    empty = spec(model, x(), [[], [], []])
    assert [tuple(m.shape) for m in empty] == [(0, 32, 40)] * 3


@pytest.mark.parametrize("spec", [s for s in SPECS if s.accepts("return_layers")], ids=lambda s: s.name)
def test_return_layers_carries_the_classes(model, spec):
    res = spec(model, x(), torch.tensor([[2, 0], [1, 1], [3, 4]]), return_layers=True)
    assert res.targets.tolist() == [[2, 0], [1, 1], [3, 4]] and res.cam.shape == (3, 2, 32, 40)
    ragged = spec(model, x(), [[2], [1, 0], []], return_layers=True)
    assert [t.tolist() for t in ragged.targets] == [[2], [1, 0], []]


class _CountingModel(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.forwards = net, 0

    def forward(self, x):
        self.forwards += 1
        return self.net(x)


def test_one_forward_for_all_classes(model):
    counting = _CountingModel(model)
    camfast.zoom_cam(counting, x(), torch.tensor([[0, 1, 2, 3]] * 3))
    assert counting.forwards == 1
    camfast.cam(counting, x(), torch.tensor([[0, 1, 2, 3]] * 3))
    assert counting.forwards == 2


def test_create_graph_keeps_every_class_differentiable(model):
    xi = x(2).requires_grad_(True)
    maps = camfast.zoom_cam(model, xi, torch.tensor([[0, 2], [1, 3]]), create_graph=True)
    (g,) = torch.autograd.grad(maps[:, 1].sum(), xi)
    xs = x(2).requires_grad_(True)
    single = camfast.zoom_cam(model, xs, torch.tensor([2, 3]), create_graph=True)
    (gs,) = torch.autograd.grad(single.sum(), xs)
    torch.testing.assert_close(g, gs, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("target, error, match", [
    (torch.tensor([[0, 1], [1, 2]]), ValueError, "needs B = 3 rows"),
    ([[0], [1]], ValueError, "2 class lists for a batch of 3"),
    ([[0], [9], [1]], ValueError, r"target class 9 out of range \[0, 5\)"),
    (torch.tensor([[0.5, 1.0]] * 3), TypeError, "must hold integers"),
    ([[0], ["dog"], [1]], TypeError, "is a name but the model has no class names"),
])
@pytest.mark.parametrize("method", [camfast.zoom_cam, camfast.grad_cam, camfast.cam], ids=lambda f: f.__name__)
def test_bad_class_sets_name_the_argument(model, method, target, error, match):
    with pytest.raises(error, match=match):
        method(model, x(), target)
