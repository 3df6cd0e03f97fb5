"""camfast.evaluation.faithfulness: hand-computed values, parity with pytorch-grad-cam's ROAD and
metrics and torchcam's ClassificationMetric / DeletionInsertionMetric, streaming, bad input."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from torch import nn

from camfast.evaluation import faithfulness as FM


class SumModel(nn.Module):
    """Logits ``[sum of the pixels, 0]``: every score is known by hand."""

    def forward(self, x):
        s = x.flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def small_cnn(classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes)).eval()


def inputs(b=3, h=20, w=17, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, h, w, generator=g)
    maps = torch.rand(b, h, w, generator=g)  # continuous: no ties
    return x, maps


# ------------------------------------------------------------------------------ by hand
def test_deletion_and_insertion_by_hand():
    """x = 1 everywhere, score = the pixel sum: deleting k pixels (3 channels) to zeros leaves
    3 (N - k); the trapezoid area over k / N is 3 N / 2; insertion onto zeros is 3 k."""
    x = torch.ones(1, 3, 4, 5)
    maps = torch.rand(1, 4, 5)
    c = FM.deletion_insertion(SumModel(), x, maps, 0, steps=4, deletion_baseline="zeros",
                              insertion_baseline="zeros", score="logit")
    n = 20
    counts = torch.tensor([0, 5, 10, 15, 20], dtype=torch.float32)
    torch.testing.assert_close(c.fractions, counts / n)
    torch.testing.assert_close(c.deletion[0], 3 * (n - counts))
    torch.testing.assert_close(c.insertion[0], 3 * counts)
    torch.testing.assert_close(c.deletion_auc, torch.tensor([3 * n / 2]))
    torch.testing.assert_close(c.insertion_auc, torch.tensor([3 * n / 2]))


def test_deletion_removes_the_highest_map_values_first():
    """Pixel values 0..N-1 and the map equal to them: deleting the top k removes the largest values."""
    n = 12
    x = torch.arange(n, dtype=torch.float32).reshape(1, 1, 3, 4).expand(1, 3, 3, 4).contiguous()
    maps = torch.arange(n, dtype=torch.float32).reshape(1, 3, 4) / (n - 1)
    c = FM.deletion_insertion(SumModel(), x, maps, 0, steps=3, deletion_baseline="zeros",
                              insertion_baseline="zeros", score="logit")
    vals = torch.arange(n, dtype=torch.float32)
    want = [3 * vals[: n - k].sum() for k in (0, 4, 8, 12)]
    torch.testing.assert_close(c.deletion[0], torch.stack(want))


def test_average_drop_and_increase_by_hand():
    """Score = the pixel sum (logit): a map of 0.5 halves the score (drop 0.5), a map of 1 keeps it."""
    x = torch.ones(2, 3, 4, 4)
    maps = torch.stack([torch.full((4, 4), 0.5), torch.ones(4, 4)])
    r = FM.average_drop_increase(SumModel(), x, maps, 0, score="logit")
    torch.testing.assert_close(r.base, torch.tensor([48.0, 48.0]))
    torch.testing.assert_close(r.masked, torch.tensor([24.0, 48.0]))
    torch.testing.assert_close(r.drop, torch.tensor([24 / (48 + 1e-7), 0.0]))
    assert r.increase.tolist() == [False, False]


def test_imputation_of_one_pixel_is_the_weighted_mean_of_its_neighbours():
    x = torch.arange(9, dtype=torch.float64).reshape(1, 1, 3, 3) ** 2
    removed = torch.zeros(1, 3, 3, dtype=torch.bool)
    removed[0, 1, 1] = True
    out = FM.noisy_linear_imputation(x, removed, noise=0.0, tol=1e-12)
    v = x[0, 0]
    want = (v[0, 1] + v[1, 0] + v[1, 2] + v[2, 1]) / 6 + (v[0, 0] + v[0, 2] + v[2, 0] + v[2, 2]) / 12
    assert abs(float(out[0, 0, 1, 1]) - float(want)) < 1e-10
    keep = ~removed[0]
    assert torch.equal(out[0, 0][keep], x[0, 0][keep])


def test_imputation_solves_the_system_and_noise_touches_only_removed_pixels():
    x, maps = inputs(2, 24, 19)
    removed = FM.removal_masks(maps, (70,), True)[:, 0]
    clean, info = FM.noisy_linear_imputation(x.double(), removed, noise=0.0, tol=1e-10, return_info=True)
    assert float(info["residual"].max()) <= 1e-10
    # every removed pixel is the in-image weighted mean of its neighbours (the equations)
    k = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]],
                     dtype=torch.float64).view(1, 1, 3, 3)  # ROAD's weights, written out
    flat = clean.reshape(-1, 1, 24, 19)
    mean = torch.nn.functional.conv2d(flat, k, padding=1) / torch.nn.functional.conv2d(torch.ones_like(flat), k, padding=1)
    m = removed[:, None].expand_as(clean).reshape(-1, 1, 24, 19)
    assert float((mean - flat)[m].abs().max()) < 1e-8
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    noisy = FM.noisy_linear_imputation(x.double(), removed, noise=0.01, tol=1e-10, generator=g1)
    again = FM.noisy_linear_imputation(x.double(), removed, noise=0.01, tol=1e-10, generator=g2)
    assert torch.equal(noisy, again)
    diff = (noisy - clean)
    mask = removed[:, None].expand_as(diff)
    assert float(diff[~mask].abs().max()) == 0.0
    assert 0.008 < float(diff[mask].std()) < 0.012


@pytest.mark.parametrize("planes", [1, 2, 4])
def test_imputation_in_groups_of_planes_equals_one_batch(planes, monkeypatch):
    """On the CPU the planes are solved in groups (_CPU_CHUNK_ELEMENTS): any grouping, a last
    group short of the others included (9 planes in groups of 2 or 4), solves the same systems,
    reports every plane's residual and draws the same noise."""
    x, maps = inputs(3, 24, 19)
    x = x.double()
    removed = FM.removal_masks(maps, (30,), True)[:, 0]
    runs = []
    for budget in (10 ** 9, planes * 24 * 19):
        monkeypatch.setattr(FM, "_CPU_CHUNK_ELEMENTS", budget)
        out, info = FM.noisy_linear_imputation(x, removed, noise=0.0, tol=1e-11, return_info=True)
        noisy = FM.noisy_linear_imputation(x, removed, noise=0.01, tol=1e-11, generator=torch.Generator().manual_seed(5))
        assert info["residual"].shape == (3, 3) and float(info["residual"].max()) <= 1e-11
        runs.append((out, noisy))
    torch.testing.assert_close(runs[1][0], runs[0][0], rtol=0, atol=1e-9)
    torch.testing.assert_close(runs[1][1], runs[0][1], rtol=0, atol=1e-9)
    assert not torch.equal(runs[1][1], runs[1][0])


@pytest.mark.parametrize("h, w", [(24, 19), (33, 8), (5, 5)])
def test_multigrid_preconditioner_is_symmetric_positive_definite(h, w):
    """Conjugate gradients are exact only with an SPD preconditioner: the V-cycle ``M`` satisfies
    <M r, s> = <r, M s> and <M r, r> > 0 on the removed pixels, and the stencil matches ROAD's
    weights (written out here, the reference for ``_neighbour_sum``)."""
    g = torch.Generator().manual_seed(h * w)
    removed = torch.rand(4, h, w, generator=g) < torch.tensor([0.1, 0.5, 0.9, 1.0]).view(4, 1, 1)
    m = removed.double()
    k = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]], dtype=torch.float64)
    u = torch.randn(4, h, w, generator=g, dtype=torch.float64)
    conv = torch.nn.functional.conv2d(u[:, None], k.view(1, 1, 3, 3), padding=1)[:, 0]
    torch.testing.assert_close(FM._neighbour_sum(u), conv, rtol=0, atol=1e-12)
    d = FM._neighbour_sum(torch.ones(1, h, w, dtype=torch.float64))
    mg = FM._Multigrid(m, d)
    r, s = (torch.randn(4, h, w, generator=g, dtype=torch.float64) * m for _ in range(2))
    mr, ms = mg(r.clone()), mg(s.clone())
    torch.testing.assert_close((mr * s).sum(dim=(1, 2)), (r * ms).sum(dim=(1, 2)), rtol=1e-10, atol=1e-12)
    assert bool(((mr * r).sum(dim=(1, 2)) > 0).all())
    assert float((mr * (1 - m)).abs().max()) == 0.0  # nothing leaks onto the kept pixels


def test_imputation_with_nothing_kept_is_zero_not_nan():
    out = FM.noisy_linear_imputation(torch.randn(1, 2, 5, 6), torch.ones(1, 5, 6, dtype=torch.bool), noise=0.0)
    assert torch.equal(out, torch.zeros_like(out))


def test_removal_masks_remove_the_stated_share():
    _, maps = inputs(2, 30, 30)
    for most in (True, False):
        m = FM.removal_masks(maps, (10, 50, 90), most)
        share = m.float().mean(dim=(2, 3))
        torch.testing.assert_close(share, torch.tensor([[0.1, 0.5, 0.9]] * 2), atol=2e-3, rtol=0)
    m = FM.removal_masks(maps, (30,), True)[0, 0]
    assert float(maps[0][m].min()) >= float(maps[0][~m].max())
    m = FM.removal_masks(maps, (30,), False)[0, 0]
    assert float(maps[0][m].max()) <= float(maps[0][~m].min())


# ------------------------------------------------------------------------------ pytorch-grad-cam
@pytest.fixture(scope="module")
def pgc():
    from peers import pytorch_grad_cam

    pytorch_grad_cam()
    from pytorch_grad_cam.metrics import perturbation_confidence as pc
    from pytorch_grad_cam.metrics import road
    from pytorch_grad_cam.utils import model_targets

    return pc, road, model_targets


def test_removed_pixels_equal_pytorch_grad_cams(pgc):
    """The pixels pytorch-grad-cam's RemoveMostRelevantFirst(q) / RemoveLeastRelevantFirst(q)
    impute are ours at p = 100 - q, also on a map with ties (many zeros, as a ReLU'd CAM has)."""
    pc, _, _ = pgc
    captured = []

    def spy(img, keep):
        captured.append(keep.clone())
        return img

    _, maps = inputs(2, 21, 16)
    tied = maps.clone()
    tied[tied < 0.35] = 0.0
    tied = (tied * 8).round() / 8
    for m in (maps, tied):
        for q in (10, 20, 50, 80, 90):
            for most, cls in ((True, pc.RemoveMostRelevantFirst), (False, pc.RemoveLeastRelevantFirst)):
                ours = FM.removal_masks(m, (100 - q,), most)[:, 0]
                for b in range(m.shape[0]):
                    captured.clear()
                    cls(q, spy)(torch.zeros(3, *m.shape[1:]), m[b])
                    assert torch.equal(captured[0] == 0, ours[b]), (q, most, b)


def test_imputation_equals_pytorch_grad_cams_sparse_solve(pgc):
    """pytorch-grad-cam's NoisyLinearImputer without noise (scipy's sparse LU per image) and our
    batched conjugate gradients give the same image (float32 inputs, default tolerance)."""
    _, road, _ = pgc
    x, maps = inputs(2, 40, 33)
    imputer = road.NoisyLinearImputer(noise=0.0)
    worst = 0.0
    for p in (10, 50, 90):
        for most in (True, False):
            removed = FM.removal_masks(maps, (p,), most)[:, 0]
            ours = FM.noisy_linear_imputation(x, removed, noise=0.0)
            for b in range(2):
                ref = imputer(x[b], (~removed[b]).float())
                worst = max(worst, float((ours[b] - ref).abs().max()))
    assert worst < 1e-4, worst


@pytest.mark.parametrize("score", ["logit", "softmax"])
def test_road_equals_pytorch_grad_cam_without_noise(pgc, score, monkeypatch):
    """ROADMostRelevantFirst / LeastRelevantFirst at every q, and ROADCombined, with the
    imputation noise set to 0 on both sides (the noise is random: only the noise-free part can
    be equal), softmax and logit targets."""
    pc, road, mt = pgc
    model = small_cnn()
    x, maps = inputs(3, 24, 24)
    with torch.no_grad():
        idx = model(x).argmax(1)
    target_cls = mt.ClassifierOutputTarget if score == "logit" else mt.ClassifierOutputSoftmaxTarget
    targets = [target_cls(int(c)) for c in idx]
    cams = maps.numpy()
    ours = FM.road(model, x, maps, idx, noise=0.0, score=score)
    for k, p in enumerate(FM.PERCENTILES):
        q = int(100 - p)
        morf = pc.PerturbationConfidenceMetric(pc.RemoveMostRelevantFirst(q, road.NoisyLinearImputer(noise=0.0)))
        lerf = pc.PerturbationConfidenceMetric(pc.RemoveLeastRelevantFirst(q, road.NoisyLinearImputer(noise=0.0)))
        np.testing.assert_allclose(ours.morf[:, k].numpy(), morf(x, cams, targets, model), atol=2e-5, rtol=1e-4)
        np.testing.assert_allclose(ours.lerf[:, k].numpy(), lerf(x, cams, targets, model), atol=2e-5, rtol=1e-4)
    init = road.NoisyLinearImputer.__init__
    monkeypatch.setattr(road.NoisyLinearImputer, "__init__", lambda self, noise=0.0, weighting=None: init(self, 0.0))
    combined = road.ROADCombined(list(range(10, 100, 10)))(x, cams, targets, model)
    np.testing.assert_allclose(ours.combined.numpy(), combined, atol=2e-5, rtol=1e-4)


def test_road_with_noise_stays_close_to_pytorch_grad_cam(pgc):
    """With both sides' default noise (0.01, different random draws) the per-image means differ
    only by the noise's effect."""
    pc, road, mt = pgc
    model = small_cnn()
    x, maps = inputs(2, 24, 24)
    with torch.no_grad():
        idx = model(x).argmax(1)
    targets = [mt.ClassifierOutputTarget(int(c)) for c in idx]
    torch.manual_seed(0)
    theirs = road.ROADMostRelevantFirstAverage(list(range(10, 100, 10)))(x, maps.numpy(), targets, model)
    ours = FM.road(model, x, maps, idx, score="logit", generator=torch.Generator().manual_seed(0))
    clean = FM.road(model, x, maps, idx, score="logit", noise=0.0)
    spread = float((ours.morf_mean - clean.morf_mean).abs().max())
    assert float(np.abs(ours.morf_mean.numpy() - theirs).max()) < 5 * spread + 1e-3


def test_average_drop_increase_match_pytorch_grad_cams_confidence_change(pgc):
    """pytorch-grad-cam's CamMultImageConfidenceChange is O - Y per image (softmax target);
    its DropInConfidence is max(0, Y - O) and IncreaseInConfidence is O > Y."""
    pc, _, mt = pgc
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange, DropInConfidence, \
        IncreaseInConfidence

    model = small_cnn()
    x, maps = inputs(4, 16, 16)
    with torch.no_grad():
        idx = model(x).argmax(1)
    targets = [mt.ClassifierOutputSoftmaxTarget(int(c)) for c in idx]
    r = FM.average_drop_increase(model, x, maps, idx)
    np.testing.assert_allclose((r.masked - r.base).numpy(), CamMultImageConfidenceChange()(x, maps.numpy(), targets,
                                                                                            model), atol=1e-6)
    np.testing.assert_allclose((r.drop * (r.base + 1e-7)).numpy(), DropInConfidence()(x, maps.numpy(), targets, model),
                               atol=1e-6)
    np.testing.assert_array_equal(r.increase.float().numpy(), IncreaseInConfidence()(x, maps.numpy(), targets, model))


# ------------------------------------------------------------------------------ torchcam
class FixedMaps:
    """A torchcam CAM extractor that returns given maps (torchcam's metrics then score exactly them)."""

    def __init__(self, model, maps):
        self.model, self.maps = model, maps

    def __call__(self, class_idx=None, scores=None, normalized=True, **kwargs):
        return [self.maps]

    def fuse_cams(self, cams):
        return cams[0]

    @contextlib.contextmanager
    def _hooks_off(self):
        yield


@pytest.fixture(scope="module")
def torchcam_metrics():
    from peers import torchcam_methods

    torchcam_methods()
    import torchcam.metrics

    return torchcam.metrics


def test_average_drop_and_increase_equal_torchcams_classification_metric(torchcam_metrics):
    from functools import partial

    model = small_cnn()
    x, _ = inputs(5, 24, 24)
    small = torch.rand(5, 6, 6, generator=torch.Generator().manual_seed(4))  # resized bilinearly on both sides
    metric = torchcam_metrics.ClassificationMetric(FixedMaps(model, small), partial(torch.softmax, dim=-1))
    metric.update(x)
    want = metric.summary()
    meter = FM.Faithfulness(model, metrics=("drop-increase",))
    meter.update(x, small)
    got = meter.compute()
    assert abs(got["average_drop"] - 100 * want["avg_drop"]) < 1e-4
    assert abs(got["increase_in_confidence"] - 100 * want["conf_increase"]) < 1e-9


@pytest.mark.parametrize("steps", [7, 20])
def test_deletion_insertion_equal_torchcams(torchcam_metrics, steps):
    from functools import partial

    model = small_cnn()
    x, maps = inputs(3, 18, 15)
    metric = torchcam_metrics.DeletionInsertionMetric(FixedMaps(model, maps), partial(torch.softmax, dim=-1),
                                                      steps=steps, batch_size=5)
    metric.update(x)
    want = metric.summary()
    c = FM.deletion_insertion(model, x, maps, steps=steps, deletion_baseline="zeros", insertion_baseline="zeros",
                              batch_size=5)
    assert abs(float(c.deletion_auc.mean()) - want["deletion_auc"]) < 1e-6
    assert abs(float(c.insertion_auc.mean()) - want["insertion_auc"]) < 1e-6


# ------------------------------------------------------------------------------ baselines, streaming
def test_baselines():
    x, _ = inputs(2, 16, 16)
    assert torch.equal(FM.baseline_image(x, "zeros"), torch.zeros_like(x))
    torch.testing.assert_close(FM.baseline_image(x, "mean")[..., 3, 5], x.mean(dim=(2, 3)))
    blur = FM.baseline_image(x, "blur")
    assert blur.shape == x.shape and float(blur.std()) < float(x.std()) / 2
    const = torch.full_like(x, 0.7)
    torch.testing.assert_close(FM.baseline_image(const, "blur"), const)  # edges replicated: no dark border
    torch.testing.assert_close(FM.baseline_image(x, torch.tensor(0.25)), torch.full_like(x, 0.25))
    torch.testing.assert_close(FM.baseline_image(x, lambda t: t * 2), x * 2)


def test_streaming_means_equal_one_big_batch():
    model = small_cnn()
    x, maps = inputs(6, 20, 20)
    one = FM.Faithfulness(model, noise=0.0, steps=6, percentiles=(20, 60))
    one.update(x, maps)
    two = FM.Faithfulness(model, noise=0.0, steps=6, percentiles=(20, 60))
    two.update(x[:2], maps[:2])
    two.update(x[2:], maps[2:])
    a, b = one.compute(), two.compute()
    assert a["images"] == b["images"] == 6
    for k, v in a.items():
        if isinstance(v, dict):
            for p in v:
                assert abs(v[p] - b[k][p]) < 1e-5, (k, p)
        else:
            assert abs(v - b[k]) < 1e-5, k
    assert set(a) >= {"average_drop", "increase_in_confidence", "deletion_auc", "insertion_auc", "road_morf",
                      "road_lerf", "road_combined", "road_morf_per_percentile", "road_lerf_per_percentile"}
    assert list(a["road_morf_per_percentile"]) == ["20", "60"]


def test_seeded_noise_is_reproducible():
    model = small_cnn()
    x, maps = inputs(2, 16, 16)
    a = FM.Faithfulness(model, metrics="road", seed=5)
    b = FM.Faithfulness(model, metrics="road", seed=5)
    assert a.update(x, maps)["road_morf"].tolist() == b.update(x, maps)["road_morf"].tolist()


def test_evaluate_streams_batches_through_a_registered_method():
    from models import resnet_like, seeded

    model = seeded(resnet_like).eval()
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(2, 3, 24, 24, generator=g), (torch.randn(1, 3, 24, 24, generator=g), [1])]
    res = FM.evaluate(model, batches, "grad-cam", total=3, progress="none", steps=4, percentiles=(50,))
    assert res["images"] == 3 and np.isfinite(res["road_combined"]) and 0 <= res["average_drop"] <= 100
    given = FM.evaluate(model, [(batches[0], None, torch.rand(2, 24, 24))], progress="none",
                        metrics=("drop-increase",))
    assert given["images"] == 2
    with pytest.raises(ValueError, match="method"):
        FM.evaluate(model, [batches[0]], None, progress="none")


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("maps, match", [
    (torch.rand(2, 8, 8), "one map per image"),
    (torch.rand(3, 9, 8), "not be larger"),
    (torch.full((3, 8, 8), float("nan")), "NaN"),
    (torch.rand(3, 8, 8) * 3, r"\[0, 1\]"),
    (torch.rand(3, 8), "one map per image"),
])
def test_bad_maps_are_named(maps, match):
    model = small_cnn()
    x = torch.randn(3, 3, 8, 8)
    for fn in (FM.average_drop_increase, FM.deletion_insertion, FM.road):
        with pytest.raises(ValueError, match=match) as e:
            fn(model, x, maps)
        assert "maps" in str(e.value)


def test_bad_arguments_are_named():
    model = small_cnn()
    x, maps = inputs(2, 8, 8)
    cases = [
        (lambda: FM.road(model, x, maps, percentiles=(0, 50)), ValueError, "percentiles"),
        (lambda: FM.road(model, x, maps, percentiles=(50, 100)), ValueError, "percentiles"),
        (lambda: FM.road(model, x, maps, percentiles=()), ValueError, "percentiles"),
        (lambda: FM.road(model, x, maps, percentiles="50"), TypeError, "percentiles"),
        (lambda: FM.road(model, x, maps, noise=-1), ValueError, "noise"),
        (lambda: FM.deletion_insertion(model, x, maps, steps=0), ValueError, "steps"),
        (lambda: FM.deletion_insertion(model, x, maps, deletion_baseline="gray"), ValueError, "deletion_baseline"),
        (lambda: FM.deletion_insertion(model, x, maps, insertion_baseline=torch.zeros(5, 5)), ValueError,
         "insertion_baseline"),
        (lambda: FM.average_drop_increase(model, x, maps, score="prob"), ValueError, "score"),
        (lambda: FM.average_drop_increase(model, x, maps, batch_size=0), ValueError, "batch_size"),
        (lambda: FM.average_drop_increase(model, x[0], maps), ValueError, "x"),
        (lambda: FM.average_drop_increase(model, x.long(), maps), TypeError, "x"),
        (lambda: FM.average_drop_increase(model, x, maps.numpy()), TypeError, "maps"),
        (lambda: FM.average_drop_increase(model, x, maps, target=[9, 9]), ValueError, "target"),
        (lambda: FM.Faithfulness(model, metrics=("ad",)), ValueError, "metrics"),
        (lambda: FM.Faithfulness(model).compute(), ValueError, "update"),
    ]
    for fn, err, word in cases:
        with pytest.raises(err, match=word):
            fn()


def test_a_model_returning_nan_is_named():
    class NaNModel(nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 3), float("nan"))

    x, maps = inputs(2, 8, 8)
    with pytest.raises(ValueError, match="model"):
        FM.average_drop_increase(NaNModel(), x, maps, target=0)
