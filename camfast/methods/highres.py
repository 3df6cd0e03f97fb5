"""rCAM: high-resolution class activation maps (Ha, Franchi, Moeller, Kolb, Blanz, WACV 2018).

The pipeline of the paper (``seeds/003``), generalised beyond GoogLeNet-GAP:

1. CAMs at two scales: the image ``I1`` and ``I2 = U^2(I1)`` (bilinear x2) give ``CAM1``,
   ``CAM2`` for the top class of ``I1`` and its probabilities ``P1``, ``P2``;
2. shape guides: the per-image PCA (3 components) of the stride-8 feature group, ``S1``
   from ``I1`` and ``S2`` from ``I2`` (:func:`pca_guide`);
3. guided upsampling, each step ``G^f(U^2(cam), S)`` (bilinear x2, then a guided filter
   with the shape guide at that size; :func:`camfast.ops.guided_filter`), the window radius
   per image from the guide's variogram (:func:`variogram_radius`):
   ``CAM1 -> ... -> size(S1) -> size(S2)`` and ``CAM2 -> ... -> size(S2)``; a CAM already at a
   guide's size (a stride-8 network) is filtered once at that size without upsampling, so
   ``S1`` guides CAM1 and ``S2`` guides both, as in the paper's eqs. 2-4;
4. fusion at full size, ``rCAM3 = rCAM1 * P1[top] + rCAM2 * P2[top]``, normalised to [0, 1];
5. a dense CRF with ``rCAM3`` / ``1 - rCAM3`` as foreground / background (:mod:`camfast.crf`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camfast.localization import normalize
from camfast.methods.engine import CAMResult, check_input, classifier_head, pooled_features, predict, result_size
from camfast.methods.layers import resolve_layers
from camfast.methods.registry import register, register_variant
from camfast.methods.targets import class_names_of, class_sets, each_class, is_multi_target, target_indices

__all__ = ["RCAMResult", "pca_guide", "rcam", "variogram_radius"]


def pca_guide(features: Tensor, k: int = 3) -> Tensor:
    """Per-image PCA over channels: ``(B, C, h, w) -> (B, k, h, w)``, each component in [0, 1].

    Every pixel's ``C``-vector is projected on the ``k`` leading principal directions of that
    image's pixels (centred). The sign of each direction is fixed so that its largest-magnitude
    loading is positive, so the same input always gives the same guide; each component is then
    min-max scaled to [0, 1] (a constant component becomes 0).
    """
    if not isinstance(features, Tensor) or features.dim() != 4:
        raise ValueError(f"features must be a (B, C, h, w) tensor, got {getattr(features, 'shape', features)!r}")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    B, C, h, w = features.shape
    x = features.detach().to(torch.float64).reshape(B, C, h * w).transpose(1, 2)  # (B, hw, C)
    x = x - x.mean(dim=1, keepdim=True)
    cov = x.transpose(1, 2) @ x / max(h * w - 1, 1)  # (B, C, C)
    _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
    vecs = vecs.flip(-1)[..., : min(k, C)]  # (B, C, k') leading directions
    idx = vecs.abs().argmax(dim=1, keepdim=True)
    vecs = vecs * torch.sign(vecs.gather(1, idx)).clamp_min(0).mul(2).sub(1)
    proj = (x @ vecs).transpose(1, 2).reshape(B, -1, h, w)
    if proj.shape[1] < k:  # fewer channels than components: pad with zeros
        proj = torch.cat([proj, proj.new_zeros(B, k - proj.shape[1], h, w)], dim=1)
    lo = proj.amin(dim=(2, 3), keepdim=True)
    hi = proj.amax(dim=(2, 3), keepdim=True)
    out = torch.where(hi - lo > 1e-12, (proj - lo) / (hi - lo), torch.zeros_like(proj))
    return out.to(features.dtype if features.is_floating_point() else torch.float32)


def _empirical_variogram(guide: Tensor, max_lag: int) -> Tensor:
    """``gamma(h)`` for h = 1..max_lag from horizontal and vertical pixel pairs: ``(B, max_lag)``."""
    g = guide.to(torch.float64)
    gammas = []
    for lag in range(1, max_lag + 1):
        terms, counts = [], 0
        if g.shape[-1] > lag:
            d = g[..., lag:] - g[..., :-lag]
            terms.append(d.square().sum(dim=(1, 2, 3)))
            counts += d[0, 0].numel()
        if g.shape[-2] > lag:
            d = g[..., lag:, :] - g[..., :-lag, :]
            terms.append(d.square().sum(dim=(1, 2, 3)))
            counts += d[0, 0].numel()
        gammas.append(sum(terms) / (2 * counts))
    return torch.stack(gammas, dim=1)


def variogram_radius(guide: Tensor, max_lag: int | None = None, min_radius: int = 1,
                     max_radius: int | None = None, return_sigma: bool = False):
    """Guided-filter radius per image from the guide's variogram (the rCAM paper, eq. 1).

    The empirical variogram ``gamma(h) = mean over pixel pairs at distance h of
    |S(x_i) - S(x_j)|^2 / 2`` (summed over the guide's channels; pairs along rows and
    columns, ``h = 1..max_lag``) is fitted by ``c1 * exp(-h^2 / (2 sigma^2)) + c2`` in the
    least-squares sense (exact for ``c1, c2`` at each ``sigma`` of a fine grid, the best
    ``sigma`` kept). The radius is ``round(sigma)`` clamped to ``[min_radius, max_radius]``.

    Args:
        guide: ``(B, k, h, w)`` guide (e.g. from :func:`pca_guide`).
        max_lag: largest lag (default ``min(h, w) // 2``, at least 2).
        min_radius, max_radius: bounds (default max: ``min(h, w) // 4``, at least min).
        return_sigma: also return the fitted ``sigma`` per image.

    Returns:
        ``list[int]`` of radii (and a ``(B,)`` float64 tensor of sigmas).
    """
    if not isinstance(guide, Tensor) or guide.dim() != 4:
        raise ValueError(f"guide must be a (B, k, h, w) tensor, got {getattr(guide, 'shape', guide)!r}")
    h, w = guide.shape[-2:]
    if min(h, w) < 3:
        raise ValueError(f"guide must be at least 3x3 to fit a variogram, got {h}x{w}")
    max_lag = max(2, min(h, w) // 2) if max_lag is None else int(max_lag)
    if max_lag < 2 or max_lag >= max(h, w):
        raise ValueError(f"max_lag must be in [2, {max(h, w) - 1}], got {max_lag}")
    max_radius = max(min_radius, min(h, w) // 4) if max_radius is None else int(max_radius)
    if min_radius < 1 or max_radius < min_radius:
        raise ValueError(f"need 1 <= min_radius <= max_radius, got {min_radius}, {max_radius}")
    gamma = _empirical_variogram(guide.detach(), max_lag)  # (B, L)
    lags = torch.arange(1, max_lag + 1, dtype=torch.float64)
    sigmas = torch.exp(torch.linspace(math.log(0.25), math.log(4.0 * max_lag), 400, dtype=torch.float64))
    basis = torch.exp(-lags[None, :] ** 2 / (2 * sigmas[:, None] ** 2))  # (S, L)
    # (c1, c2) in closed form (2x2 normal equations) for every sigma and image at once
    n = float(max_lag)
    sb, sbb = basis.sum(1), basis.square().sum(1)  # (S,)
    sy, sby = gamma.sum(1, keepdim=True), gamma @ basis.T  # (B, 1), (B, S)
    det = sbb * n - sb.square()
    ok = det > 1e-12 * n * n
    det = torch.where(ok, det, torch.ones_like(det))
    c1 = (n * sby - sb * sy) / det
    c2 = (sbb * sy - sb * sby) / det
    resid = (c1[..., None] * basis + c2[..., None] - gamma[:, None, :]).square().sum(-1)  # (B, S)
    resid = torch.where(ok, resid, torch.full_like(resid, float("inf")))
    best_sigma = sigmas[resid.argmin(dim=1)].tolist()
    sig = torch.tensor(best_sigma, dtype=torch.float64)
    radii = [int(min(max(round(s), min_radius), max_radius)) for s in best_sigma]
    return (radii, sig) if return_sigma else radii


class RCAMResult(NamedTuple):
    """Every stage of :func:`rcam` (maps ``(B, ., .)`` float32; ``cam`` at the input size)."""

    cam: Tensor          # final map: CRF-refined foreground probability, or rCAM3 with crf=False
    cam1: Tensor         # CAM of I1 at feature resolution
    cam2: Tensor         # CAM of I2
    rcam1: Tensor        # guided-upsampled CAM1 (size of S2)
    rcam2: Tensor        # guided-upsampled CAM2 (size of S2)
    rcam3: Tensor        # fusion at input size, [0, 1]
    radii: list[list[int]]  # guided-filter radius per step and image
    targets: Tensor      # class index per image (top class of I1 unless given)


def _stride8_layer(model: nn.Module, sizes: dict[str, tuple[int, int]], H: int) -> str:
    want = math.ceil(H / 8)
    candidates = [n for n, s in sizes.items() if s[0] == want]
    if not candidates:  # nearest resolution at or above stride 8
        above = [n for n, s in sizes.items() if s[0] >= want]
        if not above:
            raise ValueError("rcam: no feature layer at stride 8 or finer; pass shape_layer=...")
        candidates = [min(above, key=lambda n: sizes[n][0])]
    return candidates[-1]


def _guided_up(cam: Tensor, guides: Sequence[Tensor], eps: float, radii_log: list[list[int]]) -> Tensor:
    """The guided steps of the paper (eqs. 2-4), each ``G^f(U^2(cam), S)``, through ``guides`` in
    order: for each guide, bilinear x2 steps until ``cam`` reaches its size (a step below the
    guide's size uses the guide resized to it), and when ``cam`` already has the guide's size
    (a network whose CAM is at stride 8, the size of ``S1``) one guided filter at that size
    with no upsampling, so that every guide filters the map once at its own size:
    ``CAM1 -> S1 -> S2`` is two guided steps or more and ``CAM2 -> S2`` one or more."""
    from camfast.ops import guided_filter

    cur = cam[:, None]
    for final in guides:
        target = final.shape[-2:]
        stepped = False
        while not stepped or cur.shape[-2] < target[0] or cur.shape[-1] < target[1]:
            size = tuple(min(c * 2, t) if c < t else c for c, t in zip(cur.shape[-2:], target))
            if cur.shape[-2:] != size:
                cur = F.interpolate(cur, size=size, mode="bilinear", align_corners=False)
            guide = final if final.shape[-2:] == size else F.interpolate(final, size=size, mode="bilinear",
                                                                          align_corners=False)
            radii = variogram_radius(guide) if min(size) >= 3 else [1] * cur.shape[0]
            radii_log.append(radii)
            cur = torch.cat([guided_filter(guide[b:b + 1], cur[b:b + 1], radii[b], eps)
                             for b in range(cur.shape[0])])
            stepped = True
    return cur[:, 0]


@register("rcam", display="rCAM", kind="classifier-weight", takes_image=True, options={"crf": False},
          summary="two-scale CAM, guided upsampling with PCA shape guides (Ha et al. 2018); --crf adds its CRF")
def rcam(model: nn.Module, x: Tensor, target=None, scales: Sequence[float] = (1, 2), crf: bool = True,
         shape_layer: str | nn.Module | None = None, *, eps: float = 1e-3, image: Any = None,
         crf_iters: int = 5, output_fn=None, return_intermediates: bool = False,
         crf_workers: int | None = None, output_size=None, return_layers: bool = False):
    """High-resolution CAM (rCAM) of the top class of ``x`` (the rCAM paper's pipeline).

    Args:
        model: a classifier with global pooling followed by a linear layer (as for
            :func:`camfast.cam`).
        x: ``(B, 3, H, W)`` normalised images (``I1``); ``I2`` is ``x`` upsampled by ``scales[1]``.
        target: None (top class of ``I1``), an int or one class per image.
        scales: ``(1, 2)``: the two input scales (the paper's 224 and 448).
        crf: refine with a dense CRF (needs pydensecrf2; its spatial widths scale with the image,
            :func:`camfast.crf.refine`); ``False`` returns rCAM3.
        shape_layer: the layer giving the shape features (default: the deepest layer of
            :func:`camfast.find_layers` at stride 8).
        eps: guided-filter regularisation (guides are in [0, 1]).
        image: uint8 RGB ``(B, H, W, 3)`` for the CRF's bilateral term; default: ``x``
            min-max scaled per image to 0..255.
        crf_iters: CRF mean-field iterations.
        crf_workers: processes for the batch's CRF (:func:`camfast.crf.refine`'s ``workers``: default
            one per image up to the CPU count; 1 runs in this process, cheaper for small images).
        return_intermediates: return an :class:`RCAMResult` with every stage
            (``return_layers=True`` is the same, the name the other methods use).
        output_size: ``(H, W)`` of the result (bilinear resize of the final map); default
            the input's.

    Returns:
        ``(B, H, W)`` float32 in [0, 1], or an :class:`RCAMResult`.
    """
    x = check_input(x)
    size = result_size(x, output_size)
    if is_multi_target(target):  # one rCAM pipeline per round of classes (shared forwards are not reused)
        logits = predict(model, x, output_fn)
        sets = class_sets(logits, target, class_names_of(model))

        def single(xs: Tensor, classes: Tensor) -> Tensor:
            return rcam(model, xs, classes, scales, crf, shape_layer, eps=eps, image=image, crf_iters=crf_iters,
                        output_fn=output_fn, crf_workers=crf_workers, output_size=size)

        out = sets.assemble(each_class(single, x, sets))
        return CAMResult(out, {}, logits, sets.indices()) if (return_layers or return_intermediates) else out
    if len(scales) != 2 or scales[0] != 1 or scales[1] <= 1:
        raise ValueError(f"scales must be (1, s) with s > 1, got {tuple(scales)!r}")
    B, _, H, W = x.shape
    head = classifier_head(model, "camfast.rcam")
    x2 = F.interpolate(x, scale_factor=float(scales[1]), mode="bilinear", align_corners=False)
    # the shape layer: with shape_layer=None, the candidate layers' outputs at stride 8 or finer
    # are kept from the forward of I1 itself (no separate probe pass) and the layer is chosen
    # from their sizes
    if shape_layer is None:
        cands = dict(resolve_layers(model, None))
        min_side = math.ceil(H / 8)
        logits1, feat1, outs1 = pooled_features(model, x, head, output_fn, cands,
                                                keep=lambda o: o.dim() == 4 and o.shape[-2] >= min_side)
        shape_name = _stride8_layer(model, {n: tuple(o.shape[-2:]) for n, o in outs1.items()}, H)
        shape_module = cands[shape_name]
    else:
        ((shape_name, shape_module),) = resolve_layers(model, [shape_layer], "shape_layer")
        logits1, feat1, outs1 = pooled_features(model, x, head, output_fn, {shape_name: shape_module})
    shape1 = outs1[shape_name]
    del outs1
    logits2, feat2, outs2 = pooled_features(model, x2, head, output_fn, {shape_name: shape_module})
    shape2 = outs2[shape_name]
    idx = target_indices(logits1, target, "camfast.rcam", class_names_of(model))
    w = head.linear.weight.detach()[idx].to(torch.float32)
    cam1 = torch.einsum("bchw,bc->bhw", feat1.float(), w)
    cam2 = torch.einsum("bchw,bc->bhw", feat2.float(), w)
    p1 = logits1.float().softmax(1).gather(1, idx[:, None])[:, 0]
    p2 = logits2.float().softmax(1).gather(1, idx[:, None])[:, 0]
    s1, s2 = pca_guide(shape1.float()), pca_guide(shape2.float())

    radii: list[list[int]] = []
    rcam1 = _guided_up(normalize(cam1), [s1, s2], eps, radii)
    rcam2 = _guided_up(normalize(cam2), [s2], eps, radii)
    up = lambda m: F.interpolate(m[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]  # noqa: E731
    rcam3 = normalize(up(rcam1) * p1[:, None, None] + up(rcam2) * p2[:, None, None])

    out = rcam3
    if crf:
        from camfast import crf as crf_module

        if image is None:
            xf = x.detach().float()
            lo, hi = xf.amin(dim=(1, 2, 3), keepdim=True), xf.amax(dim=(1, 2, 3), keepdim=True)
            image = ((xf - lo) / (hi - lo + 1e-12) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        refined = crf_module.refine(image if image.ndim == 4 else image[None], rcam3.cpu().numpy(), iters=crf_iters,
                                     workers=crf_workers)
        out = torch.from_numpy(refined).to(x.device)
    if size != (H, W):
        out = F.interpolate(out[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0].clamp(0, 1)
    if return_intermediates or return_layers:
        return RCAMResult(out, cam1, cam2, rcam1, rcam2, rcam3, radii, idx)
    return out


register_variant("rcam-crf", "rcam", display="rCAM + CRF", needs=("pydensecrf",), crf=True, crf_workers=1,
                 summary="rCAM with its dense-CRF refinement (the paper's full pipeline; in this process)")
