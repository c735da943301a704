"""Checkpoints: safetensors weights + a JSON record beside them. Never pickle."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pinlite_edge import __version__
from pinlite_edge.errors import CheckpointError
from pinlite_edge.models import AVSyncDetector, ModelConfig, create_model
from pinlite_edge.utils.atomic import atomic_path, atomic_write_json
from pinlite_edge.utils.hashing import sha256_file


def record_path(checkpoint: str | Path) -> Path:
    """``dir/best.safetensors`` -> ``dir/best.json``."""
    return Path(checkpoint).with_suffix(".json")


def save_checkpoint(path: str | Path, model: AVSyncDetector, record: dict[str, Any] | None = None) -> Path:
    """Write the weights and the record atomically (weights first, then the record that points at them)."""
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "pinlite_edge_version": __version__})
    full = {
        "model_config": model.config.to_dict(),
        "input_contract": model.config.contract.to_dict(),
        "pinlite_edge_version": __version__,
        "weights_sha256": sha256_file(path),
        **(record or {}),
    }
    atomic_write_json(record_path(path), full)
    return path


def read_record(path: str | Path) -> dict[str, Any]:
    rec = record_path(path)
    if not rec.is_file():
        raise CheckpointError(f"checkpoint record {rec} is missing (expected beside {path})")
    try:
        return json.loads(rec.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint record {rec} is not valid JSON: {exc}") from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[AVSyncDetector, dict[str, Any]]:
    """Rebuild the model from the record (pruned head counts included) and load the safetensors weights."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    record = read_record(path)
    try:
        config = ModelConfig.from_dict(record["model_config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint record for {path} has no valid model_config: {exc}") from None
    try:
        state = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read safetensors checkpoint {path}: {exc}") from None
    model = create_model(config)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                  if k in state and state[k].shape != v.shape]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"checkpoint {path} does not match its model config: missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"shape mismatches {mismatched[:3]}"
        )
    model.load_state_dict(state)
    return model.to(map_location).eval(), record
