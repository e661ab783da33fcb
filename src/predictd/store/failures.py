"""What a database failure means, for either backend, in one place; each read through the failure's whole
chain (SQLAlchemy wraps the driver's error, which may wrap another).

* ``contention``: another writer holds a lock, the pool or the server is out of connections. Retrying
  shortly can succeed, so the HTTP layer answers ``SERVICE_UNAVAILABLE`` (503, ``Retry-After``,
  ``retryable: true``) instead of an ``INTERNAL_ERROR``.
* ``unstorable``: the database refused a value itself (PostgreSQL's "data exception" class, a number too
  large for its column). Retrying the same write can never succeed, so the supervisor records the run as
  failed, naming why, instead of trying for ever.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import orjson
from sqlalchemy.exc import TimeoutError as PoolTimeout

from .sqlite_connection import is_busy

# PostgreSQL's SQLSTATEs for contention (https://www.postgresql.org/docs/current/errcodes-appendix.html).
_PG_CONTENTION = {
    "40001": "a serialization failure",
    "40P01": "a deadlock",
    "55P03": "a lock held by another transaction past lock_timeout",
    "53300": "too many connections to PostgreSQL",
    "57014": "a statement cancelled after its timeout",
}


def contention(failure: BaseException) -> str | None:
    """What the database was busy with, if ``failure`` (or what it wraps) is contention; else None."""
    return _first(failure, _busy_with)


def unstorable(failure: BaseException) -> str | None:
    """Why the database refused a value, if ``failure`` (or what it wraps) says so; else None."""
    return _first(failure, _refused_value)


def _first(failure: BaseException, reason_of: Callable[[BaseException], str | None]) -> str | None:
    seen: set[int] = set()
    current: BaseException | None = failure
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        reason = reason_of(current)
        if reason is not None:
            return reason
        wrapped = getattr(current, "orig", None)
        current = wrapped if isinstance(wrapped, BaseException) else current.__cause__ or current.__context__
    return None


def _refused_value(failure: BaseException) -> str | None:
    sqlstate = getattr(failure, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate.startswith("22"):  # PostgreSQL's class 22: data exception
        return f"PostgreSQL refused a value ({sqlstate}: {_first_line(failure)})"
    if isinstance(failure, sqlite3.DataError | OverflowError | orjson.JSONEncodeError):
        return f"a value the database cannot hold ({_first_line(failure)})"
    return None


def _first_line(failure: BaseException) -> str:
    # The driver's own sentence, without the statement or its parameters that may follow on later lines.
    return (str(failure).splitlines() or [type(failure).__name__])[0][:200]


def _busy_with(failure: BaseException) -> str | None:
    if isinstance(failure, sqlite3.OperationalError) and is_busy(failure):
        return "the SQLite database locked by another writer past sqlite_busy_timeout_ms"
    if isinstance(failure, PoolTimeout):
        return "every pooled database connection in use"
    sqlstate = getattr(failure, "sqlstate", None)
    return _PG_CONTENTION.get(sqlstate) if isinstance(sqlstate, str) else None
