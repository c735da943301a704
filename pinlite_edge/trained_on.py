"""What a model was trained on, as checkpoints and manifests record it (SPEC §6: "training data").

Training writes ``training_data`` into every checkpoint record (``pinlite_edge.data.provenance``); export copies it
into the artefact's manifest. This module reads it back, whatever the age of the file:

- a record/manifest with ``training_data`` -> that summary;
- an older checkpoint record with only ``dataset`` descriptions (before the summary existed) -> a summary derived
  from the dataset kinds (``synthetic`` is synthetic-only; ``folder`` / ``lavdf`` are real video);
- nothing -> ``None`` (unknown).

:func:`trained_on_real_video` answers the one question apps ask: has this model seen real faces?
"""
from __future__ import annotations

from typing import Any, Mapping

#: dataset kinds whose samples are real camera footage
REAL_VIDEO_KINDS = frozenset({"folder", "lavdf"})


def _kind(description: Any) -> str | None:
    if not isinstance(description, Mapping):
        return None
    kind = description.get("kind")
    if isinstance(kind, str):
        k = kind.lower()
        if "synthetic" in k:
            return "synthetic"
        if "folder" in k:
            return "folder"
        if "lavdf" in k:
            return "lavdf"
        if k == "mix":
            return "mix"
    return None


def _parts(description: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The component descriptions of a (possibly mixed) dataset description."""
    for key in ("sources", "datasets", "parts", "components"):  # "sources": pinlite_edge.data.mix's description
        parts = description.get(key)
        if isinstance(parts, list) and parts:
            return [p for p in parts if isinstance(p, Mapping)]
    return [description]


def training_data_from_record(record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``training_data`` summary of a checkpoint record, derived from ``dataset`` for older records."""
    if not isinstance(record, Mapping):
        return None
    summary = record.get("training_data")
    if isinstance(summary, Mapping):
        return dict(summary)
    dataset = record.get("dataset")
    if not isinstance(dataset, Mapping) or not isinstance(dataset.get("train"), Mapping):
        return None
    kinds = sorted({k for p in _parts(dataset["train"]) if (k := _kind(p)) is not None})
    if not kinds:
        return None
    return {"real_video": any(k in REAL_VIDEO_KINDS for k in kinds), "kinds": kinds,
            "derived_from": "checkpoint record 'dataset' (written before training_data existed)"}


def trained_on_real_video(training_data: Mapping[str, Any] | None) -> bool | None:
    """True / False when the summary says whether real footage was in the training data; None when unknown."""
    if not isinstance(training_data, Mapping):
        return None
    flag = training_data.get("real_video")
    if isinstance(flag, bool):
        return flag
    kinds = training_data.get("kinds")
    if isinstance(kinds, list) and kinds:
        return any(str(k) in REAL_VIDEO_KINDS for k in kinds)
    return None


def describe_training_data(training_data: Mapping[str, Any] | None) -> str:
    """One line for logs and results, e.g. ``"synthetic only"`` or ``"real video + synthetic"``."""
    real = trained_on_real_video(training_data)
    if real is None:
        return "unknown (the artefact records no training data)"
    kinds = training_data.get("kinds") if isinstance(training_data, Mapping) else None
    synthetic = training_data.get("synthetic") is True or (isinstance(kinds, list) and "synthetic" in kinds)
    if not real:
        return "synthetic only"
    return "real video + synthetic" if synthetic else "real video"
