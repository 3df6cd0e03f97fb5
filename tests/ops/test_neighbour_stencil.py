"""camfast::neighbour_stencil: what the op contract (test_op_contract.py) does not cover: the
reference against a brute-force loop over the 3 x 3 window, the docstring's example, ROAD's
operator and Jacobi sweep written out by hand, stride-0 coefficients against their
materialised copies (values, gradients, opcheck), precision on a large image, and how
non-finite values spread."""

from __future__ import annotations

import itertools

import pytest
import torch
from helpers import assert_close
from ops.op_specs import NEIGHBOUR_STENCIL, check_against_reference, ns_coef, ns_inputs, relayout

from camfast.ops import neighbour_stencil
from camfast.ops.reference import neighbour_stencil as ref

#: The 3 x 3 window: weight (2 - |di|) (2 - |dj|) at offset (di, dj).
OFFSETS = list(itertools.product((-1, 0, 1), repeat=2))
SHAPES = [(2, 3, 9, 11), (1, 1, 1, 1), (1, 2, 1, 7), (3, 1, 6, 1), (1, 4, 17, 5), (1, 1, 2, 2)]


def brute(x, a, w, c):
    """Explicit loops over the pixels and the window positions inside the image, float64."""
    B, C, H, W = x.shape
    xd = x.double().cpu()
    ks = torch.zeros(B, C, H, W, dtype=torch.float64)
    for i in range(H):
        for j in range(W):
            for di, dj in OFFSETS:
                if 0 <= i + di < H and 0 <= j + dj < W:
                    ks[:, :, i, j] += (2 - abs(di)) * (2 - abs(dj)) * xd[:, :, i + di, j + dj]
    return a.double().cpu() * xd + w.double().cpu() * ks + c.double().cpu()


def shifted(u: torch.Tensor, di: int, dj: int) -> torch.Tensor:
    """``v[..., i, j] = u[..., i + di, j + dj]``, 0 outside the image."""
    H, W = u.shape[-2:]
    v = torch.zeros_like(u)
    v[..., max(-di, 0):H - max(di, 0), max(-dj, 0):W - max(dj, 0)] = \
        u[..., max(di, 0):H + min(di, 0), max(dj, 0):W + min(dj, 0)]
    return v


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("coef", ["full", "scalar", "per-image", "mixed"])
def test_reference_is_the_window_sum(shape, coef):
    x, a, w, c = ns_inputs(shape, torch.float64, "cpu", seed=7, coef=coef)
    torch.testing.assert_close(ref.forward(x, a, w, c), brute(x, a, w, c), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_reference_backward_is_the_brute_force_gradient(shape):
    leaves = [t.requires_grad_(True) for t in ns_inputs(shape, torch.float64, "cpu", seed=8)]
    g = torch.randn(shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    expected = torch.autograd.grad(brute(*leaves), leaves, g)
    got = ref.backward(g, *(t.detach() for t in leaves[:3]))
    for name, e, r in zip("xaw", expected, got):
        torch.testing.assert_close(r, e, atol=1e-12, rtol=1e-12, msg=f"d{name}")
    torch.testing.assert_close(expected[3], g, atol=0, rtol=0, msg="dc")


def test_docstring_example(backend, device, dtype):
    """A single 1 at the centre of a 3 x 3 image gives the window's weights (exact in every dtype)."""
    x = torch.zeros(1, 1, 3, 3, dtype=dtype, device=device)
    x[0, 0, 1, 1] = 1
    one = torch.ones((), dtype=dtype, device=device).expand_as(x)
    zero = torch.zeros((), dtype=dtype, device=device).expand_as(x)
    out = neighbour_stencil(x, zero, one, zero)
    expected = torch.tensor(ref.WEIGHTS, dtype=dtype, device=device).view(1, 1, 3, 3)
    assert out.dtype == dtype and out.is_contiguous()
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    # and a = 1 adds the centre once more; c = 1 adds one everywhere
    out = neighbour_stencil(x, one, one, one)
    torch.testing.assert_close(out, expected + 1 + x, atol=0, rtol=0)


def _road_by_hand(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ROAD's 8-neighbour weights (1/6 direct, 1/12 diagonal), cut at the border: the per-pixel
    weight sum ``d`` ([1, 1, H, W]) and ``sum_j w_ij u_j``, from shifted copies of ``u``."""
    d = torch.zeros((1, 1, *u.shape[-2:]), dtype=torch.float64, device=u.device)
    neighbours = torch.zeros_like(u, dtype=torch.float64)
    for di, dj in OFFSETS:
        if (di, dj) == (0, 0):
            continue
        weight = 1 / 6 if 0 in (di, dj) else 1 / 12
        d += weight * shifted(torch.ones_like(d), di, dj)
        neighbours += weight * shifted(u.double(), di, dj)
    return d, neighbours


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("shape", [(2, 3, 9, 11), (1, 1, 1, 1), (1, 2, 1, 7), (1, 1, 2, 5)],
                         ids=lambda s: "x".join(map(str, s)))
def test_road_operator_and_jacobi_sweep(backend, device, dtype, shape):
    """The docstring's identities: with a = d + 1/3, w = -1/12, c = 0 the op is ROAD's
    ``d u - sum_j w_ij u_j``; with a = 1 - s (d + 1/3), w = s / 12, c = s r it is the damped
    Jacobi sweep ``u + s (r - A u)``. (float64 and float32 only: the coefficients 1/3 and
    1/12 rounded to half precision change the operator by more than its tolerance.)"""
    gen = torch.Generator().manual_seed(11)
    u = torch.randn(shape, generator=gen, dtype=torch.float64)
    r = torch.randn(shape, generator=gen, dtype=torch.float64)
    d, neighbours = _road_by_hand(u)
    operator = d * u - neighbours

    def op(a, w, c):
        return neighbour_stencil(*(t.to(device, dtype).expand(shape) for t in (u, a, w, c)))

    a = d + 1 / 3  # a [1, 1, H, W] field for every sample and channel, read through stride 0
    minus_twelfth = torch.full((1, 1, 1, 1), -1 / 12, dtype=torch.float64)
    zero = torch.zeros((1, 1, 1, 1), dtype=torch.float64)
    assert_close(op(a, minus_twelfth, zero), operator.to(dtype), dtype, "ROAD operator")
    s = 0.8
    sweep = u + s * (r - operator)
    assert_close(op(1 - s * a, -s * minus_twelfth, s * r), sweep.to(dtype), dtype, "Jacobi sweep")


@pytest.mark.parametrize("kinds", [("scalar",) * 3, ("per-image",) * 3, ("per-channel",) * 3, ("shared-field",) * 3,
                                   ("full", "scalar", "per-image"), ("per-channel", "full", "scalar")],
                         ids="-".join)
@pytest.mark.parametrize("shape", [(2, 3, 9, 11), (1, 2, 1, 7), (3, 2, 6, 1)], ids=lambda s: "x".join(map(str, s)))
def test_expanded_coefficients_equal_their_copies(backend, device, dtype, shape, kinds):
    """A stride-0 a, w, c gives the values and gradients of the same coefficients materialised."""
    gen = torch.Generator().manual_seed(5)
    x = ns_coef("full", shape, dtype, device, gen)
    coefs = [ns_coef(kind, shape, dtype, device, gen) for kind in kinds]
    assert any(0 in t.stride() for t in coefs)
    g = torch.randn(shape, generator=gen, dtype=torch.float64).to(device, dtype)
    results = []
    for make in (lambda t: t, lambda t: t.contiguous()):
        leaves = [make(t).detach().requires_grad_(True) for t in (x, *coefs)]
        out = neighbour_stencil(*leaves)
        results.append((out, *torch.autograd.grad(out, leaves, g)))
    for what, got, expected in zip(("out", "dx", "da", "dw", "dc"), *results):
        assert_close(got, expected, dtype, f"{what} of stride-0 {kinds}")


def test_opcheck_with_stride_0_coefficients(backend, device):
    """The contract's opcheck variants materialise their inputs; here a, w, c stay stride-0."""
    gen = torch.Generator().manual_seed(2)
    shape = (2, 3, 5, 6)
    x = ns_coef("full", shape, torch.float32, device, gen)
    coefs = [ns_coef(kind, shape, torch.float32, device, gen) for kind in ("per-image", "scalar", "shared-field")]
    args = [t.detach().requires_grad_(True) for t in (x, *coefs)]
    torch.library.opcheck(NEIGHBOUR_STENCIL.op, tuple(args))
    torch.library.opcheck(NEIGHBOUR_STENCIL.backward_op, (torch.randn(shape).to(device), x, coefs[0], coefs[1]))


def test_unchecked_kernel_is_the_chosen_backends_forward(backend, device):
    """``unchecked_kernel`` (ROAD's solver calls it thousands of times) runs the backend that
    ``use_backend`` chose, with the op's values, stride-0 coefficients included."""
    from camfast.ops.neighbour_stencil import unchecked_kernel

    kernel = unchecked_kernel(device)
    assert kernel.__module__ == f"camfast.ops.{backend}.neighbour_stencil"
    x, a, w, c = ns_inputs((2, 3, 7, 9), torch.float32, device, seed=4, coef="mixed")
    out = kernel(x, a, w, c)
    assert out.is_contiguous()
    assert_close(out, ref.forward(x, a, w, c), torch.float32, "unchecked kernel")


@pytest.mark.parametrize("layout", ["channels_last", "strided", "transposed", "expanded"])
def test_outputs_are_contiguous_as_the_fake_kernels_promise(backend, device, layout):
    """The fake kernels (what torch.compile's graph asserts) return contiguous tensors, forward
    and backward, whatever the inputs' layout: so must every backend."""
    shape = (2, 3, 9, 8)
    x, a, w, c = (relayout(t, layout) for t in ns_inputs(shape, torch.float32, device, seed=6))
    assert not x.is_contiguous()
    assert neighbour_stencil(x, a, w, c).is_contiguous(), "forward"
    g = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(device)
    for name, grad in zip(("dx", "da", "dw"), NEIGHBOUR_STENCIL.backward_op(g, x, a, w)):
        assert grad.is_contiguous(), f"{name} has strides {grad.stride()} for {layout} inputs"


def test_large_image_precision(backend, device):
    if backend == "triton" and device.type == "cpu":
        pytest.skip("interpreter: too slow for 200x300")
    args = ns_inputs((1, 2, 200, 300), torch.float32, device, seed=4)
    check_against_reference(NEIGHBOUR_STENCIL, args, torch.float32)  # values and gradients


def _window(i: int, j: int, H: int, W: int) -> torch.Tensor:
    """The [H, W] mask of the 3 x 3 neighbourhood of (i, j), cut at the border."""
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2] = True
    return mask


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf - inf, in the Triton interpreter
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("where", [(0, 0), (3, 4), (6, 10), (0, 5)], ids=lambda p: f"{p[0]}-{p[1]}")
def test_non_finite_x_reaches_exactly_its_neighbourhood(backend, device, dtype, value, where):
    """A NaN (inf) in x makes the output non-finite on its 3 x 3 neighbourhood and nowhere else
    (a NaN exactly there); in a, w or c at a pixel, at that pixel only. Backward: a NaN in x
    reaches da at its pixel and dw on its neighbourhood, never dx."""
    shape = (2, 3, 7, 11)
    x0, a, w, c = (t.contiguous() for t in ns_inputs(shape, dtype, device, seed=3))
    i, j = where
    x = x0.clone()
    x[1, 2, i, j] = value
    out = neighbour_stencil(x, a, w, c).cpu()
    near = torch.zeros(shape, dtype=torch.bool)
    near[1, 2] = _window(i, j, *shape[2:])
    bad = ~out.isfinite()
    assert torch.equal(bad, near), f"non-finite at {bad.nonzero().tolist()}, expected the window of {where}"
    if value != value:  # NaN
        assert out[near].isnan().all()
    for k, name in ((1, "a"), (2, "w"), (3, "c")):
        args = [x0, a, w, c]
        args[k] = args[k].clone()
        args[k][1, 2, i, j] = float("nan")
        out = neighbour_stencil(*args).cpu()
        pixel = torch.zeros(shape, dtype=torch.bool)
        pixel[1, 2, i, j] = True
        assert torch.equal(out.isnan(), pixel), f"NaN in {name}: NaN at {out.isnan().nonzero().tolist()}"
    if value == value:
        return
    leaves = [t.detach().requires_grad_(True) for t in (x, a, w, c)]
    g = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(device, dtype)
    dx, da, dw, dc = (t.cpu() for t in torch.autograd.grad(neighbour_stencil(*leaves), leaves, g))
    pixel = torch.zeros(shape, dtype=torch.bool)
    pixel[1, 2, i, j] = True
    assert dx.isfinite().all(), "dx = a g + K (w g) does not read x"
    assert torch.equal(da.isnan(), pixel), f"da NaN at {da.isnan().nonzero().tolist()}"
    assert torch.equal(dw.isnan(), near), f"dw NaN at {dw.isnan().nonzero().tolist()}"
    assert dc.isfinite().all()
