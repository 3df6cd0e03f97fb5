"""Issue 15 on small in-test models: token and channels-last layouts, model outputs, wrapped,
compiled, training-mode, reduced-precision and multi-threaded use, and the clear errors.

The same rules on timm's and torchvision's real architectures: tests/methods/test_timm_models.py;
detectors: tests/methods/test_detection_models.py.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import camfast
from camfast.methods.detection import BoxScoreTarget, box_iou
from camfast.methods.targets import MaskTarget
from camfast.methods.tokens import ModelHints, infer_layout


def seeded(factory, seed=0):
    torch.manual_seed(seed)
    return factory()


class TinyBlock(nn.Module):
    """A pre-norm transformer block with timm's attribute names (norm1, attn, norm2, mlp)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """Patch embedding, a class token (+ ``extra`` more leading tokens), blocks, class-token head."""

    def __init__(self, dim=16, depth=3, patch=8, classes=5, extra=0, pool="token") -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
        self.reg_token = nn.Parameter(torch.randn(1, extra, dim) * 0.5) if extra else None
        self.blocks = nn.Sequential(*[TinyBlock(dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)
        self.global_pool = pool
        self.extra = extra

    def forward(self, x):
        t = self.patch_embed(x).flatten(2).transpose(1, 2)
        lead = [self.cls_token.expand(len(t), -1, -1)]
        if self.reg_token is not None:
            lead.append(self.reg_token.expand(len(t), -1, -1))
        t = self.norm(self.blocks(torch.cat([*lead, t], 1)))
        return self.head(t[:, 0] if self.global_pool == "token" else t[:, 1 + self.extra:].mean(1))


def cnn():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def images(b=2, size=32, seed=1):
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def explicit_tokens(prefix, h, w):
    """The reshape_transform a user writes by hand for a ViT (pytorch-grad-cam's tutorial)."""
    def transform(t):
        return t[:, prefix:, :].reshape(t.size(0), h, w, t.size(2)).transpose(2, 3).transpose(1, 2)
    return transform


# ------------------------------------------------------------------------------ tokens
@pytest.mark.parametrize("extra", [0, 4])
def test_vit_layers_and_tokens_without_reshape_transform(extra):
    model = seeded(lambda: TinyViT(extra=extra)).eval()
    assert camfast.find_layers(model) == ["blocks.0", "blocks.1", "blocks.2.norm1"]
    x = images()
    for fn in (camfast.zoom_cam, camfast.layer_cam):
        auto = fn(model, x)
        hand = fn(model, x, reshape_transform=explicit_tokens(1 + extra, 4, 4))
        assert torch.isfinite(auto).all() and auto.min() >= 0 and auto.max() <= 1
        torch.testing.assert_close(auto, hand, atol=1e-6, rtol=0)
    auto = camfast.grad_cam(model, x, return_layers=True)
    assert list(auto.layer_maps) == ["blocks.2.norm1"] and auto.layer_maps["blocks.2.norm1"].shape == (2, 4, 4)
    assert float(auto.layer_maps["blocks.2.norm1"].amax()) > 0


def test_vit_with_mean_pooled_patches_keeps_the_last_block():
    model = seeded(lambda: TinyViT(pool="avg")).eval()
    assert camfast.find_layers(model)[-1] == "blocks.2"
    assert torch.isfinite(camfast.zoom_cam(model, images())).all()


def test_class_token_head_gives_no_gradient_to_the_last_block_output():
    """pytorch-grad-cam #513: the last block's patch tokens get no gradient under a class-token
    head. A clear error naming the layer, not a blank map."""
    model = seeded(TinyViT).eval()
    with pytest.raises(RuntimeError, match=r"never reaches layer 'blocks\.2'.*non-patch tokens"):
        camfast.grad_cam(model, images(), layer="blocks.2")
    with pytest.raises(RuntimeError, match=r"'blocks\.2'"):
        camfast.zoom_cam(model, images(), layers=["blocks.1", "blocks.2"])


def test_a_layer_the_score_does_not_depend_on_is_an_error():
    class Aux(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = cnn()
            self.side = nn.Conv2d(3, 2, 3)

        def forward(self, x):
            self.side(x)  # computed, never used by the output
            return self.net(x)

    model = seeded(Aux).eval()
    with pytest.raises(RuntimeError, match="'side'"):
        camfast.zoom_cam(model, images(), layers=["net.2", "side"])


def test_ambiguous_tokens_name_the_layer_shape_and_what_to_pass():
    # 5 tokens for a 32x32 input, nothing declared: 1 + 2x2 (stride 16) or 4 + 1x1 (stride 32)
    with pytest.raises(ValueError, match=r"'blk'.*\(2, 5, 8\).*reshape_transform=") as err:
        infer_layout("blk", nn.Identity(), (2, 5, 8), (32, 32), ModelHints())
    assert "1 leading tokens + a 2x2 grid" in str(err.value) and "4 leading tokens + a 1x1 grid" in str(err.value)
    # the model's declaration settles it
    layout = infer_layout("blk", nn.Identity(), (2, 5, 8), (32, 32), ModelHints(1, (16, 16)))
    assert (layout.kind, layout.prefix, layout.grid) == ("tokens", 1, (2, 2))
    with pytest.raises(ValueError, match=r"'blk'.*\(2, 7, 8\)"):  # nothing fits
        infer_layout("blk", nn.Identity(), (2, 7, 8), (32, 32), ModelHints(1, (16, 16)))
    with pytest.raises(ValueError, match=r"'blk'.*\(2, 8\)"):
        infer_layout("blk", nn.Identity(), (2, 8), (32, 32), ModelHints())


def test_token_layout_of_a_non_square_input():
    with pytest.raises(ValueError, match=r"1 leading tokens \+ a 2x6 grid, 10 leading tokens \+ a 1x3 grid"):
        infer_layout("b", nn.Identity(), (1, 1 + 2 * 6, 4), (32, 96), ModelHints())
    layout = infer_layout("b", nn.Identity(), (1, 1 + 2 * 6, 4), (32, 96), ModelHints(prefix_tokens=1))
    assert (layout.prefix, layout.grid) == (1, (2, 6))
    t = torch.arange(13 * 4.0).reshape(1, 13, 4)
    torch.testing.assert_close(layout(t), explicit_tokens(1, 2, 6)(t), atol=0, rtol=0)


def test_channels_last_layers_are_permuted():
    """A ConvNeXt-style block: Linear layers on (B, H, W, C) tensors. Today's silent bug was to
    read H as the channel axis; the map must equal the explicit permute."""
    class ChannelsLast(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 4, 4)
            self.fc1 = nn.Linear(8, 24)
            self.act = nn.GELU()
            self.fc2 = nn.Linear(24, 8)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            y = self.conv(x).permute(0, 2, 3, 1)
            y = self.fc2(self.act(self.fc1(y)))
            return self.head(y.mean((1, 2)))

    model = seeded(ChannelsLast).eval()
    x = images(2, 32)
    for layer in ("fc1", "fc2", "act"):  # act: a GELU on (B, 8, 8, 24): the shape tells (dims 2-3 fit no grid)
        auto = camfast.grad_cam(model, x, layer=layer, return_layers=True)
        hand = camfast.grad_cam(model, x, layer=layer, reshape_transform=lambda t: t.permute(0, 3, 1, 2),
                                return_layers=True)
        assert auto.layer_maps[layer].shape == (2, 8, 8)
        torch.testing.assert_close(auto.cam, hand.cam, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------ outputs
class Wrapped(nn.Module):
    def __init__(self, inner, kind):
        super().__init__()
        self.inner = inner
        self.kind = kind

    def forward(self, x):
        y = self.inner(x)
        if self.kind == "hf":
            return SimpleNamespace(logits=y, hidden_states=(x,))
        if self.kind == "dict":
            return {"logits": y, "aux": y * 2}
        if self.kind == "tuple":
            return y, x  # the features are 4-D: one (B, K) candidate
        return y, y * 2  # two (B, K) candidates


@pytest.mark.parametrize("kind", ["hf", "dict", "tuple"])
def test_unambiguous_outputs_need_no_output_fn(kind):
    inner = seeded(cnn).eval()
    x = images()
    torch.testing.assert_close(camfast.zoom_cam(Wrapped(inner, kind), x), camfast.zoom_cam(inner, x), atol=0, rtol=0)


def test_ambiguous_tuple_output_asks_for_output_fn():
    model = Wrapped(seeded(cnn), "pair").eval()
    with pytest.raises(TypeError, match=r"several of them.*output_fn"):
        camfast.zoom_cam(model, images())
    torch.testing.assert_close(camfast.zoom_cam(model, images(), output_fn=lambda o: o[1]),
                               camfast.zoom_cam(model.inner, images()), atol=1e-6, rtol=0)


class TinySeg(nn.Module):
    """A segmentation model returning torchvision's {"out": (B, K, H, W)}."""

    def __init__(self, k=3):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, stride=2),
                                  nn.ReLU())
        self.cls = nn.Conv2d(8, k, 1)

    def forward(self, x):
        return {"out": F.interpolate(self.cls(self.body(x)), size=x.shape[-2:], mode="bilinear")}


def test_segmentation_region_targets():
    model = seeded(TinySeg).eval()
    x = images(2, 16)
    out = model(x)["out"]
    mask = torch.zeros(16, 16)
    mask[4:12, 2:9] = 1
    # a user's mask, and pytorch-grad-cam's SemanticSegmentationTarget rule written as a callable
    ours = camfast.grad_cam(model, x, target=[MaskTarget(1, mask)] * 2, layer="body.3")
    theirs = camfast.grad_cam(model, x, target=lambda o: (o[1, :, :] * mask).sum(), layer="body.3")
    torch.testing.assert_close(ours, theirs, atol=0, rtol=0)
    # target=k: the region where k is predicted (here the class predicted at each image's centre)
    k = [int(out[b, :, 8, 8].argmax()) for b in range(2)]
    region = [MaskTarget(k[b], (out[b].argmax(0) == k[b]).float()) for b in range(2)]
    torch.testing.assert_close(camfast.zoom_cam(model, x, target=k), camfast.zoom_cam(model, x, target=region),
                               atol=1e-6, rtol=0)
    both = camfast.zoom_cam(model, x, target=torch.tensor([[k[0], k[0]], [k[1], k[1]]]))
    assert both.shape == (2, 2, 16, 16)
    torch.testing.assert_close(both[:, 1], camfast.zoom_cam(model, x, target=k), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="MaskTarget"):
        camfast.zoom_cam(model, x)  # no "top class" of a dense output
    absent = next(c for c in range(3) if not (out.argmax(1) == c).any())  # predicted nowhere: an empty
    blank = camfast.zoom_cam(model, x, target=absent)  # region, a score that does not depend on the image
    assert torch.equal(blank, torch.zeros_like(blank))


# ------------------------------------------------------------------------------ wrapped, compiled, state
def test_data_parallel_is_unwrapped():
    inner = seeded(cnn).eval()
    dp = nn.DataParallel(inner)
    x = images()
    assert camfast.find_layers(dp) == camfast.find_layers(inner)
    ref = camfast.zoom_cam(inner, x)
    torch.testing.assert_close(camfast.zoom_cam(dp, x), ref, atol=0, rtol=0)
    torch.testing.assert_close(camfast.grad_cam(dp, x, layer="module.5"), camfast.grad_cam(inner, x, layer="5"),
                               atol=0, rtol=0)
    res = camfast.grad_cam(dp, x, layer=dp.module[5], return_layers=True)
    assert list(res.layer_maps) == ["5"]


@pytest.mark.parametrize("spec", [s for s in camfast.methods.registry.specs() if not s.missing()],
                         ids=lambda s: s.name)
def test_every_method_unwraps_data_parallel(spec):
    """Every registered method (rCAM's shape layer, Puzzle-CAM's tiles, TAP's head, ...) gives
    the wrapped model's map on a DataParallel wrapper, bit for bit."""
    from models import resnet_like

    inner = seeded(resnet_like).eval()
    x = torch.randn(2, 3, 32, 40, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(spec(nn.DataParallel(inner), x), spec(inner, x), atol=0, rtol=0)


def test_distributed_data_parallel_is_unwrapped(tmp_path):
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        inner = seeded(cnn)
        ddp = nn.parallel.DistributedDataParallel(inner)
        ddp.train()
        x = images()
        before = _buffers(inner)
        out = camfast.zoom_cam(ddp, x)
        assert all(torch.equal(before[n], b) for n, b in inner.named_buffers()) and ddp.training
        torch.testing.assert_close(out, camfast.zoom_cam(inner.eval(), x), atol=0, rtol=0)
        assert camfast.find_layers(ddp) == camfast.find_layers(inner)
    finally:
        dist.destroy_process_group()


def test_compiled_model_runs_its_original_module_eagerly():
    inner = seeded(cnn).eval()
    compiled = torch.compile(inner)
    x = images()
    torch.testing.assert_close(camfast.zoom_cam(compiled, x), camfast.zoom_cam(inner, x), atol=0, rtol=0)
    torch.testing.assert_close(camfast.cam(compiled, x), camfast.cam(inner, x), atol=0, rtol=0)
    assert camfast.find_layers(compiled) == camfast.find_layers(inner)


def _buffers(model):
    return {n: b.clone() for n, b in model.named_buffers()}


@pytest.mark.parametrize("method", ["zoom-cam", "grad-cam", "layer-cam", "x-grad-cam", "cam", "multiscale-cam"])
def test_train_mode_model_is_left_bit_identical(method):
    model = seeded(cnn)
    x = images(4)
    with torch.no_grad():  # running statistics that differ from the batch's
        model(images(8, seed=5) * 3 + 1)
    model.train()
    model[1].eval()  # mixed flags come back as they were
    before = _buffers(model)
    spec = camfast.methods.get(method)
    out = spec(model, x)
    after = _buffers(model)
    assert before.keys() == after.keys()
    for n in before:
        assert torch.equal(before[n], after[n]), n
    assert model.training and not model[1].training and all(m.training for i, m in enumerate(model) if i != 1)
    # the map of the model as it predicts: equal to the eval-mode map; dropout off (deterministic)
    ref = spec(model.eval(), x)
    torch.testing.assert_close(out, ref, atol=0, rtol=0)


def test_two_threads_on_one_model():
    model = seeded(cnn)
    model.train()
    xs = [images(2, seed=s) for s in (1, 2)]
    ref = [camfast.zoom_cam(model, x) for x in xs]
    got: dict[int, torch.Tensor] = {}
    errors = []

    def run(i):
        try:
            for _ in range(5):
                got[i] = camfast.zoom_cam(model, xs[i])
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i in (0, 1):
        torch.testing.assert_close(got[i], ref[i], atol=0, rtol=0)
    assert model.training


def test_non_finite_output_names_the_image_and_class():
    class NaNAt(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = cnn()

        def forward(self, x):
            y = self.net(x)
            return torch.cat([y[:1], y[1:2] * float("nan"), y[2:]])

    model = seeded(NaNAt).eval()
    with pytest.raises(ValueError, match=r"not finite \(nan\) for image 1 of the batch, class 3"):
        camfast.zoom_cam(model, images(3), target=3)
    with pytest.raises(ValueError, match="image 1 of the batch"):
        camfast.grad_cam(model, images(3), target=[0, 1, 2])
    with pytest.raises(ValueError, match=r"image 1 of the batch, class 0 \(round 0"):
        camfast.zoom_cam(model, images(3), target=[[0], [0, 2], [1]])


# ------------------------------------------------------------------------------ precision
def _small():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def _zoom_cam_from_the_models_own_tensors(model, x, target, layers, autocast_dtype=None):
    """Zoom-CAM written out from the activations and gradients the model itself produces in its
    dtype (forward hooks, one autograd.grad), every map operation in float64: what camfast
    must give when it adds no error of its own to the model's reduced precision."""
    acts = []
    handles = [dict(model.named_modules())[n].register_forward_hook(lambda m, i, o: acts.append(o)) for n in layers]
    try:
        xin = x.to(next(model.parameters()).dtype).requires_grad_(True)
        with torch.autocast("cpu", dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = model(xin)
            score = out.gather(1, target[:, None]).sum()
        grads = torch.autograd.grad(score, acts)
    finally:
        for h in handles:
            h.remove()
    fused = None
    for a, g in zip(acts, grads):
        m = (a.double() * g.double()).sum(1).clamp_min(0)
        m = m / m.amax((1, 2), keepdim=True)  # camfast's unit scale before its min-max (engine.fuse_maps)
        lo, hi = m.amin((1, 2), keepdim=True), m.amax((1, 2), keepdim=True)
        m = F.interpolate(((m - lo) / (hi - lo + 1e-7))[:, None], size=x.shape[-2:], mode="bilinear",
                          align_corners=False)[:, 0]
        fused = m if fused is None else torch.maximum(fused, m)
    lo, hi = fused.amin((1, 2), keepdim=True), fused.amax((1, 2), keepdim=True)
    return ((fused - lo) / (hi - lo + 1e-7)).float()


@pytest.mark.parametrize(("dtype", "how"), [(torch.bfloat16, "autocast"), (torch.float16, "autocast"),
                                            (torch.bfloat16, "model"), (torch.float16, "model"),
                                            (torch.float32, "model")])  # the last: the reference's check
def test_reduced_precision_maps_are_float32_and_add_no_error_of_their_own(dtype, how):
    """Under autocast and for a model in bfloat16/float16, the maps are float32 in [0, 1] and
    equal Zoom-CAM computed in float64 from the model's own reduced-precision activations and
    gradients: camfast adds only float32 rounding (a few 1e-7 of a map in [0, 1]) to what the
    dtype already did. How far the model's reduced precision moves the map from its float32
    one is a property of the network (ENVIRONMENT.md: 0.93 correlation on EfficientNet-Lite0
    in bfloat16), not of camfast, and is not bounded here."""
    model = seeded(_small).eval()
    x = images(2, 16)
    target = camfast.zoom_cam(model, x, return_layers=True).targets  # the same classes for every run
    layers = camfast.find_layers(model)
    if how == "autocast":
        with torch.autocast("cpu", dtype=dtype):
            got = camfast.zoom_cam(model, x, target=target)
        expected = _zoom_cam_from_the_models_own_tensors(model, x, target, layers, autocast_dtype=dtype)
    else:
        low = seeded(_small).eval().to(dtype)
        got = camfast.zoom_cam(low, x, target=target)  # x cast to the model's dtype
        expected = _zoom_cam_from_the_models_own_tensors(low, x, target, layers)
    assert got.dtype == torch.float32 and torch.isfinite(got).all() and got.min() >= 0 and got.max() <= 1
    assert float(expected.amax()) == pytest.approx(1.0, abs=1e-6) and float((expected > 0.5).float().mean()) > 0.01
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------ detection (toy)
class ToyDetector(nn.Module):
    """Returns torchvision-style detections whose scores and boxes depend on a conv feature map."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1,
                                                                                          stride=2), nn.ReLU())
        self.score = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        f = self.score(self.backbone(x))  # (B, 3, h, w): per class
        out = []
        for b in range(len(x)):
            pooled = f[b].flatten(1)
            scores, where = pooled.sigmoid().max(1)  # one detection per class
            cx = (where % f.shape[-1]).float() * 2 + 1
            cy = (where // f.shape[-1]).float() * 2 + 1
            boxes = torch.stack([cx - 3 * scores, cy - 3 * scores, cx + 3 * scores, cy + 3 * scores], 1)
            out.append({"boxes": boxes, "labels": torch.arange(3), "scores": scores})
        return out


def test_box_score_target_and_per_detection_maps():
    model = seeded(ToyDetector).eval()
    x = images(2, 16)
    res = camfast.zoom_cam(model, x, layers=["backbone.1", "backbone.3"], return_layers=True)
    assert isinstance(res.cam, list) and [m.shape for m in res.cam] == [(3, 16, 16)] * 2
    assert [t.tolist() for t in res.targets] == [[0, 1, 2]] * 2
    dets = model(x)
    for b in range(2):
        for j in range(3):  # each map equals the single-target call with that detection as reference
            ref = BoxScoreTarget([j], dets[b]["boxes"][j:j + 1].detach())
            one = camfast.zoom_cam(model, x[b:b + 1], layers=["backbone.1", "backbone.3"], target=ref)
            torch.testing.assert_close(res.cam[b][j], one[0], atol=1e-5, rtol=0)


def test_box_score_target_is_the_sum_pytorch_grad_cam_defines():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0], [20.0, 20.0, 30.0, 30.0]],
                         requires_grad=True)
    scores = torch.tensor([0.9, 0.8, 0.7], requires_grad=True)
    det = {"boxes": boxes, "labels": torch.tensor([1, 2, 1]), "scores": scores}
    ref = torch.tensor([[1.0, 1.0, 11.0, 11.0], [21.0, 21.0, 29.0, 31.0], [5.0, 5.0, 15.0, 15.0]])
    # box 0 best matches det 0 (label 1: counts), ref 1 -> det 2 (label 1 but asked 2: no), ref 2 -> det 1 (label 2)
    s = BoxScoreTarget([1, 2, 2], ref, iou_threshold=0.5)(det)
    iou = box_iou(ref, boxes.detach())
    assert float(s) == pytest.approx(float(iou[0, 0] + 0.9 + 1.0 + 0.8))
    s.backward()
    assert scores.grad.tolist() == [1.0, 1.0, 0.0] and boxes.grad[2].abs().sum() == 0


class _DictFeatures(nn.Module):
    """A backbone returning a dict of two levels (a feature pyramid's shape), then a head."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 6, 3, padding=1, stride=2)

    def forward(self, x):
        a = torch.relu(self.c1(x))
        return {"fine": a, "coarse": torch.relu(self.c2(a))}


class _DictModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = _DictFeatures()
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.backbone(x)["coarse"].mean((2, 3)))


def _both_levels(features):
    size = features["fine"].shape[-2:]
    return torch.cat([features["fine"], F.interpolate(features["coarse"], size, mode="bilinear")], 1)


def test_a_layer_returning_a_dict_takes_a_reshape_transform_for_forward_only_methods():
    model = seeded(_DictModel).eval()
    x = images()
    got = camfast.eigen_cam(model, x, layer="backbone", reshape_transform=_both_levels, return_layers=True)
    with torch.no_grad():
        acts = _both_levels(model.backbone(x))
    expected = camfast.methods.eigencam.eigen_projection(acts).clamp_min(0)
    torch.testing.assert_close(got.layer_maps["backbone"], expected, atol=1e-6, rtol=0)
    with pytest.raises(TypeError, match="'backbone' returned dict.*reshape_transform"):
        camfast.eigen_cam(model, x, layer="backbone")
    with pytest.raises(TypeError, match="'backbone' returned dict.*gradient methods need a layer with a tensor"):
        camfast.grad_cam(model, x, layer="backbone", reshape_transform=_both_levels)
    with pytest.raises(ValueError, match="reshape_transform turned the dict of layer 'backbone' into"):
        camfast.eigen_cam(model, x, layer="backbone", reshape_transform=lambda f: f["fine"][0])
