"""wsolevaluation's metadata format (Choe et al., CVPR 2020; clovaai/wsolevaluation)."""

from __future__ import annotations

import os
from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from camfast.evaluation.datasets import common as C

__all__ = ["WSOLEvalMetadata"]

_DATASETS = ("OpenImages", "CUB", "ILSVRC")


class WSOLEvalMetadata(Dataset):
    """A split described by wsolevaluation's metadata files.

    ``metadata_root/<dataset>/<split>/`` holds (one record per line, comma-separated)::

        image_ids.txt      <path>
        class_labels.txt   <path>,<class index from 0>
        image_sizes.txt    <path>,<width>,<height>          (optional; kept as ``sizes``)
        localization.txt   boxes  (CUB, ILSVRC): <path>,<x0>,<y0>,<x1>,<y1>   one line per box
                           masks  (OpenImages):  <path>,<mask png>,<ignore png or empty>
                                                 one line per instance; the first line of an
                                                 image names its one ignore PNG

    Images are ``root/<path>``; mask PNGs ``mask_root/<png>`` (``mask_root`` defaults to
    ``root``: wsolevaluation keeps them beside the images).

    Boxes are the numbers as written: wsolevaluation scores them with inclusive (``+1``)
    areas, which is this package's convention (its CUB boxes are ``x + w``, one pixel wider
    than :class:`camfast.evaluation.datasets.CUB` gives; see there). For OpenImages, as wsolevaluation
    reads them: ``mask`` is the union of the instance PNGs ``> 0``, ``ignore`` is the ignore
    PNG ``> 0`` outside ``mask``, boxes are the instances' bounding boxes, ``segmentation`` is
    ``mask * (label + 1)`` with 255 where ``ignore``. ``labels`` is ``[label]``.

    ``num_classes`` is ``max(class index) + 1`` over the split unless given;
    ``class_names`` are the indices as strings (the metadata has no names).

    Args:
        root: the image folder the paths are relative to.
        metadata_root: the folder holding ``<dataset>/<split>/``.
        dataset: ``"OpenImages"``, ``"CUB"`` or ``"ILSVRC"``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        mask_root: see above.
        num_classes: see above.
        resize, transform: as :class:`camfast.evaluation.datasets.VOCSegmentation`.

    Raises:
        FileNotFoundError: a missing metadata file, image or mask (named).
        ValueError: a malformed line (``file:line``), an image without a class label.
    """

    def __init__(self, root: str | os.PathLike, metadata_root: str | os.PathLike, dataset: str = "OpenImages",
                 split: str = "test", *, mask_root: str | os.PathLike | None = None, num_classes: int | None = None,
                 resize: Any = None, transform: Callable | None = None) -> None:
        self.root = C.check_root(root)
        meta = C.check_root(metadata_root, "metadata_root")
        self.dataset = C.check_choice("dataset", dataset, _DATASETS)
        self.split = C.check_choice("split", split, ("train", "val", "test"))
        self.mask_root = self.root if mask_root is None else C.check_root(mask_root, "mask_root")
        self.resize = C.check_resize(resize)
        self.transform = C.check_transform(transform)
        self.metadata_dir = C.require_dir(meta / self.dataset / self.split, "the metadata of this dataset and split")
        d = self.metadata_dir

        ids_file = d / "image_ids.txt"
        self.image_ids: list[str] = []
        seen: set[str] = set()
        for number, line in C.read_lines(ids_file):
            if "," in line:
                raise C.malformed(ids_file, number, f"expected one image path, got {line!r}")
            if line in seen:
                raise C.malformed(ids_file, number, f"image {line!r} listed twice")
            seen.add(line)
            self.image_ids.append(line)

        labels_file = d / "class_labels.txt"
        self.class_labels: dict[str, int] = {}
        for number, line in C.read_lines(labels_file):
            parts = line.split(",")
            if len(parts) != 2:
                raise C.malformed(labels_file, number, f"expected '<path>,<label>', got {line!r}")
            label = C.parse_int(labels_file, number, parts[1], "class label")
            if label < 0:
                raise C.malformed(labels_file, number, f"class label must be >= 0, got {label}")
            self.class_labels[parts[0]] = label
        for image_id in self.image_ids:
            if image_id not in self.class_labels:
                raise ValueError(f"{labels_file}: no class label for {image_id!r} (listed in {ids_file})")

        sizes_file = d / "image_sizes.txt"
        self.sizes: dict[str, tuple[int, int]] | None = None
        if sizes_file.is_file():
            self.sizes = {}
            for number, line in C.read_lines(sizes_file):
                parts = line.split(",")
                if len(parts) != 3:
                    raise C.malformed(sizes_file, number, f"expected '<path>,<width>,<height>', got {line!r}")
                self.sizes[parts[0]] = (C.parse_int(sizes_file, number, parts[1], "width"),
                                        C.parse_int(sizes_file, number, parts[2], "height"))

        loc_file = d / "localization.txt"
        self.boxes: dict[str, list[tuple[int, int, int, int]]] = {}
        self.mask_paths: dict[str, list[str]] = {}
        self.ignore_paths: dict[str, str] = {}
        uses_masks = self.dataset == "OpenImages"
        for number, line in C.read_lines(loc_file):
            parts = line.split(",")
            if uses_masks:
                if len(parts) != 3 or not parts[1]:
                    raise C.malformed(loc_file, number, f"expected '<path>,<mask png>,<ignore png or empty>', got {line!r}")
                image_id, mask_path, ignore_path = parts
                if image_id in self.mask_paths:
                    if ignore_path:
                        raise C.malformed(loc_file, number, f"a second ignore mask for {image_id!r}")
                    self.mask_paths[image_id].append(mask_path)
                else:
                    self.mask_paths[image_id] = [mask_path]
                    self.ignore_paths[image_id] = ignore_path
            else:
                if len(parts) != 5:
                    raise C.malformed(loc_file, number, f"expected '<path>,<x0>,<y0>,<x1>,<y1>', got {line!r}")
                x0, y0, x1, y1 = (C.parse_int(loc_file, number, t, n) for t, n in zip(parts[1:], ("x0", "y0", "x1", "y1")))
                if x1 < x0 or y1 < y0:
                    raise C.malformed(loc_file, number, f"box has x1 < x0 or y1 < y0: {[x0, y0, x1, y1]}")
                self.boxes.setdefault(parts[0], []).append((x0, y0, x1, y1))

        for image_id in self.image_ids:
            C.require_file(self.root / image_id, "an image listed in image_ids.txt")
            if uses_masks:
                if image_id not in self.mask_paths:
                    raise ValueError(f"{loc_file}: no mask for {image_id!r} (listed in {ids_file})")
                for p in self.mask_paths[image_id] + [self.ignore_paths[image_id]]:
                    if p:
                        C.require_file(self.mask_root / p, f"a mask listed in {loc_file}")
        labels = [self.class_labels[i] for i in self.image_ids]
        if num_classes is None:
            num_classes = max(labels) + 1 if labels else 0
        elif isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}")
        elif labels and max(labels) >= num_classes:
            raise ValueError(f"num_classes={num_classes} but {labels_file} holds the class {max(labels)}")
        self.num_classes = num_classes
        self.class_names = tuple(str(k) for k in range(num_classes))

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = C.check_index(index, len(self))
        image_id = self.image_ids[i]
        label = self.class_labels[image_id]
        image = C.load_rgb(self.root / image_id)
        h, w = image.shape[-2:]
        mask = ignore = seg = None
        if self.dataset == "OpenImages":
            mask = torch.zeros(h, w, dtype=torch.bool)
            box_list = []
            for p in self.mask_paths[image_id]:
                inst = C.load_grey(self.mask_root / p) > 0
                C.check_same_size(self.mask_root / p, image, inst, "mask")
                mask |= inst
                b = C.mask_box(inst)
                if b is not None:
                    box_list.append(b.tolist())
            ignore_path = self.ignore_paths[image_id]
            if ignore_path:
                ign = C.load_grey(self.mask_root / ignore_path, "ignore mask") > 0
                C.check_same_size(self.mask_root / ignore_path, image, ign, "ignore mask")
                ignore = ign & ~mask
            else:
                ignore = torch.zeros(h, w, dtype=torch.bool)
            seg = mask.to(torch.int64) * (label + 1)
            seg[ignore] = 255
            boxes = C.boxes_tensor(box_list)
        else:
            boxes = C.clip_boxes(C.boxes_tensor(self.boxes.get(image_id, [])), h, w)
        sample = {
            "image": image, "label": label, "labels": torch.tensor([label]), "boxes": boxes,
            "box_labels": torch.full((boxes.shape[0],), label, dtype=torch.int64), "mask": mask, "ignore": ignore,
            "segmentation": seg, "name": image_id,
        }
        return C.finish_sample(sample, self.resize, self.transform)
