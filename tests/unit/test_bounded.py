"""The bounded caches' eviction (status reads, remembered keys and principals, rendered bodies)."""

from __future__ import annotations

from predictd.core.bounded import BytesBounded, put_bounded


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


def test_a_byte_bounded_cache_drops_its_oldest_entries_once_over_its_bytes() -> None:
    cache: BytesBounded[str, str] = BytesBounded(max_bytes=800, max_rows=100)
    for i in range(8):
        cache.put(f"k{i}", "v", 100)
    assert cache.held_bytes == 800
    cache.put("new", "v", 100)  # 900 > 800: the oldest go, down to 600 with the new one
    assert list(cache.rows) == ["k3", "k4", "k5", "k6", "k7", "new"]
    assert cache.held_bytes == 600


def test_a_byte_bounded_cache_keeps_no_entry_over_an_eighth_of_its_bytes() -> None:
    cache: BytesBounded[str, str] = BytesBounded(max_bytes=800, max_rows=100)
    cache.put("small", "v", 100)
    cache.put("huge", "v", 101)
    assert cache.get("huge") is None
    cache.put("small", "bigger now", 101)  # a replaced entry that grew too large is forgotten
    assert cache.get("small") is None
    assert cache.held_bytes == 0


def test_a_byte_bounded_cache_counts_replaced_and_dropped_entries_once() -> None:
    cache: BytesBounded[str, str] = BytesBounded(max_bytes=800, max_rows=100)
    cache.put("a", "1", 50)
    cache.put("a", "2", 70)
    cache.put("b", "3", 30)
    assert (cache.get("a"), cache.held_bytes) == ("2", 100)
    cache.drop("a")
    cache.drop("a")
    assert cache.held_bytes == 30
    cache.clear()
    assert (cache.rows, cache.held_bytes) == ({}, 0)


def test_a_byte_bounded_cache_still_bounds_its_rows() -> None:
    cache: BytesBounded[int, int] = BytesBounded(max_bytes=10**9, max_rows=8)
    for i in range(9):
        cache.put(i, i, 1)
    assert list(cache.rows) == [3, 4, 5, 6, 7, 8]
