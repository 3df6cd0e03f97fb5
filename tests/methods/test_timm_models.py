"""Issue 15 on the modern backbones users bring: timm's ViT, DeiT, Swin, ConvNeXt, RegNet,
EfficientNetV2, MobileNetV3, DenseNet and torchvision's ViT and Swin, random weights, the
smallest input each accepts. Default layers (camfast/methods/layers.py's rule per family), no
reshape_transform: zoom_cam, grad_cam and layer_cam give finite maps in [0, 1], and for the
token and channels-last models the same maps as an explicit, correct reshape_transform.
"""

from __future__ import annotations

import pytest
import torch

import camfast
from peers import torchvision as import_torchvision


def timm():
    import_torchvision()  # timm imports torchvision: through the shim, first
    return pytest.importorskip("timm")


def vit_tokens(prefix, h, w):
    def transform(t):  # pytorch-grad-cam's ViT tutorial
        return t[:, prefix:, :].reshape(t.size(0), h, w, t.size(2)).transpose(2, 3).transpose(1, 2)
    return transform


def channels_last(t):
    return t.permute(0, 3, 1, 2)


def _stages(model, stages, blocks):
    return [f"{stages}.{i}.{blocks}.{j}" if blocks else f"{stages}.{i}.{j}"
            for i, s in enumerate(getattr(model, stages))
            for j in range(len(getattr(s, blocks) if blocks else s))]


def _children(module):
    return [n for n, _ in module.named_children()]


def build(name):
    """(model, input size, expected find_layers, explicit reshape_transform or None)."""
    torch.manual_seed(0)
    if name.startswith("tv-"):
        tv = import_torchvision().models
        if name == "tv-vit_b_16":
            m = tv.vit_b_16(weights=None, image_size=32)  # 2x2 patches + the class token
            torch.nn.init.normal_(m.heads.head.weight, std=0.02)  # torchvision zero-initialises it: no gradient
            expected = [f"encoder.layers.encoder_layer_{i}" for i in range(11)] + ["encoder.layers.encoder_layer_11.ln_1"]
            return m, 32, expected, vit_tokens(1, 2, 2)
        m = tv.swin_t(weights=None)
        expected = [f"features.{i}.{j}" for i in (1, 3, 5, 7) for j in range(len(m.features[i]))]
        return m, 64, expected, channels_last
    t = timm()
    if name in ("vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224"):
        m = t.create_model(name, pretrained=False, img_size=32)
        expected = [f"blocks.{i}" for i in range(11)] + ["blocks.11.norm1"]
        return m, 32, expected, vit_tokens(m.num_prefix_tokens, 2, 2)
    if name == "swin_tiny_patch4_window7_224":
        m = t.create_model(name, pretrained=False, img_size=64)  # windows padded / clamped to the stages
        return m, 64, _stages(m, "layers", "blocks"), channels_last
    m = t.create_model(name, pretrained=False)
    if name == "convnext_atto":
        return m, 32, _stages(m, "stages", "blocks"), None
    if name == "regnetx_002":
        expected = ["stem.bn.act"] + [f"s{i}.{b}" for i in range(1, 5) for b in _children(getattr(m, f"s{i}"))]
        assert all(n.rsplit(".", 1)[1].startswith("b") for n in expected[1:])
        return m, 32, expected, None
    if name in ("efficientnetv2_rw_t", "mobilenetv3_small_100"):
        return m, 32, ["bn1.act"] + _stages(m, "blocks", None), None
    if name == "densenet121":
        return m, 32, ["features.norm0.act"] + [f"features.denseblock{i}" for i in range(1, 5)], None
    raise AssertionError(name)


FAST = ["vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "convnext_atto", "regnetx_002",
        "mobilenetv3_small_100"]
SLOW = ["swin_tiny_patch4_window7_224", "efficientnetv2_rw_t", "densenet121", "tv-vit_b_16", "tv-swin_t"]
MODELS = FAST + [pytest.param(n, marks=pytest.mark.slow) for n in SLOW]


@pytest.mark.parametrize("name", MODELS)
def test_default_layers_and_maps(name):
    model, size, expected, explicit = build(name)
    model.eval()
    layers = camfast.find_layers(model)
    assert layers == expected
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    for fn in (camfast.zoom_cam, camfast.grad_cam, camfast.layer_cam):
        res = fn(model, x, return_layers=True)
        assert res.cam.shape == (2, size, size) and res.cam.dtype == torch.float32
        assert torch.isfinite(res.cam).all() and res.cam.min() >= 0 and res.cam.max() <= 1
        for layer, m in res.layer_maps.items():  # a map per layer at that layer's grid, not blank
            assert m.dim() == 3 and m.shape[0] == 2 and float(m.amax()) > 0, (layer, tuple(m.shape))
        if explicit is not None:
            hand = fn(model, x, reshape_transform=explicit)
            torch.testing.assert_close(res.cam, hand, atol=1e-6, rtol=0)


def test_convnext_mlp_linears_are_channels_last():
    """timm ConvNeXt's mlp.fc1 (an nn.Linear unless conv_mlp=True, which the atto-nano sizes
    default to) works on (B, H, W, C): chosen explicitly it is permuted (the silent wrong map of
    before read H as the channel axis)."""
    model = timm().create_model("convnext_atto", pretrained=False, conv_mlp=False).eval()
    assert isinstance(model.stages[1].blocks[0].mlp.fc1, torch.nn.Linear)
    assert camfast.find_layers(model) == _stages(model, "stages", "blocks")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    layer = "stages.1.blocks.0.mlp.fc1"
    auto = camfast.grad_cam(model, x, layer=layer, return_layers=True)
    assert auto.layer_maps[layer].shape == (2, 8, 8)
    torch.testing.assert_close(auto.cam, camfast.grad_cam(model, x, layer=layer, reshape_transform=channels_last),
                               atol=1e-6, rtol=0)
