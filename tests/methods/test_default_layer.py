"""The default layer of the one-layer methods: the last convolutional feature map before the
global pooling (Selvaraju et al.'s rule), not the last block's output."""

from __future__ import annotations

import pytest
import torch
from models import mobilenet_like, plain_cnn, resnet_like, seeded, vgg_like

import camfast
from camfast.methods.layers import default_layer


def test_efficientnet_lite0_default_is_the_head_activation_where_grad_cam_is_cam():
    """On EfficientNet-Lite0 the map entering the pooling is the head's activation; there
    Grad-CAM's weights are W[c] / hw, so its map is ReLU(CAM) / hw (the paper's remark)."""
    from camfast.models import efficientnet_lite0

    torch.manual_seed(0)
    model = efficientnet_lite0(pretrained=False).eval()
    assert camfast.find_layers(model)[-1] == "_blocks.15"
    assert default_layer(model) == "_head_act"
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    g = camfast.grad_cam(model, x, target=[3, 7], return_layers=True)
    assert list(g.layer_maps) == ["_head_act"]
    c = camfast.cam(model, x, target=[3, 7], return_layers=True)
    raw = c.layer_maps["_avg_pooling"]
    hw = raw.shape[-2] * raw.shape[-1]
    torch.testing.assert_close(g.layer_maps["_head_act"] * hw, raw.clamp_min(0), atol=1e-5, rtol=1e-4)
    for name in ("hires_cam", "x_grad_cam"):
        assert list(getattr(camfast, name)(model, x, return_layers=True).layer_maps) == ["_head_act"]


@pytest.mark.parametrize("factory, want", [
    (mobilenet_like, "features.4.2"),   # MobileNetV2's last Conv-BN-ReLU6 after the blocks
    (resnet_like, "layer2.1"),          # the last block's output already enters the pooling
    (vgg_like, "features.9"),           # the last post-conv ReLU
    (plain_cnn, "5"),                   # the SiLU before the pooling inside the Sequential
])
def test_default_layer_of_other_layouts(factory, want):
    model = seeded(factory)
    assert default_layer(model) == want
    x = torch.randn(1, 3, 32, 32)
    assert list(camfast.grad_cam(model, x, return_layers=True).layer_maps) == [want]
