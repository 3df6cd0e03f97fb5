"""The one-call CAM API: values against a plain hooks-and-autograd implementation written
here, targets, layer discovery, and the promises about the model and memory."""

from __future__ import annotations

import gc

import pytest
import torch
import torch.nn.functional as F
from models import mobilenet_like, plain_cnn, resnet_like, seeded, vgg_like
from torch import nn

import camfast

FACTORIES = {"vgg": vgg_like, "resnet": resnet_like, "mobilenet": mobilenet_like, "plain": plain_cnn}


def images(b=2, size=32, seed=0):
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def minmax(m):
    """Per-sample min-max to [0, 1], scale-free (a constant map gives zeros)."""
    lo = m.amin(dim=(-2, -1), keepdim=True)
    hi = m.amax(dim=(-2, -1), keepdim=True)
    return torch.where(hi - lo > 0, (m - lo) / (hi - lo), torch.zeros_like(m))


def manual_cam(model, x, names, mode, target=None, fuse="max"):
    """The specification, written plainly: hooks, autograd.grad to every layer at once,
    per-layer formula, min-max, F.interpolate, fuse, min-max."""
    modules = dict(model.named_modules())
    acts = {}
    handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: acts.__setitem__(n, o)) for n in names]
    try:
        x_in = x.clone().requires_grad_(True)
        logits = model(x_in)
    finally:
        for h in handles:
            h.remove()
    idx = logits.argmax(1) if target is None else torch.as_tensor(target).expand(x.shape[0])
    grads = torch.autograd.grad(logits.gather(1, idx[:, None]).sum(), [acts[n] for n in names])
    layer_maps = []
    for n, g in zip(names, grads):
        a = acts[n].detach()
        if mode == "zoom":
            m = (g * a).sum(1)
        elif mode == "layercam":
            m = (g.relu() * a).sum(1)
        else:
            m = (g.mean((2, 3), keepdim=True) * a).sum(1)
        layer_maps.append(m.relu())
    up = torch.stack([F.interpolate(minmax(m)[:, None], size=x.shape[-2:], mode="bilinear",
                                    align_corners=False)[:, 0] for m in layer_maps])
    fused = up.amax(0) if fuse == "max" else up.mean(0)
    return (minmax(fused) if len(names) > 1 else fused), layer_maps


@pytest.mark.parametrize("arch", list(FACTORIES))
@pytest.mark.parametrize("method, mode", [(camfast.zoom_cam, "zoom"), (camfast.layer_cam, "layercam")])
def test_multilayer_methods_match_plain_implementation(arch, method, mode):
    model = seeded(FACTORIES[arch])
    x = images()
    names = camfast.find_layers(model)
    result = method(model, x, return_layers=True)
    expected, expected_layers = manual_cam(model, x, names, mode)
    assert result.cam.shape == (2, 32, 32) and result.cam.dtype == torch.float32
    assert list(result.layer_maps) == names
    for name, got, exp in zip(names, result.layer_maps.values(), expected_layers):
        torch.testing.assert_close(got, exp, atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")
    torch.testing.assert_close(result.cam, expected, atol=1e-5, rtol=1e-4)
    assert float(result.cam.min()) >= 0.0 and float(result.cam.max()) <= 1.0


def test_grad_cam_matches_plain_implementation():
    model = seeded(resnet_like)
    x = images(3)
    out = camfast.grad_cam(model, x, target=[0, 1, 2])
    names = camfast.find_layers(model)[-1:]
    expected, _ = manual_cam(model, x, names, "gradcam", target=torch.tensor([0, 1, 2]))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)


def test_mean_fusion_and_output_size():
    model = seeded(vgg_like)
    x = images()
    out = camfast.zoom_cam(model, x, fuse="mean", output_size=(20, 24))
    assert out.shape == (2, 20, 24)
    with pytest.raises(ValueError, match="fuse must be"):
        camfast.zoom_cam(model, x, fuse="median")


class ClassifierOutputTarget:  # pytorch-grad-cam's convention
    def __init__(self, category):
        self.category = category

    def __call__(self, model_output):
        return model_output[self.category] if model_output.dim() == 1 else model_output[:, self.category]


def test_target_forms_agree():
    model = seeded(vgg_like)
    x = images(2)
    by_int = camfast.zoom_cam(model, x, target=3)
    torch.testing.assert_close(camfast.zoom_cam(model, x, target=[3, 3]), by_int)
    torch.testing.assert_close(camfast.zoom_cam(model, x, target=torch.tensor([3, 3])), by_int)
    torch.testing.assert_close(camfast.zoom_cam(model, x, target=[ClassifierOutputTarget(3)] * 2), by_int)
    top = model(x).argmax(1)
    torch.testing.assert_close(camfast.zoom_cam(model, x), camfast.zoom_cam(model, x, target=top))
    with pytest.raises(ValueError, match="out of range"):
        camfast.zoom_cam(model, x, target=7)
    with pytest.raises(ValueError, match="3 classes for a batch of 2 images"):
        camfast.zoom_cam(model, x, target=[1, 2, 3])


def test_model_state_is_left_alone():
    model = seeded(resnet_like)
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    model.conv1.weight.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    for training in (False, True):
        model.train(training)
        camfast.zoom_cam(model, images(2))
        assert model.training is training
    for n, p in model.named_parameters():
        assert p.requires_grad == flags[n], n
        if grads[n] is None:
            assert p.grad is None, n
        else:
            assert torch.equal(p.grad, grads[n]), n
    assert all(not m._forward_hooks for m in model.modules())


def test_hooks_removed_when_the_model_raises():
    model = seeded(vgg_like)

    def boom(module, inputs, output):
        raise KeyboardInterrupt

    model.classifier.register_forward_hook(boom)
    with pytest.raises(KeyboardInterrupt):
        camfast.zoom_cam(model, images(1))
    hooked = [m for m in model.modules() if m._forward_hooks and m is not model.classifier]
    assert not hooked


def test_no_grad_caller_and_plain_input():
    model = seeded(vgg_like)
    x = images(1)
    with torch.no_grad():
        out = camfast.zoom_cam(model, x)
    assert out.shape == (1, 32, 32) and not out.requires_grad and not x.requires_grad


def test_autocast_bfloat16_and_channels_last():
    model = seeded(resnet_like)
    x = images(2)
    ref = camfast.zoom_cam(model, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = camfast.zoom_cam(model, x)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out - ref).abs().mean() < 0.1  # bf16 activations: same map up to rounding
    cl = camfast.zoom_cam(model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(cl, ref, atol=1e-4, rtol=1e-3)


def test_tuple_output_needs_output_fn():
    inner = seeded(vgg_like)

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = inner

        def forward(self, x):  # two (B, K) tensors: which are the scores is ambiguous
            y = self.net(x)
            return y, y.flip(1)

    model = TwoHeads().eval()
    with pytest.raises(TypeError, match="output_fn"):
        camfast.zoom_cam(model, images(1))
    out = camfast.zoom_cam(model, images(1), output_fn=lambda o: o[0])
    torch.testing.assert_close(out, camfast.zoom_cam(inner, images(1)))


def test_create_graph_makes_maps_trainable():
    model = seeded(vgg_like)
    x = images(2)
    out = camfast.zoom_cam(model, x, create_graph=True)
    assert out.requires_grad
    loss = out.square().mean()
    params = [p for p in model.parameters()]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in params)


def test_maps_are_computed_during_backward_deepest_first(monkeypatch):
    """Streaming: each layer's map is made while the backward runs, deepest layer first."""
    import camfast.methods.engine as cam_module

    order = []
    real = cam_module.grad_weighted_map

    def spy(a, g, mode):
        order.append(a.shape[-1])
        assert torch._C._current_autograd_node() is not None  # called by the autograd engine, mid-backward
        return real(a, g, mode)

    monkeypatch.setattr(cam_module, "grad_weighted_map", spy)
    camfast.zoom_cam(seeded(vgg_like), images(1))
    assert order == sorted(order)  # deepest (smallest) first


def test_layer_selection_by_name_and_module_and_errors():
    model = seeded(vgg_like)
    x = images(1)
    a = camfast.zoom_cam(model, x, layers=["features.3", "features.6"])
    b = camfast.zoom_cam(model, x, layers=[model.features[3], model.features[6]])
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="no module named 'features.99'"):
        camfast.zoom_cam(model, x, layers=["features.99"])
    with pytest.raises(ValueError, match="not part of the model"):
        camfast.zoom_cam(model, x, layers=[nn.ReLU()])
    with pytest.raises(ValueError, match=r"x must be a batch of images"):
        camfast.zoom_cam(model, x[0])


def test_find_layers_per_architecture():
    assert camfast.find_layers(vgg_like()) == ["features.1", "features.3", "features.6", "features.9"]
    assert camfast.find_layers(resnet_like()) == ["relu", "layer1.0", "layer1.1", "layer2.0", "layer2.1"]
    assert camfast.find_layers(mobilenet_like()) == ["features.0.2", "features.1", "features.2", "features.3"]
    assert camfast.find_layers(plain_cnn()) == ["2", "5"]
    with pytest.raises(ValueError, match="could not find convolutional"):
        camfast.find_layers(nn.Sequential(nn.Linear(3, 3)))


def test_cam_matches_classifier_weights_and_nwc():
    model = seeded(resnet_like)
    x = images(2)
    res = camfast.cam(model, x, target=1, return_layers=True)
    feats = {}
    h = model.avgpool.register_forward_pre_hook(lambda m, i: feats.__setitem__("f", i[0]))
    model(x)
    h.remove()
    w = model.fc.weight[1]
    for clamp in (False, True):
        wc = w.clamp_min(0) if clamp else w
        m = torch.einsum("bchw,c->bhw", feats["f"], wc).detach()
        exp = F.interpolate(minmax(m)[:, None], size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
        got = camfast.cam(model, x, target=1, clamp_negative_weights=clamp)
        torch.testing.assert_close(got, exp, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(res.layer_maps["avgpool"], torch.einsum("bchw,c->bhw", feats["f"], w).detach())
    with pytest.raises(ValueError, match="global pooling followed by a linear"):
        camfast.cam(nn.Sequential(nn.Conv2d(3, 2, 1), nn.Flatten()), x)


def test_constant_map_gives_zeros_not_nan():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    out = camfast.zoom_cam(model.eval(), images(1))
    assert torch.equal(out, torch.zeros_like(out))


def test_no_growth_over_repeated_calls():
    model = seeded(vgg_like)
    x = images(2, 16)

    def live_tensors():
        gc.collect()
        return sum(1 for o in gc.get_objects() if type(o) in (torch.Tensor, nn.Parameter))

    for _ in range(5):
        camfast.zoom_cam(model, x)
    before = live_tensors()
    for _ in range(200):
        camfast.zoom_cam(model, x)
    assert live_tensors() <= before
    assert all(not m._forward_hooks for m in model.modules())


class TinyViT(nn.Module):
    """Patch embedding, a class token, two token-mixing blocks, a head on the class token."""

    def __init__(self, dim=12, patch=8, num_classes=4):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.1)
        self.blocks = nn.Sequential(*[nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU())
                                      for _ in range(2)])
        self.mix = nn.Linear(17, 17)  # mixes the 16 patch tokens and the class token
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)  # (B, 16, dim)
        t = torch.cat([self.cls.expand(x.shape[0], -1, -1), t], dim=1)
        t = self.blocks(t)
        t = self.mix(t.transpose(1, 2)).transpose(1, 2)
        return self.head(t[:, 0])


def tokens_to_map(t, h=4, w=4):
    return t[:, 1:].reshape(t.shape[0], h, w, t.shape[-1]).permute(0, 3, 1, 2)


def test_vision_transformer_through_reshape_transform():
    torch.manual_seed(0)
    model = TinyViT().eval()
    x = images(2)
    with pytest.raises(ValueError, match="reshape_transform"):
        camfast.grad_cam(model, x, layer="blocks.1")
    res = camfast.grad_cam(model, x, layer="blocks.1", reshape_transform=tokens_to_map, return_layers=True)
    # the same map by hand: tokens -> (B, D, 4, 4), Grad-CAM weights from the gradient
    acts = {}
    h = model.blocks[1].register_forward_hook(lambda m, i, o: acts.__setitem__("t", o))
    logits = model(x)
    h.remove()
    g = torch.autograd.grad(logits.gather(1, logits.argmax(1)[:, None]).sum(), acts["t"])[0]
    a_map, g_map = tokens_to_map(acts["t"].detach()), tokens_to_map(g)
    expected = (g_map.mean((2, 3), keepdim=True) * a_map).sum(1).relu()
    torch.testing.assert_close(res.layer_maps["blocks.1"], expected, atol=1e-5, rtol=1e-4)
    assert res.cam.shape == (2, 32, 32)


@pytest.mark.parametrize("name, count, first, last", [
    ("vgg16", 13, "features.1", "features.29"),  # every post-conv ReLU: Zoom-CAM's official choice
    ("resnet50", 17, "relu", "layer4.2"),  # stem + every Bottleneck
    ("mobilenet_v2", 18, "features.0.2", "features.17"),  # stem + every InvertedResidual
    ("mobilenet_v3_small", 12, "features.0.2", "features.11"),
    ("efficientnet_b0", 17, "features.0.2", "features.7.0"),  # stem + every MBConv
])
def test_find_layers_on_torchvision_models(name, count, first, last):
    import peers

    torch.manual_seed(0)
    model = getattr(peers.torchvision().models, name)().eval()
    layers = camfast.find_layers(model)
    assert (len(layers), layers[0], layers[-1]) == (count, first, last)
    out = camfast.zoom_cam(model, images(1, 64))
    # untrained networks give tiny maps (~1e-6): the result must still span [0, 1]
    assert out.shape == (1, 64, 64) and torch.isfinite(out).all() and float(out.max()) > 0.999
