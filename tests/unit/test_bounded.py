"""The bounded caches' eviction (status reads, remembered keys and principals, rendered bodies)."""

from __future__ import annotations

from predictd.core.bounded import put_bounded


def test_a_new_key_in_a_full_cache_drops_the_oldest_half_first() -> None:
    rows: dict[str, int] = {}
    for i in range(8):
        put_bounded(rows, f"k{i}", i, limit=8)
    assert list(rows) == [f"k{i}" for i in range(8)]
    put_bounded(rows, "new", 99, limit=8)
    assert list(rows) == ["k4", "k5", "k6", "k7", "new"]
    assert rows["new"] == 99


def test_replacing_a_key_of_a_full_cache_drops_nothing() -> None:
    rows = {f"k{i}": i for i in range(8)}
    put_bounded(rows, "k0", -1, limit=8)
    assert len(rows) == 8
    assert rows["k0"] == -1
