"""Issue 15, detectors: torchvision's Faster R-CNN (MobileNetV3-FPN) and RetinaNet (ResNet-50-FPN),
random weights, eval mode, detections forced by a zero score threshold, small inputs.

camfast's box-score target (camfast/methods/detection.py) against pytorch-grad-cam's
``FasterRCNNBoxScoreTarget``: the same score, and Grad-CAM maps equal to pytorch-grad-cam's
GradCAM on the same FPN layer. (pytorch-grad-cam's gradient methods on Faster R-CNN need
``tests/detection_shim.py``'s ``donated_buffer`` setting on a machine whose torchvision has no
CPU ops: its backward uses retain_graph=True through the compiled roi_align fallback.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from detection_shim import ensure_nms

import camfast
from camfast.methods.detection import BoxScoreTarget
from peers import pytorch_grad_cam, torchvision

pytestmark = pytest.mark.slow  # two detectors built and run: several seconds each on two cores

SIZE = 128


def detector(name):
    torchvision()
    tv = ensure_nms()
    torch.manual_seed(0)
    common = dict(weights=None, weights_backbone=None, min_size=SIZE, max_size=SIZE)
    if name == "fasterrcnn":
        return tv.models.detection.fasterrcnn_mobilenet_v3_large_fpn(
            **common, box_score_thresh=0.0, box_detections_per_img=3, rpn_pre_nms_top_n_test=100,
            rpn_post_nms_top_n_test=30).eval()
    return tv.models.detection.retinanet_resnet50_fpn(**common, score_thresh=0.0, detections_per_img=3,
                                                      topk_candidates=50).eval()


def images(b=2):
    return torch.rand(b, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module", params=["fasterrcnn", "retinanet"])
def model(request):
    return detector(request.param)


def test_default_layers_are_the_feature_pyramid(model):
    layers = camfast.find_layers(model)
    assert layers == [f"backbone.fpn.layer_blocks.{i}" for i in range(len(model.backbone.fpn.layer_blocks))]


def test_a_map_for_every_detection_in_one_pass(model):
    x = images()
    with torch.no_grad():
        dets = model(x)
    res = camfast.zoom_cam(model, x, return_layers=True)
    assert [m.shape for m in res.cam] == [(len(d["boxes"]), SIZE, SIZE) for d in dets]
    assert all(len(d["boxes"]) == 3 for d in dets)  # forced detections
    for b, d in enumerate(dets):
        assert torch.equal(res.targets[b], d["labels"])
        assert torch.isfinite(res.cam[b]).all() and res.cam[b].min() >= 0 and res.cam[b].max() <= 1
    # each image's last detection, with its own box as the reference, in one call on the same batch
    j = 2
    one = camfast.zoom_cam(model, x, target=[BoxScoreTarget(d["labels"][j:j + 1], d["boxes"][j:j + 1]) for d in dets])
    for b in range(2):
        torch.testing.assert_close(res.cam[b][j], one[b], atol=1e-5, rtol=0)


def test_box_score_equals_pytorch_grad_cams(model):
    pgc = pytorch_grad_cam()
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    x = images(1)
    out = model(x)
    boxes, labels = out[0]["boxes"].detach(), out[0]["labels"]
    theirs = FasterRCNNBoxScoreTarget(labels=labels.tolist(), bounding_boxes=boxes.numpy(), iou_threshold=0.5)
    ours = BoxScoreTarget(labels, boxes, iou_threshold=0.5, any_class_match=True)
    assert float(ours(out[0])) == pytest.approx(float(theirs(out[0])), abs=1e-6)
    # camfast's default matches within the class: the same sum when no other class's box overlaps
    # a reference more; on class-agnostic boxes (RetinaNet: one box, several labels) it keeps each
    # reference's own detection, which pytorch-grad-cam's rule can drop
    own = BoxScoreTarget(labels, boxes, iou_threshold=0.5)(out[0])
    assert float(own) == pytest.approx(len(boxes) + float(out[0]["scores"].sum()), abs=1e-5)
    del pgc


def _pgc_normalise(cam, size=None):
    import cv2

    cam = cam - cam.min()
    cam = cam / (1e-7 + cam.max())
    return cv2.resize(cam, size) if size is not None else cam


def test_grad_cam_equals_pytorch_grad_cam(model):
    pgc = pytorch_grad_cam()
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    layer = "backbone.fpn.layer_blocks.0"
    x = images(1)
    with torch.no_grad():
        out = model(x)
    boxes, labels = out[0]["boxes"], out[0]["labels"]
    target = FasterRCNNBoxScoreTarget(labels=labels.tolist(), bounding_boxes=boxes.numpy())
    ours = camfast.grad_cam(model, x, target=BoxScoreTarget(labels, boxes, any_class_match=True), layer=layer,
                            return_layers=True)
    raw = ours.layer_maps[layer][0].double().numpy().astype(np.float32)
    with pgc.GradCAM(model=model, target_layers=[dict(model.named_modules())[layer]]) as cam:
        reference = cam(input_tensor=x, targets=[target])[0]
    # pytorch-grad-cam's post-processing of the one layer's map: normalise, resize, normalise
    np.testing.assert_allclose(_pgc_normalise(_pgc_normalise(raw, (SIZE, SIZE))), reference, atol=1e-5, rtol=0)
