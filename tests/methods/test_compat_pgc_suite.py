"""pytorch-grad-cam's own tests (its repository's ``tests/``), rewritten to run their
assertions against camfast.compat for the classes camfast has: ``test_run_all_models.py``
(every method on resnet18 and vgg11, two sizes, top-class and explicit targets, with and
without eigen_smooth, ``cam.batch_size = 4``), ``test_one_channel.py`` (a one-channel input
model), ``test_context_release.py`` (memory stays flat over repeated ``with`` blocks) and
``test_svd_no_side_effect.py`` (the projection leaves its input alone). Their network weights
(``weights="DEFAULT"``) and ``examples/both.png`` are replaced by random weights and camfast's
bundled photos: no download."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import peers
import pytest
import torch
from pgc_parity import METHODS

from camfast import compat
from camfast.methods.eigencam import eigen_projection
from camfast.models import sample_images


def _photo(width: int, height: int) -> np.ndarray:
    """A real photo as float32 RGB in [0, 1], resized like their ``cv2.resize(img, (w, h))``."""
    from PIL import Image

    img = Image.open(sample_images()[0]).convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    return np.float32(np.asarray(img)) / 255


def _preprocess(rgb: np.ndarray) -> torch.Tensor:
    """pytorch-grad-cam's ``preprocess_image`` (ImageNet mean and std, ``(1, 3, H, W)``)."""
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    return torch.from_numpy(np.float32((rgb - mean) / std)).permute(2, 0, 1)[None].contiguous()


@pytest.fixture(scope="module")
def models():
    tv = peers.torchvision()
    torch.manual_seed(0)
    return {"resnet18": tv.models.resnet18(weights=None).eval(), "vgg11": tv.models.vgg11(weights=None).eval()}


CASES = [("resnet18", ["layer4[-1]", "layer4[-2]"]), ("vgg11", ["features[-1]"])]


# ------------------------------------------------------------------------------ test_run_all_models.py
# Score-CAM with their batch_size of 4: 256 forwards per call on resnet18, 10-20 s each here (slow).
@pytest.mark.parametrize("cam_method", [pytest.param(m, marks=pytest.mark.slow) if m == "ScoreCAM" else m
                                        for m in METHODS])
@pytest.mark.parametrize("eigen_smooth", [True, False])
@pytest.mark.parametrize("target_category", [None, 100])
@pytest.mark.parametrize("batch_size, width, height", [(2, 32, 32), (1, 32, 40)])
@pytest.mark.parametrize("cnn_model, target_layer_names", CASES, ids=[c[0] for c in CASES])
def test_all_cam_models_can_run(models, cnn_model, target_layer_names, batch_size, width, height, target_category,
                                eigen_smooth, cam_method):
    input_tensor = _preprocess(_photo(width, height)).repeat(batch_size, 1, 1, 1)
    model = models[cnn_model]
    target_layers = [eval(f"model.{name}", {"model": model}) for name in target_layer_names]
    cam = getattr(compat, cam_method)(model=model, target_layers=target_layers)
    cam.batch_size = 4
    targets = None if target_category is None else \
        [compat.ClassifierOutputTarget(target_category) for _ in range(batch_size)]
    grayscale_cam = cam(input_tensor=input_tensor, targets=targets, aug_smooth=False, eigen_smooth=eigen_smooth)
    assert grayscale_cam.shape[0] == input_tensor.shape[0]
    assert grayscale_cam.shape[1:] == input_tensor.shape[2:]


# ------------------------------------------------------------------------------ test_one_channel.py
@pytest.mark.parametrize("cam_method", [m for m in METHODS if m != "ScoreCAM"])
def test_one_channel_input(cam_method):
    tv = peers.torchvision()
    torch.manual_seed(0)
    model = tv.models.resnet18(weights=None)
    model.conv1 = torch.nn.Conv2d(1, 64, kernel_size=(7, 7), stride=(2, 2), padding=(3, 3), bias=False)
    gray = np.float32(_photo(64, 48)[:, :, 0] * 255)
    input_tensor = torch.from_numpy(gray)[None, None].repeat(16, 1, 1, 1)
    with getattr(compat, cam_method)(model=model, target_layers=[model.layer4]) as cam:
        grayscale_cam = cam(input_tensor=input_tensor, targets=None)
    assert grayscale_cam.shape == (16, 48, 64)


# ------------------------------------------------------------------------------ test_context_release.py
def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    pytest.skip("no /proc/self/status here")


@pytest.mark.parametrize("cam_method", ["GradCAM", "GradCAMPlusPlus", "EigenCAM", "EigenGradCAM"])
def test_memory_usage_in_loop(models, cam_method):
    """Their loop of 100 ``with`` blocks (25 here, at 64 px) and its bound: memory after each
    block at most 1.5x the memory after the first (the process's RSS, not the machine's)."""
    model = models["resnet18"]
    input_tensor = _preprocess(_photo(64, 64))
    targets = [compat.ClassifierOutputTarget(100)]
    initial = 0
    for i in range(25):
        with getattr(compat, cam_method)(model=model, target_layers=[model.layer4[-1]]) as cam:
            cam(input_tensor=input_tensor, targets=targets, aug_smooth=False, eigen_smooth=False)
            if i == 0:
                initial = _rss_kib()
        assert _rss_kib() <= initial * 1.5
    assert not model.layer4[-1]._forward_hooks


# ------------------------------------------------------------------------------ test_svd_no_side_effect.py
def test_projection_does_not_mutate_its_input():
    a = np.zeros((1, 2, 2, 2), dtype=np.float32)
    a[0, 0, 0, 0] = np.nan
    a[0, 0, 1, 1] = 1.0
    a[0, 1] = np.array([[2.0, 3.0], [4.0, 5.0]], dtype=np.float32)
    t = torch.from_numpy(a)
    snapshot = a.copy()
    out = eigen_projection(t)
    assert np.array_equal(a, snapshot, equal_nan=True)
    assert out.shape == (1, 2, 2) and torch.isfinite(out).all()
