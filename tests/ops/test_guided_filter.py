"""camfast::guided_filter: what the op contract (test_op_contract.py) does not cover: a
brute-force ridge regression per window, kornia parity, edge cases, the native src-only
gradient, the native kernel and its row stripes."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close
from ops.op_specs import gf_inputs as make_inputs

from camfast.ops import guided_filter, use_backend
from camfast.ops.reference import guided_filter as ref

kornia = pytest.importorskip("kornia")


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
