"""A least-recently-used in-memory cache with a byte budget: the one bound for training's process-wide caches.

Two caches use it: the materialised splits of :func:`pinlite_edge.training.data.load_split` (``SPLIT_CACHE``: the
quickstart and ablations reuse a split across stages) and the frozen teachers' outputs of
:mod:`pinlite_edge.training.teacher_cache` (``TEACHER_OUTPUT_CACHE``). A value that would take the cache over its
budget evicts the least recently used entries first; a value larger than the whole budget is not kept. ``clear()``
drops everything; ``max_bytes`` can be changed at any time (a smaller budget evicts at once).
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Callable, Generic, Hashable, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ByteBudgetLRU(Generic[K, V]):
    """``get`` / ``put`` by key; ``size_of(value)`` is the value's size in bytes, counted against ``max_bytes``."""

    def __init__(self, name: str, max_bytes: int, size_of: Callable[[V], int]):
        if max_bytes < 0:
            raise ValueError(f"{name}: max_bytes must be >= 0, not {max_bytes}")
        self.name = name
        self._max_bytes = int(max_bytes)
        self._size_of = size_of
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._bytes = 0

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @max_bytes.setter
    def max_bytes(self, value: int) -> None:
        if value < 0:
            raise ValueError(f"{self.name}: max_bytes must be >= 0, not {value}")
        self._max_bytes = int(value)
        self._evict(0)

    @property
    def nbytes(self) -> int:
        """Bytes held now (the sum of ``size_of`` over the entries)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: K) -> V | None:
        """The value for ``key`` (now the most recently used), or ``None``."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: K, value: V) -> bool:
        """Keep ``value`` under ``key``, evicting least recently used entries to stay within the budget.

        Returns ``False`` (nothing kept, nothing evicted) when the value alone is larger than the budget."""
        size = int(self._size_of(value))
        self.pop(key)
        if size > self._max_bytes:
            log.info("%s: not keeping an entry of %.1f MB (budget %.1f MB)", self.name, size / 1e6,
                     self._max_bytes / 1e6)
            return False
        self._evict(size)
        self._entries[key] = (value, size)
        self._bytes += size
        return True

    def pop(self, key: K) -> V | None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        self._bytes -= entry[1]
        return entry[0]

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def _evict(self, incoming: int) -> None:
        while self._entries and self._bytes + incoming > self._max_bytes:
            key, (_, size) = self._entries.popitem(last=False)
            self._bytes -= size
            log.info("%s: evicted an entry of %.1f MB to stay within %.1f MB", self.name, size / 1e6,
                     self._max_bytes / 1e6)
