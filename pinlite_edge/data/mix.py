"""Several datasets trained on together (e.g. real sync pairs AND the synthetic generator).

On the command line: ``--data folder:../shared/data/real-av --data synthetic`` (repeatable). Options are routed by
a prefix: ``KIND.KEY=VALUE`` (``folder.split_file=real_av``, ``synthetic.num_train=600``) or ``N.KEY=VALUE`` (N is
the 1-based position of the ``--data``; needed when two sources have the same kind). An option without a prefix is
fine with one source and an error with several. ``weight`` (per source, > 0) sets each source's share of a training
epoch (give it to every source or to none; without weights each source contributes its own epoch size, see
``pinlite_edge.training.sampling``).
"""
from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from torch.utils.data import Dataset

from pinlite_edge.contract import InputContract
from pinlite_edge.errors import DataOptionError, DatasetError
from pinlite_edge.utils.hashing import json_sha256

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSource:
    """One dataset of a (possibly mixed) training set: its spec, its options and its epoch share."""

    spec: str
    options: dict[str, Any] = field(default_factory=dict)
    weight: float | None = None

    @property
    def kind(self) -> str:
        return self.spec.strip().partition(":")[0].lower()


def resolve_sources(specs: str | Sequence[str], options: Mapping[str, Any] | None = None) -> list[DataSource]:
    """Pair every spec with its options (see the module docstring for the ``KIND.`` / ``N.`` prefixes)."""
    from pinlite_edge.data.registry import parse_spec

    spec_list = [specs] if isinstance(specs, str) else list(specs)
    if not spec_list:
        raise DataOptionError("no dataset given; use --data synthetic, --data folder:PATH or --data lavdf:PATH")
    kinds = [parse_spec(s)[0] for s in spec_list]
    per: list[dict[str, Any]] = [{} for _ in spec_list]
    for key, value in (options or {}).items():
        prefix, dot, rest = key.partition(".")
        if dot and prefix.isdigit():
            n = int(prefix)
            if not 1 <= n <= len(spec_list):
                raise DataOptionError(f"data option {key!r}: there is no --data number {n} (1..{len(spec_list)})")
            per[n - 1][rest] = value
        elif dot and prefix.lower() in kinds:
            hits = [i for i, k in enumerate(kinds) if k == prefix.lower()]
            if len(hits) > 1:
                raise DataOptionError(f"data option {key!r}: {len(hits)} --data sources are {prefix!r}; prefix the "
                                      f"option with the source's position instead, e.g. {hits[0] + 1}.{rest}=...")
            per[hits[0]][rest] = value
        elif dot and not prefix.isidentifier():
            raise DataOptionError(f"data option {key!r}: the prefix {prefix!r} is neither a dataset kind in use "
                                  f"({', '.join(kinds)}) nor a position 1..{len(spec_list)}")
        elif dot:
            raise DataOptionError(f"data option {key!r}: no --data source of kind {prefix!r} (sources: "
                                  f"{', '.join(spec_list)})")
        elif len(spec_list) == 1:
            per[0][key] = value
        else:
            examples = ", ".join(f"{k}.{key}" for k in dict.fromkeys(kinds))
            raise DataOptionError(f"data option {key!r} is ambiguous with {len(spec_list)} --data sources; prefix it "
                                  f"with the source's kind or position, e.g. {examples} or 1.{key}")
    sources = []
    for spec, opts in zip(spec_list, per):
        weight = opts.pop("weight", None)
        if weight is not None:
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
                raise DataOptionError(f"data option 'weight' of {spec!r}: expected a number > 0 (its share of an "
                                      f"epoch), got {weight!r}")
            weight = float(weight)
        sources.append(DataSource(spec, opts, weight))
    given = [s.weight is not None for s in sources]
    if any(given) and not all(given):
        raise DataOptionError("data option 'weight': give a weight to every --data source or to none (sources without: "
                              f"{[s.spec for s in sources if s.weight is None]})")
    if len(sources) == 1 and sources[0].weight is not None:
        log.warning("data option 'weight' has no effect with a single --data source")
    return sources


class MixedDataset(Dataset):
    """The concatenation of several datasets; the sampler draws each source's share per epoch."""

    kind = "mix"

    def __init__(self, parts: Sequence[Dataset], sources: Sequence[DataSource]):
        if len(parts) != len(sources) or not parts:
            raise DatasetError("MixedDataset needs one dataset per source")
        self.parts = list(parts)
        self.sources = list(sources)
        self.offsets: list[int] = []
        total = 0
        for p in self.parts:
            self.offsets.append(total)
            total += len(p)  # type: ignore[arg-type]
        self._length = total

    def __len__(self) -> int:
        return self._length

    def locate(self, index: int) -> tuple[int, int]:
        """``(source number, index within it)`` of sample ``index``."""
        if not 0 <= index < self._length:
            raise IndexError(f"mixed dataset index {index} out of range (len {self._length})")
        s = bisect.bisect_right(self.offsets, index) - 1
        return s, index - self.offsets[s]

    def __getitem__(self, index: int) -> dict[str, Any]:
        s, i = self.locate(int(index))
        return self.parts[s][i]

    def describe(self) -> dict[str, Any]:
        from pinlite_edge.data.registry import describe_dataset

        return {"kind": self.kind, "num_samples": len(self),
                "sources": [{"spec": src.spec, "weight": src.weight, **describe_dataset(p)}
                            for src, p in zip(self.sources, self.parts)]}

    def fingerprint(self) -> str:
        from pinlite_edge.data.registry import dataset_fingerprint

        parts = [[src.spec, src.weight, dataset_fingerprint(p)] for src, p in zip(self.sources, self.parts)]
        return json_sha256(parts)


def build_sources(sources: Sequence[DataSource], split: str, contract: InputContract, *,
                  cache_dir: str | Path | None = None) -> Dataset:
    """One source: its dataset; several: a :class:`MixedDataset` of them (in the given order)."""
    from pinlite_edge.data.registry import build_dataset

    parts = [build_dataset(s.spec, split, contract, cache_dir=cache_dir, **s.options) for s in sources]
    if len(parts) == 1:
        return parts[0]
    return MixedDataset(parts, sources)
