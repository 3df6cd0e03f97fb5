"""The one place that decides which backend runs an op.

Backends:
  * ``native``    - C++ (OpenMP) on CPU, CUDA C++ on GPU; needs ``camfast._C``.
  * ``triton``    - Triton kernels on GPU; on CPU only under ``TRITON_INTERPRET=1`` (tests).
  * ``reference`` - pure PyTorch, the readable specification; runs everywhere.

Default (``"auto"``), per op and device, the first of these that can run:

* CPU: ``native``, ``reference`` (Triton on CPU is the interpreter: tests only).
* CUDA: ``native``, ``triton``, ``reference``; except ``guided_filter``: ``triton``,
  ``reference`` (its native backend has no CUDA kernel: on CUDA it would run the
  reference's formulas), and ``upsample_aggregate`` under
  ``torch.use_deterministic_algorithms(True)``: ``triton`` first (its backward then gathers
  in a fixed order; the native CUDA backward scatters with atomics).

Native runs on a CUDA device only when ``camfast._C`` holds code for it: the
``CMAKE_CUDA_ARCHITECTURES`` of the build (``camfast._C.cuda_archs()``) against the
device's compute capability (:func:`cuda_archs_run_on`). Triton needs version
:data:`MIN_TRITON` (the upsample_aggregate kernels take tuples of tensors as arguments).
When auto skips a backend that is installed but cannot run there (an older Triton, a GPU the
build has no code for), it warns once (:class:`BackendFallbackWarning`).
``use_backend(name)`` (a context manager) and the environment variable ``CAMFAST_BACKEND``
override the default; the context manager wins. A requested backend that cannot run is an
error, never a silent fallback.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.metadata
import importlib.util
import os
import re
import warnings
from collections.abc import Iterator

import torch

from camfast import _ext

BACKENDS = ("native", "triton", "reference")
_CHOICES = BACKENDS + ("auto",)

_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("camfast_backend", default=None)


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or name.lower() not in _CHOICES:
        raise ValueError(f"{what} must be one of {', '.join(_CHOICES)}; got {name!r}")
    return name.lower()


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run camfast ops inside the block on backend ``name`` (``"auto"`` restores the default).

    Example:
        >>> with camfast.ops.use_backend("reference"):
        ...     m = camfast.ops.grad_weighted_map(a, g, "zoom")
    """
    token = _override.set(_check_name(name, "backend"))
    try:
        yield
    finally:
        _override.reset(token)


#: The oldest Triton the kernels work with: compiled kernels take tuple arguments from 3.2 on
#: (the upsample_aggregate kernels receive the maps as a tuple); the interpreter hides it.
MIN_TRITON = (3, 2)

#: Ops whose native backend has CUDA kernels. The native guided filter has none: on CUDA it
#: runs the reference's formulas, so the default takes Triton's fused kernels there.
NATIVE_CUDA_OPS = frozenset({"box_filter", "grad_weighted_map", "neighbour_stencil", "thresholded_avg_pool2d",
                             "upsample_aggregate"})


class BackendFallbackWarning(UserWarning):
    """Issued once per reason when the default skips a backend that is installed but cannot
    run on the device (an older Triton; a GPU ``camfast._C`` was not built for)."""


@functools.lru_cache(maxsize=None)
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def _version_tuple(text: str) -> tuple[int, ...]:
    """``"3.2.0+git1a2b"`` -> ``(3, 2, 0)``: the leading numeric release, what is comparable."""
    m = re.match(r"\d+(?:\.\d+)*", text.strip())
    return tuple(int(p) for p in m.group(0).split(".")) if m else ()


@functools.lru_cache(maxsize=None)
def _triton_version() -> str | None:
    """The installed Triton's version (its distribution's, without importing it; torch's
    nightly builds ship it as ``pytorch-triton``), or None when it cannot be told."""
    for dist in ("triton", "pytorch-triton", "pytorch-triton-rocm"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        import triton
    except ImportError:
        return None
    return getattr(triton, "__version__", None)


def _triton_interpreter() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _triton_reason(device: torch.device) -> str | None:
    if not _triton_installed():
        return "triton is not installed (pip install 'triton>=3.2')"
    version = _triton_version()
    if version is not None and _version_tuple(version) < MIN_TRITON:
        return (f"triton {version} is older than {'.'.join(map(str, MIN_TRITON))}, which camfast's Triton kernels "
                "need (tuple kernel arguments); pip install 'triton>=3.2'")
    if device.type == "cuda":
        return None
    if device.type == "cpu":
        return None if _triton_interpreter() else "Triton runs on CPU tensors only under TRITON_INTERPRET=1"
    return f"no Triton kernels for device type {device.type!r}"


_ARCH = re.compile(r"^(\d+)([af]?)(?:-(real|virtual))?$")


def parse_cuda_archs(text: str) -> list[tuple[int, int, str, bool, bool]] | None:
    """``CMAKE_CUDA_ARCHITECTURES`` entries (``"80,90"``, ``"86-real;90a-virtual"``) as
    ``(major, minor, suffix, has_sass, has_ptx)``; a plain entry gives both (CMake's meaning).
    None when some entry cannot be read (then nothing is assumed about the build)."""
    out = []
    for entry in re.split(r"[;,\s]+", text.strip()):
        if not entry:
            continue
        m = _ARCH.match(entry)
        if m is None:
            return None
        number, suffix, kind = int(m.group(1)), m.group(2), m.group(3)
        out.append((number // 10, number % 10, suffix, kind != "virtual", kind != "real"))
    return out or None


@functools.lru_cache(maxsize=None)
def cuda_archs_run_on(archs: str, capability: tuple[int, int]) -> bool:
    """Whether a binary built for ``archs`` (``CMAKE_CUDA_ARCHITECTURES``) runs on a GPU of
    compute ``capability``: machine code (SASS) for ``X.Y`` runs on ``X.Y'`` with ``Y' >= Y``
    (same major); PTX for ``X.Y`` is compiled by the driver for any ``>= X.Y``; an ``a``
    (architecture-specific) entry runs on exactly ``X.Y``, an ``f`` (family) one on ``X.Y'``,
    ``Y' >= Y``. An unreadable list is taken to run (nothing known against it)."""
    parsed = parse_cuda_archs(archs)
    if parsed is None:
        return True
    major, minor = capability
    for a_major, a_minor, suffix, sass, ptx in parsed:
        if suffix == "a":
            ok = (major, minor) == (a_major, a_minor)
        elif suffix == "f" or (sass and not ptx):
            ok = major == a_major and minor >= a_minor
        else:  # PTX (with or without SASS): JIT-compiled for any newer GPU
            ok = (major, minor) >= (a_major, a_minor)
        if ok:
            return True
    return False


def _native_cuda_reason(device: torch.device) -> str | None:
    problem = _ext.native_cuda_problem()  # built with CUDA, and its runtime works here
    if problem is not None:
        return problem
    archs = getattr(_ext.native, "cuda_archs", None)
    archs = archs() if callable(archs) else None
    if not archs:  # a build that does not say: nothing to check it against
        return None
    capability = tuple(torch.cuda.get_device_capability(device))
    if cuda_archs_run_on(archs, capability):
        return None
    return (f"camfast._C's CUDA kernels are built for CMAKE_CUDA_ARCHITECTURES={archs.replace(',', ';')}, which "
            f"cannot run on {torch.cuda.get_device_name(device)} (compute capability {capability[0]}.{capability[1]}); "
            f"rebuild with CMAKE_CUDA_ARCHITECTURES including {capability[0]}{capability[1]}")


def unavailable_reason(name: str, device: torch.device) -> str | None:
    """Why backend ``name`` cannot run on ``device``, or None when it can."""
    if name == "reference":
        return None
    if name == "native":
        if _ext.native is None:
            return f"camfast._C is not loaded ({_ext.native_error})"
        if device.type == "cpu":
            return None
        if device.type == "cuda":
            return _native_cuda_reason(device)
        return f"no native kernels for device type {device.type!r}"
    if name == "triton":
        return _triton_reason(device)
    raise ValueError(f"unknown backend {name!r}")


def preference(op: str | None, device: torch.device) -> tuple[str, ...]:
    """The backends the default tries for ``op`` (any op when None) on ``device``, best first
    (module docstring)."""
    if device.type != "cuda":
        return ("native", "reference")
    if op is not None and op not in NATIVE_CUDA_OPS:
        return ("triton", "reference")
    if op == "upsample_aggregate" and torch.are_deterministic_algorithms_enabled():
        return ("triton", "native", "reference")
    return ("native", "triton", "reference")


_warned: set[str] = set()


def _warn_fallback(name: str, reason: str, chosen: str) -> None:
    """Warn once per reason that an installed backend was skipped (not for one never installed)."""
    installed = _triton_installed() if name == "triton" else _ext.native is not None and _ext.native.has_cuda()
    if not installed or reason in _warned:
        return
    _warned.add(reason)
    warnings.warn(f"camfast: backend {name!r} cannot run here ({reason}); using {chosen!r}",
                  BackendFallbackWarning, stacklevel=4)


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """The backends that can run on ``device``, in order of preference."""
    device = torch.device(device)
    return [b for b in BACKENDS if unavailable_reason(b, device) is None]


def requested_backend() -> str:
    """The backend asked for by ``use_backend`` or ``CAMFAST_BACKEND`` (``"auto"`` if none)."""
    name = _override.get()
    if name is None:
        name = _check_name(os.environ.get("CAMFAST_BACKEND", "auto") or "auto", "CAMFAST_BACKEND")
    return name


def resolve(device: torch.device, op: str | None = None) -> str:
    """The backend that runs ``op`` on ``device`` now (``op`` None: the default for any op)."""
    name = requested_backend()
    if name == "auto":
        skipped = []
        for candidate in preference(op, device):
            reason = unavailable_reason(candidate, device)
            if reason is None:
                for other, why in skipped:
                    _warn_fallback(other, why, candidate)
                return candidate
            skipped.append((candidate, reason))
        raise AssertionError("the reference backend always runs")  # pragma: no cover
    reason = unavailable_reason(name, device)
    if reason is not None:
        raise RuntimeError(f"camfast backend {name!r} cannot run on {device.type}: {reason}")
    return name
