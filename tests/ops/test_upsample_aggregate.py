"""camfast::upsample_aggregate: what the op contract (test_op_contract.py) does not cover:
Zoom-CAM-sized shapes, constant maps, ties (max and min/max), NaN, hand-computed values,
determinism, partial gradients, the compiled module's raw-argument checks, the tolerance
table's power to catch a wrong interpolation, the most layers in one call.

Gradients are compared with autograd of the reference forward; with reduce="max" the maps
are drawn without near-ties (``op_specs.ua_maps``).
"""

from __future__ import annotations

import pytest
import torch
from helpers import TOLERANCES, assert_close
from ops.op_specs import UPSAMPLE_AGGREGATE, check_against_reference
from ops.op_specs import ua_maps as make_maps

from camfast import _ext
from camfast.ops import upsample_aggregate
from camfast.ops.reference import upsample_aggregate as ref


def check(maps, size, reduce="max", normalize="minmax", weights=None, dtype=None, grads=True):
    return check_against_reference(UPSAMPLE_AGGREGATE, (maps, list(size), reduce, normalize, weights), dtype,
                                   grads=grads)


def expected_with_grads(maps, size, reduce, normalize, weights, grad_out):
    """Reference forward, and the gradients autograd derives from it (not ref.backward)."""
    leaves = [m.detach().clone().requires_grad_(True) for m in maps]
    out = ref.forward(leaves, size, reduce, normalize, weights)
    grads = torch.autograd.grad(out, leaves, grad_out)
    return out.detach(), grads


@pytest.mark.parametrize("reduce", ["max", "mean"])
def test_large_shape(backend, device, reduce):
    """Zoom-CAM sized: 4 layers up to 56x56 -> 224x224 (several Triton blocks and CPU bands).
    float32 forward; gradients in float64, where no near-tie of two layers is possible."""
    shapes, size = [(7, 7), (14, 14), (28, 28), (56, 56)], (224, 224)
    maps = make_maps(shapes, 2, torch.float32, device, seed=6)
    check(maps, size, reduce, "minmax", None, torch.float32, grads=False)
    maps = make_maps(shapes, 2, torch.float64, device, seed=6, size=size, reduce=reduce)
    check(maps, size, reduce, "minmax", None, torch.float64)


# ---------------------------------------------------------------- degenerate values and ties
def test_constant_maps_give_zeros_and_no_nan(backend, device, dtype):
    B = 2
    const = torch.full((B, 4, 5), 3.25, dtype=dtype, device=device)
    one_px = torch.randn(B, 1, 1, dtype=torch.float64).to(device=device, dtype=dtype)
    maps = [const.clone().requires_grad_(True), one_px.clone().requires_grad_(True)]
    for reduce in ("max", "mean", "sum"):
        out = upsample_aggregate(maps, (9, 7), reduce)
        assert torch.equal(out, torch.zeros_like(out)), reduce
        grads = torch.autograd.grad(out, maps, torch.randn_like(out))
        for g in grads:
            assert torch.equal(g, torch.zeros_like(g)), reduce
    # one constant sample next to a varying one: only the constant sample is zero
    mixed = make_maps([(4, 5)], B, dtype, device, seed=7)[0]
    mixed[1] = -1.5
    out = upsample_aggregate([mixed], (6, 6), "max")
    assert not torch.isnan(out).any()
    assert torch.equal(out[1], torch.zeros_like(out[1])) and out[0].max() > 0.9


def test_max_ties_go_to_the_first_layer(backend, device):
    """Identical layers tie everywhere: the first one in list order gets the whole gradient,
    in the kernels, the explicit reference backward and autograd of the reference forward."""
    m, other = make_maps([(5, 4), (3, 3)], 2, torch.float64, device, seed=8, size=(7, 9))
    maps = [x.clone().requires_grad_(True) for x in (m, other, m)]
    out = upsample_aggregate(maps, (7, 9), "max")
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, maps, grad_out)
    assert grads[0].abs().sum() > 0 and grads[1].abs().sum() > 0
    assert torch.equal(grads[2], torch.zeros_like(grads[2]))
    _, exp = expected_with_grads(maps, (7, 9), "max", "minmax", None, grad_out)
    explicit = ref.backward(grad_out, [x.detach() for x in maps], "max", "minmax", None)
    for g, e, x in zip(grads, exp, explicit):
        assert_close(g, e, torch.float64, "ties vs autograd")
        assert_close(g, x, torch.float64, "ties vs reference backward")


def _near_tie_maps(dtype, device):
    """A map, the same map moved by -2..2 ulps at each pixel, and a smaller third layer: the
    first two interpolated to (40, 44) differ by a few ulps at most, so the winner of
    reduce="max" there depends on every rounding."""
    gen = torch.Generator().manual_seed(21)
    m = torch.randn((2, 7, 9), generator=gen, dtype=torch.float64).to(dtype)
    ulp = (torch.nextafter(m, torch.full_like(m, float("inf"))) - m).double()
    moved = (m.double() + torch.randint(-2, 3, m.shape, generator=gen) * ulp).to(dtype)
    third = (0.5 * torch.randn((2, 5, 4), generator=gen, dtype=torch.float64)).to(dtype)
    return [x.to(device) for x in (m, moved, third)]


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_max_winner_is_bit_identical_across_backends(backend, device, dtype):
    """The tie rule (issue 13 item 19): every backend computes the same interpolated values to
    the last bit (``ref.upsample``'s operations in its order, no fused multiply-add), so the
    output and the layer each pixel's gradient goes to are those of the reference exactly,
    near-ties included (the reference used to call F.interpolate, whose CPU arithmetic for
    outputs with H + W <= 128 differs in the last bit)."""
    maps = [m.requires_grad_(True) for m in _near_tie_maps(dtype, device)]
    size = (40, 44)
    ups = torch.stack([ref.upsample(m.detach().float(), size) for m in maps])
    if dtype == torch.float32:
        gap = (ups[0] - ups[1]).abs()
        assert ((gap > 0) & (gap < 1e-6)).sum() > 100, "the maps should meet many near-ties"
    out = upsample_aggregate(maps, size, "max", "none")
    assert torch.equal(out, ref.forward([m.detach() for m in maps], size, "max", "none")), "forward"
    grads = torch.autograd.grad(out, maps, torch.ones_like(out))
    winner = ups.max(dim=0).indices
    for i, g in enumerate(grads):
        # the transpose of the interpolation of the winner mask: a pixel given to another layer
        # moves a weight product (of order 0.1) from one layer's gradient to another's
        mask = (winner == i).to(torch.float64)[:, None]
        h, w = maps[i].shape[1:]
        want = torch.ops.aten.upsample_bilinear2d_backward(mask, list(size), [2, 1, h, w], False, None, None)[:, 0]
        atol = 2e-2 if dtype == torch.float16 else 1e-5
        torch.testing.assert_close(g.double().cpu(), want.cpu(), atol=atol, rtol=1e-3,
                                   msg=lambda msg, i=i: f"layer {i} gradient: {msg}")


def test_reference_interpolation_is_f_interpolate_up_to_rounding():
    """``ref.upsample`` is torch's bilinear interpolation (the same taps and weights), written
    out: it agrees with F.interpolate to a few ulps (float32 and float64) on every CPU path."""
    gen = torch.Generator().manual_seed(22)
    for dtype, tol in ((torch.float32, 4e-7), (torch.float64, 1e-15)):
        for src, size in (((5, 7), (40, 44)), ((7, 5), (224, 200)), ((30, 31), (9, 13)), ((3, 4), (3, 11))):
            n = torch.randn((2, *src), generator=gen, dtype=dtype)
            want = torch.nn.functional.interpolate(n[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
            err = (ref.upsample(n, size) - want).abs().max().item()
            assert err <= tol * n.abs().max().item(), f"{dtype} {src} -> {size}: {err:.3g}"


def test_min_max_ties_share_the_gradient(backend, device):
    """Tied minima and maxima share dL/dmin and dL/dmax evenly, as autograd of amin/amax."""
    m = torch.tensor([[0.0, 2.0, 1.0], [2.0, 0.5, 0.0]], dtype=torch.float64, device=device)
    maps = [torch.stack([m, m.flip(0) * 3])]
    for reduce in ("max", "sum"):
        check(maps, (5, 7), reduce, "minmax", None, torch.float64)


def test_nan_propagates(backend, device):
    maps = make_maps([(4, 4), (6, 3)], 2, torch.float32, device, seed=9)
    maps[1][0, 2, 1] = float("nan")
    for reduce in ("max", "mean", "sum"):
        out = upsample_aggregate(maps, (5, 5), reduce)
        assert torch.isnan(out[0]).all() and not torch.isnan(out[1]).any(), reduce
        assert torch.equal(torch.isnan(out), torch.isnan(ref.forward(maps, (5, 5), reduce))), reduce


def test_hand_computed_values(backend, device):
    # [0, 2] -> 4 pixels: sources -0.25 (clamped to 0), 0.25, 0.75, 1.25 (last pixel repeats)
    m = torch.tensor([[[0.0, 2.0]]], device=device)
    n1 = 2.0 / (2.0 + 1e-7)
    out = upsample_aggregate([m], (1, 4))
    torch.testing.assert_close(out.cpu(), torch.tensor([[[0.0, 0.25 * n1, 0.75 * n1, n1]]]), atol=1e-7, rtol=0)
    # downsampling 4 -> 2 samples at 0.5 and 2.5: the means of neighbours
    m = torch.tensor([[[1.0, 3.0, 5.0, 7.0]]], device=device)
    out = upsample_aggregate([m], (1, 2), normalize="none")
    assert out.flatten().tolist() == [2.0, 6.0]
    # max / mean / weighted sum of two 1x1 maps under normalize="none" (constant upsampling)
    a = torch.tensor([[[2.0]]], device=device)
    b = torch.tensor([[[-4.0]]], device=device)
    assert upsample_aggregate([a, b], (2, 2), "max", "none").flatten().tolist() == [2.0] * 4
    assert upsample_aggregate([a, b], (2, 2), "mean", "none").flatten().tolist() == [-1.0] * 4
    assert upsample_aggregate([a, b], (1, 1), "sum", "none", [0.5, 0.25]).item() == 0.0
    assert upsample_aggregate((a, b), torch.Size([1, 1]), "sum", "none", torch.tensor([2.0, 1.0])).item() == 0.0


def test_deterministic(backend, device):
    maps = make_maps([(7, 7), (28, 28)], 2, torch.float32, device)
    for reduce in ("max", "sum"):
        assert torch.equal(upsample_aggregate(maps, (56, 56), reduce), upsample_aggregate(maps, (56, 56), reduce))


def test_gradient_only_where_required(backend, device):
    maps = make_maps([(3, 3), (5, 5)], 1, torch.float32, device)
    maps[0].requires_grad_(True)
    out = upsample_aggregate(maps, (6, 6), "mean")
    assert out.requires_grad
    out.sum().backward()
    assert maps[0].grad is not None and maps[1].grad is None
    with torch.no_grad():
        assert not upsample_aggregate(maps, (6, 6)).requires_grad


# ---------------------------------------------------------------- the compiled module
requires_native = pytest.mark.skipif(_ext.native is None, reason="camfast._C not loaded")


@requires_native
@pytest.mark.parametrize(
    "change, match",
    [
        ({"sizes": (2, 0, 4)}, "every size must be positive"),
        ({"maps": [0]}, r"null data pointer for maps\[0\]"),
        ({"map_sizes": [(0, 4)]}, r"every size must be positive in maps\[0\]"),
        ({"map_strides": [(-1, 4, 1)]}, r"negative stride in maps\[0\]"),
        ({"weights": [1.0, 2.0]}, "one entry per layer"),
        ({"maps": [], "map_sizes": [], "map_strides": [], "weights": []}, "between 1 and 64 layers"),
        ({"out": 0}, "null data pointer for out"),
        ({"dtype": 9}, "unknown dtype code"),
        ({"reduce": 3}, "unknown reduce code"),
        ({"normalize": 2}, "unknown normalize code"),
        ({"device": 4}, "device must be 0"),
    ],
)
def test_native_module_rejects_bad_raw_arguments(change, match):
    m = torch.randn(2, 3, 4)
    out = torch.empty(2, 5, 6)
    ws = torch.empty(8)
    kwargs = dict(device=0, device_index=0, dtype=0, reduce=0, normalize=0, sizes=(2, 5, 6), maps=[m.data_ptr()],
                  map_sizes=[(3, 4)], map_strides=[m.stride()], weights=[1.0], out=out.data_ptr(),
                  workspace=ws.data_ptr(), stream=0)
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        _ext.native.upsample_aggregate_forward(**kwargs)


def test_tolerance_table_catches_a_wrong_interpolation():
    """align_corners=True instead of False, or a dropped layer, fails the float32 comparison."""
    maps = make_maps([(7, 5), (14, 9)], 2, torch.float32, "cpu")
    exp = ref.forward(maps, (37, 29))
    wrong = torch.stack([
        torch.nn.functional.interpolate(ref.normalize_map(m, "minmax")[:, None], size=(37, 29), mode="bilinear",
                                        align_corners=True)[:, 0] for m in maps
    ]).amax(0)
    with pytest.raises(AssertionError):
        assert_close(wrong, exp, torch.float32)
    with pytest.raises(AssertionError):
        assert_close(ref.forward(maps[:1], (37, 29)), exp, torch.float32)
    atol, rtol = TOLERANCES[torch.float32]
    assert atol <= 1e-5 and rtol <= 1e-5


def test_most_layers(backend, device):
    """UA_MAX_LAYERS (64) layers in one call, sizes cycling through up- and downsampling."""
    shapes = [(1 + i % 5, 1 + (3 * i) % 7) for i in range(64)]
    maps = make_maps(shapes, 1, torch.float64, device, seed=13, size=(4, 3))
    check(maps, (4, 3), "max", "minmax", None, torch.float64)
    check(maps, (4, 3), "sum", "none", [0.5 + i for i in range(64)], torch.float64)
