"""The model a CAM pass runs: unwrapped, in eval mode, and left exactly as it was.

* **Wrappers**: ``nn.DataParallel`` / ``DistributedDataParallel`` (``.module``) and
  ``torch.compile``'s ``OptimizedModule`` (the original module it compiled) are unwrapped:
  layer names are looked up, hooks registered and the CAM pass run on the module inside.
  A compiled graph does not run forward hooks added to its submodules after compilation
  (TorchDynamo skips guards on module hooks by default: measured with torch 2.13, the hook
  simply did not fire), and compiling a forward that runs them costs a recompilation
  (docs/methods.md has the figures), so the CAM pass of a compiled model runs the original
  module eagerly: the map is the eager model's, at eager speed, with no compilation. A data-parallel wrapper's replicas (one per GPU, each in its
  own thread) are not used either: the pass runs on the wrapped module's device.
* **Eval mode**: for the pass every module is put in eval mode, and each module's own
  ``training`` flag is restored afterwards (also after an error). So a model in training
  mode gives the map of the model as it predicts: BatchNorm normalises with its running
  statistics, which are not updated (``running_mean``, ``running_var``, ``num_batches_tracked``
  and every other buffer stay bit-identical), and dropout is off, so the map is
  deterministic (a dropout mask would make it random). A module that writes its buffers in
  eval mode too is not protected.
* **Threads**: calls on the same model from several threads share one eval-mode switch
  (counted per model): the first call switches, the last one restores the flags.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = ["cam_mode", "input_for", "unwrap"]

_LOCK = threading.Lock()
_ACTIVE: dict[int, tuple[int, list[tuple[nn.Module, bool]]]] = {}


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside data-parallel wrappers and ``torch.compile`` (the model itself when
    it is none of those)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
        if isinstance(inner, nn.Module) and type(model).__name__ == "OptimizedModule":
            model = inner
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
    return model


@contextmanager
def cam_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``with cam_mode(model) as m:`` ``m`` is :func:`unwrap` ``(model)`` in eval mode; every
    module's ``training`` flag is restored when the last concurrent user leaves."""
    inner = unwrap(model)
    key = id(inner)
    with _LOCK:
        count, flags = _ACTIVE.get(key, (0, None))
        if count == 0:
            flags = [(m, m.training) for m in inner.modules()]
            for m, _ in flags:
                m.training = False
        _ACTIVE[key] = (count + 1, flags)
    try:
        yield inner
    finally:
        with _LOCK:
            count, flags = _ACTIVE[key]
            if count == 1:
                del _ACTIVE[key]
                for m, training in flags:
                    m.training = training
            else:
                _ACTIVE[key] = (count - 1, flags)


def input_for(model: nn.Module, x: Tensor) -> Tensor:
    """``x`` in the dtype of a half / bfloat16 model (all floating parameters of one dtype)
    when autocast is off; else ``x`` as it is."""
    if torch.is_autocast_enabled(x.device.type):
        return x
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if len(dtypes) == 1:
        (dtype,) = dtypes
        if dtype != x.dtype and dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            return x.to(dtype)
    return x
