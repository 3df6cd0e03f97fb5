"""From a CAM to boxes: normalisation and thresholding, with PaS (Bae, Noh, Kim, ECCV 2020).

* :func:`normalize`: per-map min-max (``(M - min) / (max - min)``) or percentile
  (``(M - min) / (P_q(M) - min)`` clipped to 1) normalisation to ``[0, 1]``; a constant map
  gives zeros, never NaN.
* :func:`boxes_from_cam`: the box extraction of the official code of "Rethinking CAM for
  WSOL" (won-bae/rethinkingCAM, ``extract_bbox``) and of clovaai/wsolevaluation
  (``compute_bboxes_from_scoremaps``), step by step:

  1. ``u8 = uint8((M - min) / (max - min) * 255)`` (truncation; a constant map gives 0);
  2. the standard ``s = max(u8)`` ("MaS", ``standard="max"``) or ``s = percentile(u8, q)``
     (numpy's linear interpolation; "PaS", ``standard="percentile"``);
  3. ``mask = u8 > int(threshold * s)`` (strict, like ``cv2.threshold(..., THRESH_BINARY)``);
  4. contours of ``mask`` by OpenCV ``findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)``;
  5. ``contours="largest"``: the bounding rectangle of the contour of largest
     ``cv2.contourArea`` (the first one on ties, as Python's ``max`` picks it);
     ``contours="all"``: the bounding rectangles of every contour (with ``RETR_TREE`` this
     includes the inner contours of holes, as wsolevaluation's multi-contour mode counts them).

  The settings of the paper: baseline ``standard="max", threshold=0.2``; PaS
  ``standard="percentile", q=90, threshold=0.35``.

OpenCV (``pip install opencv-python-headless``, or the ``camfast[loc]`` extra) is needed by
:func:`boxes_from_cam` only; it is imported on first use.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["boxes_from_cam", "normalize", "opencv"]

_NORMALIZE_METHODS = ("minmax", "percentile")
_STANDARDS = ("max", "percentile")
_CONTOURS = ("largest", "all")
_BOX_FORMATS = ("inclusive", "wsol")


def _check_maps(cam: object) -> Tensor:
    if isinstance(cam, np.ndarray):
        cam = torch.from_numpy(cam)
    if not isinstance(cam, Tensor):
        raise TypeError(f"cam must be a torch.Tensor or numpy array, got {type(cam).__name__}")
    if cam.dim() not in (2, 3):
        raise ValueError(f"cam must have shape (H, W) or (B, H, W), got shape {tuple(cam.shape)}")
    if cam.numel() == 0:
        raise ValueError(f"cam must not be empty, got shape {tuple(cam.shape)}")
    if not (cam.is_floating_point() or cam.dtype in (torch.uint8, torch.int16, torch.int32, torch.int64)):
        raise TypeError(f"cam must be a real floating or integer tensor, got {cam.dtype}")
    if cam.is_floating_point() and not bool(torch.isfinite(cam).all()):
        raise ValueError("cam must be finite (it holds NaN or inf)")
    return cam


def _check_q(q: object, name: str = "q") -> float:
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not (0.0 <= float(q) <= 100.0):
        raise ValueError(f"{name} must be a number in [0, 100], got {q!r}")
    return float(q)


def _choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def normalize(cam: Tensor, method: str = "minmax", q: float | None = None) -> Tensor:
    """Normalise each map to ``[0, 1]``.

    Args:
        cam: ``(H, W)`` or ``(B, H, W)`` floating tensor (each ``(H, W)`` map on its own).
        method: ``"minmax"``: ``(M - min) / (max - min)``;
            ``"percentile"``: ``clip((M - min) / (P_q(M) - min), 0, 1)`` with ``P_q`` the
            ``q``-th percentile (linear interpolation, as ``numpy.percentile`` and
            ``torch.quantile``); ``q=100`` equals ``"minmax"``.
        q: percentile in ``[0, 100]`` for ``method="percentile"`` (default 90); must be left
            ``None`` for ``"minmax"``.

    Returns:
        A tensor of ``cam``'s shape and dtype (float32 for integer input) in ``[0, 1]``. A
        map whose standard equals its minimum (constant map, or ``P_q = min``) gives zeros
        where ``M = min`` and, for ``"percentile"``, ones elsewhere. Never NaN.

    Example:
        >>> camfast.normalize(torch.tensor([[0., 1.], [2., 4.]]))
        tensor([[0.0000, 0.2500],
                [0.5000, 1.0000]])
    """
    cam = _check_maps(cam)
    method = _choice("method", method, _NORMALIZE_METHODS)
    if method == "minmax":
        if q is not None:
            raise ValueError("q applies only to method='percentile'; leave it None for 'minmax'")
    else:
        q = 90.0 if q is None else _check_q(q)
    x = cam if cam.is_floating_point() else cam.to(torch.float32)
    flat = x.reshape(-1, x.shape[-2] * x.shape[-1])
    lo = flat.amin(dim=1, keepdim=True)
    if method == "minmax":
        hi = flat.amax(dim=1, keepdim=True)
    else:
        # torch.quantile needs float32/64; compute the standard in float64 for half inputs.
        src = flat if flat.dtype in (torch.float32, torch.float64) else flat.double()
        hi = torch.quantile(src, q / 100.0, dim=1, keepdim=True).to(flat.dtype)
    span = hi - lo
    safe = torch.where(span > 0, span, torch.ones_like(span))
    out = (flat - lo) / safe
    # Constant standard (hi == lo): zeros at the minimum, ones above it (only "percentile").
    out = torch.where(span > 0, out, (flat > lo).to(out.dtype))
    out = out.clamp(0.0, 1.0)
    return out.reshape(x.shape)


def opencv(needed_by: str = "camfast.boxes_from_cam") -> Any:
    """The ``cv2`` module, or an ImportError saying that ``needed_by`` needs OpenCV and how to
    install it (every contour-based box extraction in camfast imports OpenCV through here)."""
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - exercised by monkeypatching in tests
        raise ImportError(
            f"{needed_by} needs OpenCV: pip install opencv-python-headless "
            "(or pip install 'camfast[loc]')"
        ) from e
    return cv2


def _to_uint8(m: Tensor) -> np.ndarray:
    """``uint8((M - min) / (max - min) * 255)`` in float32 (float64 stays float64), zeros if constant."""
    a = m.detach().cpu()
    if not a.is_floating_point() or a.dtype in (torch.float16, torch.bfloat16):
        a = a.to(torch.float32)
    a = a.numpy()
    lo, hi = a.min(), a.max()
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    n = (a - lo) / (hi - lo) * 255
    return np.ascontiguousarray(n.astype(np.uint8))


def boxes_from_cam(
    cam: Tensor,
    threshold: float,
    standard: str = "max",
    q: float = 90,
    contours: str = "largest",
    box_format: str = "inclusive",
) -> list[Tensor]:
    """Boxes around the region of a CAM above a threshold (MaS / PaS, Bae et al. 2020).

    See the module docstring for the exact steps (min-max to uint8 0..255, standard,
    strict threshold, OpenCV contours, bounding rectangles).

    Args:
        cam: ``(H, W)`` or ``(B, H, W)`` map (any real dtype, any device; finite).
        threshold: ``theta_loc`` in ``[0, 1]``: the mask is ``u8 > int(theta_loc * standard)``.
        standard: ``"max"`` (MaS: ``max(u8)``, the CAM/wsolevaluation baseline) or
            ``"percentile"`` (PaS: ``percentile(u8, q)``).
        q: the percentile for ``standard="percentile"`` in ``[0, 100]`` (90 in the paper).
        contours: ``"largest"`` (one box: the contour of largest ``cv2.contourArea``; the
            paper and wsolevaluation's MaxBoxAcc) or ``"all"`` (one box per contour, outer and
            hole contours alike, in OpenCV's order; MaxBoxAccV2).
        box_format: ``"inclusive"``: ``(x0, y0, x1, y1)`` of the first and last pixel inside
            the box (``x1 = x + w - 1``); ``"wsol"``: wsolevaluation's ``(x, y, min(x + w, W - 1),
            min(y + h, H - 1))``, for comparisons with its numbers.

    Returns:
        A list of ``B`` (1 for a 2-D ``cam``) int64 CPU tensors of shape ``(n_i, 4)``: ``n_i = 1``
        for ``"largest"`` when anything is above the threshold, the number of contours for
        ``"all"``, and ``n_i = 0`` (an empty ``(0, 4)`` tensor) when nothing is: a constant
        map, or a threshold at or above every value. (wsolevaluation substitutes the box
        ``[0, 0, 0, 0]`` there, rethinkingCAM the whole image; the caller decides.)

    Raises:
        ImportError: OpenCV is not installed (names the package to install).
        TypeError / ValueError: bad ``cam`` or option, naming the argument.

    Example:
        >>> m = torch.zeros(5, 6); m[1:3, 2:5] = 1.0
        >>> camfast.boxes_from_cam(m, 0.5)
        [tensor([[2, 1, 4, 2]])]
    """
    cam = _check_maps(cam)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not (
        math.isfinite(threshold) and 0.0 <= float(threshold) <= 1.0
    ):
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
    standard = _choice("standard", standard, _STANDARDS)
    q = _check_q(q)
    contours = _choice("contours", contours, _CONTOURS)
    box_format = _choice("box_format", box_format, _BOX_FORMATS)
    cv2 = opencv()

    maps = cam.unsqueeze(0) if cam.dim() == 2 else cam
    height, width = int(maps.shape[-2]), int(maps.shape[-1])
    out: list[Tensor] = []
    for m in maps:
        u8 = _to_uint8(m)
        ref = float(u8.max()) if standard == "max" else float(np.percentile(u8, q))
        thresh = int(float(threshold) * ref)
        _, binary = cv2.threshold(u8, thresh, 255, cv2.THRESH_BINARY)
        found = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
        if len(found) == 0:
            out.append(torch.zeros((0, 4), dtype=torch.int64))
            continue
        if contours == "largest":
            found = [max(found, key=cv2.contourArea)]
        rows = []
        for c in found:
            x, y, w, h = cv2.boundingRect(c)
            if box_format == "inclusive":
                rows.append((x, y, x + w - 1, y + h - 1))
            else:
                rows.append((x, y, min(x + w, width - 1), min(y + h, height - 1)))
        out.append(torch.tensor(rows, dtype=torch.int64).reshape(-1, 4))
    return out
