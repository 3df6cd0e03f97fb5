"""What every Triton launcher shares: the device it launches on, its grid, device scalars.

* :func:`on_input_device` wraps every public launcher (``forward``/``backward`` of each op and
  the guided filter's pieces): the body runs under ``torch.cuda.device(x.device)`` for the
  first tensor argument ``x``, because a Triton launch uses the *current* CUDA device and
  its current stream, not the device of the tensors it is given (a tensor on ``cuda:1``
  while ``cuda:0`` is current fails with "Pointer argument cannot be accessed from Triton"
  or faults). The native backend has its own device guard in C++.
* :func:`batch_blocks_grid` folds the batch into grid axis 0 (``2^31 - 1`` programs), never
  axis 1 or 2 (65535), and :func:`batch_blocks` (a ``@triton.jit`` helper) recovers the
  sample and the pixel block from the program id, in int64.
* :func:`device_scalar`: a one-element tensor made on the device by a fill kernel, never a
  host-to-device copy (which stalls the host and is illegal during CUDA-graph capture).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import triton
import triton.language as tl
from torch import Tensor

#: CUDA's grid limits: axis 0 takes up to 2^31 - 1 programs, axes 1 and 2 up to 65535.
MAX_GRID_X = 2**31 - 1
MAX_GRID_YZ = 65535

F = TypeVar("F", bound=Callable[..., Any])


def device_guard(device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.cuda.device(device)`` for a CUDA device; nothing to do for the CPU interpreter."""
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def _first_tensor(args: Sequence[Any]) -> Tensor | None:
    for a in args:
        if isinstance(a, Tensor):
            return a
        if isinstance(a, (list, tuple)):  # upsample_aggregate's maps
            t = _first_tensor(a)
            if t is not None:
                return t
    return None


def on_input_device(fn: F) -> F:
    """Run the launcher ``fn`` with the device of its first tensor argument current (see
    the module docstring); every public launcher of ``camfast.ops.triton`` is wrapped."""

    @functools.wraps(fn)
    def launcher(*args: Any, **kwargs: Any) -> Any:
        x = _first_tensor(args)
        if x is None:
            raise TypeError(f"{fn.__qualname__}: no tensor argument to launch on")
        with device_guard(x.device):
            return fn(*args, **kwargs)

    launcher.on_input_device = True  # type: ignore[attr-defined]
    return launcher  # type: ignore[return-value]


def batch_blocks_grid(batch: int, n: int, block: int) -> tuple[int]:
    """The 1-D grid of ``batch`` samples of ``n`` elements in blocks of ``block``: program
    ``pid`` is block ``pid % cdiv(n, block)`` of sample ``pid // cdiv(n, block)``
    (:func:`batch_blocks`). Raises ``ValueError`` past CUDA's ``2^31 - 1`` programs."""
    programs = batch * triton.cdiv(n, block)
    if programs > MAX_GRID_X:
        raise ValueError(f"{batch} x {n} elements in blocks of {block} need {programs} Triton programs, "
                         f"more than CUDA's grid limit {MAX_GRID_X}")
    return (programs,)


def flat_grid(n: int, block: int) -> tuple[int]:
    """The 1-D grid over ``n`` elements in blocks of ``block`` (program ``pid`` takes elements
    ``pid * block ...``; offsets in int64)."""
    return batch_blocks_grid(1, n, block)


@triton.jit
def batch_blocks(N, BLOCK: tl.constexpr):
    """For a :func:`batch_blocks_grid` launch over samples of ``N`` elements: this program's
    sample ``b``, its ``BLOCK`` element indices ``p`` in the sample and their mask (int64)."""
    pid = tl.program_id(0).to(tl.int64)
    nblk = tl.cdiv(N, BLOCK)
    p = (pid % nblk) * BLOCK + tl.arange(0, BLOCK)
    return pid // nblk, p, p < N


def device_scalar(value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``[value]`` as a one-element tensor made on ``device`` (``torch.full``: a fill kernel
    with the value as its argument, so no host-to-device copy and safe in a CUDA graph).
    Kernels read a float this way when float32, Triton's type for a Python float, is not
    enough (float64 inputs)."""
    return torch.full((1,), value, dtype=dtype, device=device)

