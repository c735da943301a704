"""File hashing, and the one sha256 of a JSON-able value (fingerprints and cache keys)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def json_sha256(value: Any) -> str:
    """sha256 of ``value`` as canonical JSON (sorted keys; what JSON cannot hold as its ``str``)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()
