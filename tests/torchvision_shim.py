"""``import torchvision`` next to a torch build its compiled ops were not built for.

torchvision registers its C++ operators at import; a torchvision wheel built against
another torch than the one installed (here: the CUDA wheel next to the CPU torch) fails
with ``RuntimeError: operator torchvision::nms does not exist``. The tests and the
benchmarks need none of those operators, so in that case (and only then) ``nms``/``qnms``
are declared as schemas without kernels before importing torchvision again. The library
object is kept alive at module level: dropping it would remove the declarations.

Shared by tests/peers.py and benchmarks/methods.py; pytest-free on purpose.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

import torch

_shim: torch.library.Library | None = None


def import_torchvision() -> ModuleType:
    """The ``torchvision`` module (``ImportError`` when it is not installed)."""
    global _shim
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as err:
        if "torchvision::nms" not in str(err) or _shim is not None:
            raise
    # The failed import left partly initialised modules behind; drop them and retry.
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _shim = lib
    return importlib.import_module("torchvision")
