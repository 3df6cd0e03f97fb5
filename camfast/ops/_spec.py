"""The codes and constants every backend of an op shares, by name: views of the one code
table (``camfast.ops.codes``, read from ``codes.json``), so nothing here is a number."""

from __future__ import annotations

from camfast.ops.codes import CONSTANTS, ENUMS

#: Where a kernel runs (``camfast.ops.native._launch.device_args``).
DEVICES = ENUMS["Device"]
#: Element types, by ``torch.dtype`` name (``float32``, ...).
DTYPES = ENUMS["DType"]
#: ``camfast::grad_weighted_map`` modes.
GWM_MODES = ENUMS["GwmMode"]
#: Epsilons of the ``gradcampp`` and ``xgradcam`` channel weights (pytorch-grad-cam 1.5.7's); fixed.
GWM_GRADCAMPP_EPS: float = CONSTANTS["GWM_GRADCAMPP_EPS"]
GWM_XGRADCAM_EPS: float = CONSTANTS["GWM_XGRADCAM_EPS"]
#: Accumulator elements per ``(b, c)`` of the native kernels' workspace.
GWM_WORKSPACE: int = CONSTANTS["GWM_WORKSPACE"]
#: ``camfast::upsample_aggregate`` reductions and normalisations.
UA_REDUCES = ENUMS["UaReduce"]
UA_NORMALIZES = ENUMS["UaNormalize"]
#: Epsilon of the min-max normalisation ``(M - min) / (max - min + UA_EPS)``; fixed.
UA_EPS: float = CONSTANTS["UA_EPS"]
#: Most layers one call takes: the CUDA kernels receive the layer table as a kernel
#: argument (4 KiB limit), and Triton specialises on the number of layers.
UA_MAX_LAYERS: int = CONSTANTS["UA_MAX_LAYERS"]
#: ``camfast::guided_filter`` borders.
GF_BORDERS = ENUMS["BoxBorder"]
