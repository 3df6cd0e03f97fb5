"""Puzzle-CAM: tile/merge, the loss and its alpha schedule, the training step, multiscale_cam."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import camfast
from camfast.puzzle import PuzzleCAMLoss, PuzzleLoss, merge, multiscale_cam, puzzle_step, tile


def _official_tile(features, num_pieces):
    """shjo-april/PuzzleCAM core/puzzle_utils.tile_features, written out."""
    _, _, h, w = features.size()
    n = int(math.sqrt(num_pieces))
    patches = []
    for rows in torch.split(features, h // n, dim=2):
        for patch in torch.split(rows, w // n, dim=3):
            patches.append(patch)
    return torch.cat(patches, dim=0)


# ------------------------------------------------------------------------------ tile / merge
@pytest.mark.parametrize("grid", [1, 2, 3])
def test_tile_order_and_round_trip(grid):
    b, c, h, w = 3, 2, 6 * grid, 4 * grid
    x = torch.arange(b * c * h * w, dtype=torch.float32).reshape(b, c, h, w)
    t = tile(x, grid)
    th, tw = h // grid, w // grid
    assert t.shape == (grid * grid * b, c, th, tw)
    for i in range(grid):
        for j in range(grid):
            for k in range(b):  # row (i*grid + j)*B + k is tile (i, j) of image k: tile-major
                assert torch.equal(t[(i * grid + j) * b + k], x[k, :, i * th:(i + 1) * th, j * tw:(j + 1) * tw])
    assert torch.equal(t, _official_tile(x, grid * grid))
    assert torch.equal(merge(t, grid), x)
    f = torch.randn(grid * grid * b, 5, 3, 2)
    assert torch.equal(tile(merge(f, grid), grid), f)


def test_tile_keeps_gradients_and_non_contiguous_input():
    x = torch.randn(2, 3, 8, 6, requires_grad=True)
    y = tile(x.transpose(2, 3), 2)  # non-contiguous (B, C, 6, 8)
    assert torch.equal(merge(y, 2), x.transpose(2, 3))
    (y * (1 + torch.arange(y.numel())).reshape(y.shape)).sum().backward()
    assert x.grad is not None and torch.count_nonzero(x.grad) == x.numel()


@pytest.mark.parametrize(
    "fn, args, err, match",
    [
        (tile, (torch.zeros(1, 3, 5, 4), 2), ValueError, "divisible by grid=2"),
        (tile, (torch.zeros(1, 3, 4, 7), 2), ValueError, "divisible by grid=2"),
        (tile, (torch.zeros(3, 4, 4), 2), ValueError, "images must have 4 dimensions"),
        (tile, (torch.zeros(0, 3, 4, 4), 2), ValueError, "images must not be empty"),
        (tile, ("img", 2), TypeError, "images must be a torch.Tensor"),
        (tile, (torch.zeros(1, 3, 4, 4), 0), ValueError, "grid must be a positive int"),
        (tile, (torch.zeros(1, 3, 4, 4), 2.0), ValueError, "grid must be a positive int"),
        (merge, (torch.zeros(6, 3, 4, 4), 2), ValueError, "multiple of grid\\*grid = 4"),
        (merge, (torch.zeros(4, 4, 4), 2), ValueError, "features must have 4 dimensions"),
    ],
)
def test_tile_merge_bad_input(fn, args, err, match):
    with pytest.raises(err, match=match):
        fn(*args)


# ------------------------------------------------------------------------------ the loss
def _softplus(z):
    return math.log1p(math.exp(z))


def test_loss_hand_computed():
    # B=1, K=2, h=1, w=2; y = [1, 0]
    maps = torch.tensor([[[[1.0, 3.0]], [[0.0, -2.0]]]])  # GAP: [2, -1]
    merged = torch.tensor([[[[2.0, 2.0]], [[1.0, -1.0]]]])  # GAP: [2, 0]
    y = torch.tensor([[1.0, 0.0]])
    # MLSM = mean_k softplus(-x) for y=1, softplus(x) for y=0
    cls = (_softplus(-2.0) + _softplus(-1.0)) / 2
    p_cls = (_softplus(-2.0) + _softplus(0.0)) / 2
    re = (1.0 + 1.0 + 0.0 + 0.0) / 4  # |1-2|, |3-2| kept; class 1 masked out
    out = PuzzleCAMLoss(alpha_max=4.0, warmup=0.5)(maps, merged, y, iteration=25, max_iterations=100)
    assert isinstance(out, PuzzleLoss)
    assert out.alpha == 2.0  # 4 * 25 / (0.5 * 100)
    assert out.cls.item() == pytest.approx(cls, rel=1e-6)
    assert out.p_cls.item() == pytest.approx(p_cls, rel=1e-6)
    assert out.re.item() == pytest.approx(re, rel=1e-6)
    assert out.total.item() == pytest.approx(cls + p_cls + 2.0 * re, rel=1e-6)
    assert cls == pytest.approx(0.220095, abs=1e-6) and p_cls == pytest.approx(0.410038, abs=1e-6)


def test_loss_matches_official_formulation_on_random_tensors():
    g = torch.Generator().manual_seed(0)
    maps, merged = torch.randn(2, 3, 5, 4, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0, 0.0]],
                     dtype=torch.float64)
    out = PuzzleCAMLoss(alpha_max=1.0, warmup=0.0)(maps, merged, y, 0, 10)
    crit = nn.MultiLabelSoftMarginLoss(reduction="none")
    cls = crit(F.adaptive_avg_pool2d(maps, 1).flatten(1), y).mean()
    p_cls = crit(F.adaptive_avg_pool2d(merged, 1).flatten(1), y).mean()
    re = (torch.abs(maps - merged) * y.unsqueeze(2).unsqueeze(3)).mean()
    torch.testing.assert_close(out.cls, cls)
    torch.testing.assert_close(out.p_cls, p_cls)
    torch.testing.assert_close(out.re, re)
    torch.testing.assert_close(out.total, cls + p_cls + re)
    assert out.alpha == 1.0


def test_alpha_schedule():
    fn = PuzzleCAMLoss(alpha_max=4.0, warmup=0.5)
    assert [fn.alpha(i, 100) for i in (0, 10, 25, 49, 50, 51, 99)] == [0.0, 0.8, 2.0, 3.92, 4.0, 4.0, 4.0]
    assert PuzzleCAMLoss(alpha_max=1.0, warmup=0.25).alpha(5, 40) == 0.5
    assert PuzzleCAMLoss(alpha_max=3.0, warmup=0.0).alpha(0, 10) == 3.0
    assert PuzzleCAMLoss(alpha_max=2.0, warmup=1.0).alpha(10, 10) == 2.0


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(maps=torch.zeros(1, 2, 3)), ValueError, "maps must have 4 dimensions"),
        (dict(merged=torch.zeros(1, 2, 2, 3)), ValueError, "merged has shape"),
        (dict(labels=torch.zeros(1, 3)), ValueError, "labels must have shape"),
        (dict(labels=[[1, 0]]), TypeError, "labels must be a torch.Tensor"),
        (dict(maps=torch.zeros(1, 2, 3, 3, dtype=torch.int64), merged=torch.zeros(1, 2, 3, 3, dtype=torch.int64)),
         TypeError, "maps must be a floating"),
        (dict(iteration=-1), ValueError, "iteration must be"),
        (dict(max_iterations=0), ValueError, "max_iterations must be"),
    ],
)
def test_loss_bad_input(kwargs, err, match):
    args = dict(maps=torch.zeros(1, 2, 3, 3), merged=torch.zeros(1, 2, 3, 3), labels=torch.ones(1, 2),
                iteration=0, max_iterations=10)
    args.update(kwargs)
    with pytest.raises(err, match=match):
        PuzzleCAMLoss()(**args)


@pytest.mark.parametrize("kwargs", [dict(alpha_max=-1.0), dict(warmup=1.5), dict(warmup=-0.1), dict(grid=0)])
def test_loss_bad_options(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        PuzzleCAMLoss(**kwargs)


# ------------------------------------------------------------------------------ the training step
def _net(k=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1, stride=2),
                         nn.ReLU(), nn.Conv2d(6, k, 1, bias=False))


def test_puzzle_step_equals_manual_computation():
    net = _net()
    x = torch.randn(2, 3, 8, 8)
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    fn = PuzzleCAMLoss()
    out = puzzle_step(net, x, y, fn, 30, 100)
    ref = fn(net(x), merge(net(tile(x)), 2), y, 30, 100)
    for a, b in zip(out[:4], ref[:4]):
        torch.testing.assert_close(a, b)
    assert out.re > 0  # tiles see zero padding at their borders: F_re differs from F


@pytest.mark.parametrize("term", ["cls", "p_cls", "re"])
def test_gradient_reaches_the_backbone_from_each_term(term):
    net = _net()
    x = torch.randn(2, 3, 8, 8)
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    out = puzzle_step(net, x, y, PuzzleCAMLoss(), 10, 100)
    getattr(out, term).backward()
    first = net[0].weight.grad
    assert first is not None and torch.isfinite(first).all() and first.abs().sum() > 0


def test_puzzle_step_with_optimizer_lowers_the_loss_and_output_fn():
    net = _net()

    class Pair(nn.Module):  # returns (logits, maps): output_fn picks the maps
        def forward(self, x):
            m = net(x)
            return m.mean((2, 3)), m

    model = Pair()
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    opt = torch.optim.Adam(net.parameters(), lr=3e-2)
    fn = PuzzleCAMLoss(warmup=0.0)
    losses = [puzzle_step(model, x, y, fn, i, 20, optimizer=opt, output_fn=lambda o: o[1]).total.item()
              for i in range(20)]
    assert losses[-1] < 0.8 * losses[0]  # 1.43 -> 1.06 here


def test_puzzle_step_bad_input():
    net = _net()
    y = torch.ones(1, 3)
    with pytest.raises(ValueError, match="divisible by grid \\* the model's output stride"):
        puzzle_step(net, torch.randn(1, 3, 6, 6), y, PuzzleCAMLoss(), 0, 10)  # stride 2, tiles 3x3 -> 2x2 maps
    with pytest.raises(ValueError, match="model must return class maps"):
        puzzle_step(lambda x: x.mean((2, 3)), torch.randn(1, 3, 8, 8), y, PuzzleCAMLoss(), 0, 10)
    with pytest.raises(TypeError, match="loss_fn must be"):
        puzzle_step(net, torch.randn(1, 3, 8, 8), y, nn.L1Loss(), 0, 10)


# ------------------------------------------------------------------------------ multiscale_cam
class _Identity(nn.Module):
    """Class maps = the input channels (K = C), counting calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x.clone()


def test_multiscale_cam_hand_computed_single_scale():
    x = torch.tensor([[[[1.0, -2.0, 3.0], [0.0, 4.0, -1.0]]]])  # (1, 1, 2, 3)
    out = multiscale_cam(_Identity(), x, scales=(1.0,), flip=False)
    torch.testing.assert_close(out, x.clamp(min=0) / (4.0 + 1e-5))
    # with the flip: ReLU(x) + flip(ReLU(flip(x))) = 2 ReLU(x)
    out = multiscale_cam(_Identity(), x, scales=(1.0,), flip=True)
    torch.testing.assert_close(out, 2 * x.clamp(min=0) / (8.0 + 1e-5))


def test_multiscale_cam_matches_the_pipeline_and_batches_flips():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 12, 10, generator=g)
    model = _Identity()
    scales = (0.5, 1.0, 1.5, 2.0)
    out = multiscale_cam(model, x, scales=scales)
    assert model.calls == 4  # one forward per scale, flip in the same batch
    ref = torch.zeros(2, 3, 12, 10)
    for s in scales:
        size = (round(12 * s), round(10 * s))
        xs = F.interpolate(x, size=size, mode="bilinear", align_corners=False) if s != 1.0 else x
        cam = F.relu(xs) + F.relu(xs.flip(-1)).flip(-1)
        ref += F.interpolate(cam, size=(12, 10), mode="bilinear", align_corners=False)
    ref /= ref.amax(dim=(2, 3), keepdim=True) + 1e-5
    torch.testing.assert_close(out, ref)
    assert out.shape == (2, 3, 12, 10) and out.min() >= 0 and out.max() < 1
    torch.testing.assert_close(out.amax(dim=(2, 3)), torch.full((2, 3), 1.0), atol=1e-4, rtol=0)
    # scales resizing to the same size share a forward; repeating a scale counts it twice
    model.calls = 0
    dup = multiscale_cam(model, x, scales=(1.0, 2.0, 1.0))
    assert model.calls == 2
    one = F.relu(x) * 2  # flip=True at scale 1 on the identity model
    two = F.interpolate(F.interpolate(x, size=(24, 20), mode="bilinear", align_corners=False).relu() * 2,
                        size=(12, 10), mode="bilinear", align_corners=False)
    manual = 2 * one + two
    torch.testing.assert_close(dup, manual / (manual.amax(dim=(2, 3), keepdim=True) + 1e-5))


def test_multiscale_cam_labels_zero_absent_classes():
    x = torch.rand(2, 3, 8, 8) + 0.1
    labels = torch.tensor([[1, 0, 1], [0, 1, 0]])
    out = multiscale_cam(_Identity(), x, scales=(1.0, 0.5), labels=labels)
    full = multiscale_cam(_Identity(), x, scales=(1.0, 0.5))
    assert torch.equal(out[0, 1], torch.zeros(8, 8)) and torch.equal(out[1, 0], torch.zeros(8, 8))
    assert torch.equal(out[1, 2], torch.zeros(8, 8))
    torch.testing.assert_close(out[0, 0], full[0, 0])
    torch.testing.assert_close(out[1, 1], full[1, 1])


def _symmetric_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Conv2d):
                m.weight.copy_((m.weight + m.weight.flip(-1)) / 2)  # horizontally symmetric kernels
    return net


def test_multiscale_cam_flip_equivariance():
    x = torch.randn(2, 3, 10, 14, generator=torch.Generator().manual_seed(2))
    sym = _symmetric_net()
    out = multiscale_cam(sym, x, flip=False)
    torch.testing.assert_close(multiscale_cam(sym, x.flip(-1), flip=False), out.flip(-1), rtol=1e-4, atol=1e-5)
    # with flip=True the result is equivariant for any model (the augmentation symmetrises it)
    asym = _net(k=2)
    out = multiscale_cam(asym, x)
    torch.testing.assert_close(multiscale_cam(asym, x.flip(-1)), out.flip(-1), rtol=1e-4, atol=1e-5)
    # ... and not without it: the check above can fail
    plain = multiscale_cam(asym, x, flip=False)
    assert not torch.allclose(multiscale_cam(asym, x.flip(-1), flip=False), plain.flip(-1), rtol=1e-3, atol=1e-3)


def test_multiscale_cam_no_grad_and_mode_untouched():
    net = _net(k=2).train()
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    out = multiscale_cam(net, x)
    assert not out.requires_grad and net.training


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(x=torch.zeros(3, 8, 8)), ValueError, "x must have 4 dimensions"),
        (dict(x=torch.zeros(1, 3, 8, 8, dtype=torch.int64)), TypeError, "x must be a floating"),
        (dict(scales=()), ValueError, "scales must be a non-empty"),
        (dict(scales=(1.0, -0.5)), ValueError, "scales must hold positive"),
        (dict(scales=1.0), ValueError, "scales must be a non-empty"),
        (dict(labels=torch.ones(1, 4)), ValueError, "labels must have shape"),
        (dict(labels=[[1, 0, 1]]), TypeError, "labels must be a torch.Tensor"),
        (dict(image_mode="nearest"), ValueError, "image_mode must be"),
    ],
)
def test_multiscale_cam_bad_input(kwargs, err, match):
    args = dict(model=_Identity(), x=torch.rand(1, 3, 8, 8))
    args.update(kwargs)
    with pytest.raises(err, match=match):
        multiscale_cam(**args)


def test_public_names():
    assert camfast.multiscale_cam is multiscale_cam
    assert camfast.puzzle.tile is tile and camfast.puzzle.PuzzleCAMLoss is PuzzleCAMLoss
