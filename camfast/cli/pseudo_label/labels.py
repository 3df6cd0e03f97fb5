"""The labels file (image-level classes), label maps and their palette."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from camfast.cli.common import match_class_name
from camfast.cli.pseudo_label.discovery import normalize_rel

__all__ = ["label_map", "match_ids", "parse_labels", "voc_palette"]

_INDEX = re.compile(r"-?[0-9]+")  # ASCII digits only: "²".isdigit() is True but int("²") fails


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map: 256 RGB triples, flattened (768 ints).

    Colour ``i`` spreads the bits of ``i`` over the channels: bit ``3j`` goes to red, ``3j+1``
    to green, ``3j+2`` to blue, each at position ``7 - j`` (0 black, 1 dark red, 2 dark green,
    ..., 255 is the same rule, not VOC's "void" white).
    """
    out = []
    for i in range(256):
        rgb = [0, 0, 0]
        c = i
        for j in range(8):
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << (7 - j)
            c >>= 3
        out += rgb
    return out


def _split(line: str) -> list[str]:
    """A line's fields: tab-separated when it has a tab (the path may hold spaces; classes
    after it are split on any white space), else white-space separated."""
    if "\t" in line:
        path, _, rest = line.partition("\t")
        return [path.strip(), *rest.split()]
    return line.split()


class LabelTable(dict):
    """Image -> classes, remembering where each image was listed (``FILE:LINE`` for a text
    file, empty for ``cls_labels.npy``) so that errors about an image can point at its line."""

    def __init__(self, items=(), where: dict[str, str] | None = None) -> None:
        super().__init__(items)
        self.where = where or {}


def parse_labels(path: str | os.PathLike, class_names: Sequence[str] | None = None,
                 num_classes: int | None = None) -> dict[str, tuple[int, ...]]:
    """Image-level classes, one line per image: ``relative/path.jpg cls1 cls2 ...``, or VOC's
    ``cls_labels.npy`` (IRN's ``{image_id: multi-hot}``, a ``.npy`` file: read by
    :func:`camfast.evaluation.datasets.voc.read_cls_labels_npy`, no code from the file runs;
    its keys are image ids, matched to the images by their path without the suffix, see
    :func:`match_ids`).

    Fields are separated by white space; a path with spaces is separated from its classes by
    a TAB (``"my photo.jpg<TAB>3 7"``). Classes are indices (``0..num_classes-1``) or names
    from ``class_names`` (case ignored when unambiguous). Blank lines and lines starting with
    ``#`` are ignored; a UTF-8 byte-order mark is skipped. An image's classes are returned
    sorted, without duplicates.

    Raises:
        ValueError: a malformed line (no class, unknown name, index out of range, an image
            listed twice), named as ``FILE:LINE``; the file cannot be read.
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return _parse_npy(path, num_classes if num_classes is not None else (len(class_names) if class_names else None))
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"labels: cannot read {str(path)!r}: {e}") from None
    if num_classes is None and class_names:
        num_classes = len(class_names)
    out = LabelTable()
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{lineno}"
        tokens = _split(line.strip(" \r\n"))
        rel = normalize_rel(tokens[0])
        if len(tokens) < 2:
            raise ValueError(f"labels: {where}: no class after {tokens[0]!r} (expected 'path cls1 cls2 ...'; "
                             "separate a path with spaces from its classes by a tab)")
        if rel in out:
            raise ValueError(f"labels: {where}: {tokens[0]!r} is listed twice")
        classes = set()
        for tok in tokens[1:]:
            if _INDEX.fullmatch(tok):
                k = int(tok)
                if k < 0 or (num_classes is not None and k >= num_classes):
                    bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
                    raise ValueError(f"labels: {where}: class index {k} out of range {bound}")
            elif class_names:
                k = match_class_name(tok, class_names, f"labels: {where}")
            else:
                raise ValueError(f"labels: {where}: class {tok!r} is not an index and the model has no class names")
            classes.add(k)
        out[rel] = tuple(sorted(classes))
        out.where[rel] = where
    return out


def _parse_npy(path: Path, num_classes: int | None) -> dict[str, tuple[int, ...]]:
    from camfast.evaluation.datasets.voc import read_cls_labels_npy

    try:
        out = read_cls_labels_npy(path, None)
    except OSError as e:
        raise ValueError(f"labels: cannot read {str(path)!r}: {e}") from None
    except ValueError as e:
        raise ValueError(f"labels: {e}") from None
    for image_id, classes in out.items():
        if num_classes is not None and classes and classes[-1] >= num_classes:
            raise ValueError(f"labels: {path}: {image_id}: class index {classes[-1]} out of range [0, {num_classes})")
    return out


def match_ids(labels: dict[str, tuple[int, ...]], images: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Labels keyed by image id (``cls_labels.npy``) re-keyed by the images' relative paths:
    an image whose path without its suffix is an id takes its classes; ids matching no
    image keep their key (reported as not under the image folder)."""
    by_stem = {os.path.splitext(rel)[0]: rel for rel in images}
    where = getattr(labels, "where", {})
    return LabelTable({by_stem.get(key, key): classes for key, classes in labels.items()},
                      {by_stem.get(key, key): w for key, w in where.items()})


def label_map(maps: Tensor | np.ndarray, classes: Sequence[int], threshold: float,
              image: np.ndarray | None = None, crf: bool = False) -> np.ndarray:
    """``(H, W)`` int64 labels from per-class maps ``(K, H, W)`` in [0, 1]: the argmax over
    ``[threshold, maps...]`` (ties to the background, 0, and to the first class), class
    ``classes[k]`` written as ``classes[k] + 1``. With ``crf``, the scores divided by their
    per-pixel sum are refined by :func:`camfast.crf.refine` on ``image`` (uint8
    ``(H, W, 3)``) first.

    Plain numpy on purpose: single-threaded, so it runs beside the model's threads without
    waiting on them.
    """
    m = maps.detach().cpu().numpy() if isinstance(maps, Tensor) else np.asarray(maps)
    m = np.clip(m.astype(np.float32, copy=False), 0.0, 1.0)
    if m.ndim != 3 or m.shape[0] != len(classes):
        raise ValueError(f"maps must be (K={len(classes)}, H, W), got shape {m.shape}")
    lut = np.array([0, *[k + 1 for k in classes]], dtype=np.int64)
    if crf:
        from camfast.crf import refine

        scores = np.concatenate([np.full_like(m[:1], threshold), m])
        probs = scores / np.maximum(scores.sum(0, keepdims=True), 1e-12)
        return lut[refine(image, probs, workers=1).argmax(0)]
    # the running maximum over the classes, one class at a time (``>``: ties keep the earlier
    # class, as argmax; the background starts as the maximum: ties go to it): O(K) passes over
    # contiguous planes, several times faster than numpy's argmax along the first axis
    # (branch-free arithmetic: masked assignment is slow on noisy maps)
    best_val = np.full(m.shape[1:], np.float32(threshold), dtype=np.float32)
    best = np.zeros(m.shape[1:], dtype=np.int32)
    for k in range(m.shape[0]):
        above = m[k] > best_val
        np.maximum(best_val, m[k], out=best_val)
        np.multiply(best, ~above, out=best)
        best += above * np.int32(k + 1)
    return lut[best]
