"""How the store reaches its database: one async interface (``Engine``) over two implementations.

* PostgreSQL (scaled-out mode): SQLAlchemy's ``AsyncEngine`` on asyncpg.
* SQLite (embedded mode): SQLAlchemy's synchronous engine on the standard ``sqlite3`` module, every call
  made in a worker thread (``ThreadedEngine``). SQLAlchemy's async layer would make the same calls in
  aiosqlite's thread, but importing it loads SQLAlchemy's ORM too: with aiosqlite, about 6.5 MiB of an
  embedded server's memory at rest, for nothing the store uses.

Only what the stores and the migrations use is offered: ``begin()`` / ``connect()``, ``execute()``,
``run_sync()``, ``dialect``, ``url``, ``sync_engine`` and ``dispose()``. ``make_engine`` builds the one
the URL names.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson
from sqlalchemy import URL, Dialect, event
from sqlalchemy import Connection as SyncConnection
from sqlalchemy import Engine as SyncEngine
from sqlalchemy.engine import CursorResult, make_url
from sqlalchemy.sql.base import Executable
from sqlalchemy.util.typing import TupleAny

T = TypeVar("T")
Rows = CursorResult[*TupleAny]  # what AsyncConnection.execute() returns for a statement of any shape


class Connection(Protocol):
    async def execute(self, statement: Executable, parameters: Any = None) -> Rows: ...

    async def run_sync(self, fn: Callable[..., T], *arg: Any) -> T: ...


class Engine(Protocol):
    @property
    def dialect(self) -> Dialect: ...

    @property
    def url(self) -> URL: ...

    @property
    def sync_engine(self) -> SyncEngine: ...

    def begin(self) -> AbstractAsyncContextManager[Connection]: ...

    def connect(self) -> AbstractAsyncContextManager[Connection]: ...

    async def dispose(self) -> None: ...


class ThreadedConnection:
    """One pooled sqlite3 connection, lent to one coroutine at a time; its calls run in its engine's
    threads, one at a time."""

    def __init__(self, connection: SyncConnection, engine: ThreadedEngine) -> None:
        self._connection = connection
        self._engine = engine
        self._last: Future[Any] | None = None

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        last = self._last
        if last is not None and not last.done():
            # Left running by a caller that was cancelled (the rollback or release after it, say): a
            # connection is never used by two threads at once.
            with contextlib.suppress(BaseException):
                await asyncio.wrap_future(last)
        job = self._engine.submit(fn, *args)
        self._last = job
        return await asyncio.wrap_future(job)

    async def execute(self, statement: Executable, parameters: Any = None) -> Rows:
        return await self.call(self._run, statement, parameters)

    def _run(self, statement: Executable, parameters: Any) -> Rows:
        result = self._connection.execute(statement, parameters)
        # Rows are read here, in the worker thread, as SQLAlchemy's async layer does: the caller then reads
        # them without touching the database from the event loop's thread.
        return result.freeze()() if result.returns_rows else result  # type: ignore[return-value]

    async def run_sync(self, fn: Callable[..., T], *arg: Any) -> T:
        return await self.call(fn, self._connection, *arg)

    async def release(self) -> None:
        """Return the connection to the pool, rolling back what was not committed."""
        await self.call(self._connection.close)


def _return_to_pool(checkout: Future[SyncConnection]) -> None:
    if not checkout.cancelled() and checkout.exception() is None:
        checkout.result().close()


class ThreadedEngine:
    """``AsyncEngine``'s interface over a synchronous engine: every database call runs in a worker thread, so
    a lock waited for (SQLite's busy timeout) never blocks the event loop.

    At most ``connections`` connections are lent at once, and there are as many threads: a coroutine holding
    a connection always finds a thread for its next call (its COMMIT, say). Shared threads could all be
    taken by calls waiting for the lock that connection holds, until the busy timeout.
    """

    def __init__(self, engine: SyncEngine, connections: int) -> None:
        self.sync_engine = engine
        self._lendable = asyncio.Semaphore(connections)
        self._threads = ThreadPoolExecutor(max_workers=connections, thread_name_prefix="predictd-sqlite")

    @property
    def dialect(self) -> Dialect:
        return self.sync_engine.dialect

    @property
    def url(self) -> URL:
        return self.sync_engine.url

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        return self._threads.submit(fn, *args)

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[Connection]:
        async with self._lend() as connection:
            yield connection

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[Connection]:
        async with self._lend() as connection:
            transaction = connection._connection.begin()  # no I/O: sqlite3 begins on the first write
            try:
                yield connection
            except BaseException:
                await asyncio.shield(connection.call(transaction.rollback))
                raise
            await connection.call(transaction.commit)

    @contextlib.asynccontextmanager
    async def _lend(self) -> AsyncIterator[ThreadedConnection]:
        async with self._lendable:
            checkout = self.submit(self.sync_engine.connect)
            try:
                connection = await asyncio.wrap_future(checkout)
            except asyncio.CancelledError:
                checkout.add_done_callback(_return_to_pool)  # the checkout may still be under way
                raise
            threaded = ThreadedConnection(connection, self)
            try:
                yield threaded
            finally:
                await asyncio.shield(threaded.release())  # even when the caller was cancelled

    async def dispose(self) -> None:
        await asyncio.wrap_future(self.submit(self.sync_engine.dispose))
        self._threads.shutdown(wait=False)


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


# SQLAlchemy's defaults for a pooled SQLite file, stated because ThreadedEngine keeps a thread per connection.
SQLITE_POOL_SIZE = 5
SQLITE_POOL_OVERFLOW = 10


def make_engine(
    url: str, *, sqlite_busy_timeout_ms: int = 5000, postgres_lock_timeout_ms: int = 5000
) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        from sqlalchemy import create_engine

        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        sync_engine = create_engine(
            parsed.set(drivername="sqlite"),  # the standard sqlite3 module, whatever driver the URL names
            pool_size=SQLITE_POOL_SIZE,
            max_overflow=SQLITE_POOL_OVERFLOW,
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
            # A pooled connection serves one coroutine at a time, from whichever worker thread runs its call.
            connect_args={"timeout": sqlite_busy_timeout_ms / 1000, "check_same_thread": False},
            # A database error's message, logged with an INTERNAL_ERROR's traceback, would otherwise carry
            # the statement's parameters: users' inputs, webhook URLs (often with a token), webhook secrets.
            hide_parameters=True,
        )
        event.listen(sync_engine, "connect", _sqlite_pragmas)
        return ThreadedEngine(sync_engine, connections=SQLITE_POOL_SIZE + SQLITE_POOL_OVERFLOW)
    from sqlalchemy.ext.asyncio import create_async_engine  # loads SQLAlchemy's ORM: PostgreSQL only

    return create_async_engine(
        url,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
        pool_size=10,
        max_overflow=10,
        pool_pre_ping=True,
        hide_parameters=True,  # as above
        # A write blocked by another transaction's lock (a stuck migration or backup) gives up after this
        # long and answers INTERNAL_ERROR, rather than holding the request, as SQLite's busy timeout does.
        connect_args={"server_settings": {"lock_timeout": str(postgres_lock_timeout_ms)}},
    )
