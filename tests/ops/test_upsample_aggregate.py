"""camfast::upsample_aggregate on every backend against the pure-PyTorch reference.

Gradients are compared with autograd of the reference forward (not with its explicit
backward, which is tested separately). With reduce="max" the gradient of an output pixel
goes to one layer, so inputs whose two best layers are nearly tied somewhere are redrawn
(``make_maps``): a one-ulp difference between a kernel and torch there would send the
gradient elsewhere, a legitimate difference no tolerance should hide. Exact ties (both
layers exactly 0 at a sampled minimum) are kept: every backend gives them to the first.
"""

from __future__ import annotations

import pytest
import torch
from helpers import TOLERANCES, assert_close, make_layout
from hypothesis import given, settings
from hypothesis import strategies as st

import camfast
from camfast import _ext
from camfast.ops import upsample_aggregate, use_backend
from camfast.ops.reference import upsample_aggregate as ref

# (id, batch, layer sizes, output size)
CASES = [
    ("up-mixed", 2, [(7, 5), (14, 9), (3, 3)], (37, 29)),
    ("down", 2, [(40, 33), (9, 61)], (37, 29)),  # downsampling (no antialias), and W-only down
    ("one-by-one", 1, [(1, 1), (4, 4), (1, 6)], (5, 3)),
    ("single-same-size", 3, [(6, 8)], (6, 8)),
    ("to-one-pixel", 2, [(5, 4), (3, 3)], (1, 1)),
]
OPTIONS = [  # (reduce, normalize, weights)
    (reduce, normalize, weights)
    for normalize in ("minmax", "none")
    for reduce, weights in (("max", None), ("mean", None), ("sum", None), ("sum", (0.5, -2.0, 3.0)))
]


def _opt_id(o):
    return f"{o[0]}-{o[1]}" + ("-weighted" if o[2] else "")


def _near_tie(maps, size, normalize, dtype) -> bool:
    """Whether the two best layers are within a rounding error at some pixel (but not equal)."""
    if len(maps) < 2:
        return False
    ups = torch.stack([ref.upsample(ref.normalize_map(m.double().cpu(), normalize), size) for m in maps])
    top = ups.topk(2, dim=0).values
    gap = top[0] - top[1]
    return bool(((gap > 0) & (gap < (1e-12 if dtype == torch.float64 else 1e-5))).any())


def make_maps(shapes, B, dtype, device, seed=0, size=None, reduce="max", normalize="minmax"):
    """``B``-sample maps N(0, 1) of the given sizes, redrawn while reduce=max would hit a near-tie."""
    for attempt in range(20):
        gen = torch.Generator().manual_seed(seed + 1000 * attempt)
        maps = [torch.randn((B, *s), generator=gen, dtype=torch.float64).to(device=device, dtype=dtype) for s in shapes]
        if reduce != "max" or size is None or not _near_tie(maps, size, normalize, dtype):
            return maps
    raise AssertionError("no tie-free draw found")  # pragma: no cover


def expected_with_grads(maps, size, reduce, normalize, weights, grad_out):
    """Reference forward, and the gradients autograd derives from it (not ref.backward)."""
    leaves = [m.detach().clone().requires_grad_(True) for m in maps]
    out = ref.forward(leaves, size, reduce, normalize, weights)
    grads = torch.autograd.grad(out, leaves, grad_out)
    return out.detach(), grads


def check_against_reference(maps, size, reduce="max", normalize="minmax", weights=None, dtype=None, seed=1,
                            grads=True):
    dtype = dtype or maps[0].dtype
    maps = [m.detach().requires_grad_(grads) for m in maps]
    out = upsample_aggregate(maps, size, reduce, normalize, weights)
    assert out.shape == (maps[0].shape[0], *size) and out.dtype == maps[0].dtype and out.is_contiguous()
    gen = torch.Generator().manual_seed(seed)
    grad_out = torch.randn(out.shape, generator=gen).to(device=out.device, dtype=out.dtype)
    exp_out, exp_grads = expected_with_grads(maps, size, reduce, normalize, weights, grad_out)
    what = f"{reduce}/{normalize}{'/weighted' if weights else ''}"
    assert_close(out, exp_out, dtype, f"{what} forward")
    if not grads:
        return out, None
    got = torch.autograd.grad(out, maps, grad_out)
    for i, (g, e, m) in enumerate(zip(got, exp_grads, maps)):
        assert g.shape == m.shape and g.dtype == m.dtype
        assert_close(g, e, dtype, f"{what} d/dmaps[{i}]")
    return out, got


# ---------------------------------------------------------------- kernels against the reference
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_matches_reference(backend, device, dtype, case):
    _, B, shapes, size = case
    maps = make_maps(shapes, B, dtype, device, size=size)
    check_against_reference(maps, size, "max", "minmax", dtype=dtype)


@pytest.mark.parametrize("option", OPTIONS, ids=_opt_id)
def test_every_option(backend, device, option):
    reduce, normalize, weights = option
    for dtype in (torch.float32, torch.float64):
        maps = make_maps([(7, 5), (14, 9), (3, 3)], 2, dtype, device, seed=2, size=(23, 19),
                         reduce=reduce, normalize=normalize)
        check_against_reference(maps, (23, 19), reduce, normalize, weights, dtype)


@pytest.mark.parametrize("reduce", ["max", "mean"])
def test_half_precision_options(backend, device, reduce):
    for dtype in (torch.float16, torch.bfloat16):
        maps = make_maps([(4, 6), (9, 2)], 2, dtype, device, seed=4, size=(11, 13), reduce=reduce, normalize="none")
        check_against_reference(maps, (11, 13), reduce, "none", None, dtype)
    maps = make_maps([(4, 6), (9, 2)], 2, torch.bfloat16, device, seed=5)
    check_against_reference(maps, (11, 13), "sum", "minmax", (0.25, 4.0), torch.bfloat16)


@pytest.mark.parametrize("layout", ["strided", "transposed", "expanded", "mixed"])
def test_non_contiguous_maps(backend, device, layout):
    maps = make_maps([(7, 5), (14, 9), (3, 3)], 2, torch.float32, device, seed=3, size=(17, 15))

    def lay(m, kind):
        if kind == "expanded":  # stride 0 along the batch: one map shared by every sample
            return m[:1].expand_as(m)
        return make_layout(m.unsqueeze(1), kind).squeeze(1)

    kinds = {"mixed": ["strided", "transposed", "contiguous"]}.get(layout, [layout] * 3)
    maps = [lay(m, k) for m, k in zip(maps, kinds)]
    if layout != "expanded":
        assert not all(m.is_contiguous() for m in maps)
    check_against_reference(maps, (17, 15), "max", "minmax", None, torch.float32)
    check_against_reference(maps, (17, 15), "sum", "minmax", (1.0, 2.0, -1.0), torch.float32)


@pytest.mark.parametrize("reduce", ["max", "mean"])
def test_large_shape(backend, device, reduce):
    """Zoom-CAM sized: 4 layers up to 56x56 -> 224x224 (several Triton blocks and CPU bands).
    float32 forward; gradients in float64, where no near-tie of two layers is possible."""
    shapes, size = [(7, 7), (14, 14), (28, 28), (56, 56)], (224, 224)
    maps = make_maps(shapes, 2, torch.float32, device, seed=6)
    check_against_reference(maps, size, reduce, "minmax", None, torch.float32, grads=False)
    maps = make_maps(shapes, 2, torch.float64, device, seed=6, size=size, reduce=reduce)
    check_against_reference(maps, size, reduce, "minmax", None, torch.float64)


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


def test_min_max_ties_share_the_gradient(backend, device):
    """Tied minima and maxima share dL/dmin and dL/dmax evenly, as autograd of amin/amax."""
    m = torch.tensor([[0.0, 2.0, 1.0], [2.0, 0.5, 0.0]], dtype=torch.float64, device=device)
    maps = [torch.stack([m, m.flip(0) * 3])]
    for reduce in ("max", "sum"):
        check_against_reference(maps, (5, 7), reduce, "minmax", None, torch.float64)


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


# ---------------------------------------------------------------- autograd and torch.library
@pytest.mark.parametrize("option", OPTIONS, ids=_opt_id)
def test_gradcheck_float64(backend, device, option):
    reduce, normalize, weights = option
    maps = make_maps([(3, 4), (2, 2), (5, 3)], 2, torch.float64, device, seed=11, size=(5, 6),
                     reduce=reduce, normalize=normalize)
    maps = [m.requires_grad_(True) for m in maps]
    # fast_mode (random projections of the Jacobian) for the slow Triton interpreter
    fast = backend == "triton" and device.type == "cpu"
    assert torch.autograd.gradcheck(
        lambda *ms: upsample_aggregate(ms, (5, 6), reduce, normalize, weights), maps, eps=1e-6, atol=1e-7,
        fast_mode=fast,
    )


def test_reference_backward_matches_autograd(device, dtype):
    """The explicit reference backward (the spec of every kernel's backward) against autograd."""
    for reduce, normalize, weights in OPTIONS:
        maps = make_maps([(4, 3), (2, 5), (6, 6)], 2, dtype, device, seed=5, size=(7, 5),
                         reduce=reduce, normalize=normalize)
        out = ref.forward(maps, (7, 5), reduce, normalize, weights)
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(2)).to(out)
        _, exp = expected_with_grads(maps, (7, 5), reduce, normalize, weights, grad_out)
        got = ref.backward(grad_out, maps, reduce, normalize, weights)
        for i, (g, e) in enumerate(zip(got, exp)):
            assert_close(g, e, dtype, f"{reduce}/{normalize} reference d/dmaps[{i}]")


def test_opcheck(backend, device):
    maps = make_maps([(3, 4), (5, 2)], 2, torch.float32, device)
    strided = make_layout(maps[1].unsqueeze(1), "strided").squeeze(1)
    samples = [
        ([m.clone().requires_grad_(True) for m in maps], [6, 5], "max", "minmax", None),
        ([maps[0].clone().requires_grad_(True), strided.requires_grad_(True)], [2, 3], "sum", "none", [2.0, -1.0]),
        ([maps[0].clone()], [4, 4], "mean", "minmax", None),
    ]
    for args in samples:
        torch.library.opcheck(torch.ops.camfast.upsample_aggregate.default, args)
    out = upsample_aggregate(maps, (6, 5))
    torch.library.opcheck(
        torch.ops.camfast.upsample_aggregate_backward.default, (torch.randn_like(out), maps, "max", "minmax", None)
    )


@pytest.mark.slow
def test_torch_compile_fullgraph_matches_eager(backend, device):
    """The op traces into a full graph (fake kernel) and gives eager's values and gradients."""
    if backend == "triton" and device.type == "cpu":
        pytest.skip("inductor on CPU with the Triton interpreter adds nothing over the native run")

    def loss_fn(a, b):
        m = upsample_aggregate([a.relu(), b * 2.0], (13, 11), "max") + upsample_aggregate([a], (13, 11), "mean")
        return m.square().mean(), m

    compiled = torch.compile(loss_fn, fullgraph=True)
    a, b = make_maps([(4, 5), (7, 3)], 2, torch.float32, device, seed=12)
    results = []
    for fn in (loss_fn, compiled):
        x = a.clone().requires_grad_(True)
        y = b.clone().requires_grad_(True)
        loss, m = fn(x, y)
        loss.backward()
        results.append((loss.detach(), m.detach(), x.grad, y.grad))
    for eager, comp, what in zip(results[0], results[1], ("loss", "map", "d/da", "d/db")):
        assert_close(comp, eager, torch.float32, f"compiled {what}")


# ---------------------------------------------------------------- bad input
def _good(B=2, dtype=torch.float32):
    return [torch.randn(B, 3, 4, dtype=dtype), torch.randn(B, 5, 2, dtype=dtype)]


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: ([], (4, 4)), ValueError, "maps must not be empty"),
        (lambda: (torch.randn(2, 3, 4), (4, 4)), TypeError, "maps must be a list or tuple of tensors"),
        (lambda: ([_good()[0], "x"], (4, 4)), TypeError, r"maps\[1\] must be a torch.Tensor"),
        (lambda: ([torch.randn(2, 1, 3, 4)], (4, 4)), ValueError, r"maps\[0\] must have 3 dimensions \[B, h, w\]"),
        (lambda: ([_good()[0], torch.randn(3, 4)], (4, 4)), ValueError, r"maps\[1\] must have 3 dimensions"),
        (lambda: ([_good()[0], torch.randn(3, 5, 2)], (4, 4)), ValueError, r"maps\[1\] has batch size 3 but maps\[0\] has 2"),
        (lambda: ([_good()[0], _good()[1].double()], (4, 4)), TypeError, r"maps\[1\] has dtype torch.float64"),
        (lambda: ([_good()[0], torch.randn(2, 5, 2, device="meta")], (4, 4)), ValueError, r"maps\[1\] is on meta"),
        (lambda: ([_good()[0].int()], (4, 4)), TypeError, r"maps\[0\] must have a floating dtype"),
        (lambda: ([_good()[0], _good()[1].long()], (4, 4)), TypeError, r"maps\[1\] must have a floating dtype"),
        (lambda: ([torch.randn(2, 0, 4)], (4, 4)), ValueError, r"maps\[0\] must not be empty"),
        (lambda: ([torch.randn(0, 3, 4)], (4, 4)), ValueError, r"maps\[0\] must not be empty"),
        (lambda: ([torch.randn(2, 2, 2)] * 65, (4, 4)), ValueError, "maps has 65 entries; at most 64"),
        (lambda: (_good(), (4, 0)), ValueError, "size must be a pair of positive ints"),
        (lambda: (_good(), (4, -2)), ValueError, "size must be a pair of positive ints"),
        (lambda: (_good(), (4,)), ValueError, "size must be a pair of positive ints"),
        (lambda: (_good(), (4, 4, 4)), ValueError, "size must be a pair of positive ints"),
        (lambda: (_good(), (4.0, 4)), ValueError, "size must be a pair of positive ints"),
        (lambda: (_good(), 16), ValueError, "size must be a pair of positive ints"),
        (lambda: (_good(), (4, 4), "min"), ValueError, "reduce must be one of 'max', 'mean', 'sum'"),
        (lambda: (_good(), (4, 4), "max", "zscore"), ValueError, "normalize must be one of 'minmax', 'none'"),
        (lambda: (_good(), (4, 4), "sum", "minmax", [1.0]), ValueError, "weights has 1 entries but maps has 2"),
        (lambda: (_good(), (4, 4), "sum", "minmax", torch.ones(3)), ValueError, "weights has 3 entries"),
        (lambda: (_good(), (4, 4), "max", "minmax", [1.0, 2.0]), ValueError, "weights are only used with reduce='sum'"),
        (lambda: (_good(), (4, 4), "mean", "minmax", [1.0, 2.0]), ValueError, "weights are only used with reduce='sum'"),
        (lambda: (_good(), (4, 4), "sum", "minmax", ["a", "b"]), TypeError, "weights must be a sequence of floats"),
        (lambda: (_good(), (4, 4), "sum", "minmax", torch.ones(2, 1)), ValueError, "weights must be a sequence of floats or a 1-D"),
        (lambda: (_good(), (4, 4), "sum", "minmax", [1.0, float("nan")]), ValueError, "weights must be finite"),
    ],
)
def test_bad_input(backend, make, exc, match):
    with pytest.raises(exc, match=match):
        upsample_aggregate(*make())


def test_direct_op_call_is_validated():
    """Calls of torch.ops.camfast.upsample_aggregate that bypass the wrapper are checked too."""
    with pytest.raises(ValueError, match=r"maps\[1\] has batch size"):
        torch.ops.camfast.upsample_aggregate([torch.randn(2, 3, 3), torch.randn(1, 3, 3)], [4, 4], "max", "minmax", None)
    with pytest.raises(ValueError, match="weights has 1 entries"):
        torch.ops.camfast.upsample_aggregate([torch.randn(2, 3, 3)] * 2, [4, 4], "sum", "none", [1.0])


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


# ---------------------------------------------------------------- property-based
_shape = st.tuples(st.integers(1, 13), st.integers(1, 13))


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 3), shapes=st.lists(_shape, min_size=1, max_size=4), size=_shape,
    option=st.sampled_from(OPTIONS), dtype=st.sampled_from([torch.float32, torch.float64]),
    transposed=st.booleans(), seed=st.integers(0, 2**16),
)
def test_random_shapes_native(B, shapes, size, option, dtype, transposed, seed):
    if camfast.ops.available_backends("cpu")[0] != "native":
        pytest.skip("camfast._C not loaded")
    reduce, normalize, weights = option
    if weights is not None:
        weights = (list(weights) * 2)[: len(shapes)]
    maps = make_maps(shapes, B, dtype, "cpu", seed, size, reduce, normalize)
    if transposed:
        maps = [m.transpose(1, 2).contiguous().transpose(1, 2) for m in maps]
    with use_backend("native"):
        check_against_reference(maps, size, reduce, normalize, weights, dtype, seed)


@settings(max_examples=8, deadline=None)
@given(
    B=st.integers(1, 2), shapes=st.lists(_shape, min_size=1, max_size=3), size=_shape,
    option=st.sampled_from(OPTIONS), seed=st.integers(0, 2**16),
)
def test_random_shapes_triton(B, shapes, size, option, seed):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if "triton" not in camfast.ops.available_backends(device):
        pytest.skip("triton not available")
    reduce, normalize, weights = option
    if weights is not None:
        weights = (list(weights) * 2)[: len(shapes)]
    maps = make_maps(shapes, B, torch.float64, device, seed, size, reduce, normalize)
    with use_backend("triton"):
        check_against_reference(maps, size, reduce, normalize, weights, torch.float64, seed)


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
    check_against_reference(maps, (4, 3), "max", "minmax", None, torch.float64)
    check_against_reference(maps, (4, 3), "sum", "none", [0.5 + i for i in range(64)], torch.float64)
