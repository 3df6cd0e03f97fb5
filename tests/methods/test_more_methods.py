"""Grad-CAM++, EigenCAM, EigenGradCAM and Score-CAM (issue 16 items 1 and 3): their rules by
hand, the batched projection, Score-CAM's skipped channels, ``max_channels`` and
``batch_size``, one and several layers, no backward for the forward-only methods, and bad
input. Parity with pytorch-grad-cam 1.5.7 is in tests/methods/test_compat.py and
tests/methods/test_compat_real.py; all-class targets in tests/methods/test_all_classes.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from models import resnet_like, seeded, vgg_like
from torch import nn

import camfast
from camfast.methods import registry
from camfast.methods.eigencam import eigen_projection
from camfast.methods.gradcampp import gradcampp_weights
from camfast.methods.scorecam import channel_scores

NEW = [camfast.grad_cam_plus_plus, camfast.eigen_cam, camfast.eigen_grad_cam, camfast.score_cam]
IDS = [f.__name__ for f in NEW]


@pytest.fixture(scope="module")
def model():
    return seeded(resnet_like)


def x(b=2, h=32, w=40, seed=0):
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------ rules by hand
def test_gradcampp_rule_by_hand():
    """alpha = G^2 / (2 G^2 + sum(A) G^3 + 1e-6), zero where G == 0; w = sum ReLU(G) alpha."""
    a = torch.tensor([[[[1.0, 3.0]], [[2.0, 0.0]]]], dtype=torch.float64)  # (1, 2, 1, 2)
    g = torch.tensor([[[[1.0, -1.0]], [[0.5, 0.0]]]], dtype=torch.float64)
    # channel 0: sum A = 4; alpha(1) = 1 / (2 + 4 + 1e-6), alpha(-1) = 1 / (2 - 4 + 1e-6); ReLU(G) keeps G=1 only
    w0 = 1.0 / (6 + 1e-6)
    # channel 1: sum A = 2; alpha(0.5) = 0.25 / (0.5 + 2 * 0.125 + 1e-6); G = 0 -> alpha 0
    w1 = 0.5 * 0.25 / (0.5 + 0.25 + 1e-6)
    want = torch.tensor([[[w0 * 1 + w1 * 2, w0 * 3 + w1 * 0]]], dtype=torch.float64)
    torch.testing.assert_close(gradcampp_weights(a, g), want)


def _numpy_projection(t: np.ndarray) -> np.ndarray:
    """METHODS.md's EigenCAM projection written with numpy, one image at a time."""
    out = []
    for img in np.where(np.isnan(t), 0, t):
        X = img.reshape(img.shape[0], -1).T
        X = X - X.mean(axis=0)
        _, _, vt = np.linalg.svd(X, full_matrices=True)
        out.append((X @ vt[0]).reshape(img.shape[1:]))
    return np.float32(out)


@pytest.mark.parametrize("shape", [(3, 5, 4, 6), (2, 40, 3, 3), (1, 1, 2, 2), (2, 7, 1, 5)])
def test_eigen_projection_batched_equals_numpy_per_image(shape):
    t = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    t[0, 0, 0, 0] = float("nan")
    before = t.clone()
    got = eigen_projection(t)
    assert got.shape == (shape[0], *shape[2:]) and got.dtype == torch.float32
    assert torch.equal(torch.isnan(t), torch.isnan(before)) and torch.equal(t.nan_to_num(), before.nan_to_num())
    want = _numpy_projection(before.numpy())
    # Same sign as numpy's LAPACK SVD (pytorch-grad-cam applies no sign correction).
    np.testing.assert_allclose(got.numpy(), want, atol=2e-5, rtol=1e-4)


def test_eigen_projection_is_the_first_principal_component():
    """A rank-one activation: the map is the spatial pattern (up to the SVD's sign), centred."""
    pattern = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    loads = torch.tensor([1.0, -2.0, 0.5, 3.0])
    t = (loads[:, None, None] * pattern)[None]
    got = eigen_projection(t)[0]
    centred = pattern - pattern.mean()
    want = centred * loads.norm()
    assert torch.allclose(got, want, atol=1e-4) or torch.allclose(got, -want, atol=1e-4)


# ------------------------------------------------------------------------------ the methods
def test_registry_rows():
    for name, fn, kind, compat in [("grad-cam-plus-plus", camfast.grad_cam_plus_plus, "gradient", "GradCAMPlusPlus"),
                                   ("eigen-cam", camfast.eigen_cam, "forward-only", "EigenCAM"),
                                   ("eigen-grad-cam", camfast.eigen_grad_cam, "gradient", "EigenGradCAM"),
                                   ("score-cam", camfast.score_cam, "forward-only", "ScoreCAM")]:
        spec = registry.get(fn)
        assert (spec.name, spec.kind, spec.compat) == (name, kind, compat)
        assert registry.get(compat) is spec and registry.get(spec.display) is spec
    assert registry.get("gradcam++") is registry.get("Grad-CAM++") is registry.get("grad_cam_plus_plus")
    assert registry.get("Grad-CAM") is registry.get("grad-cam")  # "++" keeps the two apart


@pytest.mark.parametrize("method", NEW, ids=IDS)
def test_one_and_several_layers(model, method):
    names = camfast.find_layers(model)
    one = method(model, x(), target=[1, 2], return_layers=True)
    assert list(one.layer_maps) == [names[-1]] and one.cam.shape == (2, 32, 40)
    assert one.targets.tolist() == [1, 2]
    torch.testing.assert_close(method(model, x(), target=[1, 2], layer=names[-1]), one.cam)
    several = method(model, x(), target=[1, 2], layer=names[-3:], return_layers=True)
    assert list(several.layer_maps) == names[-3:]
    by_module = method(model, x(), target=[1, 2], layer=[dict(model.named_modules())[n] for n in names[-3:]])
    torch.testing.assert_close(by_module, several.cam)
    # several layers are fused by max of the per-layer normalised maps, as zoom_cam fuses them
    per_layer = [method(model, x(), target=[1, 2], layer=n) for n in names[-3:]]
    fused = torch.stack(per_layer).amax(0)
    lo, hi = fused.amin(dim=(1, 2), keepdim=True), fused.amax(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(several.cam, (fused - lo) / (hi - lo + 1e-7), atol=1e-5, rtol=0)


class _Counting(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.forwards, self.grad_forwards, self.images = net, 0, 0, 0

    def forward(self, x):
        self.forwards += 1
        self.images += x.shape[0]
        self.grad_forwards += torch.is_grad_enabled()
        return self.net(x)


@pytest.mark.parametrize("method", [camfast.eigen_cam, camfast.score_cam], ids=lambda f: f.__name__)
def test_forward_only_methods_run_no_backward(model, method):
    counting = _Counting(model)
    for p in model.parameters():
        p.grad = None
    method(counting, x())
    assert counting.grad_forwards == 0 and all(p.grad is None for p in model.parameters())
    if method is camfast.eigen_cam:
        assert counting.forwards == 1


def test_eigen_cam_is_class_agnostic(model):
    a = camfast.eigen_cam(model, x(), target=0)
    torch.testing.assert_close(camfast.eigen_cam(model, x(), target=3), a, atol=0, rtol=0)
    both = camfast.eigen_cam(model, x(), target=torch.tensor([[0, 3], [1, 2]]))
    assert both.shape == (2, 2, 32, 40) and torch.equal(both[:, 0], a) and torch.equal(both[:, 1], a)


def test_methods_work_inside_no_grad_and_inference_mode(model):
    for method in NEW:
        want = method(model, x())
        with torch.no_grad():
            torch.testing.assert_close(method(model, x()), want)
        with torch.inference_mode():
            inside = method(model, x())
        torch.testing.assert_close(inside, want)


# ------------------------------------------------------------------------------ Score-CAM
def _reference_scores(model, img, act, cls):
    """Score-CAM's channel scores as METHODS.md states them, one masked image at a time."""
    up = nn.UpsamplingBilinear2d(size=img.shape[-2:])(act)  # (B, C, H, W), align_corners=True
    lo = up.flatten(2).amin(-1)[..., None, None]
    hi = up.flatten(2).amax(-1)[..., None, None]
    masks = (up - lo) / (hi - lo + 1e-8)
    with torch.no_grad():
        return torch.stack([torch.stack([model(img[b:b + 1] * masks[b, c])[0, cls[b]] for c in range(act.shape[1])])
                            for b in range(img.shape[0])])


def _activation(model, layer, img):
    got = []
    h = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: got.append(o.detach()))
    with torch.no_grad():
        model(img)
    h.remove()
    return got[0]


def test_score_cam_scores_and_skipped_channels(model):
    """Channels with a constant upsampled activation (here ReLU zeros) take the zero image's
    score, equal to scoring their all-zero mask; the other channels' scores equal one masked
    forward each, whatever the batch size."""
    from camfast.methods.scorecam import _Scores, _zero_image_scores

    img = x(2, 24, 20)
    layer = "layer2.1"
    act = _activation(model, layer, img)
    act[0, 3] = 0.0  # a dead channel in image 0
    act[1, :5] = 2.5  # constant, non-zero channels in image 1
    cls = torch.tensor([1, 4])
    want = _reference_scores(model, img, act, cls)
    scores = _Scores(cls, cls, 2, None)
    with torch.no_grad():
        zero, per_image = _zero_image_scores(model, img, scores)
        assert per_image > img[0].numel() * 4
        for batch in (1, 7, 64):
            got = channel_scores(model, img, act, scores, zero, batch)[0]
            torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)
    with torch.no_grad():
        blank = model(torch.zeros_like(img[:1]))[0]
    assert float(want[0, 3]) == pytest.approx(float(blank[1]), abs=1e-6)


def test_score_cam_equals_its_definition(model):
    img = x(2, 24, 20)
    layer = "layer2.1"
    act = _activation(model, layer, img)
    cls = torch.tensor([0, 3])
    w = torch.softmax(_reference_scores(model, img, act, cls), dim=1)
    m = torch.einsum("bc,bchw->bhw", w, act).clamp_min(0)
    res = camfast.score_cam(model, img, cls, layer=layer, return_layers=True)
    torch.testing.assert_close(res.layer_maps[layer], m, atol=1e-6, rtol=1e-5)
    for batch in (1, 5):
        torch.testing.assert_close(camfast.score_cam(model, img, cls, layer=layer, batch_size=batch), res.cam,
                                   atol=1e-5, rtol=0)


def test_score_cam_max_channels_trades_exactness_for_forwards(model):
    img = x(2, 32, 32, seed=4)
    counting = _Counting(model)
    exact = camfast.score_cam(counting, img, [0, 1], layer="net.layer2.1")
    assert counting.images <= 2 + 1 + 2 * 16  # the images, the zero image, at most 16 masks each
    counting.images = counting.forwards = 0
    approx = camfast.score_cam(counting, img, [0, 1], layer="net.layer2.1", max_channels=8, batch_size=4)
    assert counting.images <= 2 + 1 + 2 * 8 and counting.forwards <= 2 + 4  # 16 masks, 4 at a time
    err = float((approx - exact).abs().max())
    assert 0 < err < 0.5, err  # not the exact map, but close to it (16 channels of 16: exact below)
    torch.testing.assert_close(camfast.score_cam(model, img, [0, 1], layer="layer2.1", max_channels=16), exact,
                               atol=1e-6, rtol=0)


def test_score_cam_rejects_non_finite_scores():
    class NaNModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = seeded(vgg_like)

        def forward(self, x):
            out = self.net(x)
            return out if x.abs().sum() == 0 or x.shape[0] == 2 else out * float("nan")

    m = NaNModel().eval()
    with pytest.raises(ValueError, match="score_cam: the model returned NaN"):
        camfast.score_cam(m, x(), [0, 1], batch_size=3)


def test_score_cam_with_callable_targets(model):
    from camfast.compat import ClassifierOutputTarget

    by_index = camfast.score_cam(model, x(), [2, 0])
    by_callable = camfast.score_cam(model, x(), [ClassifierOutputTarget(2), ClassifierOutputTarget(0)])
    torch.testing.assert_close(by_callable, by_index, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("method", NEW, ids=IDS)
@pytest.mark.parametrize("kwargs, error, match", [
    ({"x": torch.randn(3, 8, 8)}, ValueError, r"x must be a batch of images \(B, C, H, W\)"),
    ({"x": torch.zeros(2, 3, 8, 8, dtype=torch.long)}, TypeError, "x must be a floating tensor"),
    ({"target": 9}, ValueError, r"target class 9 out of range \[0, 5\)"),
    ({"target": [0]}, ValueError, "target: 1 classes for a batch of 2"),
    ({"target": 1.5}, TypeError, "target must be None"),
    ({"layer": "layer9"}, ValueError, "layer: the model has no module named 'layer9'"),
    ({"layer": 3}, TypeError, "layer must be a module name, an nn.Module or a list of them"),
    ({"output_size": (0, 4)}, ValueError, "output_size must be positive"),
])
def test_bad_input_names_the_argument(model, method, kwargs, error, match):
    args = {"x": x(), **kwargs}
    img = args.pop("x")
    with pytest.raises(error, match=match):
        method(model, img, **args)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"batch_size": 0}, ValueError, "batch_size must be positive"),
    ({"batch_size": 2.0}, TypeError, "batch_size must be a positive int or None"),
    ({"max_channels": True}, TypeError, "max_channels must be a positive int or None"),
    ({"max_channels": -1}, ValueError, "max_channels must be positive"),
    ({"eigen_smooth": 1}, TypeError, "eigen_smooth must be a bool"),
])
def test_score_cam_bad_options(model, kwargs, error, match):
    with pytest.raises(error, match=match):
        camfast.score_cam(model, x(), **kwargs)
