"""camfast.compat against pytorch-grad-cam 1.5.7 on real models: the bundled EfficientNet-Lite0
with its ImageNet weights on real photos (camfast's bundled samples: a cat, an espresso, Grace
Hopper), one and several layers, default and explicit targets, aug_smooth and eigen_smooth;
torchvision resnet50 with random weights (slow). Max |diff| <= 1e-5 (Score-CAM 1e-4)."""

from __future__ import annotations

import numpy as np
import peers
import pytest
import torch
from pgc_parity import METHODS, SMOOTHING, assert_matches_grad_cam

from camfast.models import load_model, sample_images

SIZE = 96  # the photos' side: small enough for 2 CPU cores, large enough for 3x3 final maps
# Score-CAM (C masked forwards per image and layer) on the real model takes minutes here: slow,
# with one quick case below.
CASES = [pytest.param(m, marks=pytest.mark.slow) if m == "ScoreCAM" else m for m in METHODS]


@pytest.fixture(scope="module")
def lite0():
    try:
        spec = load_model("efficientnet-lite0")
    except ModuleNotFoundError as err:  # the weights package is not installed
        pytest.skip(str(err))
    return spec


def photos(spec, size=SIZE, n=None):
    from PIL import Image

    paths = sample_images()[:n]
    rgb = [np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)) for p in paths]
    x = torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2).float() / 255
    return spec.preprocess(x)


def test_the_photos_are_classified(lite0):
    """The comparison runs on what the model sees as a cat, a cup and a uniform: real maps."""
    with torch.no_grad():
        top = lite0.model(photos(lite0, 224)).argmax(1).tolist()
    names = [lite0.class_names[k].lower() for k in top]
    assert "cat" in names[0] and ("espresso" in names[1] or "cup" in names[1]), names


def _layers(spec, method):
    blocks = spec.model._blocks
    if method == "ScoreCAM":  # 240 and 144 masked forwards per image (ReLU6 outputs), not 1280 (the head)
        return [blocks[4]._act1], [blocks[2]._act1, blocks[4]._act1]
    return [spec.model._head_act], [blocks[10], blocks[15], spec.model._head_act]


@pytest.mark.parametrize("method", CASES)
def test_lite0_real_photos_default_and_explicit_targets(lite0, method):
    peers.pytorch_grad_cam()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    x = photos(lite0, 64) if method == "ScoreCAM" else photos(lite0)
    one, several = _layers(lite0, method)
    assert_matches_grad_cam(method, lite0.model, one, x)
    assert_matches_grad_cam(method, lite0.model, several, x)
    targets = [ClassifierOutputTarget(c) for c in (285, 967, 652)]  # Egyptian cat, espresso, military uniform
    assert_matches_grad_cam(method, lite0.model, several, x, targets)


@pytest.mark.parametrize("method", CASES)
@pytest.mark.parametrize("smooth", ["aug", "eigen"])
def test_lite0_real_photos_smoothing(lite0, method, smooth):
    peers.pytorch_grad_cam()
    x = photos(lite0, 64, n=1 if smooth == "aug" else 2) if method == "ScoreCAM" else photos(lite0)
    one, several = _layers(lite0, method)
    assert_matches_grad_cam(method, lite0.model, one, x, **SMOOTHING[smooth])
    assert_matches_grad_cam(method, lite0.model, several, x, **SMOOTHING[smooth])


def test_lite0_real_photo_score_cam_quick(lite0):
    peers.pytorch_grad_cam()
    x = photos(lite0, 64, n=1)
    assert_matches_grad_cam("ScoreCAM", lite0.model, [lite0.model._blocks[2]._act1], x)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_resnet50_random_weights(method):
    peers.pytorch_grad_cam()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = peers.torchvision().models.resnet50(weights=None).eval()
    size, layers = ((32, 48), [model.layer4[-1]]) if method == "ScoreCAM" else \
        ((64, 80), [model.layer2[-1], model.layer3[-1], model.layer4[-1]])
    batch = 1 if method == "ScoreCAM" else 2
    x = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(5))
    assert_matches_grad_cam(method, model, [model.layer4[-1]], x)
    with torch.no_grad():  # each image's second class (an untrained net's others can give blank maps)
        second = model(x).topk(2, dim=1).indices[:, 1].tolist()
    assert_matches_grad_cam(method, model, layers, x, [ClassifierOutputTarget(c) for c in second])
    assert_matches_grad_cam(method, model, [model.layer4[-1]], x, eigen_smooth=True)
