"""camfast::guided_filter: brute-force ridge regression per window, kornia parity, every backend."""

from __future__ import annotations

import pytest
import torch
from helpers import LAYOUTS, assert_close, make_layout

from camfast.ops import guided_filter, use_backend
from camfast.ops.reference import guided_filter as ref

kornia = pytest.importorskip("kornia")


def make_inputs(B, G, C, H, W, dtype, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    g = torch.rand((B, G, H, W), generator=gen, dtype=torch.float64)
    s = torch.rand((B, C, H, W), generator=gen, dtype=torch.float64)
    return g.to(device=device, dtype=dtype), s.to(device=device, dtype=dtype)


def brute(guide, src, r, eps):
    """He et al. by definition: in every truncated window k, the ridge regression
    min_{a,b} sum_{i in w_k} (a^T I_i + b - p_i)^2 + eps |a|^2 (normalised by |w_k|), solved
    explicitly; then q_i = mean over the windows k containing i of (a_k^T I_i + b_k). float64."""
    I, p = guide.double().cpu(), src.double().cpu()
    B, G, H, W = I.shape
    C = p.shape[1]
    a = torch.zeros(B, C, G, H, W, dtype=torch.float64)
    b = torch.zeros(B, C, H, W, dtype=torch.float64)
    for y in range(H):
        for x in range(W):
            ys, xs = slice(max(y - r, 0), y + r + 1), slice(max(x - r, 0), x + r + 1)
            for n in range(B):
                X = I[n, :, ys, xs].reshape(G, -1).T                        # [N, G]
                X1 = torch.cat([X, torch.ones(X.shape[0], 1, dtype=X.dtype)], 1)
                N = X.shape[0]
                reg = torch.diag(torch.tensor([eps * N] * G + [0.0], dtype=X.dtype))
                for c in range(C):
                    t = p[n, c, ys, xs].reshape(-1)
                    sol = torch.linalg.solve(X1.T @ X1 + reg, X1.T @ t)
                    a[n, c, :, y, x], b[n, c, y, x] = sol[:G], sol[G]
    q = torch.zeros(B, C, H, W, dtype=torch.float64)
    for y in range(H):
        for x in range(W):
            ys, xs = slice(max(y - r, 0), y + r + 1), slice(max(x - r, 0), x + r + 1)
            ma = a[:, :, :, ys, xs].mean(dim=(3, 4))
            mb = b[:, :, ys, xs].mean(dim=(2, 3))
            q[:, :, y, x] = (ma * I[:, None, :, y, x]).sum(2) + mb
    return q


@pytest.mark.parametrize("G", [1, 3])
@pytest.mark.parametrize("r", [1, 2, 9])
def test_reference_is_windowed_ridge_regression(G, r):
    g, s = make_inputs(2, G, 2, 6, 7, torch.float64, "cpu")
    torch.testing.assert_close(ref.forward(g, s, r, 0.05, 1, "truncate"), brute(g, s, r, 0.05), atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("G", [1, 3])
def test_matches_brute_force(backend, device, G):
    g, s = make_inputs(2, G, 2, 6, 7, torch.float64, device)
    for r in (1, 2, 9):
        assert_close(guided_filter(g, s, r, 0.05), brute(g, s, r, 0.05).to(device), torch.float64, f"r={r}")


@pytest.mark.parametrize("G", [1, 3])
@pytest.mark.parametrize("r", [1, 4])
def test_reflect_matches_kornia(backend, device, G, r):
    for dtype in (torch.float64, torch.float32):
        g, s = make_inputs(2, G, 2, 11, 13, dtype, device, seed=r)
        exp = kornia.filters.guided_blur(g.double(), s.double(), 2 * r + 1, 0.1).to(dtype)
        assert_close(guided_filter(g, s, r, 0.1, border="reflect"), exp, dtype, f"kornia G={G} r={r} {dtype}")


@pytest.mark.parametrize("G", [1, 3])
@pytest.mark.parametrize("subsample", [1, 2, 3])
@pytest.mark.parametrize("border", ["truncate", "reflect"])
def test_matches_reference(backend, device, dtype, G, subsample, border):
    g, s = make_inputs(2, G, 3, 13, 10, dtype, device)
    out = guided_filter(g, s, 3, 0.1, subsample, border)
    assert_close(out, ref.forward(g, s, 3, 0.1, subsample, border), dtype, f"G={G} s={subsample} {border}")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts(backend, device, layout):
    g, s = make_inputs(2, 3, 2, 8, 9, torch.float32, device)
    exp = ref.forward(g, s, 2, 0.1, 1, "truncate")
    assert_close(guided_filter(make_layout(g, layout), make_layout(s, layout), 2, 0.1), exp, torch.float32, layout)


def test_edge_cases(backend, device):
    g, s = make_inputs(1, 3, 2, 4, 5, torch.float64, device)
    # radius larger than the image: every window is the whole image -> one affine map of I
    out = guided_filter(g, s, 50, 0.05)
    assert_close(out, ref.forward(g, s, 50, 0.05, 1, "truncate"), torch.float64, "r > size")
    assert_close(out, brute(g, s, 50, 0.05).to(device), torch.float64, "r > size brute")
    # radius 0: a = 0, b = p -> the identity
    assert_close(guided_filter(g, s, 0, 0.05), s, torch.float64, "r = 0")
    # a constant guide carries no edges: a = 0, b = mean(p), q = mean(mean(p))
    from camfast.ops import box_filter
    assert_close(guided_filter(torch.ones_like(g), s, 2, 0.05), box_filter(box_filter(s, 2), 2), torch.float64,
                 "flat guide")
    # subsample that does not divide the size, and larger than the image
    for sub in (3, 8):
        assert_close(guided_filter(g, s, 2, 0.05, sub), ref.forward(g, s, 2, 0.05, sub, "truncate"),
                     torch.float64, f"subsample {sub}")


def test_gradcheck_float64(backend, device):
    # full Jacobians on the default setting (the native transpose for src), fast mode elsewhere
    for G in (1, 3):
        g, s = make_inputs(1, G, 2, 3, 4, torch.float64, device, seed=G)
        g.requires_grad_(True)
        s.requires_grad_(True)
        for r, sub, border in ((1, 1, "truncate"), (2, 2, "truncate"), (1, 1, "reflect")):
            fast = backend != "native" or (sub, border) != (1, "truncate")
            assert torch.autograd.gradcheck(lambda a, b: guided_filter(a, b, r, 0.05, sub, border), (g, s),
                                            eps=1e-6, atol=1e-7, fast_mode=fast)


def test_src_gradient_native_adjoint(backend, device, dtype):
    """Only src requires grad (the native transpose N * GF(g / N) on CPU) vs reference autograd."""
    g, s = make_inputs(2, 3, 2, 9, 8, dtype, device)
    s.requires_grad_(True)
    out = guided_filter(g, s, 2, 0.1)
    go = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(out)
    (ds,) = torch.autograd.grad(out, s, go)
    sr = s.detach().double().requires_grad_(True)
    (exp,) = torch.autograd.grad(ref.forward(g.double(), sr, 2, 0.1, 1, "truncate"), sr, go.double())
    assert_close(ds, exp.to(dtype), dtype, "d/dsrc")


@pytest.mark.parametrize("bad, err, match", [
    (lambda g, s: guided_filter(g, s, 1, 0.0), ValueError, "eps"),
    (lambda g, s: guided_filter(g, s, 1, -1.0), ValueError, "eps"),
    (lambda g, s: guided_filter(g, s, 1, float("nan")), ValueError, "eps"),
    (lambda g, s: guided_filter(g, s, -1, 0.1), ValueError, "radius"),
    (lambda g, s: guided_filter(g, s, 1.0, 0.1), TypeError, "radius"),
    (lambda g, s: guided_filter(g, s, 1, 0.1, 0), ValueError, "subsample"),
    (lambda g, s: guided_filter(g, s, 1, 0.1, border="zeros"), ValueError, "border"),
    (lambda g, s: guided_filter(g, s, 6, 0.1, border="reflect"), ValueError, "reflect"),
    (lambda g, s: guided_filter(g[:, :2], s, 1, 0.1), ValueError, "1 or 3 channels"),
    (lambda g, s: guided_filter(g, s[:1], 1, 0.1), ValueError, "batch"),
    (lambda g, s: guided_filter(g, s[:, :, 1:], 1, 0.1), ValueError, "height"),
    (lambda g, s: guided_filter(g, s.double(), 1, 0.1), TypeError, "dtype"),
    (lambda g, s: guided_filter(g[0], s, 1, 0.1), ValueError, "guide must have 4"),
    (lambda g, s: guided_filter(g, s.int(), 1, 0.1), TypeError, "src must have a floating"),
])
def test_bad_inputs(bad, err, match):
    g, s = make_inputs(2, 3, 2, 5, 6, torch.float32, "cpu")
    with pytest.raises(err, match=match):
        bad(g, s)


def test_opcheck(backend, device):
    g, s = make_inputs(2, 3, 2, 5, 6, torch.float32, device)
    samples = [(g.clone().requires_grad_(True), s.clone().requires_grad_(True), 2, 0.1, 1, "truncate"),
               (make_layout(g, "channels_last"), make_layout(s, "strided").requires_grad_(True), 1, 0.1, 2, "reflect")]
    for args in samples:
        torch.library.opcheck(torch.ops.camfast.guided_filter.default, args)
    torch.library.opcheck(torch.ops.camfast.guided_filter_backward.default,
                          (torch.randn_like(s), g, s, 2, 0.1, 1, "truncate", True, True))


@pytest.mark.slow
def test_torch_compile_fullgraph_matches_eager(backend, device):
    if backend == "triton" and device.type == "cpu":
        pytest.skip("inductor on CPU with the Triton interpreter adds nothing over the native run")

    def fn(g, s):
        return guided_filter(g, s * 2.0, 2, 0.1).square().mean()

    compiled = torch.compile(fn, fullgraph=True)
    g, s = make_inputs(2, 3, 2, 9, 8, torch.float32, device)
    res = []
    for f in (fn, compiled):
        a, b = g.clone().requires_grad_(True), s.clone().requires_grad_(True)
        loss = f(a, b)
        loss.backward()
        res.append((loss.detach(), a.grad, b.grad))
    for e, c, what in zip(res[0], res[1], ("loss", "d/dguide", "d/dsrc")):
        assert_close(c, e, torch.float32, what)


def test_native_backend_is_native_on_cpu():
    """The 3-channel CPU path goes through the fused kernel (not the reference)."""
    from camfast import _ext
    if _ext.native is None:
        pytest.skip("camfast._C not built")
    g, s = make_inputs(1, 3, 1, 6, 6, torch.float64, "cpu")
    with use_backend("native"):
        from camfast.ops.native import guided_filter as nat
        out = nat._kernel(g, s, 2, 0.1, "truncate", False, False)
    assert_close(out, ref.forward(g, s, 2, 0.1, 1, "truncate"), torch.float64, "kernel")


@pytest.mark.parametrize("G", [1, 3])
@pytest.mark.parametrize("border", ["truncate", "reflect"])
def test_native_row_stripes(G, border):
    """Fewer images than threads: the native kernel splits each image into row stripes that
    recompute up to 2r rows of halo; every stripe seam must match the reference."""
    from camfast import _ext
    if _ext.native is None:
        pytest.skip("camfast._C not built")
    threads = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        for r, H in ((1, 70), (3, 97), (8, 130)):
            g, s = make_inputs(1, G, 2, H, 11, torch.float64, "cpu", seed=r)
            with use_backend("native"):
                out = guided_filter(g, s, r, 0.05, 1, border)
            assert_close(out, ref.forward(g, s, r, 0.05, 1, border), torch.float64, f"r={r} H={H}")
    finally:
        torch.set_num_threads(threads)
