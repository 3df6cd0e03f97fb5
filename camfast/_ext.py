"""Loading of the compiled module ``camfast._C``.

The compiled kernels are optional at import time: when ``camfast._C`` cannot be loaded
(an install without a compiler, a broken build), camfast warns once and every op runs on
its pure-PyTorch reference path. Tests and CI set ``CAMFAST_REQUIRE_NATIVE=1`` so a
missing or stale build fails loudly instead of passing on the reference path.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from types import ModuleType

__all__ = ["NativeExtensionWarning", "native", "native_error", "native_available", "source_hash"]


class NativeExtensionWarning(UserWarning):
    """Issued once when ``camfast._C`` is missing and the reference path is used."""


native: ModuleType | None
native_error: str | None

try:
    from camfast import _C as native  # type: ignore[attr-defined]

    native_error = None
except ImportError as exc:  # pragma: no cover - exercised by the fallback test in a subprocess
    native = None
    native_error = f"{type(exc).__name__}: {exc}"
    if os.environ.get("CAMFAST_REQUIRE_NATIVE") == "1":
        raise ImportError(
            f"CAMFAST_REQUIRE_NATIVE=1 but camfast._C could not be loaded ({native_error})"
        ) from exc
    warnings.warn(
        "camfast: the compiled extension camfast._C could not be loaded "
        f"({native_error}); falling back to the pure-PyTorch reference kernels. "
        "Reinstall camfast with a C++ compiler available to get the native kernels.",
        NativeExtensionWarning,
        stacklevel=2,
    )


def native_available(cuda: bool = False) -> bool:
    """Whether the compiled kernels are loaded (and, with ``cuda=True``, built with CUDA)."""
    if native is None:
        return False
    return bool(native.has_cuda()) if cuda else True


def source_hash(csrc: str | os.PathLike[str]) -> str:
    """Fingerprint of a ``csrc/`` tree, computed exactly as CMakeLists.txt does."""
    root = Path(csrc)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    lines = []
    for f in files:
        rel = f.relative_to(root.parent).as_posix()
        lines.append(f"{rel}:{hashlib.sha256(f.read_bytes()).hexdigest()}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()
