"""Memory caches kept bounded without bookkeeping on reads."""

from __future__ import annotations

import itertools
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


def put_bounded(rows: dict[K, V], key: K, value: V, limit: int) -> None:
    """``rows[key] = value``; a new key in a full ``rows`` (``limit`` entries) first drops the oldest half.

    Cheaper than an LRU for the caches of hot reads: a hit costs one dictionary lookup, and the eviction,
    rare, runs in insertion order."""
    if len(rows) >= limit and key not in rows:
        for old in list(itertools.islice(rows, limit // 2)):
            del rows[old]
    rows[key] = value


# An entry larger than this share of a cache's byte budget is not kept: one huge value must not evict
# everything else, nor sit in memory on its own.
ENTRY_SHARE = 8


class BytesBounded(Generic[K, V]):
    """A dictionary kept under ``max_bytes`` in all (each value weighed by the size its caller gives, such as
    its serialized JSON) and under ``max_rows``. Past either bound the oldest entries go, down to three
    quarters of it, so that an eviction, which walks the entries in insertion order, stays rare; a value
    weighing more than ``max_bytes / ENTRY_SHARE`` is not kept at all.

    A hit is one dictionary lookup (``rows.get``), as with ``put_bounded``."""

    __slots__ = ("_sizes", "held_bytes", "max_bytes", "max_rows", "rows")

    def __init__(self, max_bytes: int, max_rows: int) -> None:
        self.rows: dict[K, V] = {}
        self._sizes: dict[K, int] = {}
        self.held_bytes = 0  # the sum of the sizes of what ``rows`` holds
        self.max_bytes = max_bytes
        self.max_rows = max_rows

    def get(self, key: K) -> V | None:
        return self.rows.get(key)

    def size_of(self, key: K) -> int:
        return self._sizes.get(key, 0)

    def put(self, key: K, value: V, size: int) -> None:
        self.drop(key)
        if size > self.max_bytes // ENTRY_SHARE:
            return
        if self.held_bytes + size > self.max_bytes or len(self.rows) >= self.max_rows:
            self._evict(self.max_bytes * 3 // 4 - size, self.max_rows * 3 // 4)
        self.rows[key] = value
        self._sizes[key] = size
        self.held_bytes += size

    def drop(self, key: K) -> None:
        if self.rows.pop(key, _MISSING) is not _MISSING:
            self.held_bytes -= self._sizes.pop(key)

    def clear(self) -> None:
        self.rows.clear()
        self._sizes.clear()
        self.held_bytes = 0

    def _evict(self, keep_bytes: int, keep_rows: int) -> None:
        """Drop the oldest entries until at most ``keep_bytes`` and fewer than ``keep_rows`` are left."""
        gone: list[K] = []
        left_bytes, left_rows = self.held_bytes, len(self.rows)
        for key, size in self._sizes.items():
            if left_bytes <= keep_bytes and left_rows < keep_rows:
                break
            gone.append(key)
            left_bytes -= size
            left_rows -= 1
        for key in gone:
            del self.rows[key]
            del self._sizes[key]
        self.held_bytes = left_bytes


_MISSING: Any = object()
