"""The Store port on SQLAlchemy Core (async): aiosqlite for embedded mode, asyncpg for scaled-out mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Row, event, func, insert, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ..domain import (
    TERMINAL,
    Account,
    AccountStatus,
    ApiKey,
    Page,
    Prediction,
    Status,
    new_id,
    sources_of,
    utcnow,
)
from ..ports import ListQuery
from .migrate import migration_lock, upgrade_to_head
from .schema import accounts, api_keys, predictions


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str, *, sqlite_busy_timeout_ms: int = 5000) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            url,
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
            connect_args={"timeout": sqlite_busy_timeout_ms / 1000},
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
        pool_size=10,
        max_overflow=10,
        pool_pre_ping=True,
    )


def _account(row: Row[Any]) -> Account:
    return Account(id=row.id, name=row.name, status=AccountStatus(row.status), created_at=row.created_at)


def _key(row: Row[Any]) -> ApiKey:
    return ApiKey(
        id=row.id,
        account_id=row.account_id,
        prefix=row.prefix,
        label=row.label,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        key_hash=row.key_hash,
    )


def _prediction(row: Row[Any]) -> Prediction:
    return Prediction(
        id=row.id,
        account_id=row.account_id,
        model=row.model,
        status=Status(row.status),
        input=row.input,
        output=row.output,
        error_name=row.error_name,
        error_message=row.error_message,
        source=row.source,
        created_at=row.created_at,
        started_at=row.started_at,
        completed_at=row.completed_at,
        predict_time=row.predict_time,
        attempts=row.attempts,
        data_removed=row.data_removed,
        cost=row.cost,
        extra=row.extra or {},
    )


_PREDICTION_COLUMNS = frozenset(c.name for c in predictions.columns)


class SqlStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def migrate(self) -> None:
        async with migration_lock(self.engine.url), self.engine.begin() as conn:
            await conn.run_sync(upgrade_to_head)

    async def close(self) -> None:
        await self.engine.dispose()

    # -- accounts and keys ---------------------------------------------------------------------------------

    async def create_account(self, name: str) -> Account:
        account = Account(id=new_id("acc_"), name=name, status=AccountStatus.ACTIVE, created_at=utcnow())
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(accounts).values(
                    id=account.id, name=account.name, status=account.status, created_at=account.created_at
                )
            )
        return account

    async def get_account_by_name(self, name: str) -> Account | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(accounts).where(accounts.c.name == name))).first()
        return _account(row) if row else None

    async def list_accounts(self) -> list[Account]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(accounts).order_by(accounts.c.created_at))).all()
        return [_account(r) for r in rows]

    async def create_key(self, account_id: str, key_hash: str, prefix: str, label: str) -> ApiKey:
        key = ApiKey(
            id=new_id("key_"),
            account_id=account_id,
            prefix=prefix,
            label=label,
            created_at=utcnow(),
            revoked_at=None,
            key_hash=key_hash,
        )
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(api_keys).values(
                    id=key.id,
                    account_id=account_id,
                    prefix=prefix,
                    key_hash=key_hash,
                    label=label,
                    created_at=key.created_at,
                    revoked_at=None,
                )
            )
        return key

    async def find_key(self, key_hash: str) -> tuple[ApiKey, Account] | None:
        query = (
            select(
                api_keys,
                accounts.c.name,
                accounts.c.status.label("account_status"),
                accounts.c.created_at.label("account_created_at"),
            )
            .join(accounts, accounts.c.id == api_keys.c.account_id)
            .where(api_keys.c.key_hash == key_hash)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        account = Account(
            id=row.account_id,
            name=row.name,
            status=AccountStatus(row.account_status),
            created_at=row.account_created_at,
        )
        return _key(row), account

    async def list_keys(self, account_id: str) -> list[ApiKey]:
        query = select(api_keys).where(api_keys.c.account_id == account_id).order_by(api_keys.c.created_at)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_key(r) for r in rows]

    async def revoke_key(self, key_id: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        return bool(result.rowcount)

    async def revoke_keys_labelled(self, account_id: str, label: str) -> int:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(api_keys)
                .where(
                    api_keys.c.account_id == account_id,
                    api_keys.c.label == label,
                    api_keys.c.revoked_at.is_(None),
                )
                .values(revoked_at=utcnow())
            )
        return int(result.rowcount)

    # -- predictions ---------------------------------------------------------------------------------------

    async def insert_prediction(self, prediction: Prediction) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(predictions).values(
                    id=prediction.id,
                    account_id=prediction.account_id,
                    model=prediction.model,
                    status=prediction.status,
                    input=prediction.input,
                    output=prediction.output,
                    error_name=prediction.error_name,
                    error_message=prediction.error_message,
                    source=prediction.source,
                    created_at=prediction.created_at,
                    started_at=prediction.started_at,
                    completed_at=prediction.completed_at,
                    predict_time=prediction.predict_time,
                    attempts=prediction.attempts,
                    data_removed=prediction.data_removed,
                    cost=prediction.cost,
                    extra=prediction.extra,
                )
            )

    async def get_prediction(self, prediction_id: str, account_id: str | None = None) -> Prediction | None:
        query = select(predictions).where(predictions.c.id == prediction_id)
        if account_id is not None:
            query = query.where(predictions.c.account_id == account_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _prediction(row) if row else None

    async def list_predictions(self, query: ListQuery) -> Page:
        conditions = [predictions.c.account_id == query.account_id]
        if query.model is not None:
            conditions.append(predictions.c.model == query.model)
        if query.since is not None:
            conditions.append(predictions.c.created_at >= query.since)
        if query.until is not None:
            conditions.append(predictions.c.created_at <= query.until)
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
            items=[_prediction(r) for r in rows], total=int(total), page=query.page, per_page=query.per_page
        )

    async def list_unfinished(self) -> list[Prediction]:
        query = (
            select(predictions)
            .where(predictions.c.status.not_in([s.value for s in TERMINAL]))
            .order_by(predictions.c.created_at)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_prediction(r) for r in rows]

    async def transition(
        self, prediction_id: str, target: Status, *, count_attempt: bool = False, **changes: Any
    ) -> Prediction | None:
        unknown = set(changes) - _PREDICTION_COLUMNS
        if unknown:
            raise ValueError(f"unknown prediction columns: {sorted(unknown)}")
        if count_attempt:
            changes["attempts"] = predictions.c.attempts + 1
        allowed = [s.value for s in sources_of(target)]
        statement = (
            update(predictions)
            .where(predictions.c.id == prediction_id, predictions.c.status.in_(allowed))
            .values(status=target.value, **changes)
            .returning(*predictions.columns)
        )
        async with self.engine.begin() as conn:
            row = (await conn.execute(statement)).first()
        return _prediction(row) if row else None

    async def remove_data(self, prediction_id: str, account_id: str) -> Prediction | None:
        statement = (
            update(predictions)
            .where(predictions.c.id == prediction_id, predictions.c.account_id == account_id)
            .values(input=None, output=None, data_removed=True)
            .returning(*predictions.columns)
        )
        async with self.engine.begin() as conn:
            row = (await conn.execute(statement)).first()
        return _prediction(row) if row else None


async def open_store(url: str, *, sqlite_busy_timeout_ms: int = 5000, migrate: bool = True) -> SqlStore:
    store = SqlStore(make_engine(url, sqlite_busy_timeout_ms=sqlite_busy_timeout_ms))
    if migrate:
        await store.migrate()
    return store
