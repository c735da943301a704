"""Devices, seeding and (optional) torch.distributed set-up shared by the training commands."""
from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from pinlite_edge.errors import BackendUnavailableError
from pinlite_edge.training.config import check_device

log = logging.getLogger(__name__)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU raises :class:`BackendUnavailableError`."""
    name = check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailableError("cuda", "torch sees no CUDA device on this machine", "use --device cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) so two runs with the same seed draw the same numbers."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


@dataclass(frozen=True)
class DistInfo:
    """Process rank and world size; ``world_size == 1`` means a plain single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1); NCCL on CUDA, gloo on CPU.

    Returns the rank info and the device this process uses (``cuda:LOCAL_RANK`` on GPU).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    log.info("distributed: rank %d/%d on %s", rank, world, device)
    return DistInfo(rank, world, local_rank), device


def barrier(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def cleanup_distributed(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
