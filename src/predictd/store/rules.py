"""The rules that decide money and state, written once for both ways the store reaches its database:
SQLAlchemy (PostgreSQL, and SQLite's less travelled paths) and embedded mode's own sqlite3 connection.

Small pure functions decide; the SQL text both paths run is written here, with named parameters
(``:name``), which SQLAlchemy's ``text()`` and sqlite3 both accept. Each path only binds values as its
driver wants them and runs the statements in its own transaction.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..core.domain import Credits, CreditsRefused, Status, sources_of, to_micros
from ..core.ports import Move
from .schema import predictions

# -- the credits ledger ------------------------------------------------------------------------------------

Entry = tuple[str, int]  # a ledger entry's kind and amount, in micros

# How each kind of entry moves an account's two sums: balance = grants + adjustments - charges, and
# reserved = reserves - releases.
BALANCE_SIGNS: Mapping[str, int] = {"grant": 1, "adjust": 1, "charge": -1}
RESERVED_SIGNS: Mapping[str, int] = {"reserve": 1, "release": -1}
# What an operator may enter by hand; the others are written by submits and settlements.
HAND_ENTERED = frozenset({"grant", "adjust"})


def _signed_sum(signs: Mapping[str, int]) -> str:
    cases = " ".join(
        f"WHEN '{kind}' THEN {'-' if sign < 0 else ''}amount_micros" for kind, sign in signs.items()
    )
    return f"COALESCE(SUM(CASE kind {cases} ELSE 0 END), 0)"


# What a prediction's reservation still holds: its reserves less its releases.
HELD_SQL = f"SELECT {_signed_sum(RESERVED_SIGNS)} FROM ledger_entries WHERE prediction_id = :prediction_id"  # noqa: S608 (constants)
# An account's credits summed from its whole ledger: what its running sums must always equal.
LEDGER_SUMS_SQL = (
    f"SELECT {_signed_sum(BALANCE_SIGNS)}, {_signed_sum(RESERVED_SIGNS)} "  # noqa: S608 (constants)
    "FROM ledger_entries WHERE account_id = :account_id"
)
# The running sums (schema.account_credits), read instead of summing the account's whole history.
CREDITS_SQL = "SELECT balance_micros, reserved_micros FROM account_credits WHERE account_id = :account_id"
# Moves the running sums with the entries written in the same transaction (creating the account's row).
# On PostgreSQL it locks that row until the transaction ends.
CHANGE_TOTALS_SQL = (
    "INSERT INTO account_credits (account_id, balance_micros, reserved_micros) "
    "VALUES (:account_id, :balance_micros, :reserved_micros) "
    "ON CONFLICT (account_id) DO UPDATE SET "
    "balance_micros = account_credits.balance_micros + excluded.balance_micros, "
    "reserved_micros = account_credits.reserved_micros + excluded.reserved_micros"
)


def totals_change(account_id: str, entries: Iterable[Entry]) -> dict[str, Any]:
    """CHANGE_TOTALS_SQL's parameters for ``entries``."""
    balance = reserved = 0
    for kind, amount in entries:
        balance += amount * BALANCE_SIGNS.get(kind, 0)
        reserved += amount * RESERVED_SIGNS.get(kind, 0)
    return {"account_id": account_id, "balance_micros": balance, "reserved_micros": reserved}


def credits_of(row: Sequence[Any] | None) -> Credits:
    """The credits from CREDITS_SQL's row (none yet: an account with no entries)."""
    if row is None:
        return Credits(balance_micros=0, reserved_micros=0)
    return Credits(balance_micros=int(row[0]), reserved_micros=int(row[1]))


def reservation_entries(credits: Credits, amount_micros: int) -> list[Entry]:
    """What a prepaid submit holds of ``credits``. Refused (CreditsRefused) when the account is overdrawn
    or what is available does not cover it. The caller must hold the account's credits still (its row lock
    or the database's write lock) from reading ``credits`` to writing the entries."""
    if credits.balance_micros < 0 or credits.available_micros < amount_micros:
        raise CreditsRefused(credits, amount_micros)
    return [("reserve", amount_micros)]


def settlement_entries(held_micros: int, status: Status, cost: float | None) -> list[Entry]:
    """What closes a prediction that ended in ``status`` holding ``held_micros`` (HELD_SQL): everything
    held is released, and a success alone is charged its cost, never more than was held."""
    if not held_micros:
        return []
    entries: list[Entry] = [("release", held_micros)]
    charge = min(to_micros(cost), held_micros) if status is Status.SUCCEEDED and cost else 0
    if charge:
        entries.append(("charge", charge))
    return entries


# -- the state machine -------------------------------------------------------------------------------------

# Set by every status change itself, never by the caller's changes.
_MOVE_SETS = frozenset({"id", "status", "version"})
SETTABLE_COLUMNS = frozenset(c.name for c in predictions.columns) - _MOVE_SETS


@functools.cache
def status_guard_sql(target: Status) -> str:
    """The condition of every change to ``target``: the row is in a state the state machine allows it to be
    entered from. Concurrent changes of one prediction (two workers' claims, a cancel racing a completion)
    are decided by it: the first to commit matches, the others find nothing to update."""
    allowed = ", ".join(f"'{s.value}'" for s in sorted(sources_of(target)))
    return f"status IN ({allowed})"


def counters(count_attempt: bool) -> dict[str, str]:
    """The counters a status change moves, as SQL expressions: its version always, its attempts when the
    change starts one."""
    if count_attempt:
        return {"version": "version + 1", "attempts": "attempts + 1"}
    return {"version": "version + 1"}


def move_changes(move: Move) -> dict[str, Any]:
    """The other columns ``move`` sets. Only known columns that a status change does not set itself; an
    attempts value gives way to counting the attempt."""
    changes = dict(move.changes)
    unknown = set(changes) - SETTABLE_COLUMNS
    if unknown:
        raise ValueError(f"unknown prediction columns: {sorted(unknown)}")
    if move.count_attempt:
        changes.pop("attempts", None)
    return changes
