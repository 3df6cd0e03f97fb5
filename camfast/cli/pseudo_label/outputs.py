"""What a run writes: the output paths of an image, the writers, stale temporaries.

Every file is written with :func:`camfast.utils.io.atomic_write` under a temporary name
starting with :data:`TMP_PREFIX`: an interrupted run leaves no partial file, and the next run
(holding the folder's lock, so no live run owns them) removes any a killed run left.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from camfast.cli.pseudo_label.discovery import stem
from camfast.utils import io
from camfast.utils.io import TMP_SUFFIX

__all__ = ["TMP_PREFIX", "output_paths", "remove_stale_temporaries", "write_label_map", "write_npy",
           "write_irn", "write_png16", "png16_bytes"]

try:  # ISA-L's deflate (the optional ``isal`` package): about 4x faster than zlib at level 1, same size
    from isal import isal_zlib as _deflate
except ImportError:  # pragma: no cover - exercised where isal is not installed
    _deflate = zlib

#: temporary files start with this; a rerun removes any left by a killed run
TMP_PREFIX = ".camfast-tmp-"


def output_paths(out: Path, rel: str, classes: Sequence[int] | None, fmt: str, with_label: bool) -> list[Path]:
    """Every file an image produces (heatmaps first, then the label map)."""
    s = stem(rel)
    heat = out / "heatmaps"
    if fmt == "irn":
        paths = [out / "cam" / f"{s}.npy"]
    elif fmt == "npy":
        paths = [heat / f"{s}.npy"]
    elif classes is None:
        paths = [heat / f"{s}.png"]
    else:
        paths = [heat / f"{s}_c{k}.png" for k in classes]
    if with_label:
        paths.append(out / "labels" / f"{s}.png")
    return paths


def _write(path: Path, write) -> None:
    io.atomic_write(path, write, prefix=TMP_PREFIX)


def _png(array: np.ndarray, palette: list[int] | None = None):
    from PIL import Image

    def write(f: BinaryIO) -> None:
        im = Image.fromarray(array)
        if palette is not None:
            im.putpalette(palette)
        # zlib level 1 with the run-length strategy (zlib's Z_RLE = 3): lossless like any PNG,
        # faster than the default strategy and smaller (a 500x375 16-bit heatmap: 10.0 ms and
        # 268 KiB instead of 14.6 ms and 279 KiB, measured on the 2-core CI machine)
        im.save(f, format="PNG", compress_level=1, compress_type=3)

    return write


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(tag)))


def png16_bytes(values: np.ndarray) -> bytes:
    """A standard 16-bit greyscale PNG of ``values`` (uint16 ``(H, W)``), every row with PNG's
    "Sub" filter, deflated at level 1 (by ISA-L when the ``isal`` package is installed, else
    by zlib; the two give different bytes of the same image).

    Written here rather than with Pillow because Pillow chooses the filter of every row itself
    (its adaptive search is most of its time) and offers no option to fix it. On a 500x375
    map upsampled from a CAM, on the 2-core CI machine: Pillow at its fastest setting (level
    1, run-length strategy) 10.9 ms and 244 KiB; this with zlib about 5 ms and 90 KiB; with
    ISA-L about 1.5 ms and 92 KiB. Any PNG reader decodes it (the tests read it back with
    Pillow, bit for bit)."""
    v = np.asarray(values)
    if v.dtype != np.uint16 or v.ndim != 2 or v.shape[0] < 1 or v.shape[1] < 1:
        raise ValueError(f"values must be a non-empty uint16 (H, W) array, got {v.dtype} {v.shape}")
    h, w = v.shape
    raw = np.ascontiguousarray(v, dtype=">u2").view(np.uint8).reshape(h, 2 * w)  # big-endian samples, 2 bytes a pixel
    rows = np.empty((h, 2 * w + 1), dtype=np.uint8)
    rows[:, 0] = 1  # filter type Sub: each byte minus the byte one pixel (2 bytes) to its left, mod 256
    rows[:, 1:3] = raw[:, :2]
    np.subtract(raw[:, 2:], raw[:, :-2], out=rows[:, 3:])
    header = struct.pack(">IIBBBBB", w, h, 16, 0, 0, 0, 0)  # 16-bit, greyscale, deflate, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", _deflate.compress(rows.tobytes(), 1))
            + _chunk(b"IEND", b""))


def write_png16(path: Path, cam: np.ndarray) -> None:
    """A map in [0, 1] as 16-bit greyscale, ``round(cam * 65535)`` (:func:`png16_bytes`)."""
    _write(path, png16_bytes(np.rint(np.clip(cam, 0.0, 1.0) * 65535.0).astype(np.uint16)))


def write_npy(path: Path, array: np.ndarray) -> None:
    _write(path, lambda f: np.save(f, array.astype(np.float16), allow_pickle=False))


def write_irn(path: Path, keys: np.ndarray, cam: np.ndarray, high_res: np.ndarray) -> None:
    """IRN's ``step/make_cam.py`` file: ``np.save`` of ``{"keys", "cam", "high_res"}`` (a
    pickled dict in a 0-d object array: readers need ``allow_pickle=True``, as IRN's own
    ``eval_cam.py``; camfast reads it with a restricted unpickler). IRN stores ``keys`` and
    ``cam`` as torch tensors; here all three are numpy arrays (int64, float32, float32), which
    IRN's and AMN's next steps read the same way (``np.pad``, ``+ 1``, indexing)."""
    d = {"keys": np.asarray(keys, dtype=np.int64), "cam": np.asarray(cam, dtype=np.float32),
         "high_res": np.asarray(high_res, dtype=np.float32)}
    _write(path, lambda f: np.save(f, d, allow_pickle=True))


def write_label_map(path: Path, labels: np.ndarray, palette: list[int]) -> None:
    """An 8-bit palette PNG when every label fits (<= 255), else 16-bit greyscale (same values)."""
    if labels.size == 0 or int(labels.max()) <= 255:
        _write(path, _png(labels.astype(np.uint8), palette))
    else:
        _write(path, _png(labels.astype(np.uint16)))


def remove_stale_temporaries(out: Path) -> int:
    """Remove every temporary file a killed run left under ``out``; call it holding the lock."""
    n = 0
    for dirpath, _, filenames in os.walk(out):
        for name in filenames:
            if name.startswith(TMP_PREFIX) and name.endswith(TMP_SUFFIX):
                try:
                    os.unlink(os.path.join(dirpath, name))
                    n += 1
                except OSError:
                    pass
    return n
