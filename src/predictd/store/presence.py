"""Whether a database URL names a database predictd has set up, found out without creating anything.

Opening the store creates and migrates whatever database it is given: right for a server's first start,
wrong for an operator's command that was meant for the deployment's database and, given other settings,
would write into a new empty one beside it (a fresh SQLite file in the working directory).
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import make_url, text
from sqlalchemy.pool import NullPool

# Every predictd schema has it: the migrations' own bookkeeping table, created by the first one.
_MARKER = "alembic_version"


@dataclass(frozen=True, slots=True)
class Absence:
    """Why there is no predictd database at a URL, and whether opening the store there would create one
    (a new SQLite file, or the tables of an empty database)."""

    reason: str  # names the database
    creatable: bool


def shown_url(url: str) -> str:
    """The URL as it can be printed: without its password, nor the driver predictd chose."""
    parsed = make_url(url)
    return parsed.set(drivername=parsed.get_backend_name()).render_as_string(hide_password=True)


async def missing_database(url: str) -> Absence | None:
    """Why ``url`` does not name a predictd database; None when it does. ``url`` is a SQLite URL, or a
    PostgreSQL one naming its async driver (as ``Settings.resolved_database_url`` gives)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            return None  # a database of this process alone: nothing to find
        return _missing_sqlite(Path(parsed.database))
    from sqlalchemy.ext.asyncio import create_async_engine  # loads SQLAlchemy's ORM: PostgreSQL only

    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            found = (await connection.execute(text(f"SELECT to_regclass('{_MARKER}')"))).scalar()
    except Exception as exc:  # the driver's own words say why: no such database, refused, bad password
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        return Absence(f"the database {shown_url(url)} cannot be opened ({reason})", creatable=False)
    finally:
        await engine.dispose()
    if found is None:
        return Absence(f"the database {shown_url(url)} has no predictd tables", creatable=True)
    return None


def _missing_sqlite(path: Path) -> Absence | None:
    if not path.is_file():
        return Absence(f"there is no SQLite database at {path}", creatable=True)
    try:
        # Read-only, by URI: a plain connect would create the file it was meant to find.
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            found = db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (_MARKER,)).fetchone()
    except sqlite3.Error as exc:
        return Absence(f"{path} cannot be read as a SQLite database ({exc})", creatable=False)
    if found is None:
        return Absence(f"the SQLite database {path} has no predictd tables", creatable=True)
    return None
