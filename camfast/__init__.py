"""camfast: compiled kernels for class activation maps in PyTorch.

Methods (one call per batch): :func:`zoom_cam`, :func:`grad_cam`, :func:`layer_cam`,
:func:`cam`; layer discovery: :func:`find_layers`; kernels: :mod:`camfast.ops`.
"""

from camfast import _ext, ops
from camfast._ext import NativeExtensionWarning
from camfast.methods import CAMResult, cam, grad_cam, layer_cam, zoom_cam
from camfast.layers import find_layers

__version__ = "0.1.0"

__all__ = [
    "CAMResult", "NativeExtensionWarning", "cam", "find_layers", "grad_cam", "layer_cam", "ops", "zoom_cam",
    "__version__",
]
