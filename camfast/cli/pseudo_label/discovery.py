"""Which images a run covers, and the output stem of each."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from camfast.utils import image as image_io

__all__ = ["find_images", "normalize_rel", "stem"]


def stem(rel: str) -> str:
    """An image's relative path without its suffix: the name of its outputs."""
    return os.path.splitext(rel)[0]


def normalize_rel(text: str) -> str:
    p = Path(text).as_posix()
    while p.startswith("./"):
        p = p[2:]
    return p


def find_images(root: str | os.PathLike, exclude: Iterable[str | os.PathLike] = (),
                skipped: list[str] | None = None) -> list[str]:
    """Image files under ``root`` (:func:`camfast.utils.image.find_images`: recursive, by
    suffix, regular files only, hidden entries and the ``exclude`` folders left out) as
    sorted POSIX paths relative to ``root``.

    Raises:
        ValueError: ``root`` is not a folder, or two images would share outputs (same path
            but the suffix, e.g. ``a.jpg`` and ``a.png``).
    """
    try:
        found = image_io.find_images(root, exclude, skipped)
    except ValueError as e:
        raise ValueError(f"images: {e}") from None
    stems: dict[str, str] = {}
    for rel in found:
        s = stem(rel)
        if s in stems:
            raise ValueError(f"images: {stems[s]!r} and {rel!r} would write the same outputs ({s}.*); rename one")
        stems[s] = rel
    return found
