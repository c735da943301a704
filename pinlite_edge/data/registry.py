"""``build_dataset("synthetic" | "lavdf:PATH" | "folder:PATH", split, contract)`` and dataset fingerprints."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from pinlite_edge.contract import InputContract
from pinlite_edge.data.augment import AugmentConfig
from pinlite_edge.data.options import check_options, dataclass_hints, parameter_hints
from pinlite_edge.errors import DatasetError
from pinlite_edge.utils.hashing import json_sha256

KINDS = ("synthetic", "lavdf", "folder")


def parse_spec(spec: str) -> tuple[str, Path | None]:
    if not isinstance(spec, str) or not spec.strip():
        raise DatasetError(f"dataset spec must be a non-empty string like 'synthetic' or 'lavdf:/data/LAV-DF', "
                           f"got {spec!r}")
    kind, sep, rest = spec.strip().partition(":")
    kind = kind.lower()
    if kind not in KINDS:
        raise DatasetError(f"unknown dataset kind {kind!r} in spec {spec!r}; use one of {', '.join(KINDS)}")
    if kind == "synthetic":
        if rest:
            raise DatasetError(f"'synthetic' takes no path (got {spec!r}); pass options instead")
        return kind, None
    if not sep or not rest:
        raise DatasetError(f"dataset spec {spec!r} needs a path: '{kind}:PATH'")
    path = Path(rest).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset path {path} (from spec {spec!r}) does not exist")
    return kind, path


def build_dataset(spec: str, split: str, contract: InputContract, *, cache_dir: str | Path | None = None,
                  **options: Any) -> Dataset:
    """Build a dataset from ``spec``; ``options`` go to the dataset (synthetic: fields of ``SyntheticConfig``;
    folder / lavdf: keyword arguments of ``FolderDataset`` / ``LavdfDataset``). Every option is checked against its
    type hint: an unknown name, a wrong type or an invalid value is a :class:`DatasetError` naming the option and
    what it accepts."""
    kind, path = parse_spec(spec)
    where = repr(spec)
    if kind == "synthetic":
        from pinlite_edge.data.synthetic import SyntheticConfig, SyntheticDataset

        checked = check_options(where, options, dataclass_hints(SyntheticConfig))
        try:
            config = SyntheticConfig(**checked)
        except DatasetError as exc:
            raise DatasetError(f"dataset {where}: {exc}") from None
        return SyntheticDataset(split, contract, config)
    if kind == "lavdf":
        from pinlite_edge.data.lavdf import LavdfDataset as cls
    else:
        from pinlite_edge.data.folder import FolderDataset as cls
    hints = _window_dataset_hints(cls)
    checked = check_options(where, options, hints)
    if kind == "folder":
        return cls(path, split, contract, cache_dir=cache_dir, **checked)
    augment = checked.pop("augment", None)  # LAV-DF: the registry adds the augmentation option
    dataset = cls(path, split, contract, cache_dir=cache_dir, **checked)
    dataset.set_augment(AugmentConfig.for_split(augment, dataset.split, where))
    return dataset


def _window_dataset_hints(cls: type) -> dict[str, Any]:
    hints = parameter_hints(cls.__init__, {"self", "root", "split", "contract", "cache_dir"})
    hints.setdefault("augment", bool | AugmentConfig | None)
    return hints


def _describe(dataset: Dataset) -> dict[str, Any]:
    describe = getattr(dataset, "describe", None)
    if callable(describe):
        return describe()
    desc: dict[str, Any] = {"kind": type(dataset).__name__, "num_samples": len(dataset)}  # type: ignore[arg-type]
    for attr in ("split", "seed"):
        if hasattr(dataset, attr):
            desc[attr] = getattr(dataset, attr)
    contract = getattr(dataset, "contract", None)
    if isinstance(contract, InputContract):
        desc["contract"] = contract.to_dict()
    config = getattr(dataset, "config", None)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        desc["config"] = dataclasses.asdict(config)
    return desc


def dataset_fingerprint(dataset: Dataset) -> str:
    """Stable sha256 describing a dataset: kind, the hashes of its label/metadata/split files, its videos' paths,
    sizes and modification times, split, contract, options and sample index."""
    fingerprint = getattr(dataset, "fingerprint", None)
    if callable(fingerprint):
        return str(fingerprint())
    return json_sha256(_describe(dataset))


def describe_dataset(dataset: Dataset) -> dict[str, Any]:
    """The JSON-able description a fingerprint is computed from (for checkpoint records)."""
    return _describe(dataset)
