"""Pieces shared by the dataset loaders: the sample dict, image/PNG reading, resizing,
line-numbered text and XML parsing, progress, and :func:`collate`.

Pillow is imported on first use only (``import camfast.evaluation.datasets`` stays cheap).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from camfast.utils import image as image_io
from camfast.utils import progress

SAMPLE_KEYS = ("image", "label", "labels", "boxes", "box_labels", "mask", "ignore", "segmentation", "name")


# ----------------------------------------------------------------------------- arguments

def check_root(root: object, name: str = "root") -> Path:
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(root).__name__}")
    path = Path(root)
    if not path.is_dir():
        raise FileNotFoundError(f"{name}: folder {str(path)!r} does not exist")
    return path


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_resize(resize: object) -> tuple[int, int] | None:
    """``None``, an int (square) or ``(H, W)`` of positive ints."""
    if resize is None:
        return None
    if isinstance(resize, bool):
        raise TypeError(f"resize must be None, an int or a pair (H, W) of ints, got {resize!r}")
    if isinstance(resize, int):
        resize = (resize, resize)
    if (not isinstance(resize, (tuple, list)) or len(resize) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in resize)):
        raise TypeError(f"resize must be None, an int or a pair (H, W) of ints, got {resize!r}")
    if min(resize) < 1:
        raise ValueError(f"resize must be positive, got {tuple(resize)}")
    return int(resize[0]), int(resize[1])


def check_transform(transform: object) -> Callable | None:
    if transform is not None and not callable(transform):
        raise TypeError(f"transform must be callable or None, got {type(transform).__name__}")
    return transform  # type: ignore[return-value]


def require_file(path: Path, what: str = "") -> Path:
    if not path.is_file():
        extra = f" ({what})" if what else ""
        raise FileNotFoundError(f"missing file {str(path)!r}{extra}")
    return path


def require_dir(path: Path, what: str = "") -> Path:
    if not path.is_dir():
        extra = f" ({what})" if what else ""
        raise FileNotFoundError(f"missing folder {str(path)!r}{extra}")
    return path


# ----------------------------------------------------------------------------- text files

def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number from 1, stripped line)`` for each non-blank line of a text file."""
    require_file(path)
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if line:
                yield number, line


def malformed(path: Path, line: int, message: str) -> ValueError:
    return ValueError(f"{path}:{line}: {message}")


def parse_int(path: Path, line: int, text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise malformed(path, line, f"{what} must be an integer, got {text!r}") from None


def parse_float(path: Path, line: int, text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise malformed(path, line, f"{what} must be a number, got {text!r}") from None
    if not np.isfinite(value):
        raise malformed(path, line, f"{what} must be finite, got {text!r}")
    return value


# ----------------------------------------------------------------------------- XML with line numbers

class XMLElement:
    """A minimal XML element that remembers the line it starts on (for error messages)."""

    __slots__ = ("tag", "line", "text", "children")

    def __init__(self, tag: str, line: int) -> None:
        self.tag = tag
        self.line = line
        self.text = ""
        self.children: list[XMLElement] = []

    def findall(self, tag: str) -> list["XMLElement"]:
        return [c for c in self.children if c.tag == tag]

    def find(self, tag: str) -> "XMLElement | None":
        for c in self.children:
            if c.tag == tag:
                return c
        return None


def parse_xml(path: Path) -> XMLElement:
    """Parse an XML file into :class:`XMLElement` s; a syntax error names ``file:line``."""
    import xml.parsers.expat

    require_file(path)
    parser = xml.parsers.expat.ParserCreate()
    stack: list[XMLElement] = []
    root: list[XMLElement] = []

    def start(tag: str, attrs: dict) -> None:
        el = XMLElement(tag, parser.CurrentLineNumber)
        if stack:
            stack[-1].children.append(el)
        else:
            root.append(el)
        stack.append(el)

    def end(tag: str) -> None:
        el = stack.pop()
        el.text = el.text.strip()

    def chars(data: str) -> None:
        if stack:
            stack[-1].text += data

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        with open(path, "rb") as f:
            parser.ParseFile(f)
    except xml.parsers.expat.ExpatError as e:
        raise malformed(path, e.lineno, f"XML syntax error: {xml.parsers.expat.ErrorString(e.code)}") from None
    return root[0]


def xml_child(path: Path, el: XMLElement, tag: str) -> XMLElement:
    child = el.find(tag)
    if child is None:
        raise malformed(path, el.line, f"<{el.tag}> has no <{tag}>")
    return child


def xml_objects(path: Path, one_based: bool) -> tuple[XMLElement, list[tuple[str, tuple[int, int, int, int], int]]]:
    """The ``<object>`` s of a Pascal-VOC-style annotation: ``(name, inclusive box, line)``.

    ``one_based``: the file counts pixels from 1 (Pascal VOC); 1 is subtracted.
    """
    root = parse_xml(path)
    objects = []
    for obj in root.findall("object"):
        name = xml_child(path, obj, "name").text
        if not name:
            raise malformed(path, obj.line, "<object> has an empty <name>")
        bnd = xml_child(path, obj, "bndbox")
        coords = []
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            c = xml_child(path, bnd, tag)
            v = parse_float(path, c.line, c.text, f"<{tag}>")
            coords.append(int(round(v)) - (1 if one_based else 0))
        x0, y0, x1, y1 = coords
        if x1 < x0 or y1 < y0:
            raise malformed(path, bnd.line, f"box has xmax < xmin or ymax < ymin: {coords}")
        objects.append((name, (x0, y0, x1, y1), obj.line))
    return root, objects


# ----------------------------------------------------------------------------- images

def _read_image(path: Path, what: str, to_array) -> np.ndarray:
    """``to_array(opened PIL image)`` (:func:`camfast.utils.image.open_image`: regular files
    only, bombs refused); a missing file is a FileNotFoundError, an unreadable one a
    ValueError, each naming ``path``."""
    if not path.exists():
        raise FileNotFoundError(f"missing {what} {str(path)!r}")
    return to_array(image_io.open_image(path, what))


def load_rgb(path: Path) -> Tensor:
    """An image file as float32 ``(3, H, W)`` in ``[0, 1]``, read as every camfast command
    reads images (:func:`camfast.utils.image.read_image`: EXIF orientation applied, RGB)."""
    if not path.exists():
        raise FileNotFoundError(f"missing image file {str(path)!r}")
    arr = image_io.read_image(path, "RGB").pixels
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)


def load_index_png(path: Path, what: str = "label image") -> Tensor:
    """A single-channel (palette ``P`` or greyscale ``L``) PNG as int64 ``(H, W)`` raw values."""

    def raw(im) -> np.ndarray:
        if im.mode not in ("P", "L", "1", "I", "I;16"):
            raise ValueError(f"{path}: {what} must be a palette or greyscale PNG, got mode {im.mode!r}")
        return np.asarray(im)

    return torch.from_numpy(_read_image(path, what, raw).astype(np.int64))


def load_grey(path: Path, what: str = "mask") -> Tensor:
    """Any image as uint8 greyscale ``(H, W)`` (Pillow's ``L`` conversion)."""
    return torch.from_numpy(_read_image(path, what, lambda im: np.asarray(im.convert("L"))).copy())


def check_same_size(path: Path, image: Tensor, other: Tensor, what: str) -> None:
    if tuple(other.shape[-2:]) != tuple(image.shape[-2:]):
        raise ValueError(f"{path}: {what} is {tuple(other.shape[-2:])} (H, W) but its image is "
                         f"{tuple(image.shape[-2:])}")


# ----------------------------------------------------------------------------- boxes, masks

def mask_box(mask: Tensor) -> Tensor | None:
    """Inclusive ``(x0, y0, x1, y1)`` bounding box of a boolean ``(H, W)`` mask, None if empty."""
    rows = mask.any(1).nonzero()
    if rows.numel() == 0:
        return None
    cols = mask.any(0).nonzero()
    return torch.tensor([int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])], dtype=torch.int64)


def boxes_tensor(boxes: Iterable[Sequence[int]]) -> Tensor:
    out = torch.tensor([list(b) for b in boxes], dtype=torch.int64)
    return out.reshape(-1, 4)


def clip_boxes(boxes: Tensor, height: int, width: int) -> Tensor:
    """Clip inclusive boxes to the image (``0..W-1``, ``0..H-1``)."""
    if boxes.numel() == 0:
        return boxes
    out = boxes.clone()
    out[:, 0::2] = out[:, 0::2].clamp(0, width - 1)
    out[:, 1::2] = out[:, 1::2].clamp(0, height - 1)
    return out


def resize_sample(sample: dict[str, Any], size: tuple[int, int]) -> dict[str, Any]:
    """Resize the image (bilinear, antialiased), masks and segmentation (nearest) and boxes.

    A box's pixel edges are scaled: ``x0' = floor(x0 * s)``, ``x1' = ceil((x1 + 1) * s) - 1``
    (``s = W' / W``), so a box still covers the pixels its object covers.
    """
    import torch.nn.functional as F

    image = sample["image"]
    h, w = image.shape[-2:]
    nh, nw = size
    if (h, w) == (nh, nw):
        return sample
    sample = dict(sample)
    sample["image"] = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False,
                                    antialias=True)[0].clamp_(0.0, 1.0)
    for key in ("mask", "ignore", "segmentation"):
        v = sample.get(key)
        if v is not None:
            dtype = v.dtype
            r = F.interpolate(v[None, None].to(torch.float32), size=size, mode="nearest")[0, 0]
            sample[key] = r.to(dtype)
    boxes = sample["boxes"]
    if boxes.numel():
        sx, sy = nw / w, nh / h
        b = boxes.to(torch.float64)
        x0 = torch.floor(b[:, 0] * sx)
        y0 = torch.floor(b[:, 1] * sy)
        x1 = torch.maximum(torch.ceil((b[:, 2] + 1) * sx) - 1, x0)
        y1 = torch.maximum(torch.ceil((b[:, 3] + 1) * sy) - 1, y0)
        sample["boxes"] = clip_boxes(torch.stack([x0, y0, x1, y1], 1).to(torch.int64), nh, nw)
    return sample


def finish_sample(sample: dict[str, Any], resize: tuple[int, int] | None, transform: Callable | None) -> dict[str, Any]:
    if resize is not None:
        sample = resize_sample(sample, resize)
    if transform is not None:
        sample["image"] = transform(sample["image"])
    return sample


def check_index(index: object, length: int) -> int:
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) and not (
            isinstance(index, Tensor) and index.dim() == 0 and not index.is_floating_point()):
        raise TypeError(f"index must be an int, got {type(index).__name__}")
    i = int(index)
    if i < 0:
        i += length
    if not 0 <= i < length:
        raise IndexError(f"index {int(index)} out of range for a dataset of {length} samples")
    return i


# ----------------------------------------------------------------------------- progress

def Progress(label: str, total: int, min_total: int = 2000) -> progress.Progress:  # noqa: N802 - was a class
    """The dataset scans' :class:`camfast.utils.progress.Progress`: ``label: done/total`` on
    stderr about every 2 s, for long scans (>= ``min_total``)."""
    return progress.Progress(total, label, mode="lines", interval=2.0, min_total=min_total, noun="files",
                             unit="file")


# ----------------------------------------------------------------------------- collate

def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch sample dicts (for ``DataLoader(collate_fn=camfast.evaluation.datasets.collate)``).

    Per key: tensors of one shape are stacked (``image`` ``(B, 3, H, W)``, ``mask``,
    ``ignore``, ``segmentation`` ``(B, H, W)`` when every image has one size); tensors of
    different shapes (``boxes``, ``box_labels``, ``labels``, or images of different sizes)
    stay a list; ints (``label``) become an int64 tensor ``(B,)``; strings a list; a key
    that is None in every sample is None, one that is None in some a list.
    """
    if not isinstance(samples, (list, tuple)) or not samples:
        raise ValueError("samples must be a non-empty list of sample dicts")
    if not all(isinstance(s, dict) for s in samples):
        raise TypeError("samples must be dicts (as the camfast datasets return)")
    keys = list(samples[0].keys())
    out: dict[str, Any] = {}
    for key in keys:
        if not all(key in s for s in samples):
            raise ValueError(f"samples: key {key!r} is missing from some samples")
        values = [s[key] for s in samples]
        if all(v is None for v in values):
            out[key] = None
        elif all(isinstance(v, Tensor) for v in values):
            same = all(v.shape == values[0].shape and v.dtype == values[0].dtype for v in values)
            fixed = key not in ("boxes", "box_labels", "labels")
            out[key] = torch.stack(values) if same and fixed else list(values)
        elif all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            out[key] = torch.tensor([int(v) for v in values], dtype=torch.int64)
        else:
            out[key] = list(values)
    return out


def multi_hot(labels: Sequence[Tensor] | Tensor, num_classes: int) -> Tensor:
    """Image-level targets ``(B, K)`` float32 from a batch's ``labels`` (a list of ``(k_i,)``)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if isinstance(labels, Tensor):
        labels = list(labels.reshape(labels.shape[0], -1)) if labels.dim() else [labels.reshape(1)]
    out = torch.zeros(len(labels), num_classes)
    for i, lab in enumerate(labels):
        lab = torch.as_tensor(lab, dtype=torch.int64).reshape(-1)
        if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= num_classes):
            raise ValueError(f"labels[{i}] holds a class outside [0, {num_classes}): {lab.tolist()}")
        out[i, lab] = 1.0
    return out
