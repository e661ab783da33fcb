"""Embedded mode's predictions hot paths on its own sqlite3 connection (see sqlite_connection.py): insert
(with its reservation and idempotency record), read, and state changes (with settlement and the webhook
outbox), in shared commits; reads answered from memory while they are current. The rest of
``SqlPredictions`` runs on SQLAlchemy; its writes reach SQLite through another connection, which drops what
is remembered here."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..core.domain import IdempotencyRecord, NewDelivery, Prediction, Status, utcnow
from ..core.ports import DeliveryPlanner, IdempotencyKeyTaken, Move
from . import rules
from .engines import Engine
from .predictions import SqlPredictions
from .rows import PREDICTION_COLUMNS, idempotency_of, pending_delivery, prediction_of, prediction_values
from .schema import idempotency_keys, predictions, webhook_deliveries
from .sqlite_accounts import KEYS_SHARE, append_entries_on, credits_on
from .sqlite_connection import ROW_OVERHEAD_BYTES, FastConnection, Recent, row_bytes
from .sqlite_values import (
    Steps,
    Stored,
    decoded,
    decoding,
    encoded,
    encoding,
    insert_sql,
    loads,
    parse_time,
    stored_as,
)

_GET_PREDICTION = f"SELECT {', '.join(PREDICTION_COLUMNS)} FROM predictions WHERE id = ?"  # noqa: S608 (constants)
_INSERT_PREDICTION = insert_sql(predictions)
_PREDICTION_ENCODING = encoding(predictions.columns)
_PREDICTION_DECODING = decoding(predictions.columns)
_PREDICTION_STORED = {c.name: stored_as(c) for c in predictions.columns}

_IDEMPOTENCY_COLUMNS = tuple(c.name for c in idempotency_keys.columns)
_IDEMPOTENCY_ENCODING = encoding(idempotency_keys.columns)
_IDEMPOTENCY_DECODING = decoding(idempotency_keys.columns)
_INSERT_IDEMPOTENCY = insert_sql(idempotency_keys)
_FIND_IDEMPOTENCY = (
    f"SELECT {', '.join(_IDEMPOTENCY_COLUMNS)} FROM idempotency_keys "  # noqa: S608 (constants)
    "WHERE account_id = ? AND key = ?"
)

_DELIVERY_COLUMNS = tuple(c.name for c in webhook_deliveries.columns)
_DELIVERY_ENCODING = encoding(webhook_deliveries.columns)
_INSERT_DELIVERY = insert_sql(webhook_deliveries)


def _read_prediction(row: Sequence[Any]) -> Prediction:
    return prediction_of(decoded(row, _PREDICTION_DECODING))


def _prediction_row(p: Prediction) -> list[Any]:
    return encoded(prediction_values(p), _PREDICTION_ENCODING)


def _idempotency_row(record: IdempotencyRecord) -> list[Any]:
    return encoded([getattr(record, c) for c in _IDEMPOTENCY_COLUMNS], _IDEMPOTENCY_ENCODING)


def _delivery_row(d: NewDelivery, now: datetime) -> list[Any]:
    values = pending_delivery(d, now)
    return encoded([values[c] for c in _DELIVERY_COLUMNS], _DELIVERY_ENCODING)


class SqlitePredictions(SqlPredictions):
    def __init__(self, engine: Engine, connection: FastConnection) -> None:
        super().__init__(engine)
        self._connection = connection
        self._predictions: Recent[Prediction] = connection.remembering(1 - KEYS_SHARE)
        self._transition_sql: dict[tuple[Status, bool, tuple[str, ...]], tuple[str, Steps]] = {}

    def remembered_prediction(self, prediction_id: str, account_id: str) -> Prediction | None:
        self._connection.recent_valid()
        found = self._predictions.get(prediction_id)
        return found if found is not None and found.account_id == account_id else None

    async def insert_prediction(
        self,
        prediction: Prediction,
        idempotency: IdempotencyRecord | None = None,
        reserve_micros: int | None = None,
    ) -> None:
        def insert(db: sqlite3.Connection) -> None:
            # BEGIN IMMEDIATE holds the database's write lock: no other reservation can run meanwhile.
            if reserve_micros is not None:
                entries = rules.reservation_entries(credits_on(db, prediction.account_id), reserve_micros)
                append_entries_on(db, prediction.account_id, entries, prediction.id)
            if idempotency is not None:
                # First, so that of two concurrent identical submits only one creates a prediction.
                try:
                    db.execute(_INSERT_IDEMPOTENCY, _idempotency_row(idempotency))
                except sqlite3.IntegrityError:
                    raise IdempotencyKeyTaken(idempotency.key) from None
            db.execute(_INSERT_PREDICTION, row)

        def remember(_: None) -> None:
            # As a read would return it, built from the stored values (not the caller's object): the worker's
            # claim reads it next.
            self._predictions.put(prediction.id, _read_prediction(row), row_bytes(row))

        row = _prediction_row(prediction)
        self._predictions.drop(prediction.id)
        await self._connection.write(insert, remember)

    async def get_prediction(self, prediction_id: str, account_id: str | None = None) -> Prediction | None:
        self._connection.recent_valid()
        found = self._predictions.get(prediction_id)
        if found is None:
            row = await self._connection.read(
                lambda db: db.execute(_GET_PREDICTION, (prediction_id,)).fetchone()
            )
            if row is None:
                return None
            found = _read_prediction(row)
            self._predictions.put(prediction_id, found, row_bytes(row))
        # Another account's prediction is answered exactly like a missing one.
        return found if account_id is None or found.account_id == account_id else None

    def _transition_statement(
        self, target: Status, count_attempt: bool, columns: tuple[str, ...]
    ) -> tuple[str, Steps]:
        """The guarded UPDATE setting ``columns``, and how to bind their values."""
        key = (target, count_attempt, columns)
        found = self._transition_sql.get(key)
        if found is None:
            sets = ["status = ?", *(f"{c} = ?" for c in columns)]
            sets += (f"{c} = {expression}" for c, expression in rules.counters(count_attempt).items())
            # No RETURNING: on SQLite an UPDATE ... RETURNING costs about twice an UPDATE and a SELECT of the
            # row by its key (measured: 50 against 15 + 17 us).
            sql = (
                f"UPDATE predictions SET {', '.join(sets)} "  # noqa: S608 (column names checked, constants)
                f"WHERE id = ? AND {rules.status_guard_sql(target)}"
            )
            found = sql, encoding(predictions.c[c] for c in columns)
            self._transition_sql[key] = found
        return found

    def _bound_move(self, move: Move) -> _BoundMove:
        """The guarded UPDATE of ``move``, its parameters, and the values it binds to each column."""
        changes = rules.move_changes(move)
        columns = tuple(sorted(changes))
        sql, steps = self._transition_statement(move.target, move.count_attempt, columns)
        values = encoded([changes[c] for c in columns], steps)
        bound = dict(zip(columns, values, strict=True))
        return _BoundMove(move, sql, (move.target.value, *values, move.prediction_id), bound)

    async def transitions(
        self, moves: Sequence[Move], *, deliveries: DeliveryPlanner | None = None
    ) -> list[Prediction | None]:
        statements = [self._bound_move(move) for move in moves]

        sizes: dict[str, int] = {}  # what each moved row weighs (row_bytes), for remember

        def apply(db: sqlite3.Connection) -> list[Prediction | None]:
            moved: list[Prediction | None] = []
            for bound in statements:
                prediction_id = bound.move.prediction_id
                before = self._predictions.get(prediction_id)
                before_bytes = self._predictions.size_of(prediction_id)
                self._predictions.drop(prediction_id)  # a later write in this transaction reads it anew
                if db.execute(bound.sql, bound.params).rowcount == 0:
                    moved.append(None)
                    continue
                # The row as it was, still current (see FastConnection._transaction), with what the UPDATE
                # set: the same values a SELECT would return, without the SELECT (10 us, and 4 % of the
                # process under load).
                read_as = _as_read(bound.columns) if before is not None else None
                if before is not None and read_as is not None:
                    prediction = _after(before, bound.move, read_as)
                    # An upper bound: the values set are counted, those they replace are not taken off.
                    sizes[prediction_id] = before_bytes + row_bytes(bound.params) - ROW_OVERHEAD_BYTES
                else:
                    row = db.execute(_GET_PREDICTION, (prediction_id,)).fetchone()
                    prediction = _read_prediction(row)
                    sizes[prediction_id] = row_bytes(row)
                if prediction.terminal:
                    _write_settlement(db, prediction)
                if deliveries is not None:
                    planned = deliveries(prediction)
                    if planned:
                        now = utcnow()
                        db.executemany(_INSERT_DELIVERY, [_delivery_row(d, now) for d in planned])
                moved.append(prediction)
            return moved

        def remember(moved: list[Prediction | None]) -> None:
            for prediction in moved:
                if prediction is not None:
                    self._predictions.put(prediction.id, prediction, sizes[prediction.id])

        # At once: a state change moves a prediction on (a worker slot waits on it to record the outcome and
        # hand its worker the next ones), and it takes the waiting inserts with it.
        return await self._connection.write(apply, remember, at_once=True)

    async def find_idempotency(self, account_id: str, key: str) -> IdempotencyRecord | None:
        row = await self._connection.read(
            lambda db: db.execute(_FIND_IDEMPOTENCY, (account_id, key)).fetchone()
        )
        return idempotency_of(decoded(row, _IDEMPOTENCY_DECODING)) if row is not None else None


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
        stored = _PREDICTION_STORED[column]
        if stored is Stored.JSON:
            # Bound as text that cannot look like a number, or a bare number as bytes (sqlite_json): stored
            # as it is.
            read[column] = loads(value) if column != "extra" else (loads(value) or {})
        elif stored is Stored.TIME:
            read[column] = parse_time(value)
        elif stored is Stored.FLAG:
            read[column] = bool(value)
        elif stored is Stored.REAL and (value is None or type(value) is int or _is_number(value)):
            read[column] = None if value is None else float(value)  # REAL affinity turns an int into a float
        elif stored is Stored.TEXT and (value is None or isinstance(value, str)):
            read[column] = None if value is None else str(value)  # a StrEnum is read back as its text
        elif stored is Stored.INTEGER and type(value) is int:
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


def _write_settlement(db: sqlite3.Connection, prediction: Prediction) -> None:
    """Close the prediction's reservation (see rules.settlement_entries)."""
    held = int(db.execute(rules.HELD_SQL, {"prediction_id": prediction.id}).fetchone()[0])
    entries = rules.settlement_entries(held, prediction.status, prediction.cost)
    append_entries_on(db, prediction.account_id, entries, prediction.id)
