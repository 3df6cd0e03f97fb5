"""ImageNet (ILSVRC) validation images with their XML boxes, in the camfast sample format."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import Dataset

from camfast.evaluation.datasets import common as C
from camfast.utils.image import IMAGE_SUFFIXES

__all__ = ["ImageNetVal"]

# (images, annotations) folders tried under root when none are given.
_LAYOUTS = (
    ("Data/CLS-LOC/val", "Annotations/CLS-LOC/val"),   # the ILSVRC / Kaggle layout
    ("ILSVRC2012_img_val", "val"),                     # the two official tarballs extracted side by side
    ("images", "annotations"),
)
# ILSVRC's own upper-case suffix first, then the one image-suffix list of camfast
_EXTENSIONS = (".JPEG", *IMAGE_SUFFIXES)


class ImageNetVal(Dataset):
    """ILSVRC validation images plus Pascal-VOC-style XML boxes (one ``<id>.xml`` per image).

    Each XML has ``<object><name>wnid</name><bndbox><xmin>..<ymin>..<xmax>..<ymax>..``; the
    image is ``<id>.JPEG`` (or any suffix of ``camfast.utils.image.IMAGE_SUFFIXES``) in the image folder. Samples are
    in the sorted order of the XML file names.

    Class index: from ``wnids`` (a file with one wnid first on each line, such as
    ``LOC_synset_mapping.txt`` ``"n01440764 tench, Tinca tinca"``, whose rest of line becomes
    the class name; or a sequence of wnids), by default ``root/LOC_synset_mapping.txt`` when it
    exists, else the sorted wnids found in the annotations. The sorted order is the usual
    ImageNet index (torchvision's ``ImageFolder``) only when all 1000 classes occur: pass the
    list when reading a subset.

    ``labels``: the sorted distinct classes of the objects; ``label``: the first object's class
    (ILSVRC validation images have one class each); boxes: every object, inclusive pixel
    coordinates as written (``one_based=True`` subtracts 1 for files counting from 1), clipped
    to the image. ``mask``/``ignore``/``segmentation`` are None.

    Args:
        root: the dataset folder.
        images, annotations: the image and XML folders (relative to ``root`` or absolute);
            by default the first of ``Data/CLS-LOC/val`` + ``Annotations/CLS-LOC/val``,
            ``ILSVRC2012_img_val`` + ``val``, ``images`` + ``annotations`` that exists.
        wnids: see above.
        one_based: see above.
        resize, transform: as :class:`camfast.evaluation.datasets.VOCSegmentation`.

    All XML files are parsed by the constructor (progress on stderr for large sets).

    Raises:
        FileNotFoundError: missing folders, list file or image (named).
        ValueError: malformed XML or list lines, a wnid not in the list (``file:line``).
    """

    def __init__(self, root: str | os.PathLike, *, images: str | os.PathLike | None = None,
                 annotations: str | os.PathLike | None = None, wnids: Any = None, one_based: bool = False,
                 resize: Any = None, transform: Callable | None = None) -> None:
        self.root = C.check_root(root)
        self.resize = C.check_resize(resize)
        self.transform = C.check_transform(transform)
        if not isinstance(one_based, bool):
            raise TypeError(f"one_based must be a bool, got {type(one_based).__name__}")
        if (images is None) != (annotations is None):
            raise ValueError("images and annotations must be given together (or neither)")
        if images is None:
            for img, ann in _LAYOUTS:
                if (self.root / img).is_dir() and (self.root / ann).is_dir():
                    images, annotations = img, ann
                    break
            else:
                tried = ", ".join(f"{a!r} + {b!r}" for a, b in _LAYOUTS)
                raise FileNotFoundError(f"no image and annotation folders under {str(self.root)!r} (tried {tried})")
        for name, v in (("images", images), ("annotations", annotations)):
            if not isinstance(v, (str, os.PathLike)):
                raise TypeError(f"{name} must be a path, got {type(v).__name__}")
        self.image_dir = C.require_dir(self.root / images, "images")
        self.annotation_dir = C.require_dir(self.root / annotations, "annotations")

        xml_files = sorted(p for p in self.annotation_dir.iterdir() if p.suffix == ".xml")
        if not xml_files:
            raise FileNotFoundError(f"no .xml annotation files in {str(self.annotation_dir)!r}")
        parsed: list[tuple[Path, list[tuple[str, tuple[int, int, int, int], int]]]] = []
        progress = C.Progress("ImageNetVal: parsing annotations", len(xml_files))
        for n, path in enumerate(xml_files, 1):
            _, objects = C.xml_objects(path, one_based=one_based)
            if not objects:
                raise ValueError(f"{path}:1: no <object> in the annotation")
            parsed.append((path, objects))
            progress.set(n)

        self.wnids, self.class_names = self._class_list(wnids, parsed)
        index = {w: i for i, w in enumerate(self.wnids)}
        self.num_classes = len(self.wnids)
        self.items: list[tuple[str, Path, list[int], list[tuple[int, int, int, int]]]] = []
        for path, objects in parsed:
            classes = []
            for name, _, line in objects:
                if name not in index:
                    raise C.malformed(path, line, f"wnid {name!r} is not in the class list")
                classes.append(index[name])
            stem = path.stem
            image = next((self.image_dir / (stem + e) for e in _EXTENSIONS if (self.image_dir / (stem + e)).is_file()),
                         None)
            if image is None:
                raise FileNotFoundError(f"missing image file {str(self.image_dir / (stem + '.JPEG'))!r} "
                                        f"(annotated in {str(path)!r})")
            self.items.append((stem, image, classes, [b for _, b, _ in objects]))

    def _class_list(self, wnids: Any, parsed: list) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if wnids is None:
            default = self.root / "LOC_synset_mapping.txt"
            if default.is_file():
                wnids = default
            else:
                found = sorted({name for _, objs in parsed for name, _, _ in objs})
                return tuple(found), tuple(found)
        if isinstance(wnids, (str, os.PathLike)):
            path = C.require_file(Path(wnids), "wnids")
            ids, names = [], []
            for number, line in C.read_lines(path):
                parts = line.split(maxsplit=1)
                if not parts[0].startswith("n") or not parts[0][1:].isdigit():
                    raise C.malformed(path, number, f"expected a wnid such as 'n01440764' first, got {line!r}")
                if parts[0] in ids:
                    raise C.malformed(path, number, f"wnid {parts[0]!r} listed twice")
                ids.append(parts[0])
                names.append(parts[1] if len(parts) > 1 else parts[0])
            return tuple(ids), tuple(names)
        if isinstance(wnids, Sequence) and all(isinstance(w, str) for w in wnids) and len(wnids):
            if len(set(wnids)) != len(wnids):
                raise ValueError("wnids must not repeat a wnid")
            return tuple(wnids), tuple(wnids)
        raise TypeError(f"wnids must be None, a path or a non-empty sequence of str, got {type(wnids).__name__}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = C.check_index(index, len(self))
        stem, path, classes, boxes = self.items[i]
        image = C.load_rgb(path)
        h, w = image.shape[-2:]
        sample = {
            "image": image, "label": classes[0], "labels": torch.tensor(sorted(set(classes)), dtype=torch.int64),
            "boxes": C.clip_boxes(C.boxes_tensor(boxes), h, w), "box_labels": torch.tensor(classes, dtype=torch.int64),
            "mask": None, "ignore": None, "segmentation": None, "name": stem,
        }
        return C.finish_sample(sample, self.resize, self.transform)
