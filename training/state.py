"""Resumable training state in ONE safetensors file (so a kill can never leave a half-updated set of files).

The file holds tensors only: model weights (``model.*``), optimizer / scheduler / grad-scaler state and RNG states.
Everything that is not a tensor (counters, history, param-group hyper-parameters, python's RNG state) is JSON in the
safetensors metadata header. Nested structures are stored as a JSON skeleton in which every tensor is replaced by
``{"__tensor__": key}``: loading never unpickles anything.
"""
from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from pinlite_edge.checkpoint import save_hashed, verify_hashed
from pinlite_edge.errors import CheckpointError
from pinlite_edge.utils.atomic import json_default

log = logging.getLogger(__name__)

_TENSOR = "__tensor__"
_TUPLE = "__tuple__"


def flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in ``obj`` (dicts/lists/tuples of tensors and JSON scalars) by a reference."""
    if isinstance(obj, torch.Tensor):
        key = prefix
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {_TENSOR: key}
    if isinstance(obj, np.ndarray):
        return flatten(torch.from_numpy(np.ascontiguousarray(obj)), prefix, tensors)
    if isinstance(obj, dict):
        # JSON keys are strings: remember integer keys (optimizer state is keyed by parameter index).
        out = {}
        for k, v in obj.items():
            tag = f"i:{k}" if isinstance(k, int) else f"s:{k}"
            out[tag] = flatten(v, f"{prefix}.{k}", tensors)
        return {"__dict__": out}
    if isinstance(obj, tuple):
        return {_TUPLE: [flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    raise CheckpointError(f"cannot store training state entry {prefix!r} of type {type(obj).__name__}")


def unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return tensors[obj[_TENSOR]]
        if _TUPLE in obj:
            return tuple(unflatten(v, tensors) for v in obj[_TUPLE])
        if "__dict__" in obj:
            out = {}
            for tag, v in obj["__dict__"].items():
                kind, _, key = tag.partition(":")
                out[int(key) if kind == "i" else key] = unflatten(v, tensors)
            return out
        return {k: unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unflatten(v, tensors) for v in obj]
    return obj


def rng_state() -> dict[str, Any]:
    """Every global RNG a training step may draw from (torch CPU/CUDA, numpy, python)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].to(torch.uint8))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([t.to(torch.uint8) for t in state["cuda"]])


def save_training_state(path: str | Path, parts: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write ``parts`` (nested dicts of tensors, e.g. ``{"model": sd, "optimizer": sd, ...}``) + JSON ``meta``."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = {name: flatten(value, name, tensors) for name, value in parts.items()}
    header = {"skeleton": json.dumps(skeleton), "meta": json.dumps(meta, default=json_default)}
    return save_hashed(path, tensors, header)  # its sha256 inside: a damaged state is refused, not resumed from


def load_training_state(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Inverse of :func:`save_training_state`: ``(parts, meta)``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"training state {path} does not exist (nothing to resume)")
    try:
        verified = verify_hashed(path)
    except CheckpointError as exc:
        raise CheckpointError(f"training state {path} cannot be resumed from: {exc}; start again with a fresh "
                              "--output (or without --resume)") from None
    if not verified:
        log.warning("training state %s carries no sha256 (written by an older version): resuming unverified", path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            header = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        skeleton = json.loads(header["skeleton"])
        meta = json.loads(header["meta"])
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read training state {path}: {exc}") from None
    return {name: unflatten(value, tensors) for name, value in skeleton.items()}, meta
