"""Multi-scale and flip for every method (issue 12 item 2): IRN's recipe (METHODS.md "The WSSS
pseudo-label recipe") checked against an independent implementation for CAM, and the same
scale/flip loop for every registered method and for Puzzle-CAM's multiscale_cam."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from models import resnet_like, seeded

import camfast
from camfast.methods import registry
from camfast.methods.multiscale import multiscale


@pytest.fixture(scope="module")
def model():
    return seeded(resnet_like)


def images(b=2, h=37, w=45):
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(5))


def irn_make_cam(model, img, keys):
    """IRN's step/make_cam.py for one image, written out from METHODS.md: ReLU(conv(features,
    fc weight)) at scales (1.0, 0.5, 1.5, 2.0), image + flip per scale, stride-4 and
    ceil(H/16)*16-then-crop outputs, labelled classes divided by their max + 1e-5."""
    H, W = img.shape[-2:]
    strided, up = (math.ceil(H / 4), math.ceil(W / 4)), (math.ceil(H / 16) * 16, math.ceil(W / 16) * 16)
    cam_sum, high_sum = 0, 0
    for s in (1.0, 0.5, 1.5, 2.0):
        size = (max(1, round(H * s)), max(1, round(W * s)))
        xs = img if size == (H, W) else F.interpolate(img, size=size, mode="bilinear", align_corners=False)
        got = []
        handle = model.avgpool.register_forward_pre_hook(lambda m, i: got.append(i[0]))
        with torch.no_grad():
            model(torch.cat([xs, xs.flip(-1)]))
        handle.remove()
        with torch.no_grad():
            cam = F.relu(F.conv2d(got[0], model.fc.weight[:, :, None, None]))
        cam = cam[0] + cam[1].flip(-1)
        cam_sum = cam_sum + F.interpolate(cam[None], strided, mode="bilinear", align_corners=False)[0]
        high_sum = high_sum + F.interpolate(cam[None], up, mode="bilinear", align_corners=False)[0]
    k = torch.tensor(keys, dtype=torch.long)
    cam_k, high_k = cam_sum[k], high_sum[:, :H, :W][k]
    return (cam_k / (F.adaptive_max_pool2d(cam_k, (1, 1)) + 1e-5),
            high_k / (F.adaptive_max_pool2d(high_k, (1, 1)) + 1e-5))


def test_cam_equals_irn_make_cam(model):
    x = images()
    keys = [[1, 3], [0]]
    res = multiscale("cam", model, x, keys)
    for b in range(2):
        cam, high = irn_make_cam(model, x[b:b + 1], keys[b])
        assert res.cam[b].shape == (len(keys[b]), 10, 12) and res.high_res[b].shape == (len(keys[b]), 37, 45)
        torch.testing.assert_close(res.cam[b], cam, atol=1e-5, rtol=0)
        torch.testing.assert_close(res.high_res[b], high, atol=1e-5, rtol=0)
        assert res.targets[b].tolist() == keys[b]


@pytest.mark.parametrize("spec", [s for s in registry.specs() if not s.missing() and s.name != "multiscale-cam"],
                         ids=lambda s: s.name)
def test_every_method_over_scales_and_flips(model, spec):
    x = images()
    res = multiscale(spec, model, x, torch.tensor([[1, 2], [0, 4]]), scales=(1.0, 0.5))
    assert res.cam.shape == (2, 2, 10, 12) and res.high_res.shape == (2, 2, 37, 45)
    assert res.targets.tolist() == [[1, 2], [0, 4]]
    for out in (res.cam, res.high_res):
        assert torch.isfinite(out).all() and out.min() >= 0 and out.max() < 1
    one = multiscale(spec, model, x, [1, 0], scales=(1.0, 0.5))  # one class per image: (B, h, w)
    assert one.cam.shape == (2, 10, 12)
    torch.testing.assert_close(one.cam, res.cam[:, 0], atol=1e-5, rtol=0)


def test_flip_is_the_mirror_average(model):
    """With flip, the maps of a mirrored image are the mirror of the maps (the recipe is symmetric)."""
    x = images(1, 32, 32)
    a = multiscale("zoom-cam", model, x, [[2]], scales=(1.0,))
    b = multiscale("zoom-cam", model, x.flip(-1), [[2]], scales=(1.0,))
    torch.testing.assert_close(a.high_res[0], b.high_res[0].flip(-1), atol=1e-5, rtol=1e-4)


def test_empty_class_lists_and_default_target(model):
    x = images()
    res = multiscale("cam", model, x, [[], [2]], scales=(1.0,))
    assert [tuple(c.shape) for c in res.cam] == [(0, 10, 12), (1, 10, 12)]
    top = multiscale("cam", model, x, None, scales=(1.0,))
    with torch.no_grad():
        assert top.targets.tolist() == model(x).argmax(1).tolist()


@pytest.mark.parametrize("scales", [(), (0,), (-1.0,), (float("nan"),), "1.0", (True,)])
def test_bad_scales(model, scales):
    with pytest.raises(ValueError, match="scales must"):
        multiscale("cam", model, images(), [[1], [1]], scales=scales)


def test_puzzle_multiscale_cam_is_the_same_loop(model):
    """camfast.multiscale_cam (Puzzle-CAM) on the class maps W F equals the IRN recipe's sums at
    full size (Puzzle-CAM keeps every class: compare the labelled ones). Sides that are
    multiples of 16: IRN's high_res is resized to ceil(H/16)*16 then cropped, Puzzle-CAM's to H."""
    x = images(2, 32, 48)
    labels = torch.zeros(2, 5)
    labels[0, 1] = labels[1, 3] = 1
    from camfast.methods.engine import class_maps

    class Maps(torch.nn.Module):
        def forward(self, z):
            return class_maps(model, z)

    puzzle = camfast.multiscale_cam(Maps(), x, scales=(1.0, 0.5, 1.5, 2.0), labels=labels)
    res = multiscale("cam", model, x, [[1], [3]])
    torch.testing.assert_close(puzzle[0, 1], res.high_res[0][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(puzzle[1, 3], res.high_res[1][0], atol=1e-5, rtol=0)
    assert puzzle[0, 0].abs().max() == 0  # unlabelled classes are zero
