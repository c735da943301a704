"""Checkpoints: safetensors weights + a JSON record beside them. Never pickle."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from pinlite_edge import __version__
from pinlite_edge.errors import CheckpointError
from pinlite_edge.feature_version import FEATURE_VERSION, check_unrecorded, feature_version_problem
from pinlite_edge.models import AVSyncDetector, ModelConfig, create_model
from pinlite_edge.utils.atomic import atomic_write_bytes, atomic_write_json
from pinlite_edge.utils.files import MAX_METADATA_BYTES, input_file_problem
from pinlite_edge.utils.hashing import sha256_file

log = logging.getLogger(__name__)


#: safetensors metadata key holding the JSON record: weights and record are one file, replaced atomically.
RECORD_KEY = "pinlite_record"
#: sha256 of the whole file as written, except this key: the safetensors header (tensor names, dtypes, shapes,
#: offsets, the embedded record; canonical JSON) and then the tensor data.
HASH_KEY = "pinlite_sha256"
#: checkpoints written before HASH_KEY: sha256 of the tensor data section only (the record is not covered)
DATA_HASH_KEY = "pinlite_data_sha256"
#: safetensors refuses headers above 100 MB; so do we, before reading one
MAX_HEADER_BYTES = 100 << 20
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


def record_path(checkpoint: str | Path) -> Path:
    """``dir/best.safetensors`` -> ``dir/best.json``."""
    return Path(checkpoint).with_suffix(".json")


def save_checkpoint(path: str | Path, model: AVSyncDetector, record: dict[str, Any] | None = None) -> Path:
    """Write weights + record as ONE safetensors file (record in its metadata), atomically.

    The file carries the sha256 of everything else in it (:data:`HASH_KEY`). A JSON copy of the record (plus the
    file's sha256) is written beside it for people and tools; the embedded record is the authority, so a kill
    between the two writes can never pair weights with another run's record.
    """
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    full = {
        "model_config": model.config.to_dict(),
        "input_contract": model.config.contract.to_dict(),
        "pinlite_edge_version": __version__,
        # the features it is trained on are this SDK's; a record that has the key (a re-saved checkpoint) keeps its own
        "feature_version": FEATURE_VERSION,
        **(record or {}),
    }
    metadata = {"format": "pt", "pinlite_edge_version": __version__, RECORD_KEY: json.dumps(full, default=str)}
    save_hashed(path, state, metadata)
    atomic_write_json(record_path(path), {**full, "weights_sha256": sha256_file(path)})
    return path


def save_hashed(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """A safetensors file of ``tensors`` and ``metadata`` carrying the sha256 of everything else in it
    (:data:`HASH_KEY`), written atomically: what checkpoints, training states and teacher-output caches are."""
    path = Path(path)
    blob = save(tensors, metadata=metadata)
    header, data_start = _parse_header(memoryview(blob), len(blob), path)
    h = _header_hash(header)
    h.update(memoryview(blob)[data_start:])
    atomic_write_bytes(path, _sorted_header(save(tensors, metadata={**metadata, HASH_KEY: h.hexdigest()})))
    return path


def _sorted_header(blob: bytes) -> bytes:
    """``blob`` (a safetensors file) with its JSON header's keys sorted. safetensors writes the header's keys in an
    order that changes from call to call, so the same tensors and metadata gave files with different sha256: the
    identity that best.json, export manifests, the quickstart's staleness check and the teacher cache record. The
    data and its offsets are unchanged; the header is padded with spaces to 8 bytes, as safetensors pads it."""
    (header_len,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + header_len])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blob[8 + header_len:]


def verify_hashed(path: str | Path) -> bool:
    """Check a :func:`save_hashed` file against its embedded sha256: :class:`CheckpointError` when it is corrupt or
    was modified, False when it carries no hash (written before it did), True when it verifies."""
    return _read_verified(Path(path))[2]


def _parse_header(head: bytes | memoryview, file_size: int, path: Path) -> tuple[dict[str, Any], int]:
    """The safetensors header of a file of ``file_size`` bytes whose first bytes are ``head`` (at least the header);
    every size is checked against the file size before anything is allocated."""
    if file_size < 8:
        raise CheckpointError(f"cannot read checkpoint {path}: {file_size} bytes, not a safetensors file")
    header_len = struct.unpack("<Q", bytes(head[:8]))[0]
    if header_len > min(MAX_HEADER_BYTES, file_size - 8):
        raise CheckpointError(f"cannot read checkpoint {path}: not a safetensors file or corrupt (its header "
                              f"claims {header_len} bytes, the file has {file_size})")
    try:
        header = json.loads(bytes(head[8:8 + header_len]))
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt safetensors header (not a JSON object)")
    data_size = file_size - 8 - header_len
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise CheckpointError(f"checkpoint {path} has corrupt metadata")
            continue
        try:
            begin, end = info["data_offsets"]
            numel = math.prod(int(d) for d in info["shape"])
            size = numel * _DTYPE_BYTES[info["dtype"]]
            ok = (all(isinstance(d, int) and d >= 0 for d in info["shape"]) and isinstance(begin, int)
                  and isinstance(end, int) and 0 <= begin <= end <= data_size and end - begin == size)
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise CheckpointError(f"checkpoint {path} is corrupt: tensor {name!r} has an invalid entry {info!r} "
                                  f"for a data section of {data_size} bytes")
    return header, 8 + header_len


def _header_hash(header: dict[str, Any]) -> Any:
    header = dict(header)
    meta = dict(header.get("__metadata__") or {})
    meta.pop(HASH_KEY, None)
    header["__metadata__"] = meta
    return hashlib.sha256(json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8"))


def _hash_from(fh: Any, start: int, h: Any) -> str:
    fh.seek(start)
    for chunk in iter(lambda: fh.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def _read_verified(path: Path) -> tuple[dict[str, Any], dict[str, str], bool]:
    """Header, metadata and whether the file verified against its embedded hash (header and data checked against
    the file size first)."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(8)
            header_len = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            head += fh.read(min(header_len, MAX_HEADER_BYTES, max(size - 8, 0)))
            header, data_start = _parse_header(head, size, path)
            meta = header.get("__metadata__") or {}
            if HASH_KEY in meta:
                actual = _hash_from(fh, data_start, _header_hash(header))
                wanted = meta[HASH_KEY]
            elif DATA_HASH_KEY in meta:
                actual = _hash_from(fh, data_start, hashlib.sha256())
                wanted = meta[DATA_HASH_KEY]
            else:
                return header, meta, False
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    if actual != wanted:
        raise CheckpointError(f"checkpoint {path} is corrupt or was modified: sha256 {actual[:12]}… != "
                              f"{wanted[:12]}… recorded at save time")
    return header, meta, True


def _sidecar(path: Path) -> dict[str, Any] | None:
    rec = record_path(path)
    if not rec.is_file():
        return None
    try:
        size = rec.stat().st_size
        if size > MAX_METADATA_BYTES:
            raise CheckpointError(f"checkpoint record {rec} is {size} bytes, more than {MAX_METADATA_BYTES}: it is "
                                  "not a pinlite-edge record (remove it)")
        data = json.loads(rec.read_text(encoding="utf-8"))
    except (ValueError, RecursionError, OSError) as exc:
        raise CheckpointError(f"checkpoint record {rec} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint record {rec} is not a JSON object")
    return data


def _read(path: Path, allow_unverified: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    problem = input_file_problem(path)  # missing, a folder, a device, a /proc file, a name too long...
    if problem == "file does not exist":
        raise CheckpointError(f"checkpoint {path} does not exist")
    if problem is not None:
        raise CheckpointError(f"checkpoint {path}: {problem}")
    header, meta, verified = _read_verified(path)
    sidecar = _sidecar(path)
    file_sha = sha256_file(path)
    side_sha = (sidecar or {}).get("weights_sha256")
    if side_sha is not None and side_sha != file_sha:
        if not verified:
            raise CheckpointError(f"checkpoint {path} does not match {record_path(path).name}: sha256 "
                                  f"{file_sha[:12]}… != weights_sha256 {str(side_sha)[:12]}… (the weights were "
                                  "replaced or modified)")
        log.warning("%s: weights_sha256 in %s is stale (the embedded hash verifies; the embedded record is used)",
                    path, record_path(path).name)
    verified = verified or side_sha == file_sha
    if RECORD_KEY in meta:
        try:
            record = json.loads(meta[RECORD_KEY])
        except (ValueError, RecursionError) as exc:
            raise CheckpointError(f"checkpoint {path} has a corrupt embedded record: {exc}") from None
    elif sidecar is not None:  # a file written by other tools: the JSON beside it
        record = sidecar
    else:
        raise CheckpointError(f"checkpoint {path} has no embedded record and {record_path(path)} is missing")
    if not isinstance(record, dict):
        raise CheckpointError(f"checkpoint {path}: its record is not a JSON object")
    if not verified:
        if not allow_unverified:
            raise CheckpointError(f"checkpoint {path} carries no sha256 of its own and no weights_sha256 beside it, "
                                  "so it cannot be verified; re-save it with pinlite_edge.checkpoint.save_checkpoint, "
                                  "or pass allow_unverified=True if you trust the file")
        log.warning("%s: loading an unverified checkpoint (allow_unverified=True)", path)
    record = dict(record)
    record["weights_sha256"] = file_sha
    return record, header


def read_record(path: str | Path, *, allow_unverified: bool = False) -> dict[str, Any]:
    """The checkpoint's record (config, metrics, ...) plus ``weights_sha256`` of the file as it is now.

    The file must verify against the sha256 embedded at save time, or against ``weights_sha256`` in the JSON beside
    it; a checkpoint with neither is refused (:class:`CheckpointError`) unless ``allow_unverified=True``.
    """
    return _read(Path(path), allow_unverified)[0]


def check_checkpoint_features(record: dict[str, Any], path: Path, *, warn: bool = True) -> None:
    """Refuse a checkpoint trained for another feature pipeline (:mod:`pinlite_edge.feature_version`); with ``warn``,
    warn about one that records neither it nor its training data (:func:`load_checkpoint` does; a runner's
    inspection only refuses, so the warning comes once, when the runner loads the model)."""
    recorded = record.get("feature_version")
    problem = feature_version_problem(recorded, f"checkpoint {path}")
    if problem is not None:
        raise CheckpointError(problem)
    if recorded is None and warn:
        check_unrecorded(record.get("training_data"), f"checkpoint {path}")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *,
                    allow_unverified: bool = False) -> tuple[AVSyncDetector, dict[str, Any]]:
    """Rebuild the model from the record (pruned head counts included) and load the safetensors weights.

    The model's tensor shapes are compared with the file's header on the ``meta`` device first, so a record that
    asks for a huge model allocates nothing. See :func:`read_record` for verification.
    """
    path = Path(path)
    record, header = _read(path, allow_unverified)
    check_checkpoint_features(record, path)
    try:
        config = ModelConfig.from_dict(record["model_config"])
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in create_model(config).state_dict().items()}
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint record for {path} has no valid model_config: {exc}") from None
    stored = {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in expected]
    mismatched = [f"{k} {stored[k]} vs {v}" for k, v in expected.items() if k in stored and stored[k] != v]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"checkpoint {path} does not match its model config: missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"shape mismatches {mismatched[:3]}"
        )
    try:
        state = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read safetensors checkpoint {path}: {exc}") from None
    # the initial weights, overwritten below, must not draw from the host's RNG (an app seeding torch got other numbers)
    with torch.random.fork_rng(devices=[]):
        model = create_model(config)
    model.load_state_dict(state)
    return model.to(map_location).eval(), record
