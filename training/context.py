"""What every training command sets up first: seed, device, process group, data splits."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from pinlite_edge.contract import InputContract, contract_for_preset

from pinlite_edge.training.config import TrainConfig
from pinlite_edge.training.data import Split, load_split, spec_label
from pinlite_edge.training.runtime import DistInfo, init_distributed, resolve_device, seed_everything

log = logging.getLogger(__name__)


@dataclass
class Context:
    device: torch.device
    dist: DistInfo
    contract: InputContract
    train: Split
    val: Split


def load_data(cfg: TrainConfig, contract: InputContract, split: str, progress: bool, role: str = "eval") -> Split:
    """``split`` of ``cfg.data``; ``role`` ``train`` / ``val`` checks that both classes are present (see load_split)."""
    return load_split(cfg.data, split, contract, cache_dir=cfg.cache_dir, options=cfg.data_options,
                      in_memory=cfg.in_memory, limit_gb=cfg.in_memory_limit_gb, num_workers=cfg.num_workers,
                      progress=progress, role=role)


def prepare(cfg: TrainConfig, contract: InputContract | None = None) -> Context:
    """Seed everything, pick the device (joining torchrun's group if any) and load the train/val splits."""
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    dist, device = init_distributed(device)
    contract = contract or contract_for_preset(cfg.preset)
    progress = cfg.progress and dist.is_main
    train = load_data(cfg, contract, cfg.train_split, progress, role="train")
    val = load_data(cfg, contract, cfg.val_split, progress, role="val")
    log.info("data %s: %d train / %d val samples; device %s", spec_label(cfg.data), len(train), len(val), device)
    # Data loading must not change what the model initialisation draws: re-seed after it.
    seed_everything(cfg.seed)
    return Context(device, dist, contract, train, val)
