"""Values as SQLAlchemy stores them on SQLite, for embedded mode's sqlite3 connection: both must read what
the other wrote. How each column is stored follows from its type in schema.py."""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Boolean, ColumnElement, Float, Integer, String, Table
from sqlalchemy.dialects import sqlite
from sqlalchemy.sql.elements import ClauseElement

from .schema import Json, UTCDateTime, read_sqlite_json, sqlite_json


class Stored(enum.Enum):
    """What SQLite holds for a column, by its declared type."""

    JSON = "json"  # JSON text, or a bare number as bytes (schema.sqlite_json)
    TIME = "time"  # naive UTC text with microseconds
    FLAG = "flag"  # 0 or 1
    REAL = "real"
    INTEGER = "integer"
    TEXT = "text"


def stored_as(column: ColumnElement[Any]) -> Stored:
    kind = column.type
    if isinstance(kind, Json):
        return Stored.JSON
    if isinstance(kind, UTCDateTime):
        return Stored.TIME
    if isinstance(kind, Boolean):
        return Stored.FLAG
    if isinstance(kind, Float):
        return Stored.REAL
    if isinstance(kind, Integer):
        return Stored.INTEGER
    if isinstance(kind, String):  # Text too
        return Stored.TEXT
    raise TypeError(f"no SQLite storage known for {column.name}: {kind!r}")


def dumps(value: Any) -> str | bytes:
    # SQLAlchemy's JSON type (none_as_null=False) stores None as the JSON text 'null', and so does this.
    return sqlite_json(value, orjson.dumps(value).decode())


def loads(stored: str | bytes | float | None) -> Any:
    return read_sqlite_json(stored, orjson.loads)


def stored_time(value: datetime | None) -> str | None:
    """Naive UTC, always with microseconds: SQLAlchemy's SQLite DATETIME format (compared as text)."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the store")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


@functools.lru_cache(maxsize=4096)
def _parse_stored_time(text: str) -> datetime:
    # Cached: a polled prediction, a key and its account are read again and again with the same stamps.
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def parse_time(text: str | None) -> datetime | None:
    return None if text is None else _parse_stored_time(text)


def _flag(value: Any) -> int:
    return int(bool(value))


# None: sqlite3 binds the value as it is, and returns it as it was bound (a str subclass, such as a StrEnum,
# is bound as its text).
_ENCODE: dict[Stored, Callable[[Any], Any] | None] = {
    Stored.JSON: dumps,
    Stored.TIME: stored_time,
    Stored.FLAG: _flag,
    Stored.REAL: None,
    Stored.INTEGER: None,
    Stored.TEXT: None,
}
_DECODE: dict[Stored, Callable[[Any], Any] | None] = {
    Stored.JSON: loads,
    Stored.TIME: parse_time,
    Stored.FLAG: bool,
    Stored.REAL: None,
    Stored.INTEGER: None,
    Stored.TEXT: None,
}


# The position and the function of each column whose value needs one (the others are taken as they are).
Steps = tuple[tuple[int, Callable[[Any], Any]], ...]


def _steps(
    columns: Iterable[ColumnElement[Any]], by_kind: dict[Stored, Callable[[Any], Any] | None]
) -> Steps:
    functions = ((i, by_kind[stored_as(c)]) for i, c in enumerate(columns))
    return tuple((i, fn) for i, fn in functions if fn is not None)


def encoding(columns: Iterable[ColumnElement[Any]]) -> Steps:
    """What turns values for ``columns`` into what sqlite3 must bind for SQLAlchemy to read them back."""
    return _steps(columns, _ENCODE)


def decoding(columns: Iterable[ColumnElement[Any]]) -> Steps:
    """What turns a row of ``columns`` as sqlite3 returns it into the values SQLAlchemy would return."""
    return _steps(columns, _DECODE)


def encoded(values: Sequence[Any], steps: Steps) -> list[Any]:
    out = list(values)
    for i, fn in steps:
        out[i] = fn(out[i])
    return out


def decoded(row: Sequence[Any], steps: Steps) -> list[Any]:
    values = list(row)
    for i, fn in steps:
        value = values[i]
        if value is not None:
            values[i] = fn(value)
    return values


def sqlite_text(statement: ClauseElement) -> str:
    """A SQLAlchemy statement's SQL on SQLite, with named parameters, for the sqlite3 connection."""
    return str(statement.compile(dialect=sqlite.dialect(paramstyle="named")))


def insert_sql(table: Table) -> str:
    """An INSERT of every column of ``table``, in its order, with positional parameters."""
    names = [c.name for c in table.columns]
    return f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})"  # noqa: S608 (from the schema)
