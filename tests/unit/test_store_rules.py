"""The store's rules of money and state (store/rules.py), and their SQL text run on a real SQLite."""

from __future__ import annotations

import sqlite3

import pytest

from predictd.core.domain import Credits, CreditsRefused, Status, sources_of
from predictd.core.ports import Move
from predictd.store import rules


def test_a_success_is_charged_its_cost_and_never_more_than_was_held() -> None:
    assert rules.settlement_entries(2_000_000, Status.SUCCEEDED, 1.5) == [
        ("release", 2_000_000),
        ("charge", 1_500_000),
    ]
    assert rules.settlement_entries(1_000_000, Status.SUCCEEDED, 1.5) == [
        ("release", 1_000_000),
        ("charge", 1_000_000),
    ]


@pytest.mark.parametrize("status", [Status.FAILED, Status.CANCELLED, Status.TIMED_OUT])
def test_anything_but_a_success_only_releases_what_was_held(status: Status) -> None:
    assert rules.settlement_entries(2_000_000, status, 1.5) == [("release", 2_000_000)]


def test_nothing_held_nothing_settled_and_no_charge_of_nothing() -> None:
    assert rules.settlement_entries(0, Status.SUCCEEDED, 1.5) == []
    assert rules.settlement_entries(2_000_000, Status.SUCCEEDED, None) == [("release", 2_000_000)]
    assert rules.settlement_entries(2_000_000, Status.SUCCEEDED, 1e-9) == [("release", 2_000_000)]


def test_a_reservation_is_refused_when_overdrawn_or_not_covered() -> None:
    assert rules.reservation_entries(Credits(5, 2), 3) == [("reserve", 3)]
    with pytest.raises(CreditsRefused) as refused:
        rules.reservation_entries(Credits(5, 2), 4)
    assert (refused.value.credits, refused.value.needed_micros) == (Credits(5, 2), 4)
    with pytest.raises(CreditsRefused):
        rules.reservation_entries(Credits(-1, -5), 0)  # overdrawn: even a free run waits for a top-up


def test_the_status_guard_matches_exactly_the_states_a_target_may_be_entered_from() -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE predictions (id TEXT, status TEXT)")
    db.executemany("INSERT INTO predictions VALUES (?, ?)", [(s.value, s.value) for s in Status])
    for target in Status:
        guard = rules.status_guard_sql(target)
        matched = {Status(r[0]) for r in db.execute(f"SELECT id FROM predictions WHERE {guard}")}
        assert matched == sources_of(target), target


def test_ledger_sums_in_sql_agree_with_the_running_sums_moved_by_each_entry() -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE ledger_entries (account_id TEXT, kind TEXT, amount_micros INT)")
    db.execute(
        "CREATE TABLE account_credits (account_id TEXT PRIMARY KEY, balance_micros INT, reserved_micros INT)"
    )
    entries = [("grant", 9), ("charge", 2), ("reserve", 5), ("release", 3), ("adjust", -1), ("other", 7)]
    for kind, amount in entries:
        db.execute("INSERT INTO ledger_entries VALUES ('a', ?, ?)", (kind, amount))
        db.execute(rules.CHANGE_TOTALS_SQL, rules.totals_change("a", [(kind, amount)]))
    summed = db.execute(rules.LEDGER_SUMS_SQL, {"account_id": "a"}).fetchone()
    running = rules.credits_of(db.execute(rules.CREDITS_SQL, {"account_id": "a"}).fetchone())
    assert running == Credits(balance_micros=9 - 2 - 1, reserved_micros=5 - 3)
    assert Credits(*summed) == running
    assert rules.credits_of(db.execute(rules.CREDITS_SQL, {"account_id": "b"}).fetchone()) == Credits(0, 0)


def test_a_move_sets_only_known_columns_and_counting_an_attempt_wins() -> None:
    counted = Move("p", Status.PROCESSING, count_attempt=True, changes={"attempts": 9, "started_at": None})
    assert rules.move_changes(counted) == {"started_at": None}
    assert rules.counters(True) == {"version": "version + 1", "attempts": "attempts + 1"}
    assert rules.counters(False) == {"version": "version + 1"}
    for column in ("version", "status", "id", "no_such_column"):
        with pytest.raises(ValueError, match=column):
            rules.move_changes(Move("p", Status.PROCESSING, changes={column: 1}))
