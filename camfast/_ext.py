"""Loading of the compiled module ``camfast._C``.

The compiled kernels are optional at import time: when ``camfast._C`` cannot be loaded
(an install without a compiler, a broken build) or was built with other kernel codes than
``camfast/ops/codes.json`` (a stale build), camfast warns once and every op runs on its
pure-PyTorch reference path. Tests and CI set ``CAMFAST_REQUIRE_NATIVE=1`` so a missing or
stale build fails loudly instead of passing on the reference path.
"""

from __future__ import annotations

import functools
import hashlib
import os
import warnings
from pathlib import Path
from types import ModuleType

from camfast.ops import codes

__all__ = ["NativeExtensionWarning", "native", "native_cuda_problem", "native_error", "native_available",
           "source_hash"]

#: The code table, relative to the checkout root: compiled into ``camfast._C`` besides
#: ``csrc/`` (CMakeLists.txt's CAMFAST_CODES_JSON), so part of its source fingerprint.
CODES_TABLE = "camfast/ops/codes.json"


class NativeExtensionWarning(UserWarning):
    """Issued once when ``camfast._C`` is missing or stale and the reference path is used,
    and once when its CUDA kernels cannot run next to a working torch CUDA."""


def _load() -> tuple[ModuleType | None, str | None]:
    try:
        from camfast import _C  # type: ignore[attr-defined]
    except ImportError as exc:  # pragma: no cover - exercised by the fallback test in a subprocess
        return None, f"{type(exc).__name__}: {exc}"
    exported = getattr(_C, "codes", None)
    diff = "it exports no code table" if exported is None else codes.mismatch(exported())
    if diff is not None:
        return None, (f"camfast._C ({_C.__file__}) was built with other kernel codes than {codes.TABLE_PATH} "
                      f"({diff}); rebuild it: pip install --no-build-isolation -e .")
    return _C, None


native: ModuleType | None
native_error: str | None
native, native_error = _load()
if native is None:
    if os.environ.get("CAMFAST_REQUIRE_NATIVE") == "1":
        raise ImportError(f"CAMFAST_REQUIRE_NATIVE=1 but camfast._C could not be loaded ({native_error})")
    warnings.warn(
        f"camfast: the compiled extension camfast._C is not used ({native_error}); falling back to the "
        "pure-PyTorch reference kernels. Reinstall camfast with a C++ compiler available to get the "
        "native kernels.",
        NativeExtensionWarning,
        stacklevel=2,
    )


def native_available(cuda: bool = False) -> bool:
    """Whether the compiled kernels are loaded (and, with ``cuda=True``, their CUDA kernels
    can run here)."""
    if native is None:
        return False
    return native_cuda_problem() is None if cuda else True


@functools.lru_cache(maxsize=None)
def native_cuda_problem() -> str | None:
    """Why ``camfast._C``'s CUDA kernels cannot run in this process, or None when they can.

    ``camfast._C`` probes its CUDA runtime once (it must answer and see a device). A build
    with CUDA kernels whose runtime does not work here, e.g. a newer CUDA runtime than the
    driver serves while torch's own CUDA works, warns once (``NativeExtensionWarning``); the
    ops then fall back to Triton or the reference on CUDA tensors.
    """
    if native is None:
        return f"camfast._C is not loaded ({native_error})"
    problem = native.cuda_status()
    if problem is None:
        return None
    if native.built_with_cuda():
        import torch  # loaded by now: only the ops ask, for CUDA tensors

        if torch.cuda.is_available():  # torch's CUDA works and ours does not: say so once
            warnings.warn(f"camfast: camfast._C has CUDA kernels but cannot run them here: {problem}; "
                          "CUDA tensors use the Triton or reference kernels", NativeExtensionWarning, stacklevel=2)
        return f"camfast._C has no usable CUDA: {problem}"
    return f"camfast._C was built without CUDA kernels ({problem})"


def source_hash(csrc: str | os.PathLike[str]) -> str:
    """Fingerprint of what ``camfast._C`` is compiled from, computed exactly as CMakeLists.txt
    does: every file under ``csrc`` and the code table ``CODES_TABLE`` of the same checkout
    (``csrc``'s parent directory)."""
    root = Path(csrc).parent
    files = [p for p in Path(csrc).rglob("*") if p.is_file()] + [root / CODES_TABLE]
    rels = sorted((f.relative_to(root).as_posix(), f) for f in files)
    lines = [f"{rel}:{hashlib.sha256(f.read_bytes()).hexdigest()}\n" for rel, f in rels]
    return hashlib.sha256("".join(lines).encode()).hexdigest()
