"""Reference ``camfast::guided_filter`` (He, Sun, Tang 2013; fast variant He & Sun 2015).

The readable specification, differentiable by autograd (the other backends use it for the
gradient with respect to the guide). Computed in float64 whatever the input dtype, then cast
back: ``var(I) = mean(I^2) - mean(I)^2`` cancels badly in float32.

    mu = mean(I), Sigma = mean(I I^T) - mu mu^T, a = (Sigma + eps Id)^-1 (mean(I p) - mu mean(p))
    b = mean(p) - a^T mu, q = mean(a)^T I + mean(b)

``mean`` is the box mean of radius r: truncated windows divided by their true pixel count
(``border="truncate"``) or kornia's reflect padding divided by ``(2r+1)^2`` (``"reflect"``).
``subsample = s > 1``: guide and src are resized bilinearly (``align_corners=False``, no
antialiasing) to ``(ceil(H/s), ceil(W/s))``, a and b are computed there with radius
``max(1, floor(r/s + 1/2))``, ``mean(a)``, ``mean(b)`` are resized bilinearly back to
``(H, W)`` and applied with the full-resolution guide.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor

from camfast.ops.reference.box_filter import box_mean


def _mean_default(x: Tensor, r: int, border: str) -> Tensor:
    if border == "truncate":
        return box_mean(x, r)
    k = 2 * r + 1
    return F.avg_pool2d(F.pad(x, (r, r, r, r), mode="reflect"), k, stride=1)


def low_res_size(H: int, W: int, subsample: int) -> tuple[int, int]:
    return -(-H // subsample), -(-W // subsample)


def low_res_radius(radius: int, subsample: int) -> int:
    return radius if subsample == 1 else max(1, (2 * radius + subsample) // (2 * subsample))


def coefficients(guide: Tensor, src: Tensor, radius: int, eps: float, border: str,
                 mean=None) -> tuple[Tensor, Tensor]:
    """``mean(a)`` ``[B, C, G, H, W]`` and ``mean(b)`` ``[B, C, H, W]`` (float64 in, float64 out).

    ``mean(x4d, r, border)``: the box mean to use (default: this module's ``_mean``).
    """
    _mean = _mean_default if mean is None else mean
    B, G, H, W = guide.shape
    C = src.shape[1]
    mu = _mean(guide, radius, border)                                  # [B, G, H, W]
    mp = _mean(src, radius, border)                                    # [B, C, H, W]
    mIp = _mean((guide[:, None] * src[:, :, None]).flatten(1, 2), radius, border).unflatten(1, (C, G))
    cov = mIp - mu[:, None] * mp[:, :, None]
    if G == 1:
        var = _mean(guide * guide, radius, border) - mu * mu           # [B, 1, H, W]
        a = cov / (var[:, None] + eps)
    else:
        mII = _mean((guide[:, None] * guide[:, :, None]).flatten(1, 2), radius, border).unflatten(1, (G, G))
        sigma = mII - mu[:, None] * mu[:, :, None] + eps * torch.eye(G, dtype=guide.dtype, device=guide.device)[
            :, :, None, None]
        # per pixel: solve Sigma a_c = cov_c for every channel c at once
        s = sigma.permute(0, 3, 4, 1, 2)                                # [B, H, W, G, G]
        rhs = cov.permute(0, 3, 4, 2, 1)                                # [B, H, W, G, C]
        a = torch.linalg.solve(s, rhs).permute(0, 4, 3, 1, 2)           # [B, C, G, H, W]
    b = mp - (a * mu[:, None]).sum(2)
    return _mean(a.flatten(1, 2), radius, border).unflatten(1, (C, G)), _mean(b, radius, border)


def forward(guide: Tensor, src: Tensor, radius: int, eps: float, subsample: int, border: str) -> Tensor:
    I, p = guide.double(), src.double()
    H, W = I.shape[-2:]
    if subsample > 1:
        size = low_res_size(H, W, subsample)
        Is = F.interpolate(I, size=size, mode="bilinear", align_corners=False)
        ps = F.interpolate(p, size=size, mode="bilinear", align_corners=False)
        ma, mb = coefficients(Is, ps, low_res_radius(radius, subsample), eps, border)
        ma = F.interpolate(ma.flatten(1, 2), size=(H, W), mode="bilinear", align_corners=False).unflatten(
            1, ma.shape[1:3])
        mb = F.interpolate(mb, size=(H, W), mode="bilinear", align_corners=False)
    else:
        ma, mb = coefficients(I, p, radius, eps, border)
    return ((ma * I[:, None]).sum(2) + mb).to(src.dtype)


@contextlib.contextmanager
def _autograd_enabled(device: torch.device):
    """Re-enable autograd recording inside a custom op's kernel (torch.library runs kernels
    with the Autograd dispatch keys excluded), so the vjp below can be taken by autograd."""
    del device
    K = torch._C.DispatchKey
    keys = [K.AutogradFunctionality, K.AutogradOther, K.AutogradNestedTensor]
    saved = [torch._C._dispatch_tls_is_dispatch_key_excluded(k) for k in keys]
    try:
        for k in keys:
            torch._C._dispatch_tls_set_dispatch_key_excluded(k, False)
        yield
    finally:
        for k, v in zip(keys, saved):
            torch._C._dispatch_tls_set_dispatch_key_excluded(k, v)


def backward(grad_out: Tensor, guide: Tensor, src: Tensor, radius: int, eps: float, subsample: int, border: str,
             need_guide: bool, need_src: bool) -> tuple[Tensor, Tensor]:
    """Gradients with respect to guide and src by autograd of ``forward`` (zeros where not needed)."""
    with torch.enable_grad(), _autograd_enabled(grad_out.device):
        g = guide.detach().double().requires_grad_(need_guide)
        s = src.detach().double().requires_grad_(need_src)
        out = forward(g, s, radius, eps, subsample, border)
        wanted = [t for t, n in ((g, need_guide), (s, need_src)) if n]
        grads = torch.autograd.grad(out, wanted, grad_out.double()) if wanted else []
    it = iter(grads)
    dg = next(it) if need_guide else torch.zeros_like(g)
    ds = next(it) if need_src else torch.zeros_like(s)
    return dg.to(guide.dtype), ds.to(src.dtype)
