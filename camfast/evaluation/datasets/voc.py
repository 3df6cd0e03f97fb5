"""PASCAL VOC 2012 (segmentation or classification splits) in the camfast sample format."""

from __future__ import annotations

import os
from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from camfast.evaluation.datasets import common as C

__all__ = ["VOC_CLASSES", "VOCSegmentation", "decode_int_filename", "read_class_labels", "read_cls_labels_npy"]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)
_CLASS_INDEX = {name: i for i, name in enumerate(VOC_CLASSES)}


def decode_int_filename(key: int) -> str:
    """IRN's image id from its integer form: ``2007000032`` -> ``"2007_000032"`` (IRN reads
    the split lists with ``np.loadtxt(dtype=np.int32)``, and Python's ``int`` accepts the
    underscore, so ``cls_labels.npy`` is keyed by these ints)."""
    s = str(int(key))
    return s[:4] + "_" + s[4:]


def read_cls_labels_npy(path: str | os.PathLike, num_classes: int | None = 20) -> dict[str, tuple[int, ...]]:
    """VOC's ``cls_labels.npy`` (IRN's ``voc12/cls_labels.npy``): ``{image_id: multi-hot
    (num_classes,)}`` saved with ``np.save``, read with the restricted unpickler of
    :mod:`camfast.evaluation.safe_npy` (a file whose pickle would run code is refused). Keys
    are IRN's ints (decoded with :func:`decode_int_filename`) or id strings. Returns
    ``{image_id: sorted 0-based classes}``. ``num_classes=None``: any length, the same for
    every image.

    Raises:
        ValueError: not such a dict, a vector of another length or with values other than
            0/1, an unsafe pickle (the message names the file and the image).
    """
    from camfast.evaluation.safe_npy import load_npy_dict

    import numpy as np

    d = load_npy_dict(path)
    out: dict[str, tuple[int, ...]] = {}
    for key, vec in d.items():
        if isinstance(key, str):
            image_id = key
        elif isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            image_id = decode_int_filename(key)
        else:
            raise ValueError(f"{path}: keys must be image ids (str or IRN's int), got {type(key).__name__} {key!r}")
        v = np.asarray(vec)
        if num_classes is None and v.ndim == 1:
            num_classes = v.shape[0]
        if v.shape != (num_classes,) or v.dtype.kind not in "biuf" or not np.isin(v, (0, 1)).all():
            raise ValueError(f"{path}: {image_id}: expected a {num_classes}-dim 0/1 vector, got "
                             f"{v.dtype} {v.shape}")
        if image_id in out:
            raise ValueError(f"{path}: {image_id} is listed twice")
        out[image_id] = tuple(int(k) for k in np.flatnonzero(v))
    return out


def read_class_labels(path: str | os.PathLike, num_classes: int = 20, *, by_stem: bool = False,
                      class_names: tuple[str, ...] | None = VOC_CLASSES) -> dict[str, tuple[int, ...]]:
    """Image-level classes from VOC's ``cls_labels.npy`` (:func:`read_cls_labels_npy`) or
    the text format (``id_or_path cls1 cls2 ...``, one image per line; classes 0-based
    indices or ``class_names``; ``#`` comments; errors as ``FILE:LINE``), chosen by the
    suffix (``.npy``). ``by_stem``: text keys without their suffix (``a/b.jpg`` -> ``a/b``),
    the names of per-image outputs. Returns ``{key: sorted 0-based classes}``."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels: {str(path)!r} is not a file")
    if path.suffix.lower() == ".npy":
        return read_cls_labels_npy(path, num_classes)
    folded = {n.lower(): i for i, n in enumerate(class_names or ())}
    out: dict[str, tuple[int, ...]] = {}
    for number, line in C.read_lines(path):
        if line.startswith("#"):
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        if "\t" in line:
            parts = [parts[0].strip(), *" ".join(parts[1:]).split()]
        if len(parts) < 2:
            raise C.malformed(path, number, f"expected 'image cls1 cls2 ...', got {line!r}")
        key = os.path.splitext(parts[0])[0] if by_stem else parts[0]
        classes = set()
        for tok in parts[1:]:
            if tok.lstrip("-").isascii() and tok.lstrip("-").isdigit():
                k = int(tok)
            elif tok.lower() in folded:
                k = folded[tok.lower()]
            else:
                raise C.malformed(path, number, f"unknown class {tok!r}")
            if not 0 <= k < num_classes:
                raise C.malformed(path, number, f"class index {k} out of range [0, {num_classes})")
            classes.add(k)
        if key in out:
            raise C.malformed(path, number, f"{parts[0]!r} is listed twice")
        out[key] = tuple(sorted(classes))
    return out
_BOX_SOURCES = ("auto", "objects", "xml", "none")


class VOCSegmentation(Dataset):
    """PASCAL VOC 2012 from its standard folder (``VOCdevkit/VOC2012``).

    Layout read (``root`` is the folder holding these)::

        JPEGImages/<id>.jpg
        ImageSets/Segmentation/<split>.txt   one image id per line (image_set="Segmentation")
        ImageSets/Main/<split>.txt           one image id per line (image_set="Main")
        SegmentationClass/<id>.png           palette PNG: 0 background, 1..20 classes, 255 boundary
        SegmentationClassAug/<id>.png        (splits named ``*aug*``, e.g. SBD's ``train_aug``)
        SegmentationObject/<id>.png          optional: instance ids (0 background, 255 boundary)
        Annotations/<id>.xml                 optional (required for image_set="Main")

    Class indices: ``labels`` (the image-level targets, as Puzzle-CAM trains on them) use the
    20 foreground classes indexed ``0..19`` (:data:`VOC_CLASSES`); ``segmentation`` keeps
    VOC's ids (0 background, ``1..20`` = ``labels + 1``, 255 ignore). ``mask`` is
    ``segmentation`` in ``1..20``, ``ignore`` is ``segmentation == 255``. ``label`` is the
    class with the most pixels (the first object of the XML for ``image_set="Main"``), -1 for
    an image without any.

    Boxes (inclusive pixel coordinates), per ``boxes``: ``"objects"``: one per instance of
    ``SegmentationObject`` (its class is the most frequent class of its pixels); ``"xml"``:
    the ``Annotations`` objects (VOC counts pixels from 1: 1 is subtracted); ``"none"``: none;
    ``"auto"`` (default): the first of these that exists for the image.

    With ``image_set="Main"`` (classification/detection splits) there is no segmentation:
    ``labels`` are the XML objects' classes, ``mask``/``ignore``/``segmentation`` are None.

    Args:
        root: the ``VOC2012`` folder.
        split: the list file's name (``"train"``, ``"val"``, ``"trainval"``, ``"train_aug"``...).
        image_set: ``"Segmentation"`` or ``"Main"``.
        boxes: ``"auto"``, ``"objects"``, ``"xml"`` or ``"none"``.
        mask_dir: the folder of class PNGs (default ``SegmentationClassAug`` for splits whose
            name contains ``aug``, else ``SegmentationClass``).
        resize: None, an int or ``(H, W)``: image (bilinear, antialiased), masks (nearest) and
            boxes resized together.
        transform: applied to the image tensor only, after ``resize`` (normalisation, ...);
            a transform that moves pixels leaves boxes and masks to the caller.
        class_labels: a file of image-level classes that ``labels`` come from instead (the
            masks and boxes are unchanged): VOC's ``cls_labels.npy`` (IRN's ``{image_id:
            20-dim multi-hot}``, read without running code from the file) or the text format
            ``id cls1 cls2 ...`` (:func:`read_class_labels`); every listed image must be in it.

    Raises:
        FileNotFoundError: a missing folder, list file or listed image/PNG (named).
        ValueError: a malformed list line or XML (``file:line``), a PNG with values outside
            ``0..20, 255`` or of another size than its image (named).
    """

    num_classes = len(VOC_CLASSES)
    class_names = VOC_CLASSES

    def __init__(self, root: str | os.PathLike, split: str = "train", *, image_set: str = "Segmentation",
                 boxes: str = "auto", mask_dir: str | None = None, resize: Any = None,
                 transform: Callable | None = None, class_labels: str | os.PathLike | None = None) -> None:
        self.root = C.check_root(root)
        if not isinstance(split, str) or not split or "/" in split or "\\" in split:
            raise ValueError(f"split must be a list file's name such as 'train' or 'val', got {split!r}")
        self.split = split
        self.image_set = C.check_choice("image_set", image_set, ("Segmentation", "Main"))
        self.box_source = C.check_choice("boxes", boxes, _BOX_SOURCES)
        self.resize = C.check_resize(resize)
        self.transform = C.check_transform(transform)
        if mask_dir is not None and not isinstance(mask_dir, str):
            raise TypeError(f"mask_dir must be a folder name (str) or None, got {type(mask_dir).__name__}")

        self.image_dir = C.require_dir(self.root / "JPEGImages", "the VOC images")
        list_file = self.root / "ImageSets" / self.image_set / f"{split}.txt"
        C.require_file(list_file, f"the {self.image_set} split {split!r}")
        ids = []
        for number, line in C.read_lines(list_file):
            parts = line.split()
            if len(parts) not in (1, 2):
                raise C.malformed(list_file, number, f"expected an image id, got {line!r}")
            ids.append(parts[0])
        self.ids = ids
        self.class_labels = None
        if class_labels is not None:
            self.class_labels = read_class_labels(class_labels, self.num_classes)
            missing = [i for i in ids if i not in self.class_labels]
            if missing:
                raise ValueError(f"class_labels: {class_labels} has no entry for {len(missing)} listed image(s): "
                                 f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")

        self.annotation_dir = self.root / "Annotations"
        self.object_dir = self.root / "SegmentationObject"
        if self.image_set == "Segmentation":
            default = "SegmentationClassAug" if "aug" in split.lower() else "SegmentationClass"
            self.mask_dir = C.require_dir(self.root / (mask_dir or default), "the class PNGs")
        else:
            self.mask_dir = None
            C.require_dir(self.annotation_dir, "image_set='Main' takes its labels from the XML annotations")
            if self.box_source == "objects":
                raise ValueError("boxes='objects' needs image_set='Segmentation'")
        if self.box_source == "objects":
            C.require_dir(self.object_dir, "boxes='objects'")
        if self.box_source == "xml":
            C.require_dir(self.annotation_dir, "boxes='xml'")
        for i in self.ids:
            C.require_file(self.image_dir / f"{i}.jpg", "a listed image")
            if self.mask_dir is not None:
                C.require_file(self.mask_dir / f"{i}.png", "a listed image's class PNG")
            if self.image_set == "Main" or self.box_source == "xml":
                C.require_file(self.annotation_dir / f"{i}.xml", "a listed image's annotation")
            if self.box_source == "objects":
                C.require_file(self.object_dir / f"{i}.png", "a listed image's instance PNG")

    def __len__(self) -> int:
        return len(self.ids)

    def _xml(self, image_id: str) -> list[tuple[int, tuple[int, int, int, int]]]:
        path = self.annotation_dir / f"{image_id}.xml"
        _, objects = C.xml_objects(path, one_based=True)
        out = []
        for name, box, line in objects:
            if name not in _CLASS_INDEX:
                raise C.malformed(path, line, f"unknown VOC class {name!r}")
            out.append((_CLASS_INDEX[name], box))
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = C.check_index(index, len(self))
        image_id = self.ids[i]
        image = C.load_rgb(self.image_dir / f"{image_id}.jpg")
        h, w = image.shape[-2:]
        seg = mask = ignore = None
        xml_objects = None
        if self.mask_dir is not None:
            seg_path = self.mask_dir / f"{image_id}.png"
            seg = C.load_index_png(seg_path, "class PNG")
            C.check_same_size(seg_path, image, seg, "class PNG")
            bad = ~(((seg >= 0) & (seg <= 20)) | (seg == 255))
            if bool(bad.any()):
                raise ValueError(f"{seg_path}: values must be 0..20 or 255, found {sorted(set(seg[bad].tolist()))[:5]}")
            mask = (seg >= 1) & (seg <= 20)
            ignore = seg == 255
            counts = torch.bincount(seg[mask].reshape(-1), minlength=21)[1:21]
            labels = counts.nonzero().reshape(-1)
            label = int(counts.argmax()) if labels.numel() else -1
        else:
            xml_objects = self._xml(image_id)
            labels = torch.tensor(sorted({c for c, _ in xml_objects}), dtype=torch.int64)
            label = xml_objects[0][0] if xml_objects else -1

        if self.class_labels is not None:
            labels = torch.tensor(self.class_labels[image_id], dtype=torch.int64)
        source = self.box_source
        if source == "auto":
            if self.mask_dir is not None and (self.object_dir / f"{image_id}.png").is_file():
                source = "objects"
            elif xml_objects is not None or (self.annotation_dir / f"{image_id}.xml").is_file():
                source = "xml"
            else:
                source = "none"
        box_list: list[tuple[int, int, int, int]] = []
        box_labels: list[int] = []
        if source == "objects":
            obj_path = self.object_dir / f"{image_id}.png"
            inst = C.load_index_png(obj_path, "instance PNG")
            C.check_same_size(obj_path, image, inst, "instance PNG")
            for k in torch.unique(inst).tolist():
                if k in (0, 255):
                    continue
                m = inst == k
                cls = seg[m]
                cls = cls[(cls >= 1) & (cls <= 20)]
                if cls.numel() == 0:
                    raise ValueError(f"{obj_path}: instance {k} covers no class pixel of the class PNG")
                box_labels.append(int(torch.bincount(cls).argmax()) - 1)
                box_list.append(tuple(C.mask_box(m).tolist()))
        elif source == "xml":
            objs = xml_objects if xml_objects is not None else self._xml(image_id)
            for c, box in objs:
                box_labels.append(c)
                box_list.append(box)
        boxes = C.clip_boxes(C.boxes_tensor(box_list), h, w)
        sample = {
            "image": image, "label": label, "labels": labels.to(torch.int64), "boxes": boxes,
            "box_labels": torch.tensor(box_labels, dtype=torch.int64), "mask": mask, "ignore": ignore,
            "segmentation": seg, "name": image_id,
        }
        return C.finish_sample(sample, self.resize, self.transform)
