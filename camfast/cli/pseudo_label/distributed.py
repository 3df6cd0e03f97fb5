"""``torchrun`` support: the process group from the environment, gathering, barriers."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

__all__ = ["Dist", "barrier", "dist_from_env", "gather", "shutdown"]


@dataclasses.dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    initialized_here: bool = False

    @property
    def active(self) -> bool:
        return self.world_size > 1


def dist_from_env(device: torch.device) -> tuple[Dist, torch.device]:
    """The ranks from ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` (one process when unset), the
    device of this rank (``cuda`` -> ``cuda:LOCAL_RANK`` under torchrun), the process group
    initialised when there are several."""
    env = os.environ
    d = Dist(rank=int(env.get("RANK", "0")), world_size=int(env.get("WORLD_SIZE", "1")),
             local_rank=int(env.get("LOCAL_RANK", "0")), local_world_size=int(env.get("LOCAL_WORLD_SIZE", "1")))
    dev = device
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", d.local_rank if d.active else torch.cuda.current_device())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if d.active:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
            d.initialized_here = True
    return d, dev


def gather(d: Dist, obj: Any) -> list[Any]:
    if not d.active:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(d: Dist) -> None:
    if d.active:
        import torch.distributed as dist

        dist.barrier()


def shutdown(d: Dist) -> None:
    """Destroy the process group this run made. ``destroy_process_group`` only drops the
    module's references to it: a collection runs at once so that a reference cycle does not
    keep Gloo's backend (its worker threads and the tensors of their last work) alive until
    interpreter teardown, where releasing them can abort the process."""
    if d.initialized_here:
        import gc

        import torch.distributed as dist

        dist.destroy_process_group()
        gc.collect()
