"""Checkpoints: safetensors weights + a JSON record beside them. Never pickle."""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from pinlite_edge import __version__
from pinlite_edge.errors import CheckpointError
from pinlite_edge.models import AVSyncDetector, ModelConfig, create_model
from pinlite_edge.utils.atomic import atomic_write_bytes, atomic_write_json
from pinlite_edge.utils.hashing import sha256_file


#: safetensors metadata key holding the JSON record: weights and record are one file, replaced atomically.
RECORD_KEY = "pinlite_record"
#: sha256 of the tensor data section (everything after the header), which does not depend on the metadata.
DATA_HASH_KEY = "pinlite_data_sha256"


def record_path(checkpoint: str | Path) -> Path:
    """``dir/best.safetensors`` -> ``dir/best.json``."""
    return Path(checkpoint).with_suffix(".json")


def save_checkpoint(path: str | Path, model: AVSyncDetector, record: dict[str, Any] | None = None) -> Path:
    """Write weights + record as ONE safetensors file (record in its metadata), atomically.

    A JSON copy of the record (plus the weights' sha256) is written beside it for people and tools; the embedded
    record is the authority, so a kill between the two writes can never pair weights with another run's record.
    """
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    full = {
        "model_config": model.config.to_dict(),
        "input_contract": model.config.contract.to_dict(),
        "pinlite_edge_version": __version__,
        **(record or {}),
    }
    metadata = {"format": "pt", "pinlite_edge_version": __version__, RECORD_KEY: json.dumps(full, default=str)}
    metadata[DATA_HASH_KEY] = hashlib.sha256(_data_section(save(state, metadata=metadata))).hexdigest()
    atomic_write_bytes(path, save(state, metadata=metadata))
    atomic_write_json(record_path(path), {**full, "weights_sha256": sha256_file(path)})
    return path


def _data_section(blob: bytes | memoryview) -> memoryview:
    header_len = struct.unpack("<Q", bytes(blob[:8]))[0]
    return memoryview(blob)[8 + header_len:]


def _embedded_record(path: Path) -> dict[str, Any] | None:
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read safetensors checkpoint {path}: {exc}") from None
    if DATA_HASH_KEY in meta:
        actual = hashlib.sha256(_data_section(path.read_bytes())).hexdigest()
        if actual != meta[DATA_HASH_KEY]:
            raise CheckpointError(f"checkpoint {path} is corrupt or was modified: sha256 of its weights "
                                  f"{actual[:12]}… != {meta[DATA_HASH_KEY][:12]}… recorded at save time")
    if RECORD_KEY not in meta:
        return None
    try:
        return json.loads(meta[RECORD_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint {path} has a corrupt embedded record: {exc}") from None


def read_record(path: str | Path) -> dict[str, Any]:
    """The checkpoint's record (config, metrics, ...) plus ``weights_sha256`` of the file as it is now."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    record = _embedded_record(path)
    if record is None:  # a file written by other tools: fall back to the JSON beside it
        rec = record_path(path)
        if not rec.is_file():
            raise CheckpointError(f"checkpoint {path} has no embedded record and {rec} is missing")
        try:
            record = json.loads(rec.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"checkpoint record {rec} is not valid JSON: {exc}") from None
    record["weights_sha256"] = sha256_file(path)
    return record


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[AVSyncDetector, dict[str, Any]]:
    """Rebuild the model from the record (pruned head counts included) and load the safetensors weights."""
    path = Path(path)
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
