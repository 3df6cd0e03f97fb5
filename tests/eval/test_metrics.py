"""camfast.metrics: WSOL box accuracies, PxAP, mIoU, F-measure and MAE.

Values are checked against hand computations on tiny maps, against straightforward
per-image per-threshold implementations written here (wsolevaluation's procedure spelled out
with OpenCV calls and Python loops), and PxAP against sklearn's average precision.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import camfast
from camfast.evaluation import metrics as M

cv2 = pytest.importorskip("cv2")

from wsol_reference import wsolevaluation_boxes  # noqa: E402


# ------------------------------------------------------------------------------ references
def _ref_boxes(scoremap: np.ndarray, t: float, multi: bool) -> list[list[int]]:
    """wsolevaluation's scoremap2bbox, literally (one map, one threshold)."""
    return wsolevaluation_boxes(scoremap, t, multi, no_contour=[[0, 0, 0, 0]])


def _ref_iou(a, b) -> float:
    ix = min(a[2], b[2]) - max(a[0], b[0]) + 1
    iy = min(a[3], b[3]) - max(a[1], b[1]) + 1
    inter = max(0, ix) * max(0, iy)
    den = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter
    return 0.0 if den <= 0 else inter / den


def _ref_curve(maps, gts, thresholds, ious, multi):
    """(n_iou, K) accuracy in percent, one image and one threshold at a time."""
    correct = np.zeros((len(ious), len(thresholds)))
    for m, g in zip(maps, gts):
        for k, t in enumerate(thresholds):
            best = max(_ref_iou(p, q) for p in _ref_boxes(m, t, multi) for q in g.tolist())
            for i, d in enumerate(ious):
                correct[i, k] += best >= d / 100
    return correct * 100.0 / len(maps)


def _random_maps(seed: int, b: int, h: int, w: int, low: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 1, low, low, generator=g)
    x = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False)[:, 0]
    return camfast.normalize(x)


def _random_boxes(seed: int, b: int, h: int, w: int) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(b):
        n = int(rng.integers(1, 4))
        xs = np.sort(rng.integers(0, w, size=(n, 2)), axis=1)
        ys = np.sort(rng.integers(0, h, size=(n, 2)), axis=1)
        out.append(torch.tensor(np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], axis=1)))
    return out


def _two_level(b: int = 2) -> torch.Tensor:
    # 8x8: 1.0 on rows/cols 0-1, 0.5 on the rest of rows/cols 0-3, 0 elsewhere.
    # u8 = 255 / 127 / 0; the 0.5 level is in the mask iff 127 > int(t * 255) iff t <= 0.49.
    m = torch.zeros(b, 8, 8)
    m[:, 0:4, 0:4] = 0.5
    m[:, 0:2, 0:2] = 1.0
    return m


# ------------------------------------------------------------------------------ box metrics
def test_box_hand_computed_single_block():
    m = torch.zeros(1, 8, 8)
    m[0, 2:5, 1:6] = 1.0  # x 1..5, y 2..4
    gt = [torch.tensor([[1, 2, 5, 4]])]
    # wsolevaluation's box is (x, y, x + w, y + h) = (1, 2, 6, 5): IoU = 15 / 24 = 0.625.
    v2 = M.MaxBoxAccV2()
    v2.update(m, gt)
    assert v2.details().per_iou == {30: 100.0, 50: 100.0, 70: 0.0}
    assert v2.compute() == pytest.approx(200 / 3, abs=1e-12)
    v1 = M.MaxBoxAcc()
    v1.update(m, gt)
    assert v1.compute() == 100.0
    # exact boxes: IoU 1 -> perfect at every IoU threshold
    ex = M.MaxBoxAccV2(box_format="inclusive")
    ex.update(m, gt)
    assert ex.compute() == 100.0


def test_box_hand_computed_two_levels_curve():
    m = _two_level()
    gt = [torch.tensor([[0, 0, 3, 3]]), torch.tensor([[0, 0, 2, 2]])]
    # t <= 0.49: box (0,0,4,4); t >= 0.50: box (0,0,2,2).
    # image 0: IoU 16/25 = 0.64 and 9/16 = 0.5625; image 1: 9/25 = 0.36 and 1.0.
    v2 = M.MaxBoxAccV2()
    v2.update(m, gt)
    c = v2.curve()
    assert c.shape == (3, 100)
    expected = torch.zeros(3, 100, dtype=torch.float64)
    expected[0] = 100.0
    expected[1, :50], expected[1, 50:] = 50.0, 100.0
    expected[2, :50], expected[2, 50:] = 0.0, 50.0
    torch.testing.assert_close(c, expected, rtol=0, atol=0)
    d = v2.details()
    assert d.per_iou == {30: 100.0, 50: 100.0, 70: 50.0}
    assert d.best_threshold == {30: 0.0, 50: pytest.approx(0.5), 70: pytest.approx(0.5)}
    assert d.value == v2.compute() == pytest.approx(250 / 3, abs=1e-12)
    assert d.count == 2 and d.cam_thresholds.shape == (100,)


def test_gt_known_and_top1_loc():
    m = _two_level()
    gt = [torch.tensor([[0, 0, 3, 3]]), torch.tensor([[0, 0, 2, 2]])]
    best = M.GTKnownLoc()
    best.update(m, gt)
    assert best.compute() == 100.0
    fixed = M.GTKnownLoc(cam_threshold=0.2)  # box (0,0,4,4): image 0 IoU 0.64, image 1 0.36
    fixed.update(m, gt)
    assert fixed.compute() == 50.0
    fixed7 = M.GTKnownLoc(cam_threshold=0.7)  # box (0,0,2,2): 0.5625 and 1.0
    fixed7.update(m, gt)
    assert fixed7.compute() == 100.0
    top1 = M.Top1Loc()
    top1.update(m, gt, preds=torch.tensor([1, 2]), labels=torch.tensor([0, 2]))  # only image 1 classified
    assert top1.compute() == 50.0
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.0, 0.2, 0.8]])
    top1_logits = M.Top1Loc(cam_threshold=0.2)  # image 1 is classified right but its box misses at 0.2
    top1_logits.update(m, gt, logits, torch.tensor([0, 2]))
    assert top1_logits.compute() == 0.0
    with pytest.raises(TypeError, match="preds"):
        M.Top1Loc().update(m, gt)


def test_best_match_over_several_boxes_and_contours():
    m = torch.zeros(1, 10, 10)
    m[0, 0:4, 0:4] = 1.0  # large blob
    m[0, 7:9, 7:9] = 1.0  # small blob
    small = [torch.tensor([[7, 7, 8, 8]])]
    v1 = M.MaxBoxAcc(iou_threshold=30)  # largest contour only: misses the small object
    v1.update(m, small)
    assert v1.compute() == 0.0
    v2 = M.MaxBoxAccV2()  # all contours: wsol box (7,7,9,9), IoU 4/9
    v2.update(m, small)
    assert v2.details().per_iou == {30: 100.0, 50: 0.0, 70: 0.0}
    v2x = M.MaxBoxAccV2(box_format="inclusive")
    v2x.update(m, small)
    assert v2x.compute() == 100.0
    # several ground-truth boxes: the best pair counts
    v1x = M.MaxBoxAcc(box_format="inclusive")
    v1x.update(m, [torch.tensor([[7, 7, 8, 8], [0, 0, 3, 3]])])
    assert v1x.compute() == 100.0


def test_iou_exactly_at_the_threshold_counts():
    m = torch.zeros(1, 6, 6)
    m[0, 0:2, 0:4] = 1.0  # 8 pixels inside the 16-pixel ground truth: IoU exactly 0.5
    metric = M.MaxBoxAccV2(box_format="inclusive", iou_thresholds=(50, 51))
    metric.update(m, [torch.tensor([[0, 0, 3, 3]])])
    assert metric.details().per_iou == {50: 100.0, 51: 0.0}


def test_perfect_predictions_give_100():
    h, w = 12, 15
    boxes = [torch.tensor([[2, 3, 9, 7]]), torch.tensor([[0, 0, 14, 11]]), torch.tensor([[5, 1, 5, 10]])]
    m = torch.zeros(3, h, w)
    for i, b in enumerate(boxes):
        x0, y0, x1, y1 = b[0].tolist()
        m[i, y0:y1 + 1, x0:x1 + 1] = 1.0
    for metric in (M.MaxBoxAcc(box_format="inclusive"), M.MaxBoxAccV2(box_format="inclusive")):
        metric.update(m, boxes)
        assert metric.compute() == 100.0
        assert bool((metric.curve() == 100.0).all())
    # wsolevaluation's boxes are one pixel wider except at the border: exact only for a box
    # reaching the right and bottom edges.
    edge = M.MaxBoxAccV2()
    edge.update(m[1:2], boxes[1:2])
    assert edge.compute() == 100.0


def test_constant_and_empty_maps():
    gt = [torch.tensor([[3, 3, 5, 5]])]
    zero = torch.zeros(1, 8, 8)
    for fmt in ("wsol", "inclusive"):
        metric = M.MaxBoxAccV2(box_format=fmt)
        metric.update(zero, gt)
        assert metric.compute() == 0.0
    # no contour: wsolevaluation's box (0, 0, 0, 0) matches a ground truth on that pixel...
    corner = [torch.tensor([[0, 0, 0, 0]])]
    w = M.MaxBoxAcc()
    w.update(zero, corner)
    assert w.compute() == 100.0
    # ...while the exact format has no box at all
    x = M.MaxBoxAcc(box_format="inclusive")
    x.update(zero, corner)
    assert x.compute() == 0.0
    # a constant 1 map: the whole image at every threshold
    full = [torch.tensor([[0, 0, 7, 7]])]
    for fmt in ("wsol", "inclusive"):
        metric = M.MaxBoxAccV2(box_format=fmt)
        metric.update(torch.ones(1, 8, 8), full)
        assert metric.compute() == 100.0


@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize("low", [5, 24])
def test_box_curve_equals_per_image_reference(multi, low):
    # low=24: noise at full resolution, masks with many contours (the vectorised path)
    maps = _random_maps(1 + multi, 6, 24, 20, low=low)
    # a few quantised maps too (many thresholds share a mask) and a constant one
    maps[4] = (maps[4] * 6).floor() / 6
    maps[5] = 0.0
    boxes = _random_boxes(7, 6, 24, 20)
    thresholds = np.arange(0, 1, 0.01)
    ious = (30, 50, 70)
    metric = M.MaxBoxAccV2(iou_thresholds=ious, multi_contour=multi)
    metric.update(maps[:4], boxes[:4])
    metric.update(maps[4:], boxes[4:])
    ref = _ref_curve(maps.numpy(), boxes, thresholds, ious, multi)
    np.testing.assert_array_equal(metric.curve().numpy(), ref)
    assert metric.compute() == pytest.approx(np.mean(ref.max(1)), abs=1e-12)
    assert 0 < metric.compute() < 100  # the random case is not degenerate


def test_contour_boxes_equal_opencv_per_contour():
    # the step from a mask to boxes, on masks with a few and with many (> 32) contours
    from camfast.evaluation.metrics import FEW_CONTOURS, contour_boxes

    counts = []
    for low in (4, 30):
        for m in _random_maps(11 + low, 3, 30, 26, low=low).numpy():
            u8 = (m * 255).astype(np.uint8)
            for level in (20, 60, 128, 200):
                mask = (u8 > level).astype(np.uint8)
                contours = cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
                counts.append(len(contours))
                rects = [cv2.boundingRect(c) for c in contours]
                every = [[x, y, x + w - 1, y + h - 1] for x, y, w, h in rects]
                got, extent = contour_boxes(mask, largest=False)
                assert got.tolist() == every
                ys, xs = np.nonzero(mask)
                assert extent == (None if len(xs) == 0 else (xs.min(), ys.min(), xs.max(), ys.max()))
                got1, _ = contour_boxes(mask, largest=True)
                if contours:
                    x, y, w, h = cv2.boundingRect(max(contours, key=cv2.contourArea))
                    assert got1.tolist() == [[x, y, x + w - 1, y + h - 1]]
                else:
                    assert got1.shape == (0, 4)
                # on a crop with an offset: the same boxes
                if len(xs):
                    x0, y0 = int(xs.min()), int(ys.min())
                    crop = np.ascontiguousarray(mask[y0:, x0:])
                    assert contour_boxes(crop, largest=False, offset=(x0, y0), cv2=cv2)[0].tolist() == every
    assert min(counts) <= FEW_CONTOURS < max(counts)


def test_box_matches_boxes_from_cam_and_custom_grid():
    maps = _random_maps(3, 3, 16, 16)
    gt = _random_boxes(4, 3, 16, 16)
    grid = [0.05, 0.3, 0.61, 0.9]
    metric = M.MaxBoxAcc(cam_thresholds=grid, iou_threshold=40, multi_contour=True, box_format="inclusive")
    metric.update(maps, gt)
    correct = np.zeros(len(grid))
    for m, g in zip(maps, gt):
        for k, t in enumerate(grid):
            pred = camfast.boxes_from_cam(m, t, contours="all")[0].tolist()
            best = max((_ref_iou(p, q) for p in pred for q in g.tolist()), default=0.0)
            correct[k] += best >= 0.4
    np.testing.assert_array_equal(metric.curve().numpy()[0], correct * 100 / 3)


def test_box_streaming_and_reset():
    maps = _random_maps(5, 5, 16, 18)
    boxes = _random_boxes(6, 5, 16, 18)
    one = M.MaxBoxAccV2()
    one.update(maps, boxes)
    two = M.MaxBoxAccV2()
    two.update(maps[:2], boxes[:2])
    two.update(maps[2:], boxes[2:])
    torch.testing.assert_close(one.curve(), two.curve(), rtol=0, atol=0)
    assert one.compute() == two.compute()
    two.reset()
    with pytest.raises(RuntimeError, match="before any update"):
        two.compute()
    # float64 maps and non-contiguous views give the same result
    three = M.MaxBoxAccV2()
    three.update(maps.double().transpose(1, 2).contiguous().transpose(1, 2), boxes)
    torch.testing.assert_close(one.curve(), three.curve(), rtol=0, atol=0)


def test_box_bad_inputs():
    m = torch.rand(2, 8, 8)
    ok = [torch.tensor([[0, 0, 3, 3]])] * 2
    metric = M.MaxBoxAccV2()
    with pytest.raises(RuntimeError, match="before any update"):
        metric.compute()
    with pytest.raises(ValueError, match="cams"):
        metric.update(torch.rand(8, 8), ok[:1])
    with pytest.raises(TypeError, match="cams"):
        metric.update((m * 255).to(torch.uint8), ok)
    with pytest.raises(TypeError, match="cams"):
        metric.update(m.numpy(), ok)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metric.update(m * 2, ok)
    with pytest.raises(ValueError, match="finite"):
        metric.update(torch.full((2, 8, 8), float("nan")), ok)
    with pytest.raises(ValueError, match="boxes has 1"):
        metric.update(m, ok[:1])
    with pytest.raises(TypeError, match="boxes"):
        metric.update(m, torch.zeros(2, 1, 4, dtype=torch.long))
    with pytest.raises(TypeError, match=r"boxes\[0\]"):
        metric.update(m, [torch.tensor([[0.0, 0, 3, 3]])] * 2)
    with pytest.raises(ValueError, match=r"boxes\[1\] lies outside"):
        metric.update(m, [ok[0], torch.tensor([[0, 0, 8, 3]])])
    with pytest.raises(ValueError, match=r"boxes\[1\]"):
        metric.update(m, [ok[0], torch.tensor([[4, 0, 3, 3]])])
    with pytest.raises(ValueError, match=r"boxes\[0\] is empty"):
        metric.update(m, [torch.zeros(0, 4, dtype=torch.long), ok[0]])
    with pytest.raises(ValueError, match=r"boxes\[0\] must have shape"):
        metric.update(m, [torch.zeros(1, 3, dtype=torch.long), ok[0]])
    with pytest.raises(RuntimeError, match="before any update"):  # the failed calls accumulated nothing
        metric.compute()
    with pytest.raises(ValueError, match="cam_thresholds"):
        M.MaxBoxAccV2(cam_thresholds=[0.1, 1.5])
    with pytest.raises(ValueError, match="iou_thresholds"):
        M.MaxBoxAccV2(iou_thresholds=(0.5,) * 0)
    with pytest.raises(ValueError, match="iou_thresholds"):
        M.MaxBoxAccV2(iou_thresholds=(30, 150))
    with pytest.raises(ValueError, match="box_format"):
        M.MaxBoxAcc(box_format="xyxy")
    with pytest.raises(TypeError, match="multi_contour"):
        M.MaxBoxAcc(multi_contour=1)
    with pytest.raises(ValueError, match="cam_threshold"):
        M.GTKnownLoc(cam_threshold="0.2")
    with pytest.raises(ValueError, match="cam_threshold"):
        M.GTKnownLoc(cam_threshold=1.5)
    with pytest.raises(ValueError, match="preds and labels"):
        M.Top1Loc().update(m, ok, torch.tensor([1, 2, 3]), torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="labels"):
        M.Top1Loc().update(m, ok, torch.tensor([1, 2]), torch.tensor([1.0, 2.0]))


# ------------------------------------------------------------------------------ PxAP
def test_pxap_hand_computed():
    # scores 0.905 (fg), 0.605 (bg), 0.305 (fg), 0.005 (bg): cuts give (P, R) =
    # (1, 1/2), (1/2, 1/2), (2/3, 1), (1/2, 1) -> AP = 1 * 1/2 + 2/3 * 1/2 = 5/6
    cams = torch.tensor([[[0.905, 0.605], [0.305, 0.005]]])
    masks = torch.tensor([[[True, False], [True, False]]])
    metric = M.PxAP()
    metric.update(cams, masks)
    assert metric.compute() == pytest.approx(500 / 6, abs=1e-9)
    # ignoring the 0.605 background pixel: (1, 1/2), (1, 1), ... -> 100
    ign = M.PxAP()
    ign.update(cams, masks, ignore=torch.tensor([[[False, True], [False, False]]]))
    assert ign.compute() == pytest.approx(100.0, abs=1e-9)
    # an ignore region covering foreground leaves the foreground counted (wsolevaluation)
    cover = M.PxAP()
    cover.update(cams, masks, ignore=torch.tensor([[[True, True], [True, False]]]))
    assert cover.compute() == pytest.approx(100.0, abs=1e-9)
    p, r = metric.precision_recall()
    assert p.shape == r.shape == (102,) and float(r[-1]) == 1.0


def test_pxap_perfect_and_worst():
    masks = torch.zeros(2, 6, 6, dtype=torch.bool)
    masks[0, 1:4, 2:5] = True
    masks[1, 0, :] = True
    perfect = M.PxAP()
    perfect.update(masks.float(), masks)
    assert perfect.compute() == pytest.approx(100.0, abs=1e-9)
    inverted = M.PxAP()
    inverted.update((~masks).float(), masks)
    prior = 15 / 72  # only the cut S >= 0 reaches the foreground
    assert inverted.compute() == pytest.approx(100 * prior, abs=1e-9)
    none = M.PxAP()
    none.update(torch.rand(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="no foreground"):
        none.compute()


def test_pxap_equals_sklearn_on_bin_centres():
    sk = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(0)
    # scores in the middle of the 0.01 bins (and 1.0), so the histogram loses nothing
    cams = (torch.randint(0, 100, (3, 9, 11), generator=g).double() + 0.5) / 100
    cams[0, 0, :4] = 1.0
    masks = torch.rand(3, 9, 11, generator=g) < cams * 0.8
    metric = M.PxAP()
    metric.update(cams[:1], masks[:1])
    metric.update(cams[1:], masks[1:])
    expected = 100 * sk.average_precision_score(masks.reshape(-1).numpy(), cams.reshape(-1).numpy())
    assert metric.compute() == pytest.approx(expected, abs=1e-9)


def test_pxap_bad_inputs():
    m = torch.rand(2, 4, 4)
    metric = M.PxAP()
    with pytest.raises(RuntimeError, match="before any update"):
        metric.compute()
    with pytest.raises(TypeError, match="masks"):
        metric.update(m, (m > 0.5).long())
    with pytest.raises(ValueError, match="masks"):
        metric.update(m, torch.zeros(2, 4, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="ignore"):
        metric.update(m, m > 0.5, ignore=torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="cam_thresholds"):
        M.PxAP(cam_thresholds=[0.0, 0.5, 0.4])
    with pytest.raises(ValueError, match="cam_thresholds"):
        M.PxAP(cam_thresholds=[0.0, 1.0])


# ------------------------------------------------------------------------------ mIoU
def test_miou_hand_computed_and_ignore():
    target = torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 1]]])
    pred = torch.tensor([[[0, 1, 1, 1], [2, 0, 2, 1]]])
    metric = M.MIoU(3)
    metric.update(pred, target)
    # class 0: TP 1, FP 1 (pixel 5), FN 1 (pixel 1) -> 1/3; class 1: TP 3, FP 1 -> 3/4; class 2: 1/2
    iou = metric.per_class()
    torch.testing.assert_close(iou, torch.tensor([100 / 3, 75.0, 50.0], dtype=torch.float64))
    assert metric.compute() == pytest.approx((100 / 3 + 75 + 50) / 3)
    assert int(metric.confusion.sum()) == 7  # the ignored pixel is left out
    perfect = M.MIoU(3)
    perfect.update(target.clamp(max=2), target.clamp(max=2))
    assert perfect.compute() == 100.0


def test_miou_absent_class_is_nan_and_streaming():
    metric = M.MIoU(4)
    a = torch.tensor([[[0, 1], [1, 0]]])
    metric.update(a, a)
    assert torch.isnan(metric.per_class()[2:]).all()
    assert metric.compute() == 100.0
    g = torch.Generator().manual_seed(1)
    p, t = torch.randint(0, 4, (2, 2, 5, 5), generator=g)
    one, two = M.MIoU(4), M.MIoU(4)
    one.update(p, t)
    two.update(p[:1], t[:1])
    two.update(p[1:], t[1:])
    assert torch.equal(one.confusion, two.confusion)
    ref = np.zeros((4, 4), dtype=np.int64)
    for ti, pi in zip(t.reshape(-1).tolist(), p.reshape(-1).tolist()):
        ref[ti, pi] += 1
    np.testing.assert_array_equal(one.confusion.numpy(), ref)


def test_miou_from_cams_with_background_threshold():
    cams = torch.zeros(1, 3, 1, 5)
    cams[0, 0, 0] = torch.tensor([0.1, 0.3, 0.9, 0.5, 0.5])
    cams[0, 1, 0] = torch.tensor([0.0, 0.2, 0.2, 0.5, 0.95])
    cams[0, 2, 0] = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.99])  # class 3, absent from the image labels
    metric = M.MIoU(4, bg_threshold=0.3)
    labels = torch.tensor([[1, 1, 0]])
    pl = metric.pseudo_labels(cams, labels)
    # 0.1 -> bg; 0.3 is not above the threshold -> bg; 0.9 -> class 1; tie 0.5/0.5 -> first (class 1);
    # class 3 (0.99) is absent, so 0.95 -> class 2
    assert pl.tolist() == [[[0, 0, 1, 1, 2]]]
    assert metric.pseudo_labels(cams).tolist() == [[[0, 0, 1, 1, 3]]]
    metric.update(cams, pl, labels)
    assert metric.compute() == 100.0
    with pytest.raises(ValueError, match="bg_threshold"):
        M.MIoU(4).update(cams, pl)


def test_miou_bad_inputs():
    t = torch.zeros(1, 2, 2, dtype=torch.long)
    metric = M.MIoU(3)
    with pytest.raises(RuntimeError, match="before any update"):
        metric.compute()
    with pytest.raises(ValueError, match="pred values"):
        metric.update(t + 3, t)
    with pytest.raises(ValueError, match="target values"):
        metric.update(t, t + 7)
    with pytest.raises(ValueError, match="same shape"):
        metric.update(torch.zeros(1, 2, 3, dtype=torch.long), t)
    with pytest.raises(TypeError, match="target"):
        metric.update(t, t.float())
    with pytest.raises(TypeError, match="pred"):
        metric.update(t.float(), t)
    with pytest.raises(ValueError, match="num_classes"):
        M.MIoU(1)
    with pytest.raises(ValueError, match="ignore_index"):
        M.MIoU(3, ignore_index=2)
    with pytest.raises(ValueError, match="cams must have shape"):
        M.MIoU(3, bg_threshold=0.2).update(torch.rand(1, 3, 2, 2), t)
    all_ignored = M.MIoU(3)
    all_ignored.update(t, t + 255)
    with pytest.raises(RuntimeError, match="no labelled pixel"):
        all_ignored.compute()


# ------------------------------------------------------------------------------ F-measure, MAE
def _ref_f(pred: np.ndarray, gt: np.ndarray, thresholds, b2=0.3) -> np.ndarray:
    out = []
    for t in thresholds:
        binary = pred > t
        tp = np.logical_and(binary, gt).sum()
        p = tp / binary.sum() if binary.sum() else 0.0
        r = tp / gt.sum() if gt.sum() else 0.0
        out.append((1 + b2) * p * r / (b2 * p + r) if (b2 * p + r) > 0 else 0.0)
    return np.array(out)


def test_fmeasure_hand_computed():
    pred = torch.tensor([[[0.9, 0.6], [0.2, 0.0]]])
    gt = torch.tensor([[[True, False], [True, False]]])
    metric = M.FMeasure(thresholds=[0.1, 0.5, 0.8])
    metric.update(pred, gt)
    # t=0.1: P 2/3, R 1 -> 1.3*(2/3)/(0.2+1) = 13/18; t=0.5: P 1/2, R 1/2 -> 1/2; t=0.8: P 1, R 1/2 -> 13/16
    torch.testing.assert_close(metric.curve(), torch.tensor([13 / 18, 0.5, 13 / 16], dtype=torch.float64))
    res = metric.compute()
    assert res.ods == pytest.approx(13 / 16) and res.ois == pytest.approx(13 / 16)
    assert res.ods_threshold == pytest.approx(0.8)


def test_fmeasure_matches_reference_ods_ois_and_binary():
    g = torch.Generator().manual_seed(2)
    preds = _random_maps(9, 4, 12, 10)
    gts = torch.rand(4, 12, 10, generator=g) < preds
    gts[3] = False  # an empty ground truth: F = 0 everywhere
    metric = M.FMeasure()
    metric.update(preds[:3], gts[:3])
    metric.update(preds[3:], gts[3:])
    th = np.arange(255) / 255
    f = np.stack([_ref_f(p, q, th) for p, q in zip(preds.numpy(), gts.numpy())])
    np.testing.assert_allclose(metric.curve().numpy(), f.mean(0), rtol=0, atol=1e-12)
    res = metric.compute()
    assert res.ods == pytest.approx(f.mean(0).max(), abs=1e-12)
    assert res.ois == pytest.approx(f.max(1).mean(), abs=1e-12)
    assert res.ois > res.ods
    binary = M.FMeasure()
    binary.update((preds > 0.5).float(), gts)
    r = binary.compute()
    assert r.ods == pytest.approx(r.ois, abs=1e-12)
    perfect = M.FMeasure()
    perfect.update(gts[:3].float(), gts[:3])
    assert perfect.compute().ods == pytest.approx(1.0) and perfect.compute().ois == pytest.approx(1.0)


def test_mae():
    preds = torch.tensor([[[1.0, 0.5], [0.0, 0.0]], [[0.25, 0.25], [0.25, 0.25]]])
    gts = torch.tensor([[[True, True], [False, True]], [[False, False], [False, False]]])
    metric = M.MAE()
    metric.update(preds[:1], gts[:1])
    metric.update(preds[1:], gts[1:])
    assert metric.compute() == pytest.approx(((0 + 0.5 + 0 + 1) / 4 + 0.25) / 2)
    soft = M.MAE()
    soft.update(preds, gts.float())
    assert soft.compute() == metric.compute()
    metric.reset()
    with pytest.raises(RuntimeError, match="before any update"):
        metric.compute()
    with pytest.raises(ValueError, match="gts"):
        M.MAE().update(preds, gts[:, :1])
    with pytest.raises(ValueError, match="beta2"):
        M.FMeasure(beta2=0)
    with pytest.raises(ValueError, match="thresholds"):
        M.FMeasure(thresholds=[0.5, 0.2])
    with pytest.raises(ValueError, match="preds"):
        M.FMeasure().update(preds + 1, gts)


def test_every_metric_on_the_device_equals_cpu(device, monkeypatch):
    """Same numbers from tensors on ``device`` and, for boxes, from the batched torch mask path
    (the path GPU tensors take) forced on the CPU."""
    maps = _random_maps(21, 4, 20, 18)
    maps[3] = 0.0
    boxes = _random_boxes(22, 4, 20, 18)
    masks = maps > 0.6
    labels = torch.randint(0, 3, (4, 20, 18), generator=torch.Generator().manual_seed(3))
    cams3 = torch.stack([maps, 1 - maps], 1)

    def run(x, m, lab, c3, bx):
        out = []
        for metric in (M.MaxBoxAcc(), M.MaxBoxAccV2(), M.MaxBoxAccV2(box_format="inclusive")):
            metric.update(x, bx)
            out.append(metric.curve())
        t1 = M.Top1Loc(cam_threshold=0.3)
        t1.update(x, bx, torch.tensor([0, 1, 1, 2], device=x.device), torch.tensor([0, 1, 2, 2], device=x.device))
        out.append(torch.tensor([t1.compute()]))
        px = M.PxAP()
        px.update(x, m, ignore=m.roll(1, 1))
        out.append(torch.tensor([px.compute()]))
        iou = M.MIoU(3, bg_threshold=0.4)
        iou.update(c3, lab)
        iou.update(lab, lab)
        out.append(iou.confusion.cpu())
        f = M.FMeasure()
        f.update(x, m)
        out.append(f.curve())
        mae = M.MAE()
        mae.update(x, m)
        out.append(torch.tensor([mae.compute()]))
        return out

    ref = run(maps, masks, labels, cams3, boxes)
    dev = torch.device(device)
    got = run(maps.to(dev), masks.to(dev), labels.to(dev), cams3.to(dev), [b.to(dev) for b in boxes])
    for a, b in zip(ref, got):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    monkeypatch.setattr(M.BoxAccumulator, "mask_path", "torch")
    forced = run(maps.to(dev), masks.to(dev), labels.to(dev), cams3.to(dev), [b.to(dev) for b in boxes])
    for a, b in zip(ref, forced):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_exported():
    assert camfast.metrics is M
    assert "metrics" in camfast.__all__
