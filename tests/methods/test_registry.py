"""The method registry: one canonical name per method, any spelling resolves, every row runs
under the front ends' calling convention, and every fused kernel mode equals its Python rule."""

from __future__ import annotations

import pytest
import torch
from helpers import LAYOUTS, assert_close, make_layout
from models import resnet_like, seeded

import camfast
from camfast import compat
from camfast.methods import registry
from camfast.methods.engine import WeightingRule, gradient_cam

SPECS = list(registry.specs())
IDS = [s.name for s in SPECS]
FUSED = [s for s in SPECS if s.kind == "gradient" and s.rule.kernel_mode is not None and s.base is None]


def spellings(spec):
    yield spec.name
    yield spec.name.replace("-", "_")
    yield spec.name.upper()
    yield spec.display
    yield spec.display.replace("-", "").replace(" ", "")


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_every_spelling_resolves_to_one_row(spec):
    for text in spellings(spec):
        assert registry.get(text) is spec, text
    if spec.base is None:
        assert registry.get(spec.function) is spec
        assert getattr(camfast, spec.function.__name__) is spec.function
        assert spec.function.__name__ in camfast.__all__


def test_names_are_canonical_unique_and_kinds_known():
    names = registry.names()
    assert len(names) == len(set(names)) == len({registry.canonical(n) for n in names})
    assert {"zoom-cam", "grad-cam", "layer-cam", "cam", "cam-nwc", "rcam"} <= set(names)
    for spec in SPECS:
        assert spec.kind in registry.KINDS
        assert spec.name == spec.name.lower() and "_" not in spec.name
        assert spec.summary and spec.display


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match="zoom-cam"):
        registry.get("zoomcamm")
    with pytest.raises(TypeError, match="method must be a name"):
        registry.get(3)


def test_variants_fix_options_of_their_base():
    nwc = registry.get("cam-nwc")
    assert nwc.base == "cam" and nwc.function is camfast.cam and dict(nwc.options) == {"clamp_negative_weights": True}
    crf = registry.get("rcam-crf")
    assert crf.base == "rcam" and crf.options["crf"] is True and "pydensecrf" in crf.needs
    with pytest.raises(TypeError, match="no option"):
        registry.register_variant("bad-variant", "cam", display="x", summary="x", not_an_option=1)


def _runnable(spec):
    missing = spec.missing()
    if missing:
        pytest.skip(f"{spec.name} needs {missing}")


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_every_row_runs_under_the_front_end_convention(spec):
    """What the CLI, pseudo-label, the WSOL table and the benchmarks call: spec(model, x, target,
    image=..., return_layers=True) with class indices, then .cam and .targets."""
    _runnable(spec)
    model = seeded(resnet_like)
    x = torch.randn(2, 3, 48, 40, generator=torch.Generator().manual_seed(1))
    image = torch.randint(0, 256, (2, 48, 40, 3), dtype=torch.uint8).numpy()
    kwargs = {"image": image} if spec.takes_image else {}
    maps = spec(model, x, torch.tensor([1, 3]), **kwargs)
    assert maps.shape == (2, 48, 40) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert maps.max() > 0.5, "a blank result for every image: the method did not run"
    res = spec(model, x, [1, 3], return_layers=True, **kwargs) if spec.accepts("return_layers") else None
    if res is not None:
        assert torch.equal(res.cam, maps)
        assert res.targets.tolist() == [1, 3]
    sized = spec(model, x, 2, output_size=(17, 9), **kwargs)
    assert sized.shape == (2, 17, 9)


@pytest.mark.parametrize("spec", FUSED, ids=[s.name for s in FUSED])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_kernel_mode_equals_the_python_rule(spec, layout, dtype, backend):
    """The kernel a rule is routed to computes exactly the rule's readable definition."""
    gen = torch.Generator().manual_seed(7)
    a = make_layout(torch.randn(3, 5, 9, 11, generator=gen, dtype=dtype), layout)
    g = make_layout(torch.randn(3, 5, 9, 11, generator=gen, dtype=dtype), layout)
    fused = spec.rule(a, g)
    python = spec.rule.function(a, g)
    assert_close(fused, python.to(fused.dtype), what=f"{spec.name} {spec.rule.kernel_mode} on {backend}")


@pytest.mark.parametrize("spec", FUSED, ids=[s.name for s in FUSED])
def test_method_with_python_rule_equals_method_with_fused_mode(spec):
    """A whole method gives the same maps whichever way its rule is computed."""
    model = seeded(resnet_like)
    x = torch.randn(2, 3, 40, 40, generator=torch.Generator().manual_seed(2))
    layers = camfast.find_layers(model) if spec.multi_layer else camfast.find_layers(model)[-1]
    single = not spec.multi_layer
    got = gradient_cam(model, x, None, layers, spec.rule, single=single)
    want = gradient_cam(model, x, None, layers, WeightingRule(spec.rule.function), single=single)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_a_registered_method_reaches_every_front_end():
    """A new gradient method is one decorated function: it is then a camfast attribute, a compat
    class and a registry row (the CLI and the WSOL table read the registry: tests/cli, tests/eval)."""

    def doubled_zoom(a, g):
        return 2 * (g * a).sum(1).clamp_min(0)

    @registry.register("test-doubled-cam", display="Doubled-CAM", kind="gradient", summary="test only",
                       rule=WeightingRule(doubled_zoom), compat="DoubledCAM")
    def doubled_cam(model, x, target=None, layer=None, output_size=None, *, return_layers=False):
        return gradient_cam(model, x, target, layer if layer is not None else camfast.find_layers(model)[-1],
                            WeightingRule(doubled_zoom), output_size=output_size, return_layers=return_layers)

    try:
        assert registry.get("Doubled-CAM").function is doubled_cam
        assert camfast.doubled_cam is doubled_cam
        model = seeded(resnet_like)
        x = torch.randn(1, 3, 32, 32)
        layer = dict(model.named_modules())[camfast.find_layers(model)[-1]]
        maps = compat.DoubledCAM(model, [layer])(x)
        with compat.HiResCAM(model, [layer]) as hires:  # 2x the same map: equal after normalisation
            assert abs(maps - hires(x)).max() < 1e-5
    finally:
        registry.unregister("test-doubled-cam")
        camfast.__dict__.pop("doubled_cam", None)
        compat.__dict__.pop("DoubledCAM", None)
    with pytest.raises(ValueError):
        registry.get("test-doubled-cam")
