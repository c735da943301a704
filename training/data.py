"""Datasets for training: build a split, optionally hold it in memory, index it, and iterate it deterministically.

The order of the training samples is a pure function of ``(seed, epoch)`` (see :class:`EpochSampler`) so that a run
resumed mid-epoch sees exactly the batches it would have seen, and two runs with one seed see the same batches.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pinlite_edge.utils.progress import progress_bar
from pinlite_edge.contract import InputContract
from pinlite_edge.data import dataset_fingerprint, describe_dataset
from pinlite_edge.data.augment import is_augmented
from pinlite_edge.data.mix import DataSource, MixedDataset, build_sources, resolve_sources
from pinlite_edge.errors import DatasetError

from pinlite_edge.training.config import in_memory_mode
from pinlite_edge.training.memory_cache import ByteBudgetLRU
from pinlite_edge.training.sampling import SamplingPlan, dataset_strata

log = logging.getLogger(__name__)

_TENSOR_KEYS = ("frames", "mfcc", "label", "manipulation", "offset_class")


class InMemoryDataset(Dataset):
    """Every sample of ``source`` materialised once into stacked tensors (same values, same order)."""

    def __init__(self, source: Dataset, num_workers: int = 0, progress: bool = False, desc: str = "loading"):
        n = len(source)  # type: ignore[arg-type]
        if n == 0:
            raise DatasetError("cannot hold an empty dataset in memory")
        loader = DataLoader(source, batch_size=16, shuffle=False, num_workers=num_workers)
        chunks: dict[str, list[Any]] = {k: [] for k in (*_TENSOR_KEYS, "clip_id")}
        for batch in _maybe_tqdm(loader, progress, desc):
            for k in chunks:
                chunks[k].append(batch[k])
        self.tensors = {k: torch.cat(chunks[k]) for k in _TENSOR_KEYS}
        self.clip_ids = [c for part in chunks["clip_id"] for c in part]
        self.source = source

    def __len__(self) -> int:
        return len(self.clip_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**{k: v[i] for k, v in self.tensors.items()}, "clip_id": self.clip_ids[i]}


class IndexedDataset(Dataset):
    """Adds ``index`` (position in the split) to every sample, to look up cached teacher outputs."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.base[i], "index": torch.tensor(i, dtype=torch.int64)}


@dataclass
class Split:
    """A loaded split: the dataset used for batches, its fingerprint and JSON description (for records)."""

    name: str
    dataset: Dataset
    fingerprint: str
    description: dict[str, Any]
    #: the dataset as built (before in-memory / index wrappers): what provenance and sampling read
    source: Dataset | None = None

    @property
    def augmented(self) -> bool:
        """Samples change from epoch to epoch (training augmentation): outputs on them cannot be cached."""
        return is_augmented(self.source if self.source is not None else self.dataset)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]


def _held_bytes(split: Split) -> int:
    """Bytes of the tensors a materialised split holds in memory."""
    base = split.dataset.base if isinstance(split.dataset, IndexedDataset) else split.dataset
    tensors = base.tensors.values() if isinstance(base, InMemoryDataset) else ()
    return sum(t.numel() * t.element_size() for t in tensors)


#: Materialised splits, reused by later stages of one process (quickstart, ablation); least recently used splits are
#: dropped beyond 4 GB (two splits at the default ``in_memory_limit_gb``). ``SPLIT_CACHE.clear()`` frees them.
SPLIT_CACHE: ByteBudgetLRU[str, Split] = ByteBudgetLRU("in-memory splits", 4 * 10**9, _held_bytes)


def _sample_bytes(contract: InputContract) -> int:
    frames = contract.num_frames * 3 * contract.frame_size * contract.frame_size
    return 4 * (frames + contract.mfcc_steps * contract.num_mfcc)


def load_split(spec: str | Sequence[str], split: str, contract: InputContract, *, cache_dir: str | None = None,
               options: dict[str, Any] | None = None, in_memory: str = "auto", limit_gb: float = 2.0,
               num_workers: int = 0, progress: bool = False, role: str = "eval") -> Split:
    """Build ``split`` of dataset ``spec`` (see :func:`pinlite_edge.data.build_dataset`); a list of specs is a mix
    (:mod:`pinlite_edge.data.mix`: options prefixed ``KIND.`` or ``N.``).

    ``in_memory``: ``yes`` materialises it, ``no`` reads lazily, ``auto`` materialises when it fits in ``limit_gb``.
    ``role``: ``train`` refuses a source holding one class only (:class:`DatasetError` with the fix), ``val`` warns
    loudly about it, ``eval`` does not check.
    """
    mode = in_memory_mode(in_memory)
    key = json.dumps([spec, split, contract.to_dict(), options or {}, cache_dir, mode, limit_gb], sort_keys=True,
                     default=str)
    sources = resolve_sources(spec, options)
    cached = SPLIT_CACHE.get(key)
    if cached is not None:
        check_classes(cached.source, sources, split, role)
        return cached
    base = build_sources(sources, split, contract, cache_dir=cache_dir)
    n = len(base)  # type: ignore[arg-type]
    if n == 0:
        raise DatasetError(f"split {split!r} of dataset {spec_label(spec)!r} is empty")
    check_classes(base, sources, split, role)
    fingerprint = dataset_fingerprint(base)
    description = describe_dataset(base)
    size_gb = n * _sample_bytes(contract) / 1e9
    dataset: Dataset = base
    if is_augmented(base) and mode != "no":
        # Materialising would freeze one augmentation; decoded clips stay in RAM in the datasets' clip loaders.
        log.info("%s split is augmented per epoch: not holding its samples in memory", split)
        if isinstance(base, MixedDataset):  # its un-augmented parts (the synthetic generator) still can be
            for i, part in enumerate(base.parts):
                part_gb = len(part) * _sample_bytes(contract) / 1e9  # type: ignore[arg-type]
                if not is_augmented(part) and (mode == "yes" or part_gb <= limit_gb):
                    base.parts[i] = InMemoryDataset(part, num_workers=num_workers, progress=progress,
                                                    desc=f"preparing {split} ({base.sources[i].spec})")
    elif mode == "yes" or (mode == "auto" and size_gb <= limit_gb):
        log.info("holding %s split (%d samples, %.2f GB) in memory", split, n, size_gb)
        dataset = InMemoryDataset(base, num_workers=num_workers, progress=progress, desc=f"preparing {split}")
        result = Split(split, IndexedDataset(dataset), fingerprint, description, base)
        SPLIT_CACHE.put(key, result)  # later stages of the same process (quickstart, ablation) reuse it
        return result
    return Split(split, IndexedDataset(dataset), fingerprint, description, base)


def spec_label(spec: str | Sequence[str]) -> str:
    return spec if isinstance(spec, str) else " + ".join(spec)


_ONE_CLASS_FIX = {
    "folder": "add --data-option sync_pairs=true to generate shifted and swapped fakes from in-sync real videos, or "
              "list fake videos in the folder's labels.csv",
    "lavdf": "use a split that holds real and fake clips (LAV-DF metadata: n_fakes > 0 and = 0)",
    "synthetic": "draw more clips (each clip's class is drawn at random, so a split of a few clips can hold one class "
                 "by chance: num_train / num_val; quickstart --smoke uses 4), and keep fake_fraction between 0 and 1",
}


def check_classes(dataset: Dataset, sources: Sequence[DataSource], split: str, role: str) -> None:
    """One class in a training source is an error; in a validation source a loud warning."""
    if role not in ("train", "val"):
        return
    strata = dataset_strata(dataset)
    if strata is None:
        return
    for s, source in enumerate(sources):
        counts = strata.class_counts(s)
        if min(counts.values()) > 0:
            continue
        have = "real" if counts["fake"] == 0 else "fake"
        fix = _ONE_CLASS_FIX.get(source.kind, "add samples of the other class")
        msg = (f"dataset {source.spec!r}, split {split!r}, holds only {have} samples ({counts[have]}): "
               f"a detector cannot learn real vs fake from one class; fix: {fix}")
        if role == "train":
            raise DatasetError(msg)
        log.warning("!!! %s. Validation AUC is undefined on it: checkpoint selection falls back to the validation "
                    "loss !!!", msg)


class EpochSampler(Sampler[int]):
    """Shuffled order from ``(seed, epoch)``; ``start`` skips already-consumed samples (mid-epoch resume).

    With a :class:`~pinlite_edge.training.sampling.SamplingPlan` the epoch's samples are the plan's draw (class
    balance, source weights; also a pure function of ``(seed, epoch)``), otherwise a permutation of ``range(size)``.
    Under DDP each rank takes every ``world_size``-th index of the shared list (the tail that does not divide evenly
    is dropped, so every rank runs the same number of steps).
    """

    def __init__(self, size: int, seed: int, epoch: int, start: int = 0, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1, plan: SamplingPlan | None = None):
        self.size, self.seed, self.epoch, self.start = size, seed, epoch, start
        self.shuffle, self.rank, self.world_size, self.plan = shuffle, rank, world_size, plan

    def order(self) -> list[int]:
        if self.plan is not None:
            perm = self.plan.epoch_indices(self.seed, self.epoch)
        elif self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            perm = torch.randperm(self.size, generator=g).tolist()
        else:
            perm = list(range(self.size))
        usable = (len(perm) // self.world_size) * self.world_size
        return perm[:usable][self.rank::self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.start:])

    def __len__(self) -> int:
        return max(0, len(self.order()) - self.start)


def make_loader(split: Split, batch_size: int, *, sampler: Sampler[int] | None = None, num_workers: int = 0,
                pin_memory: bool = False) -> DataLoader:
    """A DataLoader over ``split``; without a sampler the order is the split's order (evaluation)."""
    # A dedicated generator: creating the iterator must not draw from the global torch RNG (resume determinism).
    return DataLoader(split.dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=num_workers,
                      pin_memory=pin_memory, drop_last=False, generator=torch.Generator().manual_seed(0),
                      persistent_workers=False)


def _maybe_tqdm(iterable: Any, enabled: bool, desc: str) -> Any:
    if not enabled:
        return iterable
    return progress_bar(iterable, desc=desc, leave=False)
