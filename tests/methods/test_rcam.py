"""rCAM's pieces: PCA shape guides, variogram radii, the dense CRF, and the whole pipeline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from camfast import crf
from camfast.methods.highres import pca_guide, variogram_radius


def gaussian_field(s: float, batch=2, n=96, seed=0) -> torch.Tensor:
    """White noise blurred by a Gaussian of std ``s``: its variogram is
    ``c (1 - exp(-h^2 / (4 s^2)))``, i.e. the model's ``sigma = s * sqrt(2)``."""
    g = torch.Generator().manual_seed(seed)
    pad = 8 * math.ceil(s)
    noise = torch.randn(batch * 3, 1, n + pad, n + pad, generator=g, dtype=torch.float64)
    r = int(4 * s)
    k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float64) ** 2 / (2 * s * s))
    k = k / k.sum()
    out = F.conv2d(F.conv2d(noise, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))
    return out.reshape(batch, 3, *out.shape[-2:])


@pytest.mark.parametrize("s", [1.5, 2.0, 3.0])
def test_variogram_recovers_known_sigma(s):
    radii, sigma = variogram_radius(gaussian_field(s), max_lag=24, max_radius=30, return_sigma=True)
    expected = s * math.sqrt(2)
    assert torch.allclose(sigma, torch.full_like(sigma, expected), rtol=0.15), (sigma, expected)
    assert radii == [round(v) for v in sigma.tolist()]


def test_variogram_radius_bounds_and_errors():
    field = gaussian_field(4.0, batch=1)
    assert variogram_radius(field, max_radius=3) == [3]
    smooth = torch.zeros(1, 3, 16, 16)
    assert variogram_radius(smooth + 1.0) == [1]  # no structure at all: the smallest radius
    with pytest.raises(ValueError, match="at least 3x3"):
        variogram_radius(torch.rand(1, 3, 2, 8))
    with pytest.raises(ValueError, match="max_lag"):
        variogram_radius(torch.rand(1, 3, 8, 8), max_lag=1)
    with pytest.raises(ValueError, match="guide must be"):
        variogram_radius(torch.rand(3, 8, 8))


def test_pca_guide_finds_the_dominant_pattern_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 12), torch.linspace(-1, 1, 12), indexing="ij")
    pattern = (xx**2 + yy**2 < 0.4).float()  # a disc
    mix = torch.randn(32, generator=g)
    feats = (mix[:, None, None] * pattern * 5 + 0.1 * torch.randn(32, 12, 12, generator=g))[None]
    guide = pca_guide(feats)
    assert guide.shape == (1, 3, 12, 12) and guide.min() >= 0 and guide.max() <= 1
    corr = torch.corrcoef(torch.stack([guide[0, 0].flatten(), pattern.flatten()]))[0, 1]
    assert abs(float(corr)) > 0.99
    assert torch.equal(guide, pca_guide(feats.clone()))
    assert pca_guide(torch.ones(1, 4, 5, 5)).abs().sum() == 0  # constant features: zero guide
    assert pca_guide(torch.rand(2, 2, 5, 5)).shape == (2, 3, 5, 5)  # fewer channels than k: padded


def _two_region_image(n=40):
    img = np.zeros((n, n, 3), np.uint8)
    img[:, n // 2:] = 220
    truth = np.zeros((n, n), np.float32)
    truth[:, n // 2:] = 1
    rng = np.random.default_rng(0)
    prob = np.clip(0.5 + 0.15 * (truth - 0.5) * 2 + rng.normal(0, 0.2, truth.shape), 0.01, 0.99).astype(np.float32)
    return img, prob, truth


def test_crf_snaps_noisy_probabilities_to_image_edges():
    pytest.importorskip("pydensecrf")
    img, prob, truth = _two_region_image()
    refined = crf.refine(img, prob, iters=5)
    assert refined.shape == prob.shape and refined.dtype == np.float32
    before = ((prob > 0.5) == truth).mean()
    after = ((refined > 0.5) == truth).mean()
    assert after > 0.98 > before


def test_crf_batch_in_processes_equals_one_by_one_and_multiclass():
    pytest.importorskip("pydensecrf")
    img, prob, _ = _two_region_image(24)
    imgs = np.stack([img, img[:, ::-1].copy()])
    probs = np.stack([prob, prob[:, ::-1].copy()])
    batched = crf.refine(imgs, probs, workers=2)
    single = np.stack([crf.refine(imgs[i], probs[i]) for i in range(2)])
    np.testing.assert_allclose(batched, single, atol=1e-6)
    three = np.stack([1 - probs[0], probs[0] * 0.5, probs[0] * 0.5])
    out = crf.refine(torch.from_numpy(imgs[0]), torch.from_numpy(three))
    assert out.shape == (3, 24, 24)
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-4)


def test_crf_spatial_widths_scale_with_the_image():
    """The default widths are 3 s and 80 s with s = max(H, W) / 500; explicit widths are kept."""
    assert crf.scaled_widths(500, 375) == (3.0, 80.0)
    assert crf.scaled_widths(64, 48) == pytest.approx((3 * 64 / 500, 80 * 64 / 500))
    pytest.importorskip("pydensecrf")
    img, prob, _ = _two_region_image(64)
    g, b = crf.scaled_widths(64, 64)
    np.testing.assert_array_equal(crf.refine(img, prob), crf.refine(img, prob, sxy_gaussian=g, sxy_bilateral=b))
    unscaled = crf.refine(img, prob, sxy_gaussian=3, sxy_bilateral=80)
    assert not np.array_equal(crf.refine(img, prob), unscaled)
    with pytest.raises(ValueError, match="reference_side"):
        crf.refine(img, prob, reference_side=0)


def test_crf_keeps_the_foreground_of_64_pixel_images():
    """SyntheticWSOL's 64-pixel images with a soft map of the object (its mask box-blurred): the
    default CRF keeps the object (on image 6 the widths of a 500-pixel photo erased it: IoU 0)."""
    pytest.importorskip("pydensecrf")
    from camfast.evaluation.datasets import SyntheticWSOL

    ds = SyntheticWSOL(16, size=64, seed=0)
    for i in (1, 6):
        s = ds[i]
        img = np.ascontiguousarray((s["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        truth = s["mask"].numpy() > 0.5
        prob = F.avg_pool2d(s["mask"].float()[None, None], 9, 1, 4)[0, 0].numpy() * 0.8 + 0.1
        refined = crf.refine(img, np.ascontiguousarray(prob, dtype=np.float32)) > 0.5
        iou = (refined & truth).sum() / max((refined | truth).sum(), 1)
        assert iou > 0.9, (i, iou)


def test_crf_bad_input():
    img, prob, _ = _two_region_image(8)
    with pytest.raises(TypeError, match="image must be uint8"):
        crf.refine(img.astype(np.float32), prob)
    with pytest.raises(ValueError, match="matching the image"):
        crf.refine(img, prob[:4])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        crf.refine(img, prob * 3)
    with pytest.raises(ValueError, match="image must be"):
        crf.refine(img[..., :2], prob)
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        crf.refine([[1]], prob)


def test_rcam_pipeline_stages():
    from models import resnet_like, seeded

    import camfast
    from camfast.methods.highres import rcam

    model = seeded(resnet_like)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    res = rcam(model, x, crf=False, return_intermediates=True)
    # resnet_like on 64x64: features 8x8 (stride 8, also the shape layer) -> S1 8x8, S2 16x16
    assert res.cam1.shape == (2, 8, 8) and res.cam2.shape == (2, 16, 16)
    assert res.rcam1.shape == (2, 16, 16) and res.rcam2.shape == (2, 16, 16)
    assert res.rcam3.shape == (2, 64, 64) and torch.equal(res.cam, res.rcam3)
    assert float(res.rcam3.min()) >= 0 and float(res.rcam3.max()) == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(res.targets, model(x).argmax(1))
    # CAM1 is the classifier-weight CAM of camfast.cam at feature resolution
    plain = camfast.cam(model, x, target=res.targets, return_layers=True)
    torch.testing.assert_close(res.cam1, plain.layer_maps["avgpool"])
    assert all(isinstance(r, int) and r >= 1 for step in res.radii for r in step)
    # the CAM is already at stride 8 (the size of S1): still the paper's guided steps, eqs. 2-4:
    # CAM1 filtered with S1 at its size, then x2 and filtered with S2; CAM2 filtered with S2
    assert len(res.radii) == 3
    from camfast.localization import normalize
    from camfast.ops import guided_filter

    feats = {}
    hook = dict(model.named_modules())["layer2"].register_forward_hook(lambda m, i, o: feats.setdefault(i[0].shape[-1], o))
    try:
        model(x)
        model(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
    finally:
        hook.remove()
    s1, s2 = pca_guide(feats[16].float()), pca_guide(feats[32].float())
    r1, r2, r3 = res.radii

    def gf(guide, p, radii):
        return torch.cat([guided_filter(guide[b:b + 1], p[b:b + 1, None], radii[b], 1e-3) for b in range(2)])[:, 0]

    up = lambda m: F.interpolate(m[:, None], scale_factor=2.0, mode="bilinear", align_corners=False)[:, 0]  # noqa: E731
    torch.testing.assert_close(res.rcam1, gf(s2, up(gf(s1, normalize(res.cam1), r1)), r2))
    torch.testing.assert_close(res.rcam2, gf(s2, normalize(res.cam2), r3))
    assert r1 == variogram_radius(s1) and r3 == variogram_radius(s2)
    again = rcam(model, x, crf=False)
    assert torch.equal(again, res.rcam3)
    if pytest.importorskip("pydensecrf"):
        refined = rcam(model, x, crf=True)
        assert refined.shape == (2, 64, 64) and float(refined.min()) >= 0 and float(refined.max()) <= 1
    with pytest.raises(ValueError, match="scales must be"):
        rcam(model, x, scales=(1, 1))
