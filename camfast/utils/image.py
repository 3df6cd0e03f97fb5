"""Reading images: the one reader, suffix list and folder discovery every camfast command uses.

Policy (the same photo maps the same way in ``camfast explain``, ``camfast pseudo-label`` and
the datasets of :mod:`camfast.evaluation`):

- only regular files are images: a FIFO, socket or device named ``*.jpg`` is refused before
  it is opened (opening a FIFO would block forever);
- the EXIF orientation is applied (``PIL.ImageOps.exif_transpose``): maps are drawn on the
  photo as a viewer shows it;
- the colour mode is converted with Pillow's ``convert`` (``"RGB"`` by default: palette,
  greyscale, CMYK and alpha images become RGB, alpha dropped);
- Pillow's decompression-bomb guard stays on; a bomb, like a corrupt, truncated or
  unreadable file, is an :class:`ImageReadError` naming the file;
- with ``max_side``, a large image is decoded reduced (JPEG ``draft``: DCT scaling, so an
  8000x8000 JPEG never takes its full size in memory; other formats ``reduce`` by an integer
  factor) to no less than ``max_side`` on its shorter side; ``read_image`` reports the
  original size as well.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_SUFFIXES", "DecodedImage", "ImageReadError", "find_images", "is_image_name", "open_image",
           "read_image", "require_regular_file"]

#: the suffixes (lower case) taken as images when a folder is searched
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm",
                  ".pnm")


class ImageReadError(ValueError):
    """A file could not be read as an image (missing, not a regular file, corrupt, a bomb...);
    the message names the file."""


@dataclass
class DecodedImage:
    """A decoded image: ``pixels`` uint8 ``(H, W, 3)`` (or ``(H, W)`` for ``"L"``), and the
    size ``(H, W)`` of the file's image after EXIF orientation (``pixels`` may be smaller when
    it was decoded reduced)."""

    pixels: np.ndarray
    original_size: tuple[int, int]


def is_image_name(name: str | os.PathLike[str]) -> bool:
    """Whether a file name has one of :data:`IMAGE_SUFFIXES` (case-insensitive)."""
    return os.path.splitext(os.fspath(name))[1].lower() in IMAGE_SUFFIXES


def require_regular_file(path: str | os.PathLike[str]) -> None:
    """Raise :class:`ImageReadError` unless ``path`` is a regular file (symlinks followed)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read ({e.strerror or e})") from None
    if not stat.S_ISREG(mode):
        raise ImageReadError(f"{path}: not a regular file (a folder, FIFO, socket or device); skipped")


def _pil():
    try:
        from PIL import Image as PILImage
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("reading images needs Pillow: pip install pillow") from e
    return PILImage


def open_image(path: str | os.PathLike[str], what: str = "image", convert: bool = False):
    """Open ``path`` with Pillow after :func:`require_regular_file`, load it and return the
    PIL image (no EXIF or mode change). Errors are :class:`ImageReadError` naming ``what``."""
    PILImage = _pil()
    require_regular_file(path)
    try:
        with PILImage.open(path) as im:
            im.load()
            return im
    except PILImage.DecompressionBombError as e:
        raise ImageReadError(f"{path}: refused as a decompression bomb ({e})") from None
    except (OSError, ValueError, SyntaxError) as e:  # Pillow raises these for corrupt files
        raise ImageReadError(f"{path}: cannot read {what} ({e})") from None


def read_image(path: str | os.PathLike[str], mode: str = "RGB", max_side: int | None = None) -> DecodedImage:
    """Decode ``path`` under the module's policy: EXIF orientation applied, converted to
    ``mode``, decoded reduced when ``max_side`` is given (see the module docstring).

    Raises:
        ImageReadError: the file is not a regular file or cannot be decoded (message names it).
    """
    PILImage = _pil()
    from PIL import ImageOps

    require_regular_file(path)
    try:
        with PILImage.open(path) as im:
            w, h = im.size
            if _exif_swaps(im):
                w, h = h, w
            if max_side is not None and min(w, h) > 2 * max_side:
                if im.format == "JPEG":
                    im.draft("RGB" if mode == "RGB" else im.mode, (max_side, max_side))
                else:
                    factor = max(1, min(w, h) // max_side)
                    im = im.reduce(factor) if factor > 1 else im
            im = ImageOps.exif_transpose(im)
            pixels = np.array(im.convert(mode), dtype=np.uint8)
    except PILImage.DecompressionBombError as e:
        raise ImageReadError(f"{path}: refused as a decompression bomb ({e})") from None
    except (OSError, ValueError, SyntaxError) as e:  # corrupt, truncated, unsupported
        raise ImageReadError(f"{path}: cannot read image ({e})") from None
    return DecodedImage(pixels, (h, w))


def _exif_swaps(im) -> bool:
    try:
        return im.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # the orientations that transpose
    except Exception:  # a malformed EXIF block: exif_transpose copes, the size stays
        return False


def find_images(root: str | os.PathLike[str], exclude: Iterable[str | os.PathLike[str]] = (),
                skipped: list[str] | None = None) -> list[str]:
    """Image files under ``root`` (recursive, by suffix, case-insensitive, regular files
    only), as sorted POSIX paths relative to ``root``. Hidden files and folders (name starting
    with ".") and every folder in ``exclude`` (an output folder inside ``root``) are skipped;
    an image-named entry that is not a regular file (a FIFO, a socket) is appended to
    ``skipped`` when given (for the caller to report), never opened.

    Raises:
        ValueError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{str(root)!r} is not a folder")
    skip = {os.path.realpath(p) for p in exclude}
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and os.path.realpath(os.path.join(dirpath, d)) not in skip)
        rel_dir = Path(dirpath).relative_to(root)
        for name in filenames:
            full = os.path.join(dirpath, name)
            if name.startswith(".") or not is_image_name(name):
                continue
            if os.path.isfile(full):
                found.append((rel_dir / name).as_posix())
            elif skipped is not None:
                skipped.append((rel_dir / name).as_posix())
    found.sort()
    return found
