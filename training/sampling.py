"""Which training samples an epoch draws: class balance by a sampler (not by luck) and the share of mixed sources.

A :class:`SamplingPlan` turns the per-sample ``(source, label, kind)`` of a training split (:func:`dataset_strata`;
nothing is decoded) into the sample indices of epoch ``e``, a pure function of ``(seed, e)``, so a resumed run sees
the same batches and DDP ranks can shard one shared list (see ``training.data.EpochSampler``).

Per source (one ``--data``):

- balanced (``--balance classes``, or ``auto`` for sync-pair data): every epoch draws equal numbers of real and fake
  samples, ``min(#real, #fake)`` each by default, and spreads each class evenly over its kinds (fakes: near shifts,
  far shifts, swaps; a kind with fewer samples than its share gives the rest to the others). Within a kind the
  samples come from a stream of per-cycle permutations, consumed epoch after epoch, so over the epochs every fake is
  used before any repeats.
- not balanced: every sample once per epoch (a permutation), as without a plan.
- ``weight`` (``--data-option KIND.weight=W`` on every source): the epoch keeps its total size (the sum of the
  sources' own sizes) and each source gets the share ``W / sum(W)`` of it.
- ``epoch_size`` (``--epoch-size N``): the epoch draws N samples instead of its natural size (shares as above).
- ``pairs`` (``--pair-weight W > 0``): in a balanced source whose samples name the in-sync window they were made
  from (sync-pair data, :func:`pinlite_edge.data.sample.pair_key`), every drawn fake brings its own real window
  instead of an independently drawn real, and the two sit next to each other in the epoch's order, so that a batch
  holds (real window, same window with wrong audio) pairs for the pair-ranking loss (``training/losses.py``). The
  class balance and the spread of the fakes over their kinds stay as above; the reals follow the fakes.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from pinlite_edge.errors import PinliteError
from pinlite_edge.training.config import BALANCE_MODES

log = logging.getLogger(__name__)

_CLASS_NAMES = ("real", "fake")


@dataclass(frozen=True)
class Strata:
    """Per sample: source number, label and kind; per source: name, weight and whether it balances by default."""

    sources: np.ndarray  # (N,) int
    labels: np.ndarray  # (N,) int
    kinds: np.ndarray  # (N,) str
    source_names: tuple[str, ...]
    weights: tuple[float | None, ...]
    balance_default: tuple[bool, ...]
    #: per sample, the in-sync window it was made from (``pair_key``); None for a sample of a source that cannot say
    keys: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def class_counts(self, source: int) -> dict[str, int]:
        mine = self.labels[self.sources == source]
        return {name: int((mine == c).sum()) for c, name in enumerate(_CLASS_NAMES)}


def _unwrap(dataset: Any) -> Any:
    """The dataset under training wrappers (``IndexedDataset.base``, ``InMemoryDataset.source``)."""
    seen = 0
    while seen < 8:
        if hasattr(dataset, "base") and not hasattr(dataset, "strata"):
            dataset = dataset.base
        elif hasattr(dataset, "source") and isinstance(getattr(dataset, "source"), Dataset) \
                and not hasattr(dataset, "strata"):
            dataset = dataset.source
        else:
            break
        seen += 1
    return dataset


def dataset_strata(dataset: Dataset, name: str = "data") -> Strata | None:
    """The strata of a (possibly mixed, possibly wrapped) dataset, or None when a part cannot tell its labels."""
    base = _unwrap(dataset)
    parts = getattr(base, "parts", None)
    sources = getattr(base, "sources", None)
    if parts is not None and sources is not None:
        pairs = list(zip(parts, [s.spec for s in sources], [s.weight for s in sources]))
    else:
        pairs = [(base, name, None)]
    src, labels, kinds, names, weights, defaults, keys = [], [], [], [], [], [], []
    for n, (part, part_name, weight) in enumerate(pairs):
        part = _unwrap(part)
        strata = getattr(part, "strata", None)
        if not callable(strata):
            return None
        lab, kin = strata()
        src.append(np.full(len(lab), n, dtype=np.int64))
        labels.append(np.asarray(lab, dtype=np.int64))
        kinds.append(np.asarray(kin, dtype=object))
        names.append(part_name)
        weights.append(weight)
        by_default = getattr(part, "balance_by_default", None)
        defaults.append(bool(by_default()) if callable(by_default) else False)
        pair_keys = getattr(part, "pair_keys", None)
        keys.append(np.asarray(pair_keys() if callable(pair_keys) else [None] * len(lab), dtype=object))
    return Strata(np.concatenate(src), np.concatenate(labels), np.concatenate(kinds), tuple(names), tuple(weights),
                  tuple(defaults), np.concatenate(keys))


def _spread(total: int, sizes: list[int]) -> list[int]:
    """``total`` draws over pools of ``sizes``: equal shares, capped at a pool's size while others have room."""
    k = len(sizes)
    takes = [0] * k
    if k == 0 or total <= 0:
        return takes
    if total >= sum(sizes):  # every sample at least once, the extra spread evenly (repeats)
        takes = list(sizes)
        extra = total - sum(sizes)
        for i in range(k):
            takes[i] += extra // k + (1 if i < extra % k else 0)
        return takes
    left = total
    open_ = [i for i in range(k) if sizes[i] > 0]
    while left > 0 and open_:
        share, rest = divmod(left, len(open_))
        for j, i in enumerate(list(open_)):
            add = min(share + (1 if j < rest else 0), sizes[i] - takes[i])
            takes[i] += add
            left -= add
        open_ = [i for i in open_ if takes[i] < sizes[i]]
    return takes


def _key(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


@dataclass(frozen=True)
class _Pool:
    source: int
    label: int  # -1: the whole (unbalanced) source
    kind: str
    indices: np.ndarray
    take: int  # draws per epoch


class SamplingPlan:
    """The per-epoch draw of a training split (see the module docstring)."""

    def __init__(self, strata: Strata, mode: str = "auto", epoch_size: int | None = None, pairs: bool = False):
        if epoch_size is not None and epoch_size < 1:
            raise PinliteError(f"epoch_size must be a positive number of samples, got {epoch_size}")
        if mode not in BALANCE_MODES:
            raise PinliteError(f"unknown --balance {mode!r}; choose one of {', '.join(BALANCE_MODES)}")
        self.mode = mode
        self.strata = strata
        n_src = len(strata.source_names)
        self.balanced = []
        natural = []
        for s in range(n_src):
            counts = strata.class_counts(s)
            want = mode == "classes" or (mode == "auto" and strata.balance_default[s])
            if want and min(counts.values()) == 0:
                log.warning("cannot balance the classes of %s: it holds only %s samples", strata.source_names[s],
                            "real" if counts["fake"] == 0 else "fake")
                want = False
            self.balanced.append(want)
            natural.append(2 * min(counts.values()) if want else int((strata.sources == s).sum()))
        total = epoch_size or sum(natural)
        if all(w is not None for w in strata.weights) and n_src > 1:
            wsum = sum(float(w) for w in strata.weights)  # type: ignore[arg-type]
            counts_ = [max(1, int(round(total * float(w) / wsum))) for w in strata.weights]  # type: ignore[arg-type]
        elif epoch_size is not None:  # each source keeps its natural share of the requested size
            counts_ = [max(1, int(round(total * n / max(1, sum(natural))))) for n in natural]
        else:
            counts_ = natural
        self.per_source = counts_
        self.pools: list[_Pool] = []
        for s in range(n_src):
            mask = strata.sources == s
            if not self.balanced[s]:
                self.pools.append(_Pool(s, -1, "*", np.flatnonzero(mask), counts_[s]))
                continue
            half = {0: counts_[s] // 2, 1: counts_[s] - counts_[s] // 2}
            for label in (0, 1):
                sel = mask & (strata.labels == label)
                kinds = sorted(set(strata.kinds[sel].tolist()))
                pools = [np.flatnonzero(sel & (strata.kinds == k)) for k in kinds]
                for k, idx, take in zip(kinds, pools, _spread(half[label], [len(p) for p in pools])):
                    self.pools.append(_Pool(s, label, k, idx, take))
        self.size = sum(p.take for p in self.pools)
        #: per source that pairs (balanced, its samples name their window): pair key -> index of the real window
        self.real_of: dict[int, dict[Any, int]] = {}
        if pairs:
            for s in range(n_src):
                if not self.balanced[s] or strata.keys is None:
                    continue
                reals = np.flatnonzero((strata.sources == s) & (strata.labels == 0))
                real_of = {strata.keys[i]: int(i) for i in reals if strata.keys[i] is not None}
                fakes = np.flatnonzero((strata.sources == s) & (strata.labels == 1))
                if real_of and any(strata.keys[i] in real_of for i in fakes):
                    self.real_of[s] = real_of
            if not self.real_of:
                log.warning("pairing fakes with their real windows (--pair-weight): no balanced source of %s holds "
                            "fakes made from its own real windows (sync pairs); the epochs are drawn unpaired",
                            ", ".join(strata.source_names))
        self.pairs = bool(self.real_of)

    @property
    def trivial(self) -> bool:
        """True when the plan draws every sample once per epoch (one unbalanced, unweighted source)."""
        return len(self.pools) == 1 and self.pools[0].take == len(self.pools[0].indices)

    def _draw(self, pool: _Pool, seed: int, epoch: int) -> np.ndarray:
        m = len(pool.indices)
        if pool.take == 0 or m == 0:
            return np.zeros(0, dtype=np.int64)
        positions = np.arange(epoch * pool.take, (epoch + 1) * pool.take, dtype=np.int64)
        out = np.empty(pool.take, dtype=np.int64)
        for cycle in np.unique(positions // m):
            rng = np.random.default_rng([seed & 0xFFFFFFFF, pool.source, pool.label + 1, _key(pool.kind), int(cycle)])
            perm = rng.permutation(m)
            sel = positions // m == cycle
            out[sel] = pool.indices[perm[positions[sel] % m]]
        return out

    def epoch_indices(self, seed: int, epoch: int) -> list[int]:
        """Dataset indices of epoch ``epoch`` in training order (a pure function of ``seed`` and ``epoch``)."""
        draws = [self._draw(p, seed, epoch) for p in self.pools]
        rng = np.random.default_rng([seed & 0xFFFFFFFF, int(epoch), 0x5A3B])
        if self.pairs:
            units = self._pair_units(draws)
            return [i for u in rng.permutation(len(units)) for i in units[u]]
        drawn = np.concatenate(draws) if draws else np.zeros(0, dtype=np.int64)
        return drawn[rng.permutation(len(drawn))].tolist()

    def _pair_units(self, draws: list[np.ndarray]) -> list[tuple[int, ...]]:
        """The epoch's draw as units: (real, fake) pairs in pairing sources, single samples otherwise.

        A pairing source's fakes keep their draw; each takes the place of one drawn real with its own window (a
        fake whose window has no real sample in the split keeps a drawn real beside it instead), so the epoch's
        size and class balance do not change."""
        units: list[tuple[int, ...]] = []
        for s in range(len(self.strata.source_names)):
            mine = [(p, d) for p, d in zip(self.pools, draws) if p.source == s]
            if s not in self.real_of:
                units += [(int(i),) for _, d in mine for i in d]
                continue
            reals = [int(i) for p, d in mine if p.label == 0 for i in d]
            fakes = [int(i) for p, d in mine if p.label == 1 for i in d]
            real_of = self.real_of[s]
            left = reals[::-1]  # drawn reals not yet replaced by a pair's own real
            for f in fakes:
                r = real_of.get(self.strata.keys[f])  # type: ignore[index]
                if r is not None and left:
                    left.pop()
                    units.append((r, f))
                else:
                    units.append((f,))
            units += [(r,) for r in left[::-1]]
        return units

    def describe(self) -> dict[str, Any]:
        """What the checkpoint records (and what a resumed run must match)."""
        sources = []
        for s, name in enumerate(self.strata.source_names):
            draws: dict[str, dict[str, int]] = {}
            for p in self.pools:
                if p.source == s:
                    cls = "all" if p.label < 0 else _CLASS_NAMES[p.label]
                    draws.setdefault(cls, {})[p.kind] = p.take
            sources.append({"name": name, "balanced": self.balanced[s], "weight": self.strata.weights[s],
                            "samples": int((self.strata.sources == s).sum()),
                            "classes": self.strata.class_counts(s), "per_epoch": self.per_source[s],
                            "draws": draws})
        out = {"mode": self.mode, "epoch_size": self.size, "sources": sources}
        if self.pairs:  # only when on, so plans recorded before pairing existed still compare equal on resume
            out["pairs"] = sorted(self.strata.source_names[s] for s in self.real_of)
        return out


def sampling_plan(dataset: Dataset, mode: str = "auto", name: str = "data",
                  epoch_size: int | None = None, pairs: bool = False) -> SamplingPlan | None:
    """The plan for training on ``dataset``; None when every sample is simply drawn once per epoch.

    ``epoch_size``: samples per epoch (default: the natural size, see the module docstring); the draw stream goes on
    across epochs, so a small epoch still visits every sample over several epochs."""
    if mode not in BALANCE_MODES:
        raise PinliteError(f"unknown --balance {mode!r}; choose one of {', '.join(BALANCE_MODES)}")
    strata = dataset_strata(dataset, name)
    if strata is None:
        if epoch_size is not None:
            raise PinliteError(f"--epoch-size needs a dataset whose samples can be listed without decoding ({name})")
        if mode == "classes":
            log.warning("--balance classes: the dataset %s cannot list its labels without decoding; not balancing",
                        name)
        if pairs:
            log.warning("--pair-weight: the dataset %s cannot list its samples without decoding; the epochs are "
                        "drawn unpaired", name)
        return None
    plan = SamplingPlan(strata, mode, epoch_size, pairs)
    return None if plan.trivial else plan
