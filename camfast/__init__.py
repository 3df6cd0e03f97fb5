"""camfast: compiled kernels for class activation maps in PyTorch.

Methods (one call per batch): :func:`zoom_cam`, :func:`grad_cam`, :func:`layer_cam`,
:func:`cam`, :func:`rcam`, :func:`multiscale_cam`; layer discovery: :func:`find_layers`;
localisation: :func:`normalize`, :func:`boxes_from_cam`; training-time pieces:
:mod:`camfast.nn` (TAP), :mod:`camfast.puzzle`; data: :mod:`camfast.datasets`; kernels: :mod:`camfast.ops`.
"""

from camfast import _ext, datasets, metrics, models, nn, ops, pseudolabel, puzzle
from camfast import wsol  # the WSOL benchmark table (camfast eval)
from camfast._ext import NativeExtensionWarning
from camfast.layers import find_layers
from camfast.localization import boxes_from_cam, normalize
from camfast.methods import CAMResult, cam, grad_cam, layer_cam, zoom_cam
from camfast.puzzle import multiscale_cam
from camfast.rcam import RCAMResult, pca_guide, rcam, variogram_radius

__version__ = "0.1.0"

__all__ = [
    "CAMResult", "NativeExtensionWarning", "RCAMResult", "boxes_from_cam", "cam", "datasets", "find_layers", "grad_cam",
    "layer_cam", "metrics", "models", "multiscale_cam", "nn", "normalize", "ops", "pca_guide", "pseudolabel", "puzzle", "rcam", "variogram_radius",
    "wsol", "zoom_cam", "__version__",
]
