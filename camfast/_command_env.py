"""Process settings for the ``camfast`` command, applied before torch is imported.

When this process is the ``camfast`` command (its console script, or ``python -m camfast.cli``,
also under ``torchrun``), ``OMP_WAIT_POLICY`` defaults to ``PASSIVE``: an OpenMP thread of the
model that waits at a barrier then sleeps instead of spinning. GNU OpenMP reads the variable
once, when torch loads it, so it is set here, from ``camfast/__init__.py``, before the first
``import torch``. A value the user set is kept, and a library user's process (``import
camfast`` from their own program) is never changed.

Why: ``camfast pseudo-label`` decodes images and writes PNGs on background threads beside the
model's. With spinning waits, the model's threads hold every core while they wait for each
other, and a background thread that preempts one of them stalls the whole parallel region.
Measured with ``benchmarks/pseudo_label.py --classes 2`` on the 2-core CI machine: the command
reaches 0.88x the throughput of the same CAM calls on decoded tensors with spinning waits, and
1.0x with passive ones; the CAM calls themselves ran at the same speed under either policy
(2904 and 2905 ms per batch of 16).
"""

from __future__ import annotations

import os
import sys

__all__ = ["is_camfast_command", "apply"]

_MODULES = ("camfast.cli", "camfast.cli.__main__")


def is_camfast_command(orig_argv: list[str] | None = None, argv0: str | None = None) -> bool:
    """True when the process runs the ``camfast`` console script or ``python -m camfast.cli``."""
    orig = list(sys.orig_argv if orig_argv is None else orig_argv)
    first = sys.argv[0] if argv0 is None and sys.argv else (argv0 or "")
    if os.path.basename(first) in ("camfast", "camfast.exe", "camfast-script.py"):
        return True
    i = 1
    while i < len(orig) - 1:
        arg = orig[i]
        if arg == "-m":
            return orig[i + 1] in _MODULES
        if arg == "-c" or not arg.startswith("-"):  # code or a script: the interpreter's options end
            return False
        i += 2 if arg in ("-X", "-W") else 1  # the options that take a separate argument
    return False


def apply() -> None:
    """Set the command's defaults if this process is the command and torch is not loaded yet."""
    if "torch" in sys.modules or not is_camfast_command():
        return
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
