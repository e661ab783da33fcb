"""Memory caches kept bounded without bookkeeping on reads."""

from __future__ import annotations

import itertools
from typing import TypeVar

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
