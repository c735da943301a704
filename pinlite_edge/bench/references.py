"""Reference outputs (FP32 teacher, FP32 sources) computed once per dataset and cached as npz.

The cache key is the model's weights sha256, the evaluation data fingerprint and the kind of device the reference ran
on (``cpu`` or ``cuda``: the references run on the artefacts' device when there is a GPU), so a device that cannot run
the teacher (a phone, a Jetson without the teacher's torch build) can be handed the cache file
(``--teacher-cache``) and still report EPS against the teacher.
"""
from __future__ import annotations

import io
import json
import zipfile
import zlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pinlite_edge.contract import OUTPUT_NAMES
from pinlite_edge.errors import PinliteError, UsageError
from pinlite_edge.utils.atomic import atomic_write_bytes

log = logging.getLogger(__name__)


class ReferenceCacheError(PinliteError):
    """A reference cache file is unreadable or was computed for other weights or other data."""


class ReferenceMismatchError(ReferenceCacheError, UsageError):
    """A reference cache that reads but was computed for other data, clips or weights: the file given does not fit
    this run (a usage error, exit 2; an unreadable one is a failure, exit 1)."""


@dataclass
class ReferenceOutputs:
    """Outputs of a reference model on every clip of an evaluation set, in dataset order."""

    model_sha256: str
    data_fingerprint: str
    outputs: dict[str, np.ndarray]
    clip_ids: list[str]

    @property
    def num_clips(self) -> int:
        return int(self.outputs["logits"].shape[0])


def device_kind(device: str) -> str:
    """``cuda`` for any CUDA device (``cuda:1``, ORT's ``tensorrt`` provider), else ``cpu``."""
    return "cuda" if device.startswith("cuda") or device == "tensorrt" else "cpu"


def cache_name(model_sha256: str, data_fingerprint: str, device: str = "cpu") -> str:
    return f"reference-{model_sha256[:16]}-{data_fingerprint[:16]}-{device_kind(device)}.npz"


def save_reference(path: Path, ref: ReferenceOutputs) -> Path:
    meta = {"model_sha256": ref.model_sha256, "data_fingerprint": ref.data_fingerprint, "clip_ids": ref.clip_ids}
    buf = io.BytesIO()
    np.savez_compressed(buf, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                        **{k: np.asarray(v, np.float32) for k, v in ref.outputs.items()})
    atomic_write_bytes(path, buf.getvalue())
    return path


#: how much more a reference cache may hold once decompressed than on disk: the bench's float outputs barely
#: compress (about 1:1 to 3:1), a zip bomb is 1000:1; a file that declares more is refused before decompressing
MAX_COMPRESSION_RATIO = 32


def load_reference(path: Path, *, data_fingerprint: str, model_sha256: str | None = None) -> ReferenceOutputs:
    """Load a cache; refuse one made for other data or (when known) other weights, one that would decompress to more
    than :data:`MAX_COMPRESSION_RATIO` times its size, or whose arrays do not hold one row per clip. Never
    unpickles."""
    try:
        with zipfile.ZipFile(path) as zf:
            declared = sum(info.file_size for info in zf.infolist())
        on_disk = path.stat().st_size
        if declared > MAX_COMPRESSION_RATIO * on_disk + (1 << 20):
            raise ReferenceCacheError(f"reference cache {path} would decompress to {declared} bytes from {on_disk}: "
                                      "not a cache the bench wrote")
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(bytes(npz["meta"]).decode())
            outputs = {k: np.asarray(npz[k], np.float32) for k in OUTPUT_NAMES}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, json.JSONDecodeError,
            RecursionError, MemoryError) as exc:
        # numpy's own message for a non-npz file suggests loading it unsafely (allow_pickle): never say that here
        why = "not an .npz of arrays" if "pickle" in str(exc) else f"{type(exc).__name__}: {exc}"
        raise ReferenceCacheError(f"reference cache {path} is unreadable (empty, truncated or not written by the "
                                  f"bench; {why})") from None
    clip_ids = meta.get("clip_ids") if isinstance(meta, dict) else None
    rows = {k: v.shape[0] if v.ndim else None for k, v in outputs.items()}
    if not isinstance(clip_ids, list) or set(rows.values()) != {len(clip_ids)}:
        raise ReferenceCacheError(f"reference cache {path} is inconsistent: its arrays hold {rows} rows for "
                                  f"{len(clip_ids) if isinstance(clip_ids, list) else 'no list of'} clips")
    if meta.get("data_fingerprint") != data_fingerprint:
        raise ReferenceMismatchError(f"reference cache {path} was computed on other data (fingerprint "
                                     f"{str(meta.get('data_fingerprint'))[:12]}…, "
                                     f"this run {data_fingerprint[:12]}…)")
    if model_sha256 is not None and meta.get("model_sha256") != model_sha256:
        raise ReferenceMismatchError(f"reference cache {path} belongs to weights "
                                     f"{str(meta.get('model_sha256'))[:12]}…, not {model_sha256[:12]}…")
    if not isinstance(meta.get("model_sha256"), str):
        raise ReferenceCacheError(f"reference cache {path} does not name the weights it was computed with")
    return ReferenceOutputs(model_sha256=meta["model_sha256"], data_fingerprint=data_fingerprint,
                            outputs=outputs, clip_ids=[str(c) for c in clip_ids])
