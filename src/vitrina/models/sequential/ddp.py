"""Data-parallel training with plain ``torch.distributed`` (DDP; gloo on CPU, nccl on CUDA).

Launch any script that calls ``model.fit`` with ``torchrun --nproc-per-node N script.py`` and call
:func:`init_from_env` first: ``fit`` then sees an initialised process group and trains data-parallel.
Every rank builds the same *global* batch (same seed), draws the same negatives and [MASK]s, and
trains on its slice; each rank's loss is scaled so that DDP's gradient average equals the gradient
of the global batch's mean loss, i.e. N processes train like one process with the same batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


def init_from_env() -> None:
    """Join the process group described by torchrun's environment (no-op without one)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> DistContext:
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: str) -> torch.device:
        if requested == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda", self.rank % torch.cuda.device_count())
            return torch.device("cpu")
        return torch.device(requested)

    def wrap(self, module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        if self.world == 1:
            return module
        ids = [device.index] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of ``n`` rows."""
        per = -(-n // self.world)
        return slice(self.rank * per, min(n, (self.rank + 1) * per))

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            values = values.clone()
            dist.all_reduce(values)
        return values
