"""CUB-200-2011 in the camfast sample format."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from camfast.evaluation.datasets import common as C

__all__ = ["CUB"]


class CUB(Dataset):
    """CUB-200-2011 from its standard folder (``CUB_200_2011``).

    Files read (ids are 1-based, as the dataset ships them)::

        images.txt               <image id> <relative path under images/>
        image_class_labels.txt   <image id> <class id, 1..200>
        train_test_split.txt     <image id> <1 = train, 0 = test>
        bounding_boxes.txt       <image id> <x> <y> <width> <height>   (floats, pixels)
        classes.txt              <class id> <name>
        images/<path>
        segmentations/<path with .png>   optional (the separate download; also looked for
                                         beside ``root``): soft masks, 0..255

    ``label`` is the class id minus 1 (``0..199``); ``labels`` is ``[label]``; one box per
    image. The box ``(x, y, w, h)`` becomes the inclusive ``(floor(x), floor(y),
    ceil(x + w) - 1, ceil(y + h) - 1)``, clipped to the image: the pixels the box covers.
    (wsolevaluation writes ``(x, y, x + w, y + h)`` and scores with inclusive, ``+1``
    areas, one pixel wider; ``camfast.boxes_from_cam(..., box_format="wsol")`` produces that
    form for comparisons with its numbers.) With segmentations, ``mask`` is
    ``png > 127`` (more than half of the annotators), ``segmentation`` is ``mask * (label + 1)``;
    without, both are None; ``ignore`` is None.

    Args:
        root: the ``CUB_200_2011`` folder.
        split: ``"train"`` or ``"test"``.
        segmentations: a folder of masks, ``None`` (use ``root/segmentations`` or
            ``root/../segmentations`` when one exists) or ``False`` (no masks).
        resize, transform: as :class:`camfast.evaluation.datasets.VOCSegmentation`.

    Raises:
        FileNotFoundError: a missing file or folder (named).
        ValueError: a malformed line (``file:line``), an id listed twice or missing from a
            file, a class id outside ``classes.txt``.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", *, segmentations: Any = None,
                 resize: Any = None, transform: Callable | None = None) -> None:
        self.root = C.check_root(root)
        self.split = C.check_choice("split", split, ("train", "test"))
        self.resize = C.check_resize(resize)
        self.transform = C.check_transform(transform)
        self.image_dir = C.require_dir(self.root / "images", "the CUB images")

        classes_file = self.root / "classes.txt"
        names: dict[int, str] = {}
        for number, line in C.read_lines(classes_file):
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise C.malformed(classes_file, number, f"expected '<class id> <name>', got {line!r}")
            cid = C.parse_int(classes_file, number, parts[0], "class id")
            if cid in names:
                raise C.malformed(classes_file, number, f"class id {cid} listed twice")
            names[cid] = parts[1]
        if sorted(names) != list(range(1, len(names) + 1)):
            raise ValueError(f"{classes_file}: class ids must be 1..{len(names)}")
        self.class_names = tuple(names[k] for k in range(1, len(names) + 1))
        self.num_classes = len(self.class_names)

        def table(name: str, fields: int, kinds: str) -> dict[int, tuple[Any, ...]]:
            path = self.root / name
            out: dict[int, tuple[Any, ...]] = {}
            for number, line in C.read_lines(path):
                parts = line.split(maxsplit=fields - 1) if kinds == "is" else line.split()
                if len(parts) != fields:
                    raise C.malformed(path, number, f"expected {fields} fields, got {line!r}")
                key = C.parse_int(path, number, parts[0], "image id")
                if key in out:
                    raise C.malformed(path, number, f"image id {key} listed twice")
                values: list[Any] = []
                for text, kind in zip(parts[1:], kinds[1:]):
                    if kind == "i":
                        values.append(C.parse_int(path, number, text, "value"))
                    elif kind == "f":
                        values.append(C.parse_float(path, number, text, "value"))
                    else:
                        values.append(text)
                out[key] = (number, *values)
            return out

        images = table("images.txt", 2, "is")
        labels = table("image_class_labels.txt", 2, "ii")
        split_of = table("train_test_split.txt", 2, "ii")
        boxes = table("bounding_boxes.txt", 5, "iffff")
        for name, t in (("image_class_labels.txt", labels), ("train_test_split.txt", split_of),
                        ("bounding_boxes.txt", boxes)):
            missing = sorted(set(images) - set(t))
            if missing:
                raise ValueError(f"{self.root / name}: no line for image id {missing[0]} (listed in images.txt)")
        want = 1 if self.split == "train" else 0
        self.items: list[tuple[str, int, tuple[float, float, float, float]]] = []
        for key in sorted(images):
            number, flag = split_of[key]
            if flag not in (0, 1):
                raise C.malformed(self.root / "train_test_split.txt", number, f"split flag must be 0 or 1, got {flag}")
            if flag != want:
                continue
            lnum, cid = labels[key]
            if cid not in names:
                raise C.malformed(self.root / "image_class_labels.txt", lnum,
                                  f"class id {cid} is not in classes.txt")
            bnum, x, y, bw, bh = boxes[key]
            if bw <= 0 or bh <= 0:
                raise C.malformed(self.root / "bounding_boxes.txt", bnum, f"width and height must be > 0, got {bw}, {bh}")
            self.items.append((images[key][1], cid - 1, (x, y, bw, bh)))
        for path, _, _ in self.items:
            C.require_file(self.image_dir / path, "an image listed in images.txt")

        if segmentations is False:
            self.seg_dir = None
        elif segmentations is None:
            cands = [self.root / "segmentations", self.root.parent / "segmentations"]
            self.seg_dir = next((c for c in cands if c.is_dir()), None)
        elif isinstance(segmentations, (str, os.PathLike)):
            self.seg_dir = C.require_dir(Path(segmentations), "segmentations")
        else:
            raise TypeError(f"segmentations must be a path, None or False, got {type(segmentations).__name__}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = C.check_index(index, len(self))
        path, label, (x, y, bw, bh) = self.items[i]
        image = C.load_rgb(self.image_dir / path)
        h, w = image.shape[-2:]
        box = [math.floor(x), math.floor(y), math.ceil(x + bw) - 1, math.ceil(y + bh) - 1]
        boxes = C.clip_boxes(C.boxes_tensor([box]), h, w)
        mask = seg = None
        if self.seg_dir is not None:
            mpath = self.seg_dir / (os.path.splitext(path)[0] + ".png")
            grey = C.load_grey(mpath, "segmentation mask")
            C.check_same_size(mpath, image, grey, "segmentation mask")
            mask = grey > 127
            seg = mask.to(torch.int64) * (label + 1)
        sample = {
            "image": image, "label": label, "labels": torch.tensor([label]), "boxes": boxes,
            "box_labels": torch.tensor([label]), "mask": mask, "ignore": None, "segmentation": seg,
            "name": path,
        }
        return C.finish_sample(sample, self.resize, self.transform)
