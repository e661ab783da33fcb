"""Predictions, their state machine and idempotency records, on SQLAlchemy Core.

Every state change is one guarded UPDATE (rules.status_guard_sql); a terminal one settles the prediction's
reservation, and the webhooks it plans are written to the outbox, all in its transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    Float,
    String,
    case,
    delete,
    func,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from ..core.domain import DailyUsage, IdempotencyRecord, Page, Prediction, Status, utcnow
from ..core.ports import DeliveryPlanner, IdempotencyKeyTaken, ListQuery, Move, PredictionStore
from . import rules
from .accounts import append_entries, read_credits
from .engines import Connection, Engine
from .rows import PREDICTION_COLUMNS, idempotency_of, pending_delivery, prediction_of, prediction_values
from .schema import (
    FAILED_KEEPING_INPUT_SQL,
    UNFINISHED_SQL,
    idempotency_keys,
    predictions,
    webhook_deliveries,
)


def _transition_statement(move: Move) -> Any:
    """The guarded UPDATE of one move, returning the row as it leaves it."""
    changes = rules.move_changes(move)
    changes.update({c: literal_column(sql) for c, sql in rules.counters(move.count_attempt).items()})
    return (
        update(predictions)
        .where(predictions.c.id == move.prediction_id, text(rules.status_guard_sql(move.target)))
        .values(status=move.target.value, **changes)
        .returning(*predictions.columns)
    )


class SqlPredictions(PredictionStore):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def insert_prediction(
        self,
        prediction: Prediction,
        idempotency: IdempotencyRecord | None = None,
        reserve_micros: int | None = None,
    ) -> None:
        try:
            async with self.engine.begin() as conn:
                if reserve_micros is not None:
                    await self._reserve(conn, prediction, reserve_micros)
                if idempotency is not None:
                    # First, so that of two concurrent identical submits only one creates a prediction.
                    await conn.execute(
                        insert(idempotency_keys).values(
                            account_id=idempotency.account_id,
                            key=idempotency.key,
                            request_hash=idempotency.request_hash,
                            prediction_id=idempotency.prediction_id,
                            created_at=idempotency.created_at,
                        )
                    )
                values = dict(zip(PREDICTION_COLUMNS, prediction_values(prediction), strict=True))
                await conn.execute(insert(predictions).values(values))
        except IntegrityError:
            if idempotency is None:
                raise
            raise IdempotencyKeyTaken(idempotency.key) from None

    @staticmethod
    async def _reserve(conn: Connection, prediction: Prediction, amount_micros: int) -> None:
        # Writing the account's sums row first serialises every change to this account's credits (a row
        # lock on PostgreSQL, the database write lock on SQLite), so the check cannot race another submit,
        # a settlement or a grant.
        await conn.execute(text(rules.CHANGE_TOTALS_SQL), rules.totals_change(prediction.account_id, []))
        credits = await read_credits(conn, prediction.account_id)
        entries = rules.reservation_entries(credits, amount_micros)
        await append_entries(conn, prediction.account_id, entries, prediction_id=prediction.id)

    @staticmethod
    async def _settle(conn: Connection, prediction: Prediction) -> None:
        held = (await conn.execute(text(rules.HELD_SQL), {"prediction_id": prediction.id})).scalar_one()
        entries = rules.settlement_entries(int(held), prediction.status, prediction.cost)
        await append_entries(conn, prediction.account_id, entries, prediction_id=prediction.id)

    async def get_prediction(self, prediction_id: str, account_id: str | None = None) -> Prediction | None:
        query = select(predictions).where(predictions.c.id == prediction_id)
        if account_id is not None:
            query = query.where(predictions.c.account_id == account_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return prediction_of(row) if row else None

    def remembered_prediction(self, prediction_id: str, account_id: str) -> Prediction | None:
        return None  # every read goes to the database

    async def list_predictions(self, query: ListQuery) -> Page:
        conditions = [predictions.c.account_id == query.account_id]
        if query.model is not None:
            conditions.append(predictions.c.model == query.model)
        if query.since is not None:
            conditions.append(predictions.c.created_at >= query.since)
        if query.until is not None:
            conditions.append(predictions.c.created_at <= query.until)
        if query.statuses is not None:
            conditions.append(predictions.c.status.in_(sorted(s.value for s in query.statuses)))
        async with self.engine.connect() as conn:
            total = (
                await conn.execute(select(func.count()).select_from(predictions).where(*conditions))
            ).scalar_one()
            rows = (
                await conn.execute(
                    select(predictions)
                    .where(*conditions)
                    .order_by(predictions.c.created_at.desc(), predictions.c.id.desc())
                    .limit(query.per_page)
                    .offset((query.page - 1) * query.per_page)
                )
            ).all()
        return Page(
            items=[prediction_of(r) for r in rows], total=int(total), page=query.page, per_page=query.per_page
        )

    async def daily_usage(self, account_id: str, since: datetime) -> list[DailyUsage]:
        column = predictions.c.created_at
        if self.engine.dialect.name == "sqlite":
            # Stored as naive UTC "YYYY-MM-DD HH:MM:SS[.ffffff]" text.
            day_of = func.date(column, type_=String)
        else:
            # Literals, not bound parameters: PostgreSQL must see the GROUP BY expression as the selected one.
            day_of = func.to_char(
                func.timezone(literal_column("'UTC'"), column), literal_column("'YYYY-MM-DD'"), type_=String
            )
        day = day_of.label("day")
        consumed = func.sum(
            case(
                (predictions.c.status == Status.SUCCEEDED.value, func.coalesce(predictions.c.cost, 0.0)),
                else_=0.0,
            ),
            type_=Float,
        )
        query = (
            select(day, func.count().label("n"), consumed.label("credits"))
            .where(predictions.c.account_id == account_id, column >= since)
            .group_by(day)
            .order_by(day)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [DailyUsage(date.fromisoformat(r.day), int(r.n), float(r.credits or 0.0)) for r in rows]

    async def list_unfinished(self) -> list[Prediction]:
        query = (
            select(predictions)
            .where(UNFINISHED_SQL)  # word for word the partial index's condition, so that it is used
            .order_by(predictions.c.created_at)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [prediction_of(r) for r in rows]

    async def transitions(
        self, moves: Sequence[Move], *, deliveries: DeliveryPlanner | None = None
    ) -> list[Prediction | None]:
        statements = [_transition_statement(move) for move in moves]
        moved: list[Prediction | None] = []
        async with self.engine.begin() as conn:
            for statement in statements:
                row = (await conn.execute(statement)).first()
                if row is None:
                    moved.append(None)
                    continue
                prediction = prediction_of(row)
                if prediction.terminal:
                    await self._settle(conn, prediction)
                if deliveries is not None:
                    planned = deliveries(prediction)
                    if planned:
                        now = utcnow()
                        await conn.execute(
                            insert(webhook_deliveries), [pending_delivery(d, now) for d in planned]
                        )
                moved.append(prediction)
        return moved

    async def remove_data(self, prediction_id: str, account_id: str) -> Prediction | None:
        statement = (
            update(predictions)
            .where(predictions.c.id == prediction_id, predictions.c.account_id == account_id)
            .values(input=None, output=None, data_removed=True)
            .returning(*predictions.columns)
        )
        async with self.engine.begin() as conn:
            row = (await conn.execute(statement)).first()
        return prediction_of(row) if row else None

    async def purge_failed_inputs(self, ended_before: datetime) -> int:
        statement = (
            update(predictions)
            # word for word the partial index's condition, so that it is used
            .where(FAILED_KEEPING_INPUT_SQL, predictions.c.completed_at < ended_before)
            .values(input=None, data_removed=True)
        )
        async with self.engine.begin() as conn:
            result = await conn.execute(statement)
        return int(result.rowcount)

    # -- idempotency ---------------------------------------------------------------------------------------

    async def find_idempotency(self, account_id: str, key: str) -> IdempotencyRecord | None:
        query = select(idempotency_keys).where(
            idempotency_keys.c.account_id == account_id, idempotency_keys.c.key == key
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return idempotency_of(row) if row is not None else None

    async def forget_idempotency(self, account_id: str, key: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(idempotency_keys).where(
                    idempotency_keys.c.account_id == account_id, idempotency_keys.c.key == key
                )
            )

    async def purge_idempotency(self, older_than: datetime) -> int:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                delete(idempotency_keys).where(idempotency_keys.c.created_at < older_than)
            )
        return int(result.rowcount)
