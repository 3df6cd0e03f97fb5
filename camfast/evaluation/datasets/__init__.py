"""Dataset loaders for CAM / WSOL evaluation, in one sample format.

Every dataset is a ``torch.utils.data.Dataset`` whose ``__getitem__(i)`` returns a dict:

* ``"image"``: float32 ``(3, H, W)`` RGB in ``[0, 1]`` (not normalised);
* ``"label"``: int, the primary class index (the class for single-label sets);
* ``"labels"``: int64 ``(k,)``, every image-level class present (``[label]`` for single-label sets);
* ``"boxes"``: int64 ``(n, 4)`` ``(x0, y0, x1, y1)`` inclusive pixel coordinates (``n`` may be 0);
* ``"box_labels"``: int64 ``(n,)``;
* ``"mask"``: bool ``(H, W)`` foreground, or None;
* ``"ignore"``: bool ``(H, W)`` pixels to leave out of PxAP / mIoU, or None;
* ``"segmentation"``: int64 ``(H, W)`` class ids (0 background, ``label + 1`` objects,
  255 ignore), or None;
* ``"name"``: str, the image's relative path or id.

Datasets also have ``num_classes`` and ``class_names``. ``resize=`` resizes image, masks and
boxes together; ``transform=`` is applied to the image tensor only (after ``resize``): a
transform that moves pixels leaves boxes and masks to the caller. :func:`collate` batches
samples for a ``DataLoader``; :func:`multi_hot` turns a batch's ``labels`` into ``(B, K)``
targets.

Loaders of the standard layouts: :class:`VOCSegmentation`, :class:`CUB`,
:class:`ImageNetVal`, :class:`WSOLEvalMetadata`; a synthetic benchmark that runs here:
:class:`SyntheticWSOL`. Pillow is imported only when an image file is read.
"""

from camfast.evaluation.datasets.common import collate, multi_hot
from camfast.evaluation.datasets.cub import CUB
from camfast.evaluation.datasets.imagenet import ImageNetVal
from camfast.evaluation.datasets.synthetic import SyntheticWSOL
from camfast.evaluation.datasets.voc import VOC_CLASSES, VOCSegmentation
from camfast.evaluation.datasets.wsol import WSOLEvalMetadata

__all__ = ["CUB", "ImageNetVal", "SyntheticWSOL", "VOCSegmentation", "VOC_CLASSES", "WSOLEvalMetadata", "collate",
           "multi_hot"]
