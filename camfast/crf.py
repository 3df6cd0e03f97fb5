"""Dense CRF refinement of CAM probabilities (Kraehenbuehl & Koltun 2011) with pydensecrf.

``pydensecrf`` is an optional dependency: install the ``pydensecrf2`` package (it builds on
current Pythons and provides the same ``pydensecrf`` module).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

__all__ = ["REFERENCE_SIDE", "refine", "require", "scaled_widths"]


def require():
    """The ``pydensecrf.densecrf`` module, or an ImportError saying what to install."""
    return _densecrf()


def _densecrf():
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "camfast.crf needs pydensecrf: pip install pydensecrf2 (it provides the pydensecrf module)"
        ) from exc
    return dcrf


def _as_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
    return x


def _refine_one(image: np.ndarray, prob: np.ndarray, iters: int, params: dict) -> np.ndarray:
    dcrf = _densecrf()
    K, H, W = prob.shape
    d = dcrf.DenseCRF2D(W, H, K)
    unary = -np.log(np.clip(prob, 1e-8, 1.0)).reshape(K, -1).astype(np.float32)
    d.setUnaryEnergy(np.ascontiguousarray(unary))
    d.addPairwiseGaussian(sxy=params["sxy_gaussian"], compat=params["compat_gaussian"])
    d.addPairwiseBilateral(sxy=params["sxy_bilateral"], srgb=params["srgb"],
                           rgbim=np.ascontiguousarray(image), compat=params["compat_bilateral"])
    q = d.inference(iters)
    return np.asarray(q, dtype=np.float32).reshape(K, H, W)


def _worker(args):
    return _refine_one(*args)


#: The image side (pixels) the CRF's default spatial widths are sized for: DeepLab's dense-CRF
#: settings (sxy 3 and 80, srgb 13, compat 3 and 10) come from ~500-pixel PASCAL VOC photos.
REFERENCE_SIDE = 500
SXY_GAUSSIAN, SXY_BILATERAL = 3.0, 80.0


def scaled_widths(height: int, width: int, reference_side: float = REFERENCE_SIDE) -> tuple[float, float]:
    """The default spatial widths for an ``height x width`` image: ``(3 s, 80 s)`` with
    ``s = max(height, width) / reference_side`` (0.384 and 10.24 at 64 pixels, 3 and 80 at 500)."""
    s = max(height, width) / float(reference_side)
    return SXY_GAUSSIAN * s, SXY_BILATERAL * s


def refine(image, prob, iters: int = 5, *, sxy_gaussian: float | None = None, compat_gaussian: float = 3,
           sxy_bilateral: float | None = None, srgb: float = 13, compat_bilateral: float = 10,
           workers: int | None = None, reference_side: float = REFERENCE_SIDE):
    """Refine class probabilities with a fully connected CRF (bilateral term on the image).

    The kernels' spatial widths (in pixels) scale with the image: by default
    ``sxy_gaussian = 3 s`` and ``sxy_bilateral = 80 s`` with ``s = max(H, W) / reference_side``
    (:func:`scaled_widths`; ``reference_side`` 500, the photos DeepLab's settings were tuned on),
    so a 64-pixel image gets 0.384 and 10.24: the unscaled widths span the whole of such an
    image and the pairwise terms then erase a small foreground. The colour width ``srgb`` and
    the weights ``compat_*`` do not depend on the size. Widths given explicitly are used as given.

    Args:
        image: uint8 RGB ``(H, W, 3)``, or a batch ``(B, H, W, 3)``; numpy or torch.
        prob: foreground probability ``(H, W)`` in [0, 1] (background = ``1 - prob``), or
            ``(K, H, W)`` class probabilities; with a batch, ``(B, H, W)`` or ``(B, K, H, W)``.
        iters: mean-field iterations.
        sxy_gaussian, compat_gaussian: the smoothness kernel (width default ``3 s``, see above).
        sxy_bilateral, srgb, compat_bilateral: the appearance kernel (width default ``80 s``).
        workers: processes for a batch (default: one per image up to the CPU count; 1 runs
            in this process).
        reference_side: the image side the unscaled widths are meant for (default 500).

    Returns:
        float32 numpy array shaped like ``prob``: the refined foreground probability for
        ``(H, W)`` input, the refined class probabilities for ``(K, H, W)``.

    Raises:
        TypeError / ValueError: wrong types, dtypes or shapes (named).
    """
    image = _as_numpy(image, "image")
    prob = _as_numpy(prob, "prob")
    if image.dtype != np.uint8:
        raise TypeError(f"image must be uint8 RGB, got dtype {image.dtype}")
    if not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be a positive int, got {iters!r}")
    batched = image.ndim == 4
    if image.ndim not in (3, 4) or image.shape[-1] != 3:
        raise ValueError(f"image must be (H, W, 3) or (B, H, W, 3), got shape {image.shape}")
    images = image if batched else image[None]
    B, H, W = images.shape[:3]
    if batched and prob.shape[0] != B:
        raise ValueError(f"prob has {prob.shape[0]} images but image has {B}")
    probs = prob if batched else prob[None]
    foreground = probs.ndim == 3
    if probs.ndim not in (3, 4) or probs.shape[-2:] != (H, W):
        raise ValueError(f"prob must be (H, W) or (K, H, W) matching the image's {H}x{W}, got shape {prob.shape}")
    probs = probs.astype(np.float32)
    if not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
        raise ValueError("prob must hold finite probabilities in [0, 1]")
    if foreground:
        probs = np.stack([1.0 - probs, probs], axis=1)
    if not isinstance(reference_side, (int, float)) or isinstance(reference_side, bool) or not reference_side > 0:
        raise ValueError(f"reference_side must be a positive number, got {reference_side!r}")
    default_g, default_b = scaled_widths(H, W, reference_side)
    sxy_gaussian = default_g if sxy_gaussian is None else sxy_gaussian
    sxy_bilateral = default_b if sxy_bilateral is None else sxy_bilateral
    params = dict(sxy_gaussian=sxy_gaussian, compat_gaussian=compat_gaussian, sxy_bilateral=sxy_bilateral,
                  srgb=srgb, compat_bilateral=compat_bilateral)
    jobs = [(images[b], probs[b], iters, params) for b in range(B)]
    workers = min(B, os.cpu_count() or 1) if workers is None else workers
    if workers <= 1 or B == 1:
        out = [_worker(j) for j in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            out = list(pool.map(_worker, jobs))
    result = np.stack(out)
    if foreground:
        result = result[:, 1]
    return result if batched else result[0]
