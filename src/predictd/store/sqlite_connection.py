"""Embedded mode's own sqlite3 connection, run in the event loop's own thread: what the fast paths of the
stores (sqlite_accounts.py, sqlite_predictions.py) share.

Every statement a prediction needs (authenticate, insert, claim, record, read) is a local SQLite call of a
few microseconds; through SQLAlchemy's async engine over aiosqlite's thread (as SQLite was reached then) the
same statement cost 0.5-0.9 ms of CPU (measured: ``get_prediction`` 734 us against 10 us, a one-row write
transaction 874 us against 19 us). So the hottest methods talk to sqlite3 directly, with the same SQL
semantics and the same rules (rules.py) as the SQLAlchemy path: every state change all or nothing, the
state-machine guard in the UPDATE, settlement and the webhook outbox in the same transaction. Everything
else (administration, listing, webhooks) stays on SQLAlchemy.

Reads of keys and predictions are served from memory while they are provably current (see ``Recent``): the
hottest request, a status read, then costs no SQL, only a look at the WAL-index header (see
``_CommitWatch``), and a ``PRAGMA data_version`` when that header has moved. What is remembered is dropped
all at once, for every store on this connection, when another connection has committed.

Writes share commits (see ``write``): the inserts asked for in one event-loop iteration are committed
together at its end, and a state change commits at once, taking the waiting inserts with it. A caller is
answered only once its write is committed. Several writes in one transaction behave as if each ran in its
own: when one fails (a refused reservation, a taken idempotency key), all are rolled back and each runs
again alone.

Nothing here ever blocks the event loop on a lock: the connection's busy timeout is 0 and a write that
finds the database locked (another process, such as ``predictd keys revoke``, or one of SQLAlchemy's own
connections) waits with ``asyncio.sleep`` and tries again, up to the configured busy timeout. Reads never
wait in WAL mode. Checkpoints, which copy the WAL into the database and fsync, run in a worker thread.
A transaction never spans an ``await``, so no other coroutine can interleave with one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import itertools
import mmap
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from ..core.bounded import BytesBounded

T = TypeVar("T")

# Rows kept by each Recent at most, whatever their size (see BytesBounded for its bytes).
RECENT_MAX_ROWS = 8192
# What a remembered row weighs beyond its text and blob values: the Python objects of its other columns.
ROW_OVERHEAD_BYTES = 1024
# Write transactions between two checkpoints run off the event loop (SQLite's own default is 1000 pages).
CHECKPOINT_EVERY = 500
_BUSY_RETRY_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05)


def is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED))
    return "locked" in str(exc) or "busy" in str(exc)


def _busy_waits(timeout_s: float) -> Iterator[float]:
    """The pauses between tries while another connection holds the lock: short at first, and none once
    ``timeout_s`` has passed since the first was asked for."""
    deadline = time.monotonic() + timeout_s
    for delay in itertools.chain(_BUSY_RETRY_S, itertools.repeat(_BUSY_RETRY_S[-1])):
        if time.monotonic() >= deadline:
            return
        yield delay


class _Outcome(enum.Enum):
    DONE = "done"  # committed, or failed: every future has its answer
    BUSY = "busy"  # another connection holds the write lock: nothing was done
    SPLIT = "split"  # one write of several failed: all were rolled back


@dataclasses.dataclass(slots=True)
class _Write(Generic[T]):
    action: Callable[[sqlite3.Connection], T]
    on_commit: Callable[[T], None] | None
    future: asyncio.Future[T]


def _live(batch: list[_Write[Any]]) -> list[_Write[Any]]:
    # A caller cancelled before its write ran (a shutdown): nothing of it is written.
    return [w for w in batch if not w.future.cancelled()]


def _fail(batch: list[_Write[Any]], exc: BaseException) -> None:
    for write in batch:
        if not write.future.done():
            write.future.set_exception(exc)


class Recent(Generic[T]):
    """Rows this connection read or wrote, reused while nothing can have changed them.

    Valid because every change reaches SQLite in one of two ways. Through this connection: each write here
    updates or drops the rows it touched. Through any other connection (SQLAlchemy's, another process such
    as ``predictd keys revoke``): SQLite's ``PRAGMA data_version`` changes, and then everything is dropped.
    The values are immutable in practice (frozen dataclasses; a Prediction is replaced, never mutated).

    Bounded by bytes as well as rows (``BytesBounded``): each row is weighed by the size of its stored
    values (``row_bytes``), so that a few predictions with inputs of megabytes cannot hold on to hundreds
    of them.
    """

    def __init__(self, max_bytes: int) -> None:
        self._kept: BytesBounded[str, T] = BytesBounded(max_bytes, RECENT_MAX_ROWS)
        # The hottest read: one dictionary lookup, no call of ours around it.
        self.get: Callable[[str], T | None] = self._kept.rows.get

    @property
    def held_bytes(self) -> int:
        return self._kept.held_bytes

    def size_of(self, key: str) -> int:
        return self._kept.size_of(key)

    def put(self, key: str, row: T, size: int) -> None:
        self._kept.put(key, row, size)

    def drop(self, key: str) -> None:
        self._kept.drop(key)

    def clear(self) -> None:
        self._kept.clear()


def row_bytes(values: Iterable[Any]) -> int:
    """What a row's values weigh, as stored: the length of each text or blob (JSON inputs and outputs are
    stored as text), plus a fixed share for the row's other columns and the objects that hold it."""
    return ROW_OVERHEAD_BYTES + sum(len(v) for v in values if isinstance(v, str | bytes))


# The WAL-index header: two copies of 48 bytes at the start of the database's ``-shm`` file
# (https://www.sqlite.org/walformat.html#the_wal_index_header).
_WAL_INDEX_HEADER_BYTES = 96


class _CommitWatch:
    """Tells that no connection can have committed since SQLite was last asked, without asking it: a look at
    the WAL-index header (0.13 us) instead of a ``PRAGMA data_version`` statement (3.9 us, the largest part
    of a status read's own cost).

    Every commit in WAL mode, by any connection in any process, rewrites that header (its frame count and
    checksum move), the second copy first. So a header read whole, with both copies equal to the one read
    just before SQLite was last asked, means nothing has been committed since; a commit finishing while it
    is read leaves the copies unequal. Anything else ("moved", or no header to read) sends the caller to
    SQLite. Our own commits move the header too: the next look then asks SQLite once.

    The file stays mapped only while the store's connection is open: that connection keeps SQLite from
    truncating the file (only the last connection to close may)."""

    __slots__ = ("_looked", "_map", "_seen")

    def __init__(self, db_path: str) -> None:
        self._seen: bytes | None = None
        self._looked: bytes | None = None
        self._map: mmap.mmap | None = None
        try:
            with open(f"{db_path}-shm", "rb") as shm:
                self._map = mmap.mmap(shm.fileno(), _WAL_INDEX_HEADER_BYTES, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            pass  # not in WAL mode, or no shared-memory file: every look says "moved"

    def quiet(self) -> bool:
        """True when nothing has been committed since ``asked`` was last called."""
        if self._map is None:
            return False
        self._looked = header = self._map[:_WAL_INDEX_HEADER_BYTES]
        return header == self._seen

    def asked(self) -> None:
        """SQLite was just asked, after a ``quiet`` that said False: compare with that look from now on."""
        looked = self._looked
        half = _WAL_INDEX_HEADER_BYTES // 2
        self._seen = looked if looked is not None and looked[:half] == looked[half:] else None

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None


class FastConnection:
    """The sqlite3 connection to a SQLite file that embedded mode's stores share, with its group commits
    and the rows remembered on it."""

    def __init__(self, path: str, *, busy_timeout_ms: int = 5000, remember_bytes: int = 32 << 20) -> None:
        self._path = path
        self._remember_bytes = remember_bytes
        self._busy_timeout_s = busy_timeout_ms / 1000
        self._db: sqlite3.Connection | None = None
        self._writes_since_checkpoint = 0
        self._checkpointing = False
        self._recents: list[Recent[Any]] = []
        self._data_version: int | None = None
        self._commits: _CommitWatch | None = None  # mapped after the connection's first look at the WAL
        self._pending: list[_Write[Any]] = []  # writes for the transaction at the end of this iteration
        self._waiting: set[asyncio.Task[None]] = set()  # batches waiting for another connection's lock

    def remembering(self, share: float) -> Recent[Any]:
        """A new memory of rows, dropped with all the others when another connection commits, given
        ``share`` of the connection's ``remember_bytes``."""
        recent: Recent[Any] = Recent(int(self._remember_bytes * share))
        self._recents.append(recent)
        return recent

    def remembered_bytes(self) -> int:
        """What every memory of rows on this connection weighs together (``row_bytes``)."""
        return sum(recent.held_bytes for recent in self._recents)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            # Opened on first use, after migrations, so that it sees the finished schema.
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=0)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=0")
            db.execute("PRAGMA wal_autocheckpoint=0")  # see _maybe_checkpoint
            self._db = db
        return self._db

    async def close(self) -> None:
        if self._pending:
            self._commit_pending()
        if self._waiting:
            await asyncio.gather(*self._waiting, return_exceptions=True)
        if self._commits is not None:
            self._commits.close()
            self._commits = None
        if self._db is not None:
            self._db.close()
            self._db = None

    def recent_valid(self) -> None:
        """Drop every remembered row (of every ``Recent`` made by ``remembering``) if another connection has
        committed since the last check."""
        commits = self._commits
        if commits is not None and commits.quiet():
            return
        version = self.db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            for recent in self._recents:
                recent.clear()
            self._data_version = version
        if commits is None:
            # Mapped only now: the statement above has opened the connection's shared memory (in WAL mode).
            self._commits = _CommitWatch(self._path)
        else:
            commits.asked()

    async def read(self, action: Callable[[sqlite3.Connection], T]) -> T:
        db = self.db
        waits: Iterator[float] | None = None
        while True:
            try:
                return action(db)
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                waits = waits or _busy_waits(self._busy_timeout_s)
                delay = next(waits, None)
                if delay is None:
                    raise
            await asyncio.sleep(delay)

    async def write(
        self,
        action: Callable[[sqlite3.Connection], T],
        on_commit: Callable[[T], None] | None = None,
        *,
        at_once: bool = False,
    ) -> T:
        """Run ``action`` in a write transaction and return its result once committed.

        Writes share transactions (group commit): a commit writes the changed pages to the WAL, and one
        transaction per insert cost 60 us against 21 us per insert for eight together (measured on the
        predictions table). A write waits for the end of the event loop's iteration, gathering the others
        asked for meanwhile, unless ``at_once``: then it commits now, with every write waiting. ``on_commit``
        runs right after the COMMIT, before any other coroutine, so that what is remembered never lags what
        is stored.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._pending and not at_once:
            loop.call_soon(self._commit_pending)
        self._pending.append(_Write(action, on_commit, future))
        if at_once:
            self._commit_pending()
        return await future  # already done unless another connection holds the write lock

    def _commit_pending(self) -> None:
        batch, self._pending = self._pending, []
        waiting = self._commit_batch(_live(batch))
        if waiting:
            task = asyncio.ensure_future(self._commit_when_free(waiting))
            self._waiting.add(task)
            task.add_done_callback(self._waiting.discard)

    def _commit_batch(self, batch: list[_Write[Any]]) -> list[_Write[Any]]:
        """Commit ``batch``; returns the writes still waiting for another connection's write lock."""
        if not batch:
            return []
        outcome = self._transaction(batch)
        if outcome is _Outcome.BUSY:
            return batch
        if outcome is _Outcome.SPLIT:
            # One write failed (a refused reservation, a taken idempotency key): each runs alone, so that
            # only that one fails.
            return [w for w in batch if self._transaction([w]) is _Outcome.BUSY]
        return []

    def _transaction(self, batch: list[_Write[Any]]) -> _Outcome:
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                return _Outcome.BUSY
            _fail(batch, exc)
            return _Outcome.DONE
        try:
            # The write lock is held from here on: what is remembered now stays current until COMMIT, apart
            # from what this transaction changes (each write drops the rows it touches).
            self.recent_valid()
            results = [w.action(db) for w in batch]
            db.execute("COMMIT")
        except Exception as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if len(batch) > 1:
                return _Outcome.SPLIT
            _fail(batch, exc)
            return _Outcome.DONE
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            _fail(batch, RuntimeError("the write was interrupted"))
            raise
        self._maybe_checkpoint()
        for write, result in zip(batch, results, strict=True):
            if write.on_commit is not None:
                write.on_commit(result)
            if not write.future.done():
                write.future.set_result(result)
        return _Outcome.DONE

    async def _commit_when_free(self, batch: list[_Write[Any]]) -> None:
        """Another connection holds the write lock (``predictd keys revoke``, SQLAlchemy's own): try again
        without blocking the event loop, up to the busy timeout."""
        for delay in _busy_waits(self._busy_timeout_s):
            await asyncio.sleep(delay)
            batch = self._commit_batch(_live(batch))
            if not batch:
                return
        _fail(batch, sqlite3.OperationalError("database is locked"))

    def _maybe_checkpoint(self) -> None:
        self._writes_since_checkpoint += 1
        if self._checkpointing or self._writes_since_checkpoint < CHECKPOINT_EVERY:
            return
        self._writes_since_checkpoint = 0
        self._checkpointing = True
        task = asyncio.get_running_loop().run_in_executor(None, self._checkpoint)
        task.add_done_callback(self._checkpoint_done)

    def _checkpoint(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None, timeout=self._busy_timeout_s)
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            db.close()

    def _checkpoint_done(self, future: asyncio.Future[None]) -> None:
        self._checkpointing = False
        if not future.cancelled():
            future.exception()  # a failed checkpoint is retried with the next batch; SQLite stays correct
