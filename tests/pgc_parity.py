"""camfast.compat's classes against pytorch-grad-cam's on the same call: shared by the compat
tests (tests/methods/test_compat.py, tests/methods/test_compat_real.py)."""

from __future__ import annotations

import numpy as np
import peers
import pytest

from camfast import compat

#: Every compat class of a registered method that pytorch-grad-cam also has (ZoomCAM is
#: camfast's own: it equals HiResCAM): a method added to the registry is compared too.
METHODS = [n for n in compat.__all__ if n not in ("ClassifierOutputTarget", "ZoomCAM")]
ATOL = 1e-5
#: Score-CAM's weights are a softmax of model outputs on masked images, batched differently by
#: the two libraries: the issue's tolerance for it.
TOLERANCE = {"ScoreCAM": 1e-4}
#: Methods whose eigen_smooth projects ``w_c A_c`` with channel weights from spatial sums: numpy
#: (pytorch-grad-cam) and torch round those sums differently in the last bit, and the SVD's
#: sign of some images flips with such bits (camfast.methods.eigencam.eigen_projection). On one
#: layer each image must then equal pytorch-grad-cam's map for one of the two signs; several
#: layers or aug_smooth (2^calls sign patterns) are not compared for them.
SIGN_SENSITIVE = ("GradCAM", "XGradCAM", "GradCAMPlusPlus")
SMOOTHING = {"plain": {}, "aug": {"aug_smooth": True}, "eigen": {"eigen_smooth": True},
             "aug+eigen": {"aug_smooth": True, "eigen_smooth": True}}


def assert_matches_grad_cam(method, model, layers, x, targets=None, reshape_transform=None, reference=None,
                            **smoothing):
    """camfast.compat's ``method`` against pytorch-grad-cam's (``reference``: another of its
    classes) on the same call; returns camfast's maps (and records the max |diff| in
    :data:`DIFFS`)."""
    pgc = peers.pytorch_grad_cam()
    sign_free = smoothing.get("eigen_smooth") and method in SIGN_SENSITIVE
    if sign_free and (len(layers) > 1 or smoothing.get("aug_smooth")):
        pytest.skip(f"{method} eigen_smooth on several layers / with aug_smooth: the SVD's sign of an image "
                    "depends on the last bits of the channel weights (see pgc_parity.SIGN_SENSITIVE)")
    with getattr(pgc, reference or method)(model, layers, reshape_transform=reshape_transform) as ref_cam:
        expected = ref_cam(x, targets, **smoothing)
    with getattr(compat, method)(model, layers, reshape_transform=reshape_transform) as cam:
        got = cam(x, targets, **smoothing)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    assert got.shape == expected.shape == (x.shape[0], x.shape[2], x.shape[3])
    # The comparison must not be between two blank maps (aug_smooth's are means of six maps,
    # whose peaks need not coincide: a lower bar for their spread).
    spread = 0.2 if smoothing.get("aug_smooth") else 0.5
    assert expected.max() > 0.9 * (spread / 0.5) and np.ptp(expected, axis=(1, 2)).min() > spread, \
        f"degenerate test case: spread {np.ptp(expected, axis=(1, 2)).min():.3g}"
    diff = float(np.abs(got - expected).max())
    if sign_free and diff > ATOL:  # each image: one of the two signs of its projection
        import camfast.compat as module

        projection = module.eigen_projection
        module.eigen_projection = lambda t: -projection(t)
        try:
            with getattr(compat, method)(model, layers, reshape_transform=reshape_transform) as cam:
                flipped = cam(x, targets, **smoothing)
        finally:
            module.eigen_projection = projection
        per_image = np.minimum(np.abs(got - expected).max(axis=(1, 2)), np.abs(flipped - expected).max(axis=(1, 2)))
        FLIPS.setdefault(method, []).append(int((np.abs(got - expected).max(axis=(1, 2)) > ATOL).sum()))
        diff = float(per_image.max())
    DIFFS.setdefault(method + (" eigen_smooth" if smoothing.get("eigen_smooth") else "")
                     + (" aug_smooth" if smoothing.get("aug_smooth") else ""), []).append(diff)
    tol = TOLERANCE.get(method, ATOL)
    assert diff <= tol, f"{method} {smoothing}: max |diff| {diff:.3g} against pytorch-grad-cam"
    return got


#: method (and smoothing) -> the max |diff| of every comparison run in this session; FLIPS: the
#: images of SIGN_SENSITIVE comparisons whose projection had pytorch-grad-cam's other sign.
DIFFS: dict[str, list[float]] = {}
FLIPS: dict[str, list[int]] = {}


def _log_diffs() -> None:
    import json
    import os

    path = os.environ.get("CAMFAST_PARITY_LOG")
    if path and DIFFS:
        summary = {k: {"comparisons": len(v), "max_abs_diff": max(v)} for k, v in sorted(DIFFS.items())}
        summary["sign_flipped_images"] = {k: sum(v) for k, v in FLIPS.items()}
        with open(path, "a") as f:
            f.write(json.dumps(summary) + "\n")


# CAMFAST_PARITY_LOG=file: append the session's max |diff| per method to ``file`` at exit.
import atexit  # noqa: E402

atexit.register(_log_diffs)
