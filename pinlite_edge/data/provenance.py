"""What a model was trained on, in a compact JSON form that checkpoints record and export manifests copy.

``training_data_summary({"train": train_dataset, "val": val_dataset})`` ->::

    {"real_video": true, "synthetic": true,
     "sources": [{"kind": "folder", "root": "/.../real-av", "split_file": ".../real_av.json", "real_video": true,
                  "sync_pairs": {...}, "weight": null,
                  "splits": {"train": {"clips": 22, "speakers": 12, "speakers_known": true}, "dev": {...}, ...},
                  "used": {"train": {"split": "train", "samples": 2220}, "val": {"split": "dev", "samples": 510}}},
                 {"kind": "synthetic", "root": null, "real_video": false, ...}]}

``splits`` counts every split of the source (what the split rule assigns), ``used`` what each role actually loaded.
Datasets describe themselves with a ``provenance()`` method (folder, LAV-DF, synthetic); a mix
(:class:`~pinlite_edge.data.mix.MixedDataset`) lists its parts.
"""
from __future__ import annotations

from typing import Any, Mapping

from torch.utils.data import Dataset


def _unwrap(dataset: Any) -> Any:
    for _ in range(8):
        if hasattr(dataset, "provenance") or hasattr(dataset, "parts"):
            return dataset
        inner = getattr(dataset, "base", None)
        if inner is None:
            inner = getattr(dataset, "source", None)
        if inner is None:
            return dataset
        dataset = inner
    return dataset


def _parts(dataset: Any) -> list[tuple[Any, str | None, float | None]]:
    base = _unwrap(dataset)
    parts = getattr(base, "parts", None)
    sources = getattr(base, "sources", None)
    if parts is not None and sources is not None:
        return [(_unwrap(p), s.spec, s.weight) for p, s in zip(parts, sources)]
    return [(base, None, None)]


def dataset_provenance(dataset: Dataset) -> dict[str, Any]:
    """One dataset's source summary (kind, root, split file, real_video, sync-pair config, clips/speakers per split)."""
    describe = getattr(dataset, "provenance", None)
    if callable(describe):
        return dict(describe())
    return {"kind": type(dataset).__name__, "root": None, "split_file": None, "real_video": None,
            "sync_pairs": None, "splits": {}}


def training_data_summary(datasets: Mapping[str, Dataset]) -> dict[str, Any]:
    """The ``training_data`` record of a training run: ``datasets`` maps a role (``train``, ``val``) to the dataset
    loaded for it (the same source list in every role, possibly a mix)."""
    sources: list[dict[str, Any]] = []
    for role, dataset in datasets.items():
        for n, (part, spec, weight) in enumerate(_parts(dataset)):
            info = dataset_provenance(part)
            if n >= len(sources):
                sources.append({**{k: v for k, v in info.items() if k != "splits"}, "spec": spec, "weight": weight,
                                "splits": dict(info.get("splits") or {}), "used": {}})
            entry = sources[n]
            for split, counts in (info.get("splits") or {}).items():
                entry["splits"].setdefault(split, counts)
            entry["used"][role] = {"split": getattr(part, "split", None), "samples": len(part)}  # type: ignore[arg-type]
    real = [s.get("real_video") for s in sources]
    return {"real_video": any(r is True for r in real),
            "synthetic": any(s.get("kind") == "synthetic" for s in sources),
            "sources": sources}


def fine_tuned_summary(summary: Mapping[str, Any], source: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``training_data`` of a model fine-tuned (pruned) from weights trained on ``source``: the weights keep
    what they learned there, so ``real_video`` and ``synthetic`` are true when either run's are; the source's own
    summary is kept whole under ``fine_tuned_from``. An unknown source (None) leaves ``summary`` as it is."""
    merged = dict(summary)
    if isinstance(source, Mapping):
        for flag in ("real_video", "synthetic"):
            merged[flag] = merged.get(flag) is True or source.get(flag) is True
        merged["fine_tuned_from"] = dict(source)
    return merged

