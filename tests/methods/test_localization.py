"""camfast.normalize and camfast.boxes_from_cam (MaS / PaS, Bae et al. 2020).

Boxes are checked against hand-computed ones on tiny maps, against the official pipelines
written out literally (wsolevaluation's ``compute_bboxes_from_scoremaps`` and
rethinkingCAM's ``extract_bbox``), and against connected components (scipy, 8-connectivity)
which need no OpenCV.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import camfast
from camfast.localization import boxes_from_cam, normalize

cv2 = pytest.importorskip("cv2")

from wsol_reference import wsolevaluation_boxes  # noqa: E402


def _boxes(t):
    return sorted(map(tuple, t.tolist()))


# ------------------------------------------------------------------------------ normalize
def test_normalize_minmax_hand_computed():
    m = torch.tensor([[[0.0, 1.0], [2.0, 4.0]], [[-1.0, -1.0], [3.0, 1.0]]])
    out = normalize(m)
    expected = torch.tensor([[[0.0, 0.25], [0.5, 1.0]], [[0.0, 0.0], [1.0, 0.5]]])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-7)
    assert normalize(m[0]).shape == (2, 2)


def test_normalize_percentile_hand_computed():
    # values 0..9: P90 (linear) = 8.1 -> (M - 0) / 8.1, clipped at 1
    m = torch.arange(10.0).reshape(2, 5)
    out = normalize(m, "percentile", q=90)
    expected = (m / 8.1).clamp(max=1.0)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-7)
    assert (out == 1.0).sum() == 1  # only 9 is above P90 = 8.1
    # default q is 90; q=100 equals minmax
    torch.testing.assert_close(normalize(m, "percentile"), out)
    torch.testing.assert_close(normalize(m, "percentile", q=100), normalize(m))


def test_normalize_matches_numpy_percentile():
    g = torch.Generator().manual_seed(0)
    m = torch.rand(3, 7, 9, generator=g, dtype=torch.float64)
    out = normalize(m, "percentile", q=73.5)
    for b in range(3):
        a = m[b].numpy()
        p = np.percentile(a, 73.5)
        ref = np.clip((a - a.min()) / (p - a.min()), 0, 1)
        np.testing.assert_allclose(out[b].numpy(), ref, rtol=1e-12, atol=1e-12)


def test_normalize_constant_map_is_zero_not_nan():
    m = torch.full((2, 4, 4), 3.0)
    for method in ("minmax", "percentile"):
        out = normalize(m, method)
        assert torch.equal(out, torch.zeros_like(m))
    # P_q equal to the minimum (mostly-constant map): zeros at the min, ones above it
    m = torch.zeros(4, 4)
    m[0, 0] = 5.0
    out = normalize(m, "percentile", q=50)
    assert out[0, 0] == 1.0 and out.sum() == 1.0


def test_normalize_dtypes_and_integer_input():
    m = torch.tensor([[0, 2], [4, 8]], dtype=torch.uint8)
    out = normalize(m)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.25], [0.5, 1.0]]))
    h = normalize(torch.tensor([[0.0, 2.0], [4.0, 8.0]], dtype=torch.float16), "percentile", q=100)
    assert h.dtype == torch.float16
    torch.testing.assert_close(h.float(), torch.tensor([[0.0, 0.25], [0.5, 1.0]]))


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(cam=torch.zeros(3)), ValueError, "cam must have shape"),
        (dict(cam=torch.zeros(1, 2, 3, 4)), ValueError, "cam must have shape"),
        (dict(cam=torch.zeros(0, 4)), ValueError, "cam must not be empty"),
        (dict(cam=torch.tensor([[0.0, float("nan")]])), ValueError, "finite"),
        (dict(cam=[[0.0, 1.0]]), TypeError, "cam must be a torch.Tensor"),
        (dict(cam=torch.zeros(2, 2, dtype=torch.bool)), TypeError, "cam must be a real"),
        (dict(cam=torch.zeros(2, 2), method="max"), ValueError, "method must be one of"),
        (dict(cam=torch.zeros(2, 2), method="percentile", q=101), ValueError, "q must be"),
        (dict(cam=torch.zeros(2, 2), method="percentile", q="90"), ValueError, "q must be"),
        (dict(cam=torch.zeros(2, 2), method="minmax", q=90), ValueError, "q applies only"),
    ],
)
def test_normalize_bad_input(kwargs, err, match):
    with pytest.raises(err, match=match):
        normalize(**kwargs)


# ------------------------------------------------------------------------------ boxes: hand-computed
def test_single_block_box_inclusive_and_wsol():
    m = torch.zeros(5, 6)
    m[1:3, 2:5] = 1.0  # rows 1..2, columns 2..4
    (b,) = boxes_from_cam(m, 0.5)
    assert b.dtype == torch.int64 and b.tolist() == [[2, 1, 4, 2]]
    # wsolevaluation's convention: x + w, y + h clipped to W-1, H-1
    assert boxes_from_cam(m, 0.5, box_format="wsol")[0].tolist() == [[2, 1, 5, 3]]
    m2 = torch.zeros(4, 4)
    m2[1:, 2:] = 1.0  # touches the right and bottom borders
    assert boxes_from_cam(m2, 0.5)[0].tolist() == [[2, 1, 3, 3]]
    assert boxes_from_cam(m2, 0.5, box_format="wsol")[0].tolist() == [[2, 1, 3, 3]]


def test_largest_vs_all_contours():
    m = torch.zeros(10, 12)
    m[1:4, 1:4] = 1.0  # 3x3 blob
    m[5:9, 6:11] = 0.8  # 4x5 blob, larger
    m[8, 1] = 0.9  # single pixel (contour area 0)
    assert boxes_from_cam(m, 0.5, contours="largest")[0].tolist() == [[6, 5, 10, 8]]
    assert _boxes(boxes_from_cam(m, 0.5, contours="all")[0]) == [(1, 1, 3, 3), (1, 8, 1, 8), (6, 5, 10, 8)]
    # a hole: RETR_TREE also reports the hole's inner contour (as wsolevaluation counts it)
    ring = torch.zeros(7, 7)
    ring[1:6, 1:6] = 1.0
    ring[3, 3] = 0.0
    assert boxes_from_cam(ring, 0.5)[0].tolist() == [[1, 1, 5, 5]]
    assert _boxes(boxes_from_cam(ring, 0.5, contours="all")[0]) == [(1, 1, 5, 5), (2, 2, 4, 4)]


def test_percentile_standard_vs_max_standard():
    # u8 values: peak 255 at (1,1); a 4x6 plateau of 0.5 -> 127; the rest 0.
    m = torch.zeros(8, 10)
    m[3:7, 2:8] = 0.5
    m[1, 1] = 1.0
    u8 = (m * 255).to(torch.uint8)
    assert int(u8[3, 2]) == 127
    # MaS, theta 0.6: int(0.6 * 255) = 153 -> only the peak
    assert boxes_from_cam(m, 0.6, standard="max")[0].tolist() == [[1, 1, 1, 1]]
    # PaS q=90 over 80 pixels: 25 non-zero values (24 x 127, 1 x 255) -> P90 = 127;
    # threshold int(0.6 * 127) = 76 -> plateau and peak, the plateau is the largest contour
    assert np.percentile(u8.numpy(), 90) == 127.0
    assert boxes_from_cam(m, 0.6, standard="percentile", q=90)[0].tolist() == [[2, 3, 7, 6]]
    assert _boxes(boxes_from_cam(m, 0.6, standard="percentile", q=90, contours="all")[0]) == [
        (1, 1, 1, 1), (2, 3, 7, 6)]
    # q=100 is MaS
    assert boxes_from_cam(m, 0.6, standard="percentile", q=100)[0].tolist() == [[1, 1, 1, 1]]


def test_threshold_is_strict_and_truncated():
    # u8 values 0, 100, 200, 255 in a row: MaS threshold int(t * 255)
    m = torch.tensor([[0.0, 100.0, 200.0, 255.0]]) / 255.0
    m = torch.cat([m, m])  # 2 x 4
    assert boxes_from_cam(m, 100 / 255)[0].tolist() == [[2, 0, 3, 1]]  # int(100.0) = 100: 100 is not > 100
    assert boxes_from_cam(m, 99.9 / 255)[0].tolist() == [[1, 0, 3, 1]]  # int(99.9) = 99
    assert boxes_from_cam(m, 0.0)[0].tolist() == [[1, 0, 3, 1]]  # > 0


def test_constant_and_empty_maps_give_no_box():
    for m in (torch.zeros(6, 6), torch.full((6, 6), 0.7), torch.full((2, 6, 6), -3.0)):
        for standard in ("max", "percentile"):
            for contours in ("largest", "all"):
                out = boxes_from_cam(m, 0.2, standard=standard, contours=contours)
                assert len(out) == (m.shape[0] if m.dim() == 3 else 1)
                assert all(b.shape == (0, 4) and b.dtype == torch.int64 for b in out)
    m = torch.rand(6, 6)
    assert boxes_from_cam(m, 1.0)[0].shape == (0, 4)  # nothing is > max


def test_batch_device_dtype_and_numpy_input():
    g = torch.Generator().manual_seed(1)
    m = torch.rand(3, 9, 11, generator=g)
    out = boxes_from_cam(m, 0.4, contours="all")
    assert len(out) == 3
    for b in range(3):
        assert _boxes(out[b]) == _boxes(boxes_from_cam(m[b], 0.4, contours="all")[0])
    assert boxes_from_cam(m.double(), 0.4)[0].shape == (1, 4)
    assert boxes_from_cam(m.numpy(), 0.4)[1].tolist() == boxes_from_cam(m, 0.4)[1].tolist()
    # any affine rescaling (positive) of the map gives the same boxes
    assert [b.tolist() for b in boxes_from_cam(3 * m - 7, 0.4)] == [b.tolist() for b in boxes_from_cam(m, 0.4)]


# ------------------------------------------------------------------------------ boxes vs official code and components
def _rethinking_cam(cam: np.ndarray, threshold: float, percentile: float):
    """won-bae/rethinkingCAM extract_bbox (box part) for one map."""
    normalized = ((cam - cam.min()) / (cam.max() - cam.min()) * 255).astype("uint8")
    threshold_val = int(threshold * np.percentile(normalized, q=percentile))
    _, thr = cv2.threshold(normalized, threshold_val, maxval=255, type=cv2.THRESH_BINARY)
    contours, _ = cv2.findContours(thr, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    if len(contours) == 0:
        return None
    x, y, w, h = cv2.boundingRect(max(contours, key=cv2.contourArea))
    return [x, y, x + w, y + h]


def _blobs(seed: int, n: int = 6, size=(40, 48)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(n, 1, size[0] // 4, size[1] // 4, generator=g)
    m = torch.nn.functional.interpolate(noise, size=size, mode="bicubic", align_corners=False)[:, 0]
    return normalize(m)  # float32 in [0, 1], min 0 and max 1 exactly


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_wsolevaluation_on_random_blobs(seed):
    maps = _blobs(seed)
    for t in (0.1, 0.3, 0.5, 0.77):
        for multi in (False, True):
            ours = boxes_from_cam(maps, t, contours="all" if multi else "largest", box_format="wsol")
            for b in range(maps.shape[0]):
                assert ours[b].tolist() == wsolevaluation_boxes(maps[b].numpy(), t, multi)


@pytest.mark.parametrize("seed", [3, 4])
def test_pas_equals_rethinking_cam_on_random_blobs(seed):
    maps = _blobs(seed) * 5 - 2  # not normalised: boxes_from_cam normalises as the official code
    for t, q in ((0.2, 100), (0.35, 90), (0.5, 75)):
        ours = boxes_from_cam(maps, t, standard="percentile", q=q)
        for b in range(maps.shape[0]):
            ref = _rethinking_cam(maps[b].numpy(), t, q)
            x0, y0, x1, y1 = ours[b][0].tolist()
            assert [x0, y0, x1 + 1, y1 + 1] == ref


@pytest.mark.parametrize("seed", [5, 6])
def test_boxes_agree_with_connected_components(seed):
    ndimage = pytest.importorskip("scipy.ndimage")
    maps = _blobs(seed)
    for t in (0.3, 0.6):
        out = boxes_from_cam(maps, t, contours="all")
        largest = boxes_from_cam(maps, t, contours="largest")
        for b in range(maps.shape[0]):
            u8 = (maps[b].numpy() * 255).astype(np.uint8)
            mask = u8 > int(t * u8.max())
            lab, _ = ndimage.label(mask, structure=np.ones((3, 3)))
            comps = {(s[1].start, s[0].start, s[1].stop - 1, s[0].stop - 1) for s in ndimage.find_objects(lab)}
            got = set(_boxes(out[b]))
            # every 8-connected component's bounding box is an (outer) contour's box; the other
            # boxes are holes' inner contours, each inside some component's box
            assert comps <= got
            for x0, y0, x1, y1 in got - comps:
                assert any(c[0] <= x0 and c[1] <= y0 and x1 <= c[2] and y1 <= c[3] for c in comps)
            assert tuple(largest[b][0].tolist()) in comps


# ------------------------------------------------------------------------------ boxes: bad input
@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(cam=torch.zeros(3), threshold=0.2), ValueError, "cam must have shape"),
        (dict(cam=torch.zeros(2, 0, 3), threshold=0.2), ValueError, "cam must not be empty"),
        (dict(cam=torch.full((2, 2), float("inf")), threshold=0.2), ValueError, "finite"),
        (dict(cam="map", threshold=0.2), TypeError, "cam must be"),
        (dict(cam=torch.zeros(2, 2, dtype=torch.complex64), threshold=0.2), TypeError, "cam must be a real"),
        (dict(cam=torch.zeros(2, 2), threshold=1.5), ValueError, "threshold must be"),
        (dict(cam=torch.zeros(2, 2), threshold=-0.1), ValueError, "threshold must be"),
        (dict(cam=torch.zeros(2, 2), threshold=True), ValueError, "threshold must be"),
        (dict(cam=torch.zeros(2, 2), threshold=float("nan")), ValueError, "threshold must be"),
        (dict(cam=torch.zeros(2, 2), threshold=0.2, standard="mean"), ValueError, "standard must be one of"),
        (dict(cam=torch.zeros(2, 2), threshold=0.2, q=-1), ValueError, "q must be"),
        (dict(cam=torch.zeros(2, 2), threshold=0.2, contours="biggest"), ValueError, "contours must be one of"),
        (dict(cam=torch.zeros(2, 2), threshold=0.2, box_format="xywh"), ValueError, "box_format must be one of"),
    ],
)
def test_boxes_bad_input(kwargs, err, match):
    with pytest.raises(err, match=match):
        boxes_from_cam(**kwargs)


def test_missing_opencv_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` raise ImportError
    with pytest.raises(ImportError, match="opencv-python-headless"):
        boxes_from_cam(torch.rand(4, 4), 0.2)
    # normalize does not need OpenCV
    assert normalize(torch.rand(4, 4)).shape == (4, 4)


def test_public_names():
    assert camfast.boxes_from_cam is boxes_from_cam
    assert camfast.normalize is normalize
