"""Benchmark cases, one module per op: ``cases/<op>.py``.

Each module defines:

* ``OP``: the op's name (names the results files);
* ``DEFAULT_SHAPE`` and ``QUICK_SHAPE``: the measured shape and a small smoke-test one;
* ``make_cases() -> list[harness.Case]``;
* ``TARGETS``: a list of ``harness.Target`` (may be empty).
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def available() -> list[str]:
    """The ops that have a case module."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def load(op: str) -> ModuleType:
    """The case module of ``op``; a ``ValueError`` lists the known ops when there is none."""
    if op not in available():
        raise ValueError(f"no benchmark cases for op {op!r}; known: {', '.join(available())}")
    return importlib.import_module(f"{__name__}.{op}")
