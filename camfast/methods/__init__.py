"""CAM methods (camfast's core, above :mod:`camfast.ops`): one file per method, one registry.

Each method file defines its public function (and, for a gradient method, its per-layer
weighting rule in plain PyTorch, with the fused ``camfast::grad_weighted_map`` mode that
computes it when there is one) and registers it in :mod:`camfast.methods.registry`; the
CLI, the WSOL table, the benchmarks and :mod:`camfast.compat` read the registry.
:mod:`camfast.methods.engine` is the shared machinery (hooks, streaming gradients,
targets, fusion); :mod:`camfast.methods.layers` chooses layers.

To add a method: a new file here and one import line below (docs/contributing.md).
"""

from camfast.methods.engine import CAMResult
from camfast.methods.layers import find_layers
from camfast.methods.registry import MethodSpec, get, names, specs

# Every method file, in the order front ends list them. Importing registers the method.
from camfast.methods.zoomcam import zoom_cam  # isort: skip
from camfast.methods.gradcam import grad_cam, hires_cam  # isort: skip
from camfast.methods.layercam import layer_cam  # isort: skip
from camfast.methods.classcam import cam  # isort: skip
from camfast.methods.highres import RCAMResult, pca_guide, rcam, variogram_radius  # isort: skip
from camfast.methods.multiscale import multiscale_class_cam  # isort: skip
from camfast.methods.xgradcam import x_grad_cam  # isort: skip
from camfast.methods.gradcampp import grad_cam_plus_plus  # isort: skip
from camfast.methods.eigencam import eigen_cam, eigen_grad_cam  # isort: skip
from camfast.methods.scorecam import score_cam  # isort: skip

__all__ = ["CAMResult", "MethodSpec", "RCAMResult", "find_layers", "get", "names", "pca_guide", "specs",
           "variogram_radius", *(s.function.__name__ for s in specs() if s.base is None)]
