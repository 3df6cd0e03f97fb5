"""The one place that decides which backend runs an op.

Backends:
  * ``native``    - C++ (OpenMP) on CPU, CUDA C++ on GPU; needs ``camfast._C``.
  * ``triton``    - Triton kernels on GPU; on CPU only under ``TRITON_INTERPRET=1`` (tests).
  * ``reference`` - pure PyTorch, the readable specification; runs everywhere.

Default: ``native`` when it is built for the device, else ``triton`` on CUDA when Triton is
installed, else ``reference``. ``use_backend(name)`` (a context manager) and the
environment variable ``CAMFAST_BACKEND`` override the default; the context manager wins.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.util
import os
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


@functools.lru_cache(maxsize=None)
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def _triton_interpreter() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


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
            return _ext.native_cuda_problem()  # built with CUDA, and its runtime works here
        return f"no native kernels for device type {device.type!r}"
    if name == "triton":
        if not _triton_installed():
            return "triton is not installed (pip install triton)"
        if device.type == "cuda":
            return None
        if device.type == "cpu":
            return None if _triton_interpreter() else "Triton runs on CPU tensors only under TRITON_INTERPRET=1"
        return f"no Triton kernels for device type {device.type!r}"
    raise ValueError(f"unknown backend {name!r}")


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


def resolve(device: torch.device) -> str:
    """The backend that runs an op on ``device`` now."""
    name = requested_backend()
    if name == "auto":
        if unavailable_reason("native", device) is None:
            return "native"
        if device.type == "cuda" and unavailable_reason("triton", device) is None:
            return "triton"
        return "reference"
    reason = unavailable_reason(name, device)
    if reason is not None:
        raise RuntimeError(f"camfast backend {name!r} cannot run on {device.type}: {reason}")
    return name
