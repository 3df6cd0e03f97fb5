"""Import the peer libraries the compatibility tests compare against, or skip.

torchvision (which pytorch-grad-cam and torchcam import) registers its C++ operators at
import; a torchvision wheel built against another torch than the one installed fails with
``RuntimeError: operator torchvision::nms does not exist``. The tests need none of those
operators, so in that case (and only then) ``nms``/``qnms`` are declared here as schemas
without kernels before importing torchvision again. The library object is kept alive at
module level: dropping it would remove the declarations.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import pytest
import torch

_torchvision_shim: torch.library.Library | None = None


def _import_torchvision():
    global _torchvision_shim
    try:
        return importlib.import_module("torchvision")
    except ImportError:
        pytest.skip("torchvision is not installed")
    except RuntimeError as err:
        if "torchvision::nms" not in str(err) or _torchvision_shim is not None:
            raise
    # The failed import left partly initialised modules behind; drop them and retry.
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _torchvision_shim = lib
    return importlib.import_module("torchvision")


def torchvision():
    """The ``torchvision`` module, or skip the test."""
    return _import_torchvision()


def pytorch_grad_cam():
    """The ``pytorch_grad_cam`` package (grad-cam on PyPI), or skip the test."""
    try:
        importlib.import_module("cv2")
    except ImportError:
        pytest.skip("opencv (needed by pytorch-grad-cam) is not installed")
    if importlib.util.find_spec("pytorch_grad_cam") is None:
        pytest.skip("pytorch-grad-cam (grad-cam) is not installed")
    _import_torchvision()
    try:
        return importlib.import_module("pytorch_grad_cam")
    except ImportError as err:  # one of its own dependencies (ttach, ...) is missing
        pytest.skip(f"pytorch-grad-cam cannot be imported: {err}")


def torchcam_methods():
    """``torchcam.methods``, or skip the test."""
    if importlib.util.find_spec("torchcam") is None:
        pytest.skip("torchcam is not installed")
    _import_torchvision()
    return importlib.import_module("torchcam.methods")
