"""Embedded mode's accounts hot paths on its own sqlite3 connection (see sqlite_connection.py): the key
lookup of every authenticated request, answered from memory while it is current, a plan and the credits.
The rest of ``SqlAccounts`` runs on SQLAlchemy; its writes reach SQLite through another connection, which
drops what is remembered here."""

from __future__ import annotations

import sqlite3

from ..core.domain import Account, ApiKey, Credits, Plan, utcnow
from . import rules
from .accounts import SqlAccounts
from .engines import Engine
from .rows import FIND_KEY, key_and_account, plan_of
from .schema import plans
from .sqlite_connection import FastConnection, Recent, row_bytes
from .sqlite_values import decoded, decoding, sqlite_text, stored_time

_FIND_KEY = sqlite_text(FIND_KEY)
_FIND_KEY_DECODING = decoding(FIND_KEY.selected_columns)
_GET_PLAN = f"SELECT {', '.join(c.name for c in plans.columns)} FROM plans WHERE name = ?"  # noqa: S608 (constants)
_PLAN_DECODING = decoding(plans.columns)
_INSERT_LEDGER = (
    "INSERT INTO ledger_entries (account_id, kind, amount_micros, prediction_id, note, created_at) "
    "VALUES (?, ?, ?, ?, NULL, ?)"
)


def credits_on(db: sqlite3.Connection, account_id: str) -> Credits:
    return rules.credits_of(db.execute(rules.CREDITS_SQL, {"account_id": account_id}).fetchone())


def append_entries_on(
    db: sqlite3.Connection, account_id: str, entries: list[rules.Entry], prediction_id: str
) -> None:
    """Append a prediction's ledger entries and move the account's running sums with them, in the caller's
    transaction."""
    if not entries:
        return
    now = stored_time(utcnow())
    db.executemany(
        _INSERT_LEDGER, [(account_id, kind, amount, prediction_id, now) for kind, amount in entries]
    )
    db.execute(rules.CHANGE_TOTALS_SQL, rules.totals_change(account_id, entries))


# The part of the connection's remembered bytes kept for keys (and their accounts); predictions take the rest.
KEYS_SHARE = 1 / 8


class SqliteAccounts(SqlAccounts):
    def __init__(self, engine: Engine, connection: FastConnection) -> None:
        super().__init__(engine)
        self._connection = connection
        self._keys: Recent[tuple[ApiKey, Account]] = connection.remembering(KEYS_SHARE)

    def remembered_key(self, key_hash: str) -> tuple[ApiKey, Account] | None:
        self._connection.recent_valid()
        return self._keys.get(key_hash)

    async def find_key(self, key_hash: str) -> tuple[ApiKey, Account] | None:
        self._connection.recent_valid()
        found = self._keys.get(key_hash)
        if found is None:
            row = await self._connection.read(
                lambda db: db.execute(_FIND_KEY, {"key_hash": key_hash}).fetchone()
            )
            if row is None:
                return None  # unknown keys are not remembered: guessing must not fill memory
            found = key_and_account(decoded(row, _FIND_KEY_DECODING))
            self._keys.put(key_hash, found, row_bytes(row))
        return found

    async def get_plan(self, name: str) -> Plan | None:
        row = await self._connection.read(lambda db: db.execute(_GET_PLAN, (name,)).fetchone())
        return plan_of(decoded(row, _PLAN_DECODING)) if row is not None else None

    async def credits(self, account_id: str) -> Credits:
        return await self._connection.read(lambda db: credits_on(db, account_id))
