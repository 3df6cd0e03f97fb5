"""Reading ``.npy`` files that hold a pickled object (IRN's ``{"keys", "cam", "high_res"}``
CAM dicts, VOC's ``cls_labels.npy``) without running code from the file.

``np.save(path, a_dict)`` pickles the dict inside a 0-d object array, and ``np.load`` reads it
back only with ``allow_pickle=True``, which unpickles ANY object: a crafted file runs
whatever it names (``os.system``, ...). :func:`load_npy` reads the ``.npy`` header itself
and unpickles with :class:`RestrictedUnpickler`, whose ``find_class`` admits only numpy's
array reconstruction (``_reconstruct``, ``ndarray``, ``dtype``, ``scalar``), the builtins
``dict`` and ``int``, and torch tensors (``torch._utils._rebuild_tensor_v2`` on a storage
read by ``torch.load(weights_only=True)``, ``collections.OrderedDict`` for their hooks: IRN
saves ``keys`` and ``cam`` as tensors); any other global (a function, a class) is refused with
:class:`UnsafeFile` naming the file and the global. Plain numeric ``.npy`` files are read
with ``np.load(allow_pickle=False)``.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ALLOWED_GLOBALS", "RestrictedUnpickler", "UnsafeFile", "load_npy", "load_npy_dict"]

#: the only globals a pickle in a .npy may name (numpy 1.x and 2.x spellings)
ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("builtins", "dict"), ("builtins", "int"),
    # torch tensors (IRN's make_cam.py saves "keys" and "cam" as tensors): rebuilt from their
    # storage, which is read by torch.load(weights_only=True) (_safe_storage), never by pickle
    ("torch._utils", "_rebuild_tensor_v2"), ("collections", "OrderedDict"), ("torch.storage", "_load_from_bytes"),
})


def _safe_storage(data: bytes) -> Any:
    """``torch.storage._load_from_bytes`` with ``weights_only=True`` on the CPU: a tensor's
    storage as torch's own restricted loader reads it."""
    import io

    import torch

    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


class UnsafeFile(ValueError):
    """A ``.npy`` file whose pickle names a global outside :data:`ALLOWED_GLOBALS`."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS` (arrays, dtypes, numpy
    scalars, dict, int); anything else raises :class:`UnsafeFile` before it is imported."""

    def __init__(self, file: Any, *, name: str = "<pickle>") -> None:
        super().__init__(file)
        self.name = name

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return _safe_storage
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafeFile(f"{self.name}: refused to load: its pickle names {module}.{name}, which could run code "
                         "(only numpy arrays, dicts and ints are read from a .npy)")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeFile(f"{self.name}: refused to load: its pickle has persistent ids")


def load_npy(path: str | os.PathLike) -> Any:
    """The content of a ``.npy``: an array, or the object a 0-d object array holds (a dict).

    Raises:
        UnsafeFile: the pickle names anything but numpy arrays, dict and int.
        ValueError: not a ``.npy`` file, or a truncated / malformed one (the message names it).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:  # 3.0 (utf-8 field names) is not written for arrays and dicts like these
                raise ValueError(f"format version {version[0]}.{version[1]} is not read here (1.0 and 2.0 are)")
            if not dtype.hasobject:
                f.seek(0)
                return np.load(f, allow_pickle=False)
            try:
                obj = RestrictedUnpickler(f, name=str(path)).load()
            except UnsafeFile:
                raise
            except Exception as e:  # truncated, not a pickle, a wrong-typed reduce...
                raise ValueError(f"{path}: cannot read its pickled content: {type(e).__name__}: {e}") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnsafeFile:
        raise
    except ValueError as e:
        if str(path) in str(e):
            raise
        raise ValueError(f"{path}: not a .npy file ({e})") from None
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.shape == () == tuple(shape):
        return obj[()]
    return obj


def load_npy_dict(path: str | os.PathLike) -> dict:
    """:func:`load_npy` for a file that must hold a dict (``np.save(path, a_dict)``)."""
    obj = load_npy(path)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict saved with np.save, got {type(obj).__name__}")
    return obj
