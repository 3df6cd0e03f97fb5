"""XGrad-CAM: its weighting rule by hand; parity with pytorch-grad-cam's XGradCAM is in
tests/methods/test_compat.py (every compat class is compared), the front ends in
tests/methods/test_registry.py (every registry row)."""

import torch

import camfast


def test_rule_by_hand():
    """XGrad-CAM's weight w_c = sum(G*A) / (sum A + 1e-7) on values small enough to check by hand."""
    from camfast.methods.xgradcam import xgradcam_weights

    a = torch.tensor([[[[1.0, 3.0]], [[2.0, 0.0]]]], dtype=torch.float64)  # (1, 2, 1, 2)
    g = torch.tensor([[[[1.0, -1.0]], [[0.5, 4.0]]]], dtype=torch.float64)
    w0 = (1 * 1 + 3 * -1) / (4 + 1e-7)  # -0.5
    w1 = (2 * 0.5 + 0 * 4) / (2 + 1e-7)  # 0.5
    want = torch.tensor([[[max(0.0, w0 * 1 + w1 * 2), max(0.0, w0 * 3 + w1 * 0)]]], dtype=torch.float64)
    torch.testing.assert_close(xgradcam_weights(a, g), want)


def test_is_registered_and_runs_on_one_layer():
    from models import resnet_like, seeded

    from camfast.methods import registry

    spec = registry.get("XGrad-CAM")
    assert spec.name == "x-grad-cam" and spec.function is camfast.x_grad_cam and spec.compat == "XGradCAM"
    model = seeded(resnet_like)
    res = camfast.x_grad_cam(model, torch.randn(2, 3, 32, 32), target=[0, 1], return_layers=True)
    assert list(res.layer_maps) == [camfast.find_layers(model)[-1]] and res.cam.shape == (2, 32, 32)
