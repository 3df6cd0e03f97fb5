"""Maps (op, backend) to the module implementing it; Triton modules load on first use."""

from __future__ import annotations

import importlib
from types import ModuleType

import torch

from camfast.ops import _backend


def implementation(op: str, device: torch.device) -> ModuleType:
    """The module ``camfast.ops.<backend>.<op>`` chosen for ``device`` by ``_backend.resolve``."""
    return importlib.import_module(f"camfast.ops.{_backend.resolve(device)}.{op}")
