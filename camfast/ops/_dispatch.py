"""Maps (op, backend) to the module implementing it; Triton modules load on first use.

Under ``torch.use_deterministic_algorithms(True)`` a backend whose backward is not
deterministic on the device (:data:`NONDETERMINISTIC_BACKWARD`) comes wrapped: its
``backward`` raises a ``RuntimeError`` that says what to use instead, or, with
``warn_only=True``, warns and runs, as PyTorch's own nondeterministic ops do. Forward
passes are never refused: inference needs no backward.
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType
from typing import Any

import torch

from camfast.ops import _backend

#: ``(op, backend, device type) -> why its backward is nondeterministic there``.
NONDETERMINISTIC_BACKWARD = {
    ("upsample_aggregate", "native", "cuda"): "its CUDA backward scatters dL/dN with atomicAdd",
    ("upsample_aggregate", "reference", "cuda"): "it uses upsample_bilinear2d_backward, which scatters with "
                                                  "atomicAdd on CUDA",
}


class _DeterministicBackward:
    """``module`` whose ``backward`` honours ``torch.use_deterministic_algorithms``."""

    def __init__(self, module: ModuleType, op: str, backend: str, why: str) -> None:
        self._module, self._op, self._backend, self._why = module, op, backend, why

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def backward(self, *args: Any, **kwargs: Any) -> Any:
        message = (f"camfast: {self._op}'s backward on backend {self._backend!r} is not deterministic on CUDA "
                   f"({self._why}), but torch.use_deterministic_algorithms(True) is set. Its Triton backend has a "
                   f"deterministic backward: install triton>=3.2 and leave the backend on 'auto' (or use "
                   f"camfast.ops.use_backend('triton')); or call torch.use_deterministic_algorithms(True, "
                   f"warn_only=True) to run it anyway with a warning.")
        if not torch.is_deterministic_algorithms_warn_only_enabled():
            raise RuntimeError(message)
        warnings.warn(message, UserWarning, stacklevel=2)
        return self._module.backward(*args, **kwargs)


def implementation(op: str, device: torch.device) -> ModuleType:
    """The module ``camfast.ops.<backend>.<op>`` chosen for ``op`` on ``device`` by ``_backend.resolve``."""
    backend = _backend.resolve(device, op)
    module = importlib.import_module(f"camfast.ops.{backend}.{op}")
    why = NONDETERMINISTIC_BACKWARD.get((op, backend, device.type))
    if why is not None and torch.are_deterministic_algorithms_enabled():
        return _DeterministicBackward(module, op, backend, why)  # type: ignore[return-value]
    return module
