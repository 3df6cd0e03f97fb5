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


def _pyramid_as_one(features):
    """pytorch-grad-cam's detection-tutorial reshape_transform (``fasterrcnn_reshape_transform``):
    every pyramid level's |activation| resized bilinearly to one size and concatenated. Here
    the size is the finest level's: at this input size RetinaNet's coarsest level is 1x1."""
    size = next(iter(features.values())).shape[-2:]
    return torch.cat([torch.nn.functional.interpolate(v.abs(), size, mode="bilinear") for v in features.values()], 1)


def test_eigen_cam_of_the_whole_pyramid_equals_pytorch_grad_cams_tutorial(model):
    """EigenCAM on ``model.backbone`` (a dict of pyramid levels) with the tutorial's transform:
    camfast.eigen_cam's map of the layer (one per image, no target) and camfast.compat.EigenCAM
    equal pytorch-grad-cam's EigenCAM on the same call. (camfast.eigen_cam's own result goes
    through camfast's fusion, not pytorch-grad-cam's normalise/cv2.resize/normalise: on these
    maps the two differ by up to 0.2% of a pixel's value, so the layer map is compared through
    pytorch-grad-cam's post-processing, as for Grad-CAM above.)"""
    pgc = pytorch_grad_cam()
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    from camfast import compat

    x = images(2)
    with torch.no_grad():
        out = model(x)
    targets = [FasterRCNNBoxScoreTarget(labels=o["labels"].tolist(), bounding_boxes=o["boxes"].numpy()) for o in out]
    with pgc.EigenCAM(model, [model.backbone], reshape_transform=_pyramid_as_one) as cam:
        reference = cam(input_tensor=x, targets=targets)
    assert np.ptp(reference, axis=(1, 2)).min() > 0.5  # not two blank maps
    ours = camfast.eigen_cam(model, x, layer="backbone", reshape_transform=_pyramid_as_one, return_layers=True)
    assert ours.cam.shape == (2, SIZE, SIZE) and ours.targets is None
    assert torch.isfinite(ours.cam).all() and ours.cam.min() >= 0 and ours.cam.max() <= 1
    # the layer's map through pytorch-grad-cam's post-processing (normalise, resize, normalise)
    raw = ours.layer_maps["backbone"].numpy().astype(np.float32)
    np.testing.assert_allclose(np.stack([_pgc_normalise(_pgc_normalise(r, (SIZE, SIZE))) for r in raw]), reference,
                               atol=1e-5, rtol=0)
    with compat.EigenCAM(model, [model.backbone], reshape_transform=_pyramid_as_one) as cam:
        np.testing.assert_allclose(cam(x, targets), reference, atol=1e-5, rtol=0)


def test_compat_grad_cam_on_a_detector_equals_pytorch_grad_cam(model):
    pgc = pytorch_grad_cam()
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    from camfast import compat

    x = images(1)
    with torch.no_grad():
        out = model(x)
    targets = [FasterRCNNBoxScoreTarget(labels=out[0]["labels"].tolist(), bounding_boxes=out[0]["boxes"].numpy())]
    layers = [model.backbone.fpn.layer_blocks[0]]
    with pgc.GradCAM(model, layers) as cam:
        reference = cam(input_tensor=x, targets=targets)
    assert np.ptp(reference) > 0.5
    with compat.GradCAM(model, layers) as cam:
        np.testing.assert_allclose(cam(x, targets), reference, atol=1e-5, rtol=0)
        with pytest.raises(ValueError, match="targets"):
            cam(x)  # a detector has no top class
