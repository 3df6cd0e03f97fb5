"""What a recorded result was measured on: machine, load, versions, native build, git commit.

Shared by the benchmarks (``benchmarks/harness.py`` re-exports these) and by the result
files the package itself writes (``camfast eval``'s WSOL table), so every results file is
stamped the same way.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

import camfast
from camfast import _ext

__all__ = ["OtherLoad", "cpu_model", "dist_version", "native_build", "stamp"]

# The source checkout camfast runs from (an editable install), or None for an installed copy:
# git commits and csrc/ hashes only mean something there.
_ROOT = Path(__file__).resolve().parents[2]  # camfast/evaluation/provenance.py -> the checkout
SOURCE_TREE: Path | None = _ROOT if (_ROOT / "csrc").is_dir() and (_ROOT / "pyproject.toml").is_file() else None


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


class OtherLoad:
    """How many cores *other* processes kept busy, on average, between construction and
    :meth:`cores` (all CPUs' busy time from /proc/stat minus this process's CPU time; Linux
    only, None elsewhere). Anything well above 0 means the CPU timings of the run are noisy:
    one descheduled OpenMP thread stalls a whole parallel region."""

    def __init__(self) -> None:
        self._start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        """``(busy, total, own)`` CPU seconds since boot / of this process."""
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
            tick = os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError, AttributeError):
            return None
        idle = fields[3] + fields[4]  # idle + iowait
        own = os.times()
        # children: the compilers torch.compile runs count as this run's own work
        own_seconds = own.user + own.system + own.children_user + own.children_system
        return (sum(fields) - idle) / tick, sum(fields) / tick, own_seconds

    def cores(self) -> float | None:
        end = self._sample()
        if self._start is None or end is None:
            return None
        busy, total, own = (e - s for e, s in zip(end, self._start))
        cores = os.cpu_count() or 1
        return max(0.0, cores * (busy - own) / total) if total > 0 else None


def _git(*args: str) -> str | None:
    if SOURCE_TREE is None:
        return None
    try:
        done = subprocess.run(["git", "-C", str(SOURCE_TREE), *args], capture_output=True, text=True, timeout=10,
                              check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def dist_version(dist: str) -> str | None:
    """The installed version of distribution ``dist``, or None."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def native_build() -> dict[str, Any]:
    """The loaded ``camfast._C``: its source hash and whether it matches ``csrc/`` as it is now."""
    if _ext.native is None:
        return {"loaded": False, "error": _ext.native_error}
    built = _ext.native.source_hash()
    current = _ext.source_hash(SOURCE_TREE / "csrc") if SOURCE_TREE is not None else None
    return {
        "loaded": True,
        "source_hash": built,
        "matches_csrc": None if current is None else built == current,
        "openmp": bool(_ext.native.openmp()),
        "cuda": bool(_ext.native.has_cuda()),
    }


def stamp(device: torch.device) -> dict[str, Any]:
    """Machine, versions, native build, git commit and date, recorded with every run."""
    machine = {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(device)
        machine["cuda"] = torch.version.cuda
    status = _git("status", "--porcelain", "--", ".", ":(exclude)benchmarks/results")
    import numpy as np

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "triton": dist_version("triton"),
            "camfast": camfast.__version__,
        },
        "native": native_build(),
        "git": {"commit": _git("rev-parse", "--short", "HEAD"), "dirty": None if status is None else bool(status)},
    }
