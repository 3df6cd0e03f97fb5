"""Import the peer libraries the compatibility tests compare against, or skip.

torchvision (which pytorch-grad-cam and torchcam import) is imported through
``torchvision_shim``, which works around a torchvision wheel built for another torch.
"""

from __future__ import annotations

import importlib
import importlib.util

import pytest
from torchvision_shim import import_torchvision


def _import_torchvision():
    try:
        return import_torchvision()
    except ImportError:
        pytest.skip("torchvision is not installed")


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
