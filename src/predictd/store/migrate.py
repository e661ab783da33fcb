"""Bring a database to the newest schema with Alembic, safely from several processes at once."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import re
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import URL, Connection, text

from .engines import Engine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same in every predictd process sharing a database.
_PG_MIGRATION_LOCK = 0x70726564
MIGRATION_LOCK_WAIT_S = 600


# Alembic (with Mako) is imported only when a database is behind: about 10 MiB of a process's memory.
_REVISION = re.compile(r"""^revision\b[^=\n]*=\s*["']([^"']+)["']""", re.MULTILINE)
_DOWN_REVISION = re.compile(r"""^down_revision\b[^=\n]*=\s*["']([^"']+)["']""", re.MULTILINE)


@functools.cache
def head_revisions() -> frozenset[str]:
    """The heads of the migration graph, read from the version files' ``revision`` / ``down_revision``
    lines without importing Alembic. A merge (a tuple of parents) is not parsed: its parents then look like
    heads too, the database never matches, and Alembic itself decides, which is always safe."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        source = path.read_text(encoding="utf-8")
        revision = _REVISION.search(source)
        if revision is not None:
            revisions.add(revision.group(1))
        parent = _DOWN_REVISION.search(source)
        if parent is not None:
            parents.add(parent.group(1))
    return frozenset(revisions - parents)


def at_head(connection: Connection) -> bool:
    """Whether the database is already at the migrations' head (then there is nothing to run)."""
    try:
        found = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    except Exception:  # no alembic_version table yet: a new database (the caller's transaction is dropped)
        return False
    return bool(found) and frozenset(found) == head_revisions()


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade_to_head(connection: Connection) -> None:
    from alembic import command

    if connection.dialect.name == "postgresql":
        # Not the requests' lock_timeout: a process starting beside another one (an API process and its
        # workers) waits for that one's migration instead of failing to start.
        connection.execute(text(f"SET LOCAL lock_timeout = '{MIGRATION_LOCK_WAIT_S}s'"))
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
    command.upgrade(alembic_config(connection), "head")


# Alembic keeps its running environment in module globals, so two upgrades must never interleave in one
# process; across processes PostgreSQL uses an advisory lock (above) and SQLite a lock file beside the db.
_IN_PROCESS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def migration_lock(url: URL) -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    lock = _IN_PROCESS.setdefault(loop, asyncio.Lock())
    async with lock:
        database = url.database if url.get_backend_name() == "sqlite" else None
        if not database or database == ":memory:":
            yield
            return
        fd = os.open(f"{database}.migrate-lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock


async def migrate(engine: Engine) -> None:
    """Bring the engine's database to the newest schema; a database already there costs one query."""
    async with migration_lock(engine.url):
        async with engine.connect() as conn:
            if await conn.run_sync(at_head):
                return  # without importing Alembic
        async with engine.begin() as conn:
            await conn.run_sync(upgrade_to_head)
