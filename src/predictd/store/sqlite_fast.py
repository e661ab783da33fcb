"""Embedded mode's hot paths on one synchronous sqlite3 connection, run in the event loop's own thread.

Every statement a prediction needs (authenticate, insert, claim, record, read) is a local SQLite call of a
few microseconds; through SQLAlchemy's async engine over aiosqlite's thread (as SQLite was reached then) the
same statement cost 0.5-0.9 ms of CPU (measured: ``get_prediction`` 734 us against 10 us, a one-row write
transaction 874 us against 19 us). So these methods talk to sqlite3 directly, with the same SQL semantics
as ``SqlStore`` (every state change all or nothing, the state-machine guard in the UPDATE, settlement and the
webhook outbox in the same transaction); everything else (administration, listing, webhooks) stays on
SQLAlchemy.

Reads of keys and predictions are served from memory while they are provably current (see ``_Recent``):
the hottest request, a status read, then costs no SQL, only a look at the WAL-index header (see
``_CommitWatch``), and a ``PRAGMA data_version`` when that header has moved.

Writes share commits (see ``_write``): the inserts asked for in one event-loop iteration are committed
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
import functools
import itertools
import mmap
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import orjson

from ..core.bounded import put_bounded
from ..core.domain import (
    Account,
    AccountStatus,
    ApiKey,
    Credits,
    IdempotencyRecord,
    NewDelivery,
    Plan,
    Prediction,
    Status,
    utcnow,
)
from ..core.ports import DeliveryPlanner, IdempotencyKeyTaken, Move
from . import rules
from .engines import Engine
from .schema import predictions, read_sqlite_json, sqlite_json
from .sql import SqlStore

T = TypeVar("T")

# Rows kept by _Recent, per kind; past it the oldest half is dropped.
RECENT_MAX_ROWS = 8192
# Write transactions between two checkpoints run off the event loop (SQLite's own default is 1000 pages).
CHECKPOINT_EVERY = 500
_BUSY_RETRY_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05)

PREDICTION_COLUMNS: tuple[str, ...] = tuple(c.name for c in predictions.columns)
_SELECT_PREDICTION = f"SELECT {', '.join(PREDICTION_COLUMNS)} FROM predictions"  # noqa: S608 (constants)
_GET_PREDICTION = f"{_SELECT_PREDICTION} WHERE id = ?"
_JSON_COLUMNS = frozenset({"input", "output", "extra"})
_TIME_COLUMNS = frozenset({"created_at", "started_at", "completed_at"})
_BOOL_COLUMNS = frozenset({"data_removed"})
_REAL_COLUMNS = frozenset({"predict_time", "cost"})
_TEXT_COLUMNS = frozenset({"account_id", "model", "error_name", "error_message", "source"})
_INSERT_PREDICTION = (
    f"INSERT INTO predictions ({', '.join(PREDICTION_COLUMNS)}) "  # noqa: S608 (constants)
    f"VALUES ({', '.join('?' for _ in PREDICTION_COLUMNS)})"
)
_PLAN_COLUMNS = "name, models, rate_limit, rate_window_s, key_rate_limit, concurrency_limit, prepaid"
# The key, its account and the account's plan in one statement: every authenticated request runs it.
_FIND_KEY = (
    "SELECT k.id, k.account_id, k.prefix, k.label, k.created_at, k.revoked_at, k.key_hash, "
    "a.id, a.name, a.status, a.created_at, a.plan, a.disabled_models, a.status_reason, "
    "p.name, p.models, p.rate_limit, p.rate_window_s, p.key_rate_limit, p.concurrency_limit, p.prepaid "
    "FROM api_keys k JOIN accounts a ON a.id = k.account_id LEFT JOIN plans p ON p.name = a.plan "
    "WHERE k.key_hash = ?"
)
_GET_PLAN = f"SELECT {_PLAN_COLUMNS} FROM plans WHERE name = ?"  # noqa: S608 (constants)
_INSERT_LEDGER = (
    "INSERT INTO ledger_entries (account_id, kind, amount_micros, prediction_id, note, created_at) "
    "VALUES (?, ?, ?, ?, NULL, ?)"
)
_INSERT_IDEMPOTENCY = (
    "INSERT INTO idempotency_keys (account_id, key, request_hash, prediction_id, created_at) "
    "VALUES (?, ?, ?, ?, ?)"
)
_FIND_IDEMPOTENCY = (
    "SELECT account_id, key, request_hash, prediction_id, created_at FROM idempotency_keys "
    "WHERE account_id = ? AND key = ?"
)
_INSERT_DELIVERY = (
    "INSERT INTO webhook_deliveries (id, prediction_id, account_id, event, url, payload, status, attempts, "
    "next_attempt_at, created_at, delivered_at, last_status_code, last_error) "
    "VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, NULL, NULL, NULL)"
)


# -- values as SQLAlchemy stores them on SQLite (both must read what the other wrote) ----------------------


def _dumps(value: Any) -> str | bytes:
    # SQLAlchemy's JSON type (none_as_null=False) stores None as the JSON text 'null', and so does this.
    return sqlite_json(value, orjson.dumps(value).decode())


def _loads(stored: str | bytes | float | None) -> Any:
    return read_sqlite_json(stored, orjson.loads)


def _time(value: datetime | None) -> str | None:
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


def _parse_time(text: str | None) -> datetime | None:
    return None if text is None else _parse_stored_time(text)


def _bind(column: str, value: Any) -> Any:
    if column in _JSON_COLUMNS:
        return _dumps(value)
    if column in _TIME_COLUMNS:
        return _time(value)
    if column in _BOOL_COLUMNS:
        return int(bool(value))
    if isinstance(value, str):
        return str(value)  # enums (StrEnum) as their plain value
    return value


def _prediction(row: tuple[Any, ...]) -> Prediction:
    return Prediction(
        id=row[0],
        account_id=row[1],
        model=row[2],
        status=Status(row[3]),
        input=_loads(row[4]),
        output=_loads(row[5]),
        error_name=row[6],
        error_message=row[7],
        source=row[8],
        created_at=_parse_time(row[9]),  # type: ignore[arg-type]  # NOT NULL
        started_at=_parse_time(row[10]),
        completed_at=_parse_time(row[11]),
        predict_time=row[12],
        attempts=row[13],
        data_removed=bool(row[14]),
        extra=_loads(row[15]) or {},
        cost=row[16],
        version=row[17],
    )


def _plan(row: tuple[Any, ...]) -> Plan:
    return Plan(
        name=row[0],
        models=tuple(_loads(row[1])),
        rate_limit=row[2],
        rate_window_s=row[3],
        key_rate_limit=row[4],
        concurrency_limit=row[5],
        prepaid=bool(row[6]),
    )


def _prediction_values(p: Prediction) -> tuple[Any, ...]:
    # In PREDICTION_COLUMNS order (checked at import below).
    return (
        p.id,
        p.account_id,
        p.model,
        str(p.status),
        _dumps(p.input),
        _dumps(p.output),
        p.error_name,
        p.error_message,
        p.source,
        _time(p.created_at),
        _time(p.started_at),
        _time(p.completed_at),
        p.predict_time,
        p.attempts,
        int(bool(p.data_removed)),
        _dumps(p.extra),
        p.cost,
        p.version,
    )


assert PREDICTION_COLUMNS == (
    "id",
    "account_id",
    "model",
    "status",
    "input",
    "output",
    "error_name",
    "error_message",
    "source",
    "created_at",
    "started_at",
    "completed_at",
    "predict_time",
    "attempts",
    "data_removed",
    "extra",
    "cost",
    "version",
), "sqlite_fast's row mapping follows the predictions table's column order"


def _is_busy(exc: sqlite3.OperationalError) -> bool:
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


class _Recent(Generic[T]):
    """Rows this connection read or wrote, reused while nothing can have changed them.

    Valid because every change reaches SQLite in one of two ways. Through this connection: each write here
    updates or drops the rows it touched. Through any other connection (SQLAlchemy's, another process such
    as ``predictd keys revoke``): SQLite's ``PRAGMA data_version`` changes, and then everything is dropped.
    The values are immutable in practice (frozen dataclasses; a Prediction is replaced, never mutated).
    """

    def __init__(self) -> None:
        self.rows: dict[str, T] = {}

    def get(self, key: str) -> T | None:
        return self.rows.get(key)

    def put(self, key: str, row: T) -> None:
        put_bounded(self.rows, key, row, RECENT_MAX_ROWS)

    def drop(self, key: str) -> None:
        self.rows.pop(key, None)


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


class SqliteStore(SqlStore):
    """``SqlStore`` on a SQLite file, with the per-prediction statements on a local connection."""

    def __init__(self, engine: Engine, path: str, *, busy_timeout_ms: int = 5000) -> None:
        super().__init__(engine)
        self._path = path
        self._busy_timeout_s = busy_timeout_ms / 1000
        self._db: sqlite3.Connection | None = None
        self._writes_since_checkpoint = 0
        self._checkpointing = False
        self._transition_sql: dict[tuple[Status, bool, tuple[str, ...]], str] = {}
        self._keys: _Recent[tuple[ApiKey, Account]] = _Recent()
        self._predictions: _Recent[Prediction] = _Recent()
        self._data_version: int | None = None
        self._commits: _CommitWatch | None = None  # mapped after the connection's first look at the WAL
        self._pending: list[_Write[Any]] = []  # writes for the transaction at the end of this iteration
        self._waiting: set[asyncio.Task[None]] = set()  # batches waiting for another connection's lock

    # -- the connection ------------------------------------------------------------------------------------

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
        await super().close()

    def _recent_valid(self, db: sqlite3.Connection) -> None:
        """Drop every remembered row if another connection has committed since the last check."""
        commits = self._commits
        if commits is not None and commits.quiet():
            return
        version = db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._keys.rows.clear()
            self._predictions.rows.clear()
            self._data_version = version
        if commits is None:
            # Mapped only now: the statement above has opened the connection's shared memory (in WAL mode).
            self._commits = _CommitWatch(self._path)
        else:
            commits.asked()

    async def _read(self, action: Callable[[sqlite3.Connection], T]) -> T:
        db = self.db
        waits: Iterator[float] | None = None
        while True:
            try:
                return action(db)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                waits = waits or _busy_waits(self._busy_timeout_s)
                delay = next(waits, None)
                if delay is None:
                    raise
            await asyncio.sleep(delay)

    async def _write(
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
            if _is_busy(exc):
                return _Outcome.BUSY
            _fail(batch, exc)
            return _Outcome.DONE
        try:
            # The write lock is held from here on: what is remembered now stays current until COMMIT, apart
            # from what this transaction changes (each write drops the rows it touches).
            self._recent_valid(db)
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

    # -- keys, plans, credits ------------------------------------------------------------------------------

    def remembered_key(self, key_hash: str) -> tuple[ApiKey, Account] | None:
        self._recent_valid(self.db)
        return self._keys.get(key_hash)

    def remembered_prediction(self, prediction_id: str, account_id: str) -> Prediction | None:
        self._recent_valid(self.db)
        found = self._predictions.get(prediction_id)
        return found if found is not None and found.account_id == account_id else None

    async def find_key(self, key_hash: str) -> tuple[ApiKey, Account] | None:
        self._recent_valid(self.db)
        found = self._keys.get(key_hash)
        if found is None:
            found = await self._find_key(key_hash)
            if found is not None:  # unknown keys are not remembered: guessing must not fill memory
                self._keys.put(key_hash, found)
        return found

    async def _find_key(self, key_hash: str) -> tuple[ApiKey, Account] | None:
        row = await self._read(lambda db: db.execute(_FIND_KEY, (key_hash,)).fetchone())
        if row is None:
            return None
        key = ApiKey(
            id=row[0],
            account_id=row[1],
            prefix=row[2],
            label=row[3],
            created_at=_parse_time(row[4]),  # type: ignore[arg-type]  # NOT NULL
            revoked_at=_parse_time(row[5]),
            key_hash=row[6],
        )
        account = Account(
            id=row[7],
            name=row[8],
            status=AccountStatus(row[9]),
            created_at=_parse_time(row[10]),  # type: ignore[arg-type]  # NOT NULL
            plan=row[11],
            disabled_models=tuple(_loads(row[12]) or ()),
            status_reason=row[13],
            plan_details=_plan(row[14:]) if row[14] is not None else None,
        )
        return key, account

    async def get_plan(self, name: str) -> Plan | None:
        row = await self._read(lambda db: db.execute(_GET_PLAN, (name,)).fetchone())
        return _plan(row) if row is not None else None

    async def credits(self, account_id: str) -> Credits:
        return await self._read(lambda db: _read_credits(db, account_id))

    # -- predictions ---------------------------------------------------------------------------------------

    async def insert_prediction(
        self,
        prediction: Prediction,
        idempotency: IdempotencyRecord | None = None,
        reserve_micros: int | None = None,
    ) -> None:
        def insert(db: sqlite3.Connection) -> None:
            # BEGIN IMMEDIATE holds the database's write lock: no other reservation can run meanwhile.
            if reserve_micros is not None:
                credits = _read_credits(db, prediction.account_id)
                entries = rules.reservation_entries(credits, reserve_micros)
                _add_entries(db, prediction.account_id, entries, prediction.id)
            if idempotency is not None:
                # First, so that of two concurrent identical submits only one creates a prediction.
                try:
                    db.execute(
                        _INSERT_IDEMPOTENCY,
                        (
                            idempotency.account_id,
                            idempotency.key,
                            idempotency.request_hash,
                            idempotency.prediction_id,
                            _time(idempotency.created_at),
                        ),
                    )
                except sqlite3.IntegrityError:
                    raise IdempotencyKeyTaken(idempotency.key) from None
            db.execute(_INSERT_PREDICTION, row)

        def remember(_: None) -> None:
            # As a read would return it, built from the stored values (not the caller's object): the worker's
            # claim reads it next.
            self._predictions.put(prediction.id, _prediction(row))

        row = _prediction_values(prediction)
        self._predictions.drop(prediction.id)
        await self._write(insert, remember)

    async def get_prediction(self, prediction_id: str, account_id: str | None = None) -> Prediction | None:
        self._recent_valid(self.db)
        found = self._predictions.get(prediction_id)
        if found is None:
            row = await self._read(lambda db: db.execute(_GET_PREDICTION, (prediction_id,)).fetchone())
            if row is None:
                return None
            found = _prediction(row)
            self._predictions.put(prediction_id, found)
        # Another account's prediction is answered exactly like a missing one.
        return found if account_id is None or found.account_id == account_id else None

    def _transition_statement(self, target: Status, count_attempt: bool, columns: tuple[str, ...]) -> str:
        key = (target, count_attempt, columns)
        sql = self._transition_sql.get(key)
        if sql is None:
            sets = ["status = ?", *(f"{c} = ?" for c in columns)]
            sets += (f"{c} = {sql}" for c, sql in rules.counters(count_attempt).items())
            # No RETURNING: on SQLite an UPDATE ... RETURNING costs about twice an UPDATE and a SELECT of the
            # row by its key (measured: 50 against 15 + 17 us).
            sql = (
                f"UPDATE predictions SET {', '.join(sets)} "  # noqa: S608 (column names checked, constants)
                f"WHERE id = ? AND {rules.status_guard_sql(target)}"
            )
            self._transition_sql[key] = sql
        return sql

    def _bound_move(self, move: Move) -> _BoundMove:
        """The guarded UPDATE of ``move``, its parameters, and the values it binds to each column."""
        changes = rules.move_changes(move)
        columns = tuple(sorted(changes))
        sql = self._transition_statement(move.target, move.count_attempt, columns)
        bound = {c: _bind(c, changes[c]) for c in columns}
        return _BoundMove(move, sql, (move.target.value, *bound.values(), move.prediction_id), bound)

    async def transitions(
        self, moves: Sequence[Move], *, deliveries: DeliveryPlanner | None = None
    ) -> list[Prediction | None]:
        statements = [self._bound_move(move) for move in moves]

        def apply(db: sqlite3.Connection) -> list[Prediction | None]:
            moved: list[Prediction | None] = []
            for bound in statements:
                prediction_id = bound.move.prediction_id
                before = self._predictions.get(prediction_id)
                self._predictions.drop(prediction_id)  # a later write in this transaction reads it anew
                if db.execute(bound.sql, bound.params).rowcount == 0:
                    moved.append(None)
                    continue
                # The row as it was, still current (see _transaction), with what the UPDATE set: the same
                # values a SELECT would return, without the SELECT (10 us, and 4 % of the process under load).
                read_as = _as_read(bound.columns) if before is not None else None
                if before is not None and read_as is not None:
                    prediction = _after(before, bound.move, read_as)
                else:
                    prediction = _prediction(db.execute(_GET_PREDICTION, (prediction_id,)).fetchone())
                if prediction.terminal:
                    _settle(db, prediction)
                if deliveries is not None:
                    planned = deliveries(prediction)
                    if planned:
                        db.executemany(_INSERT_DELIVERY, [_delivery_values(d) for d in planned])
                moved.append(prediction)
            return moved

        def remember(moved: list[Prediction | None]) -> None:
            for prediction in moved:
                if prediction is not None:
                    self._predictions.put(prediction.id, prediction)

        # At once: a state change moves a prediction on (a worker slot waits on it to record the outcome and
        # hand its worker the next ones), and it takes the waiting inserts with it.
        return await self._write(apply, remember, at_once=True)

    # -- idempotency ---------------------------------------------------------------------------------------

    async def find_idempotency(self, account_id: str, key: str) -> IdempotencyRecord | None:
        row = await self._read(lambda db: db.execute(_FIND_IDEMPOTENCY, (account_id, key)).fetchone())
        if row is None:
            return None
        return IdempotencyRecord(row[0], row[1], row[2], row[3], _parse_time(row[4]))  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True, slots=True)
class _BoundMove:
    move: Move
    sql: str
    params: tuple[Any, ...]
    columns: dict[str, Any]  # each column the UPDATE sets, as bound


def _as_read(bound: dict[str, Any]) -> dict[str, Any] | None:
    """What a read returns for each column bound as ``bound``, where its storage class is certain; None if
    it is not for one of them (then the row is read back)."""
    read: dict[str, Any] = {}
    for column, value in bound.items():
        if column in _JSON_COLUMNS:
            # Bound as text that cannot look like a number, or a bare number as bytes (sqlite_json): stored
            # as it is.
            read[column] = _loads(value) if column != "extra" else (_loads(value) or {})
        elif column in _TIME_COLUMNS:
            read[column] = _parse_time(value)
        elif column in _BOOL_COLUMNS:
            read[column] = bool(value)
        elif column in _REAL_COLUMNS and (value is None or type(value) is int or _is_number(value)):
            read[column] = None if value is None else float(value)  # REAL affinity turns an int into a float
        elif (column in _TEXT_COLUMNS and type(value) in (str, type(None))) or (
            column == "attempts" and type(value) is int
        ):
            read[column] = value
        else:
            return None
    return read


def _is_number(value: Any) -> bool:
    return type(value) is float and value == value  # SQLite stores a NaN as NULL


def _after(before: Prediction, move: Move, read_as: dict[str, Any]) -> Prediction:
    return dataclasses.replace(
        before,
        status=move.target,
        version=before.version + 1,
        attempts=before.attempts + 1 if move.count_attempt else before.attempts,
        **read_as,
    )


def _read_credits(db: sqlite3.Connection, account_id: str) -> Credits:
    return rules.credits_of(db.execute(rules.CREDITS_SQL, {"account_id": account_id}).fetchone())


def _add_entries(
    db: sqlite3.Connection, account_id: str, entries: list[rules.Entry], prediction_id: str
) -> None:
    """Append a prediction's ledger entries and move the account's sums with them."""
    if not entries:
        return
    now = _time(utcnow())
    db.executemany(
        _INSERT_LEDGER, [(account_id, kind, amount, prediction_id, now) for kind, amount in entries]
    )
    db.execute(rules.CHANGE_TOTALS_SQL, rules.totals_change(account_id, entries))


def _settle(db: sqlite3.Connection, prediction: Prediction) -> None:
    """Close the prediction's reservation (see rules.settlement_entries)."""
    held = int(db.execute(rules.HELD_SQL, {"prediction_id": prediction.id}).fetchone()[0])
    entries = rules.settlement_entries(held, prediction.status, prediction.cost)
    _add_entries(db, prediction.account_id, entries, prediction.id)


def _delivery_values(d: NewDelivery) -> tuple[Any, ...]:
    now = _time(utcnow())
    return (d.id, d.prediction_id, d.account_id, d.event, d.url, _dumps(d.payload), now, now)
