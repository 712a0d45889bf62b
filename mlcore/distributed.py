"""Multi-GPU training: under ``torchrun`` (WORLD_SIZE set) each process trains a shard through
DistributedDataParallel and a distributed sampler; rank 0 evaluates and writes checkpoints."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistributedContext:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), else a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank)


def wrap(module: nn.Module, context: DistributedContext, device: torch.device, find_unused: bool = False) -> nn.Module:
    """``module`` itself in a single process, DistributedDataParallel around it under torchrun."""
    if not context.enabled:
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=find_unused)


def smallest_across_ranks(count: int, device: torch.device) -> int:
    """The least of ``count`` over all ranks (``count`` itself in a single process): DDP needs every
    rank to run the same number of steps."""
    if not (dist.is_available() and dist.is_initialized()):
        return count
    value = torch.tensor([count], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return int(value.item())


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()
