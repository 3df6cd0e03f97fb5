"""camfast.compat against the libraries it stands in for: pytorch-grad-cam 1.5.7's GradCAM,
HiResCAM, LayerCAM, XGradCAM, GradCAMPlusPlus, EigenCAM, EigenGradCAM, ScoreCAM (every compat
class made from the registry; final maps, max |diff| <= 1e-5, Score-CAM 1e-4; with and
without aug_smooth and eigen_smooth) and torchcam 0.5.0's GradCAM and LayerCAM (per-layer
maps); plus the context manager, the model's state and the errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import peers
import pytest
import torch
from models import mobilenet_like, plain_cnn, resnet_like, seeded, vgg_like
from pgc_parity import ATOL, METHODS, SMOOTHING, assert_matches_grad_cam
from torch import nn

import camfast
from camfast import compat

FACTORIES = {"vgg": vgg_like, "resnet": resnet_like, "mobilenet": mobilenet_like, "plain": plain_cnn}


def images(b=2, h=40, w=56, seed=0):
    # Not square, so that a swapped (H, W) anywhere shows.
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def modules(model, names):
    named = dict(model.named_modules())
    return [named[n] for n in names]


# ------------------------------------------------------------------------------ pytorch-grad-cam
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", list(FACTORIES))
def test_small_cnns_one_and_all_layers(arch, method):
    model = seeded(FACTORIES[arch])
    x = images()
    names = camfast.find_layers(model)
    assert_matches_grad_cam(method, model, modules(model, names[-1:]), x)
    assert_matches_grad_cam(method, model, modules(model, names), x)


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return peers.torchvision().models.resnet18(num_classes=10).eval()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("smooth", list(SMOOTHING))
def test_small_cnns_aug_and_eigen_smooth(method, smooth):
    model = seeded(resnet_like)
    x = images()
    names = camfast.find_layers(model)
    assert_matches_grad_cam(method, model, modules(model, names[-1:]), x, **SMOOTHING[smooth])
    assert_matches_grad_cam(method, model, modules(model, names), x, **SMOOTHING[smooth])
    targets = [compat.ClassifierOutputTarget(c) for c in (3, 1)]
    assert_matches_grad_cam(method, model, modules(model, names[-2:]), x, targets, **SMOOTHING[smooth])


@pytest.mark.parametrize("method", [pytest.param(m, marks=pytest.mark.slow) if m == "ScoreCAM" else m
                                    for m in METHODS])  # Score-CAM: 512 masked forwards per image, about a minute
@pytest.mark.parametrize("smooth", ["plain", "aug+eigen"])
def test_resnet18_default_and_explicit_targets(resnet18, method, smooth):
    peers.pytorch_grad_cam()  # skips when it is not installed
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    m = resnet18
    # Score-CAM runs C masked forwards per image and layer: smaller images, the two deepest stages.
    x = images(2, 32, 40, seed=1) if method == "ScoreCAM" else images(2, 64, 80, seed=1)
    one = [m.layer4[-1]]
    several = [m.layer3[-1], m.layer4[-1]] if method == "ScoreCAM" else \
        [m.layer1[-1], m.layer2[-1], m.layer3[-1], m.layer4[-1]]
    if smooth != "plain":  # the smoothing options on one and several layers, explicit targets
        if method == "ScoreCAM":  # layer4 is 1x2 at 32x40: its projection is degenerate
            one = [m.layer3[-1]]
        targets = [ClassifierOutputTarget(c) for c in (4, 7)]
        assert_matches_grad_cam(method, m, one, x, **SMOOTHING[smooth])
        assert_matches_grad_cam(method, m, several, x, targets, **SMOOTHING[smooth])
        return
    assert_matches_grad_cam(method, m, one, x)
    assert_matches_grad_cam(method, m, several, x)
    top = m(x).argmax(1).tolist()
    other = [(c + 3) % 10 for c in top]
    got = assert_matches_grad_cam(method, m, several, x, [ClassifierOutputTarget(c) for c in other])
    # camfast's own ClassifierOutputTarget gives the same maps as pytorch-grad-cam's.
    own = getattr(compat, method)(m, several)(x, [compat.ClassifierOutputTarget(c) for c in other])
    np.testing.assert_array_equal(own, got)


def test_zoom_cam_wrapper_is_hires_cam_and_differs_from_max_fusion():
    pgc = peers.pytorch_grad_cam()
    model = seeded(resnet_like)
    x = images()
    layers = modules(model, camfast.find_layers(model))
    expected = pgc.HiResCAM(model, layers)(x, None)
    got = compat.ZoomCAM(model, layers)(x)
    assert float(np.abs(got - expected).max()) <= ATOL
    for smooth in ("aug", "eigen"):
        assert_matches_grad_cam("ZoomCAM", model, layers, x, reference="HiResCAM", **SMOOTHING[smooth])
    paper = camfast.zoom_cam(model, x, layers=layers).numpy()  # max fusion: another map
    assert float(np.abs(paper - got).max()) > 1e-2


def test_segmentation_target_on_a_dense_output():
    pgc = peers.pytorch_grad_cam()
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.Upsample(scale_factor=2),
    ).eval()
    x = images(2, 24, 32)
    mask = np.zeros((24, 32), dtype=np.float32)
    mask[4:14, 6:20] = 1
    targets = [SemanticSegmentationTarget(1, mask), SemanticSegmentationTarget(3, mask)]
    for method in METHODS:
        assert_matches_grad_cam(method, model, [model[1], model[4]], x, targets)
    with pytest.raises(ValueError, match="num_classes"):
        compat.GradCAM(model, [model[4]])(x)


def test_reshape_transform_for_tokens():
    torch.manual_seed(0)

    class Tokens(nn.Module):  # a patch embedding followed by token-wise layers, like a ViT
        def __init__(self):
            super().__init__()
            self.embed = nn.Conv2d(3, 16, 8, 8)
            self.mix = nn.Sequential(nn.Linear(16, 16), nn.GELU())
            # (No LayerNorm: on this tiny random model it leaves the first layer's map at
            # ~1e-5 with cancelling terms, which two float32 implementations, each about
            # 2e-4 from float64 there, cannot agree on to 1e-5.)
            self.block = nn.Sequential(nn.Linear(16, 16), nn.GELU())
            self.head = nn.Linear(16, 5)

        def forward(self, x):
            t = self.embed(x).flatten(2).transpose(1, 2)  # (B, N, C)
            t = self.block(self.mix(t))
            return self.head(t.mean(1))

    model = Tokens().eval()
    x = images(2, 32, 48)

    def to_grid(t):
        return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], 4, 6)

    for method in METHODS:
        assert_matches_grad_cam(method, model, [model.mix, model.block], x, reshape_transform=to_grid)


# ------------------------------------------------------------------------------ torchcam
def torchcam_normalize(m, eps=1e-8):
    m = m - m.amin(dim=(-2, -1), keepdim=True)
    return m / (m.amax(dim=(-2, -1), keepdim=True) + eps)


@pytest.mark.parametrize("arch", ["resnet", "vgg", "mobilenet"])
def test_torchcam_per_layer_maps(arch):
    methods = peers.torchcam_methods()
    model = seeded(FACTORIES[arch])
    x = images()
    names = camfast.find_layers(model)
    classes = [1, 3]
    with torch.no_grad():
        assert model(x).shape[1] > max(classes)

    with methods.LayerCAM(model, names) as extractor:
        expected = extractor(class_idx=classes, scores=model(x))
    got = camfast.layer_cam(model, x, target=classes, return_layers=True).layer_maps
    for name, exp in zip(names, expected):
        assert float(exp.amax(dim=(-2, -1)).min()) > 0.9, f"degenerate test case at {name}"
        diff = float((torchcam_normalize(got[name]) - exp).abs().max())
        assert diff <= ATOL, f"LayerCAM {name}: max |diff| {diff:.3g} against torchcam"

    for name in (names[0], names[-1]):
        with methods.GradCAM(model, name) as extractor:
            (exp,) = extractor(class_idx=classes, scores=model(x))
        got = camfast.grad_cam(model, x, target=classes, layer=name, return_layers=True).layer_maps[name]
        assert float(exp.amax(dim=(-2, -1)).min()) > 0.9, f"degenerate test case at {name}"
        diff = float((torchcam_normalize(got) - exp).abs().max())
        assert diff <= ATOL, f"GradCAM {name}: max |diff| {diff:.3g} against torchcam"


# ------------------------------------------------------------------------------ the interface
def test_context_manager_model_state_and_outputs():
    model = seeded(resnet_like).train()
    for p in model.parameters():
        p.grad = None
    x = images()
    layer = model.layer2[-1]
    with compat.LayerCAM(model, [layer]) as cam:
        assert not model.training  # the constructor calls model.eval(), as pytorch-grad-cam does
        first = cam(x)
        second = cam(input_tensor=x, targets=None)
        assert cam.outputs is not None and cam.outputs.shape == (2, 5) and not cam.outputs.requires_grad
        torch.testing.assert_close(cam.outputs, model(x).detach())
    np.testing.assert_array_equal(first, second)
    assert all(p.grad is None for p in model.parameters())
    assert not layer._forward_hooks and not layer._backward_hooks
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0
    assert "layer2.1" in repr(cam)


def test_exceptions_pass_through_the_context_manager():
    model = seeded(vgg_like)
    with pytest.raises(IndexError), compat.GradCAM(model, [model.features[-1]]):
        raise IndexError("not swallowed")


def test_names_as_layers_and_no_grad_caller():
    model = seeded(vgg_like)
    x = images()
    by_module = compat.HiResCAM(model, [model.features[3], model.features[9]])(x)
    with torch.no_grad():
        by_name = compat.HiResCAM(model, ["features.3", "features.9"])(x)
    np.testing.assert_array_equal(by_module, by_name)


def test_errors_are_clear():
    model = seeded(resnet_like)
    x = images()
    cam = compat.GradCAM(model, [model.layer2])
    with pytest.raises(TypeError, match="aug_smooth must be True or False"):
        cam(x, None, aug_smooth="yes")
    with pytest.raises(TypeError, match="eigen_smooth must be True or False"):
        cam(x, None, eigen_smooth=None)
    with pytest.raises(ValueError, match="1 entries for a batch of 2"):  # checked before the 6 copies
        cam(x, [compat.ClassifierOutputTarget(3)], aug_smooth=True)
    with pytest.raises(TypeError, match=r"list of layers.*\[model\.layer4\[-1\]\]"):
        compat.GradCAM(model, model.layer2)
    with pytest.raises(ValueError, match="no module named"):
        compat.GradCAM(model, ["layer9"])
    with pytest.raises(ValueError, match="not part of the model"):
        compat.GradCAM(model, [nn.ReLU()])
    with pytest.raises(ValueError, match="must not be empty"):
        compat.GradCAM(model, [])
    with pytest.raises(TypeError, match=r"ClassifierOutputTarget\(3\)"):
        cam(x, [3, 4])
    with pytest.raises(TypeError, match="one callable per image"):
        cam(x, compat.ClassifierOutputTarget(3))
    with pytest.raises(ValueError, match="1 entries for a batch of 2"):
        cam(x, [compat.ClassifierOutputTarget(3)])
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        cam(x[0])

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = seeded(vgg_like)

        def forward(self, x):
            return self.net(x), None

    pair = Pair()
    with pytest.raises(TypeError, match="returned tuple"):
        compat.GradCAM(pair, [pair.net.features[-1]])(x)
    assert not pair.net.features[-1]._forward_hooks


def test_compat_imports_no_peer_library():
    code = (
        "import sys, camfast.compat; from camfast.compat import GradCAM; "
        "bad = [m for m in ('cv2', 'torchvision', 'pytorch_grad_cam', 'torchcam') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_aug_smooth_is_the_mean_over_flips_and_factors():
    """Independently of pytorch-grad-cam: the mean of the six transformed calls, flipped back."""
    model = seeded(resnet_like)
    x = images()
    layers = modules(model, camfast.find_layers(model)[-2:])
    cam = compat.GradCAMPlusPlus(model, layers)
    want = np.mean([cam(x.flip(-1) * f)[..., ::-1] if flip else cam(x * f)
                    for flip in (False, True) for f in (0.9, 1.0, 1.1)], axis=0)
    got = cam(x, aug_smooth=True)
    assert cam.outputs.shape == (2, 5)  # the last transform's, as in pytorch-grad-cam
    torch.testing.assert_close(cam.outputs, model(x.flip(-1) * 1.1).detach(), atol=1e-5, rtol=1e-5)
    assert float(np.abs(got - want).max()) <= ATOL
    assert float(np.abs(got - cam(x)).max()) > 1e-3  # the smoothing changed the map


def test_eigen_smooth_projects_the_channel_terms():
    from camfast.methods.eigencam import eigen_projection

    model = seeded(resnet_like)
    x = images()
    layer = dict(model.named_modules())[camfast.find_layers(model)[-1]]
    got = compat.GradCAM(model, [layer])(x, eigen_smooth=True)
    acts, grads = [], []

    def keep(module, inputs, output):
        acts.append(output)
        output.register_hook(grads.append)

    h = layer.register_forward_hook(keep)
    out = model(x)
    out.gather(1, out.argmax(1, keepdim=True)).sum().backward()
    h.remove()
    a, g = acts[0].detach(), grads[0].detach()
    m = eigen_projection(g.mean((2, 3), keepdim=True) * a).clamp_min(0)
    m = m - m.amin((1, 2), keepdim=True)
    m = m / (m.amax((1, 2), keepdim=True) + 1e-7)
    m = torch.nn.functional.interpolate(m[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    m = m - m.amin((1, 2), keepdim=True)
    want = (m / (m.amax((1, 2), keepdim=True) + 1e-7)).numpy()
    assert float(np.abs(got - want).max()) <= ATOL
    model.zero_grad(set_to_none=True)


def test_eigen_smooth_needs_channel_terms():
    from camfast.methods import registry
    from camfast.methods.engine import WeightingRule

    rule = WeightingRule(lambda a, g: (g * a).sum(1).clamp_min(0))  # no channel_terms

    @registry.register("test-terms-cam", display="Terms-CAM", kind="gradient", summary="test only", rule=rule,
                       compat="TermsCAM")
    def terms_cam(model, x, target=None, layer=None, output_size=None, *, return_layers=False):
        raise NotImplementedError

    try:
        model = seeded(resnet_like)
        cam = compat.TermsCAM(model, [model.layer2])
        assert cam(images()).shape == (2, 40, 56)
        with pytest.raises(ValueError, match="eigen_smooth=True: TermsCAM's weighting rule has no channel_terms"):
            cam(images(), eigen_smooth=True)
    finally:
        registry.unregister("test-terms-cam")
        compat.__dict__.pop("TermsCAM", None)
        camfast.__dict__.pop("terms_cam", None)


def test_score_cam_reads_a_batch_size_attribute():
    """pytorch-grad-cam's tests set ``cam.batch_size = 4`` on a ScoreCAM: the same maps, and the
    masked images go through the model four at a time."""
    model = seeded(vgg_like)
    x = images(1, 16, 16)
    cam = compat.ScoreCAM(model, [model.features[-1]])
    default = cam(x)
    cam.batch_size = 4
    sizes = []
    h = model.register_forward_pre_hook(lambda m, i: sizes.append(i[0].shape[0]))
    four = cam(x)
    h.remove()
    assert float(np.abs(default - four).max()) <= 1e-5
    assert max(sizes) == 4  # masked images four at a time (the image itself is the only other batch of 1)
