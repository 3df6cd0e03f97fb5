"""Decoding the images of a run (``torch.utils.data`` dataset, one record per image)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from camfast.utils.image import read_image

__all__ = ["ImageRecords", "as_list", "load_image"]


def load_image(path: str | Path, size: int, keep_original: bool = False
               ) -> tuple[np.ndarray, tuple[int, int], np.ndarray | None]:
    """Decode ``path`` (:func:`camfast.utils.image.read_image`: EXIF orientation applied, RGB;
    an image whose shorter side passes ``2 * max(4 * size, 2048)`` decoded reduced, unless the
    original is kept: the maps barely change, the memory does) and resize it bilinearly to
    ``size x size``: ``(uint8 (size, size, 3), (H, W) original size, original uint8 or None)``."""
    from PIL import Image

    decoded = read_image(path, "RGB", max_side=None if keep_original else max(4 * size, 2048))
    resized = np.array(Image.fromarray(decoded.pixels).resize((size, size), Image.BILINEAR), dtype=np.uint8)
    return resized, decoded.original_size, decoded.pixels if keep_original else None


class ImageRecords(torch.utils.data.Dataset):
    """``records[i]``: a dict with ``index``, ``rel`` and either ``image`` (uint8 tensor
    ``(3, size, size)``), ``size`` ``(H, W)`` and ``original`` (or None), or ``error`` (a
    message) when the file cannot be read."""

    def __init__(self, root: Path, rels: Sequence[tuple[int, str]], size: int, keep_original: bool) -> None:
        self.root, self.rels, self.size, self.keep_original = Path(root), list(rels), size, keep_original

    def __len__(self) -> int:
        return len(self.rels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        index, rel = self.rels[i]
        try:
            resized, size, original = load_image(self.root / rel, self.size, self.keep_original)
        except Exception as e:  # corrupt, truncated, unreadable: reported, the run goes on
            return {"index": index, "rel": rel, "error": f"{type(e).__name__}: {e}"}
        return {"index": index, "rel": rel, "image": torch.from_numpy(resized).permute(2, 0, 1).contiguous(),
                "size": size, "original": original, "error": None}


def as_list(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The DataLoader's ``collate_fn``: records stay a list (images differ in original size)."""
    return records
