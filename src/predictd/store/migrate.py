"""Bring a database to the newest schema with Alembic, safely from several processes at once."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import URL, Connection, text

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same in every predictd process sharing a database.
_PG_MIGRATION_LOCK = 0x70726564


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade_to_head(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
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
