"""Reference (pure PyTorch) forward and backward of ``camfast::upsample_aggregate``.

Zoom-CAM's multi-layer fusion (Shi et al., ICPR 2020): every layer's map ``M_l``
``[B, h_l, w_l]`` is normalised per sample, brought to the output size by bilinear
interpolation (``align_corners=False``, no antialias, so downsampling is allowed too) and
the layers are reduced element-wise:

    N_l   = (M_l - min_hw M_l) / (max_hw M_l - min_hw M_l + eps)     normalize="minmax"
            (exactly 0 for a constant map; eps = EPS = 1e-7)
    N_l   = M_l                                                       normalize="none"
    U_l   = interpolate(N_l, size=(H, W), mode="bilinear", align_corners=False)
    out   = max_l U_l | mean_l U_l | sum_l U_l | sum_l weights_l * U_l

The interpolation (:func:`upsample`) is written out rather than called: torch's index and
weight formulas (``compute_source_index_and_lambda``), evaluated along W first and then
along H, ``U = (N[i0, j0] l0 + N[i0, j1] l1) k0 + (N[i1, j0] l0 + N[i1, j1] l1) k1`` with
every product and sum rounded on its own in the accumulator dtype. Every kernel computes
exactly these operations in this order (no fused multiply-add), so the values, and the
layer that wins a tie under ``reduce="max"``, are bit-identical on every backend and
device. ``F.interpolate`` itself picks its arithmetic by device, dtype, layout and output
size (on CPU a four-product sum for outputs with ``H + W <= 128``, the nested form above
beyond; FMA contraction on CUDA; float16 weights for float16 tensors), so it agrees with
this to the last bit or so, not bit for bit.

``forward`` is written with plain torch ops, so autograd of it is the specification of the
gradient. ``backward`` spells that gradient out (every kernel's backward follows it):

* reduction: ``max`` sends ``dout`` to the layer attaining the maximum at each output pixel,
  the first one in list order on ties (``torch.max(dim=0)``'s index); ``mean`` sends
  ``dout / L``, ``sum`` sends ``dout`` (times ``weights_l`` when given) to every layer;
* interpolation: the transpose of the bilinear weights (``upsample_bilinear2d_backward``:
  each output pixel's gradient is scatter-added to its 4 source pixels);
* min-max normalisation, with ``g = dL/dN``, ``D = max - min + eps``, ``n = N``::

      dL/dmin = sum_p g_p (n_p - 1) / D          dL/dmax = -sum_p g_p n_p / D
      dL/dM_q = g_q / D + [M_q == min] dL/dmin / #min + [M_q == max] dL/dmax / #max

  (the gradient of ``amin``/``amax`` is shared evenly among tied pixels, as autograd does),
  and zero for a constant map (whose output does not depend on it).

Accumulation is in float32 (float64 for float64 inputs); the output is in the maps' dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from camfast.ops._spec import UA_EPS as EPS  # 1e-7, fixed


def _acc_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def normalize_map(m: Tensor, normalize: str) -> Tensor:
    """``[B, h, w] -> [B, h, w]``: min-max normalisation per sample (or identity for ``"none"``)."""
    if normalize == "none":
        return m
    if normalize != "minmax":
        raise ValueError(f"normalize must be 'minmax' or 'none'; got {normalize!r}")
    mn = m.amin(dim=(1, 2), keepdim=True)
    mx = m.amax(dim=(1, 2), keepdim=True)
    rng = mx - mn
    # A constant map gives exactly zeros (and no gradient); NaN still propagates (NaN != 0).
    return torch.where(rng == 0, torch.zeros_like(m), (m - mn) / (rng + EPS))


def axis_taps(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device
              ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Where each output index of an axis samples it: source indices ``i0``, ``i1`` (int64) and
    weights ``l0``, ``l1`` (``dtype``), torch's ``compute_source_index_and_lambda``
    (``align_corners=False``, no scale): ``src = max(0, (n_in / n_out) (d + 1/2) - 1/2)``,
    ``i0 = min(floor(src), n_in - 1)``, ``l1 = clamp(src - i0, 0, 1)``, ``l0 = 1 - l1``,
    ``i1 = min(i0 + 1, n_in - 1)``; an axis of unchanged size is copied (``l0 = 1``)."""
    d = torch.arange(n_out, device=device)
    if n_in == n_out:
        one = torch.ones(n_out, dtype=dtype, device=device)
        return d, d, one, torch.zeros_like(one)
    scale = torch.tensor(n_in, dtype=dtype, device=device) / torch.tensor(n_out, dtype=dtype, device=device)
    src = (scale * (d.to(dtype) + 0.5) - 0.5).clamp(min=0)
    i0 = src.to(torch.int64).clamp(max=n_in - 1)  # truncation is floor: src >= 0
    l1 = (src - i0.to(dtype)).clamp(0, 1)
    return i0, (i0 + 1).clamp(max=n_in - 1), 1 - l1, l1


def upsample(n: Tensor, size: Sequence[int]) -> Tensor:
    """``[B, h, w] -> [B, H, W]``: bilinear, ``align_corners=False``, no antialias; along W,
    then along H, each operation rounded in ``n``'s dtype (see the module docstring)."""
    H, W = int(size[0]), int(size[1])
    i0, i1, k0, k1 = axis_taps(n.shape[1], H, n.dtype, n.device)
    j0, j1, l0, l1 = axis_taps(n.shape[2], W, n.dtype, n.device)
    rows = n[:, :, j0] * l0 + n[:, :, j1] * l1                       # [B, h, W]
    return rows[:, i0, :] * k0[:, None] + rows[:, i1, :] * k1[:, None]


def _layer_coefficients(reduce: str, n_layers: int, weights: Sequence[float] | None) -> list[float]:
    if reduce == "mean":
        return [1.0 / n_layers] * n_layers
    if reduce == "sum":
        return [1.0] * n_layers if weights is None else [float(w) for w in weights]
    raise ValueError(f"reduce must be 'max', 'mean' or 'sum'; got {reduce!r}")


def forward(
    maps: Sequence[Tensor], size: Sequence[int], reduce: str = "max", normalize: str = "minmax",
    weights: Sequence[float] | None = None,
) -> Tensor:
    """``L x [B, h_l, w_l] -> [B, H, W]`` in the maps' dtype."""
    dtype = maps[0].dtype
    acc = _acc_dtype(maps[0])
    ups = torch.stack([upsample(normalize_map(m.to(acc), normalize), size) for m in maps])
    if reduce == "max":
        out = ups.max(dim=0).values  # ties (equal in the accumulator dtype): the first layer gets the gradient
    elif reduce == "mean":
        out = ups.mean(dim=0)
    elif reduce == "sum":
        if weights is None:
            out = ups.sum(dim=0)
        else:
            w = torch.tensor([float(x) for x in weights], dtype=acc, device=ups.device)
            out = (ups * w.view(-1, 1, 1, 1)).sum(dim=0)
    else:
        raise ValueError(f"reduce must be 'max', 'mean' or 'sum'; got {reduce!r}")
    return out.to(dtype)


def normalize_backward(g: Tensor, m: Tensor, normalize: str) -> Tensor:
    """``dL/dM`` from ``g = dL/dN`` for one layer ``[B, h, w]`` (accumulation dtype)."""
    if normalize == "none":
        return g
    mn = m.amin(dim=(1, 2), keepdim=True)
    mx = m.amax(dim=(1, 2), keepdim=True)
    rng = mx - mn
    d = rng + EPS
    n = (m - mn) / d
    is_min = m == mn
    is_max = m == mx
    s0 = g.sum(dim=(1, 2), keepdim=True)
    sn = (g * n).sum(dim=(1, 2), keepdim=True)
    d_min = (sn - s0) / d
    d_max = -sn / d
    dm = (
        g / d
        + is_min * (d_min / is_min.sum(dim=(1, 2), keepdim=True))
        + is_max * (d_max / is_max.sum(dim=(1, 2), keepdim=True))
    )
    return torch.where(rng == 0, torch.zeros_like(dm), dm)


def backward(
    grad_out: Tensor, maps: Sequence[Tensor], reduce: str = "max", normalize: str = "minmax",
    weights: Sequence[float] | None = None,
) -> list[Tensor]:
    """Gradients ``dL/dM_l`` (each like ``maps[l]``) of ``forward`` given ``dout`` ``[B, H, W]``."""
    acc = _acc_dtype(maps[0])
    H, W = grad_out.shape[-2:]
    g = grad_out.to(acc)
    ms = [m.to(acc) for m in maps]
    if reduce == "max":
        ups = torch.stack([upsample(normalize_map(m, normalize), (H, W)) for m in ms])
        winner = ups.max(dim=0).indices  # the first layer attaining the max
        per_layer = [g * (winner == i) for i in range(len(ms))]
    else:
        per_layer = [g * c for c in _layer_coefficients(reduce, len(ms), weights)]
    grads = []
    for m, gl in zip(maps, per_layer):
        B, h, w = m.shape
        gn = torch.ops.aten.upsample_bilinear2d_backward(gl[:, None], [H, W], [B, 1, h, w], False, None, None)[:, 0]
        grads.append(normalize_backward(gn, m.to(acc), normalize).to(m.dtype))
    return grads
