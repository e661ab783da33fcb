"""The Store port on SQLAlchemy Core: SQLite in embedded mode, asyncpg scaled out (see engines.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Float,
    Row,
    String,
    bindparam,
    case,
    delete,
    event,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from ..core.domain import (
    Account,
    AccountStatus,
    ApiKey,
    Credits,
    DailyUsage,
    IdempotencyRecord,
    LedgerEntry,
    NewDelivery,
    Page,
    Plan,
    Prediction,
    Status,
    WebhookAttempt,
    WebhookDelivery,
    new_id,
    utcnow,
)
from ..core.keys import new_webhook_secret
from ..core.ports import DeliveryPlanner, IdempotencyKeyTaken, ListQuery, Move
from . import rules
from .engines import Connection, Engine, ThreadedEngine
from .migrate import at_head, migration_lock, upgrade_to_head
from .schema import (
    UNFINISHED_SQL,
    UTCDateTime,
    accounts,
    api_keys,
    idempotency_keys,
    ledger_entries,
    plans,
    predictions,
    security_events,
    webhook_attempts,
    webhook_deliveries,
    webhook_secrets,
)


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


def _account(row: Row[Any]) -> Account:
    return Account(
        id=row.id,
        name=row.name,
        status=AccountStatus(row.status),
        created_at=row.created_at,
        plan=row.plan,
        disabled_models=tuple(row.disabled_models or ()),
        status_reason=row.status_reason,
    )


def _plan(row: Row[Any]) -> Plan:
    return Plan(
        name=row.name,
        models=tuple(row.models),
        rate_limit=row.rate_limit,
        rate_window_s=row.rate_window_s,
        key_rate_limit=row.key_rate_limit,
        concurrency_limit=row.concurrency_limit,
        prepaid=row.prepaid,
    )


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


# Built once: every authenticated request runs it (its compiled form is cached by SQLAlchemy too).
_FIND_KEY = (
    select(
        *api_keys.c,
        *(c.label(f"a_{c.name}") for c in accounts.c),
        *(c.label(f"p_{c.name}") for c in plans.c),
    )
    .select_from(api_keys.join(accounts, accounts.c.id == api_keys.c.account_id))
    .outerjoin(plans, plans.c.name == accounts.c.plan)
    .where(api_keys.c.key_hash == bindparam("key_hash"))
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
        version=row.version,
        extra=row.extra or {},
    )


def _transition_statement(move: Move) -> Any:
    """The guarded UPDATE of one move (see rules.py)."""
    changes = rules.move_changes(move)
    changes.update({c: literal_column(sql) for c, sql in rules.counters(move.count_attempt).items()})
    return (
        update(predictions)
        .where(predictions.c.id == move.prediction_id, text(rules.status_guard_sql(move.target)))
        .values(status=move.target.value, **changes)
        .returning(*predictions.columns)
    )


class SqlStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def migrate(self) -> None:
        async with migration_lock(self.engine.url):
            async with self.engine.connect() as conn:
                if await conn.run_sync(at_head):
                    return  # without importing Alembic
            async with self.engine.begin() as conn:
                await conn.run_sync(upgrade_to_head)

    async def close(self) -> None:
        await self.engine.dispose()

    # -- accounts and keys ---------------------------------------------------------------------------------

    async def create_account(self, name: str, plan: str | None = None) -> Account:
        account = Account(
            id=new_id("acc_"), name=name, status=AccountStatus.ACTIVE, created_at=utcnow(), plan=plan
        )
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(accounts).values(
                    id=account.id,
                    name=account.name,
                    status=account.status,
                    created_at=account.created_at,
                    plan=plan,
                    disabled_models=[],
                )
            )
        return account

    async def update_account(self, account_id: str, **changes: Any) -> Account | None:
        """Change status / status_reason / plan / disabled_models."""
        allowed = {"status", "status_reason", "plan", "disabled_models"}
        if set(changes) - allowed:
            raise ValueError(f"cannot change {sorted(set(changes) - allowed)}")
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    update(accounts)
                    .where(accounts.c.id == account_id)
                    .values(**changes)
                    .returning(*accounts.columns)
                )
            ).first()
        return _account(row) if row else None

    # -- plans ---------------------------------------------------------------------------------------------

    async def put_plan(self, plan: Plan) -> Plan:
        values = {
            "models": list(plan.models),
            "rate_limit": plan.rate_limit,
            "rate_window_s": plan.rate_window_s,
            "key_rate_limit": plan.key_rate_limit,
            "concurrency_limit": plan.concurrency_limit,
            "prepaid": plan.prepaid,
        }
        async with self.engine.begin() as conn:
            done = await conn.execute(update(plans).where(plans.c.name == plan.name).values(**values))
            if not done.rowcount:
                await conn.execute(insert(plans).values(name=plan.name, created_at=utcnow(), **values))
        return plan

    async def get_plan(self, name: str) -> Plan | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(plans).where(plans.c.name == name))).first()
        return _plan(row) if row else None

    async def list_plans(self) -> list[Plan]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(plans).order_by(plans.c.name))).all()
        return [_plan(r) for r in rows]

    # -- credits ledger ------------------------------------------------------------------------------------

    async def add_ledger_entry(
        self, account_id: str, kind: str, amount_micros: int, note: str | None
    ) -> Credits:
        """An operator's grant or adjustment (positive or negative)."""
        if kind not in rules.HAND_ENTERED:
            raise ValueError("only grants and adjustments are entered by hand")
        async with self.engine.begin() as conn:
            await self._add_entries(conn, account_id, [(kind, amount_micros)], note=note)
            return await self._credits(conn, account_id)

    async def credits(self, account_id: str) -> Credits:
        async with self.engine.connect() as conn:
            return await self._credits(conn, account_id)

    async def ledger_sums(self, account_id: str) -> Credits:
        """The account's credits summed from its whole ledger: what ``credits`` must always equal."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(text(rules.LEDGER_SUMS_SQL), {"account_id": account_id})).one()
        return Credits(balance_micros=int(row[0]), reserved_micros=int(row[1]))

    @staticmethod
    async def _credits(conn: Connection, account_id: str) -> Credits:
        row = (await conn.execute(text(rules.CREDITS_SQL), {"account_id": account_id})).first()
        return rules.credits_of(row)

    @staticmethod
    async def _add_entries(
        conn: Connection,
        account_id: str,
        entries: list[rules.Entry],
        *,
        prediction_id: str | None = None,
        note: str | None = None,
    ) -> None:
        """Append ledger entries and move the account's sums with them, in the caller's transaction."""
        if not entries:
            return
        now = utcnow()
        await conn.execute(
            insert(ledger_entries),
            [
                {
                    "account_id": account_id,
                    "kind": kind,
                    "amount_micros": amount,
                    "prediction_id": prediction_id,
                    "note": note,
                    "created_at": now,
                }
                for kind, amount in entries
            ],
        )
        await conn.execute(text(rules.CHANGE_TOTALS_SQL), rules.totals_change(account_id, entries))

    async def ledger(
        self, account_id: str, limit: int = 100, before_id: int | None = None
    ) -> list[LedgerEntry]:
        query = select(ledger_entries).where(ledger_entries.c.account_id == account_id)
        if before_id is not None:
            query = query.where(ledger_entries.c.id < before_id)
        query = query.order_by(ledger_entries.c.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            LedgerEntry(r.id, r.kind, r.amount_micros, r.prediction_id, r.note, r.created_at) for r in rows
        ]

    async def _reserve(self, conn: Connection, prediction: Prediction, amount_micros: int) -> None:
        # Writing the account's sums row first serialises every change to this account's credits (a row
        # lock on PostgreSQL, the database write lock on SQLite), so the check below cannot race another
        # submit, a settlement or a grant.
        await conn.execute(text(rules.CHANGE_TOTALS_SQL), rules.totals_change(prediction.account_id, []))
        credits = await self._credits(conn, prediction.account_id)
        entries = rules.reservation_entries(credits, amount_micros)
        await self._add_entries(conn, prediction.account_id, entries, prediction_id=prediction.id)

    async def _settle(self, conn: Connection, prediction: Prediction) -> None:
        """Close the prediction's reservation (see rules.settlement_entries)."""
        held = (await conn.execute(text(rules.HELD_SQL), {"prediction_id": prediction.id})).scalar_one()
        entries = rules.settlement_entries(int(held), prediction.status, prediction.cost)
        await self._add_entries(conn, prediction.account_id, entries, prediction_id=prediction.id)

    async def record_security_event(self, account_id: str, rule_id: str, field: str, since: datetime) -> int:
        """Record a violation; return how many the account has had since ``since`` (this one included)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(security_events).values(
                    account_id=account_id, rule_id=rule_id, field=field[:200], created_at=utcnow()
                )
            )
            count = (
                await conn.execute(
                    select(func.count())
                    .select_from(security_events)
                    .where(security_events.c.account_id == account_id, security_events.c.created_at >= since)
                )
            ).scalar_one()
        return int(count)

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

    def remembered_key(self, key_hash: str) -> tuple[ApiKey, Account] | None:
        return None  # every read goes to the database

    def remembered_prediction(self, prediction_id: str, account_id: str) -> Prediction | None:
        return None  # every read goes to the database

    async def find_key(self, key_hash: str) -> tuple[ApiKey, Account] | None:
        """The key, its account and the account's plan (``Account.plan_details``), in one round trip."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(_FIND_KEY, {"key_hash": key_hash})).first()
        if row is None:
            return None
        values = row._mapping
        key = _key(row)
        owner = Account(
            id=values["a_id"],
            name=values["a_name"],
            status=AccountStatus(values["a_status"]),
            created_at=values["a_created_at"],
            plan=values["a_plan"],
            disabled_models=tuple(values["a_disabled_models"] or ()),
            status_reason=values["a_status_reason"],
            plan_details=(
                Plan(
                    name=values["p_name"],
                    models=tuple(values["p_models"]),
                    rate_limit=values["p_rate_limit"],
                    rate_window_s=values["p_rate_window_s"],
                    key_rate_limit=values["p_key_rate_limit"],
                    concurrency_limit=values["p_concurrency_limit"],
                    prepaid=values["p_prepaid"],
                )
                if values["p_name"] is not None
                else None
            ),
        )
        return key, owner

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
                await self._insert_prediction(conn, prediction)
        except IntegrityError:
            if idempotency is None:
                raise
            raise IdempotencyKeyTaken(idempotency.key) from None

    async def _insert_prediction(self, conn: Connection, prediction: Prediction) -> None:
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
            items=[_prediction(r) for r in rows], total=int(total), page=query.page, per_page=query.per_page
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
        return [_prediction(r) for r in rows]

    async def transition(
        self,
        prediction_id: str,
        target: Status,
        *,
        count_attempt: bool = False,
        deliveries: DeliveryPlanner | None = None,
        **changes: Any,
    ) -> Prediction | None:
        move = Move(prediction_id, target, count_attempt, changes)
        return (await self.transitions([move], deliveries=deliveries))[0]

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
                prediction = _prediction(row)
                if prediction.terminal:
                    await self._settle(conn, prediction)
                if deliveries is not None:
                    planned = deliveries(prediction)
                    if planned:
                        await conn.execute(insert(webhook_deliveries), [_delivery_row(d) for d in planned])
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
        return _prediction(row) if row else None

    # -- idempotency ---------------------------------------------------------------------------------------

    async def find_idempotency(self, account_id: str, key: str) -> IdempotencyRecord | None:
        query = select(idempotency_keys).where(
            idempotency_keys.c.account_id == account_id, idempotency_keys.c.key == key
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return IdempotencyRecord(row.account_id, row.key, row.request_hash, row.prediction_id, row.created_at)

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

    # -- webhooks ------------------------------------------------------------------------------------------

    async def webhook_secrets(self, account_id: str) -> list[str]:
        """The account's valid signing secrets, newest first; the first read creates one."""
        now = utcnow()
        query = (
            select(webhook_secrets.c.secret)
            .where(
                webhook_secrets.c.account_id == account_id,
                or_(webhook_secrets.c.expires_at.is_(None), webhook_secrets.c.expires_at > now),
            )
            .order_by(webhook_secrets.c.created_at.desc())
        )
        async with self.engine.connect() as conn:
            found = [r.secret for r in (await conn.execute(query)).all()]
        if found:
            return found
        # The first secret is added, never rotated in: two first reads at once (a webhook being signed
        # while the account asks for its secret) each add one and both stay valid, whereas a rotation
        # would expire the secret the other reader has already handed out.
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(webhook_secrets).values(
                    id=new_id("whs_"),
                    account_id=account_id,
                    secret=new_webhook_secret(),
                    created_at=now,
                    expires_at=None,
                )
            )
        async with self.engine.connect() as conn:
            return [r.secret for r in (await conn.execute(query)).all()]

    async def rotate_webhook_secret(self, account_id: str, grace_s: float) -> str:
        """A new secret; the current ones stay valid for ``grace_s`` more seconds."""
        now = utcnow()
        secret = new_webhook_secret()
        async with self.engine.begin() as conn:
            await conn.execute(
                update(webhook_secrets)
                .where(
                    webhook_secrets.c.account_id == account_id,
                    or_(
                        webhook_secrets.c.expires_at.is_(None),
                        webhook_secrets.c.expires_at > now + timedelta(seconds=grace_s),
                    ),
                )
                .values(expires_at=now + timedelta(seconds=grace_s))
            )
            await conn.execute(
                insert(webhook_secrets).values(
                    id=new_id("whs_"), account_id=account_id, secret=secret, created_at=now, expires_at=None
                )
            )
        return secret

    async def due_deliveries(
        self, now: datetime, limit: int, skip_origins: Sequence[str] = ()
    ) -> list[WebhookDelivery]:
        query = (
            select(webhook_deliveries)
            .where(
                webhook_deliveries.c.status == "pending",
                webhook_deliveries.c.next_attempt_at <= now,
                *_not_to(skip_origins),
            )
            .order_by(webhook_deliveries.c.next_attempt_at)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_delivery(r) for r in rows]

    async def next_delivery_at(self, skip_origins: Sequence[str] = ()) -> datetime | None:
        query = select(func.min(webhook_deliveries.c.next_attempt_at)).where(
            webhook_deliveries.c.status == "pending", *_not_to(skip_origins)
        )
        async with self.engine.connect() as conn:
            value = (await conn.execute(query)).scalar_one_or_none()
        return UTC_DATETIME.process_result_value(value, self.engine.dialect) if value is not None else None

    async def claim_delivery(self, delivery: WebhookDelivery, lease_until: datetime) -> bool:
        """Take a due delivery for one attempt; false when another process took it first.

        Still due is part of the condition: a claim moves ``next_attempt_at`` to the lease's end, so of
        several dispatchers that read the same due row (an API process and a worker, scaled out) only the
        first claims it. Matching the attempt count alone let a second one send it again."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(webhook_deliveries)
                .where(
                    webhook_deliveries.c.id == delivery.id,
                    webhook_deliveries.c.status == "pending",
                    webhook_deliveries.c.attempts == delivery.attempts,
                    webhook_deliveries.c.next_attempt_at <= utcnow(),
                )
                .values(next_attempt_at=lease_until)
            )
        return bool(result.rowcount)

    async def record_attempt(
        self, delivery_id: str, attempt: WebhookAttempt, status: str, next_attempt_at: datetime | None
    ) -> None:
        values: dict[str, Any] = {
            "attempts": attempt.attempt,
            "status": status,
            "next_attempt_at": next_attempt_at,
            "last_status_code": attempt.status_code,
            "last_error": attempt.error,
        }
        if status == "delivered":
            values["delivered_at"] = attempt.at
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(webhook_attempts).values(
                    delivery_id=delivery_id,
                    attempt=attempt.attempt,
                    at=attempt.at,
                    status_code=attempt.status_code,
                    error=attempt.error,
                    duration_ms=attempt.duration_ms,
                )
            )
            await conn.execute(
                update(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id).values(**values)
            )

    async def disable_deliveries(self, prediction_id: str, url: str) -> int:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(webhook_deliveries)
                .where(
                    webhook_deliveries.c.prediction_id == prediction_id,
                    webhook_deliveries.c.url == url,
                    webhook_deliveries.c.status == "pending",
                )
                .values(status="disabled", next_attempt_at=None)
            )
        return int(result.rowcount)

    async def url_disabled(self, prediction_id: str, url: str) -> bool:
        query = (
            select(func.count())
            .select_from(webhook_deliveries)
            .where(
                webhook_deliveries.c.prediction_id == prediction_id,
                webhook_deliveries.c.url == url,
                webhook_deliveries.c.status == "disabled",
            )
        )
        async with self.engine.connect() as conn:
            return bool((await conn.execute(query)).scalar_one())

    async def list_deliveries(self, prediction_id: str) -> list[WebhookDelivery]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(webhook_deliveries)
                    .where(webhook_deliveries.c.prediction_id == prediction_id)
                    .order_by(webhook_deliveries.c.created_at, webhook_deliveries.c.id)
                )
            ).all()
            ids = [r.id for r in rows]
            attempts = (
                (
                    await conn.execute(
                        select(webhook_attempts)
                        .where(webhook_attempts.c.delivery_id.in_(ids))
                        .order_by(webhook_attempts.c.id)
                    )
                ).all()
                if ids
                else []
            )
        history: dict[str, list[WebhookAttempt]] = {}
        for a in attempts:
            history.setdefault(a.delivery_id, []).append(
                WebhookAttempt(a.attempt, a.at, a.status_code, a.error, a.duration_ms)
            )
        return [_delivery(r, tuple(history.get(r.id, ()))) for r in rows]


UTC_DATETIME = UTCDateTime()


def _delivery_row(d: NewDelivery) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": d.id,
        "prediction_id": d.prediction_id,
        "account_id": d.account_id,
        "event": d.event,
        "url": d.url,
        "payload": d.payload,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "delivered_at": None,
        "last_status_code": None,
        "last_error": None,
    }


def _not_to(origins: Sequence[str]) -> list[ColumnElement[bool]]:
    """Conditions leaving out the deliveries to ``origins``: URLs equal to one, or going on from it with
    "/", "?" or "#" (so "http://a.example" never covers "http://a.example.org/")."""
    url = webhook_deliveries.c.url
    return [
        ~or_(url == origin, *(url.startswith(origin + mark, autoescape=True) for mark in "/?#"))
        for origin in origins
    ]


def _delivery(row: Row[Any], history: tuple[WebhookAttempt, ...] = ()) -> WebhookDelivery:
    return WebhookDelivery(
        id=row.id,
        prediction_id=row.prediction_id,
        account_id=row.account_id,
        event=row.event,
        url=row.url,
        payload=row.payload,
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        created_at=row.created_at,
        delivered_at=row.delivered_at,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        history=history,
    )


async def open_store(
    url: str,
    *,
    sqlite_busy_timeout_ms: int = 5000,
    postgres_lock_timeout_ms: int = 5000,
    migrate: bool = True,
) -> SqlStore:
    engine = make_engine(
        url, sqlite_busy_timeout_ms=sqlite_busy_timeout_ms, postgres_lock_timeout_ms=postgres_lock_timeout_ms
    )
    parsed = make_url(url)
    store: SqlStore
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        from .sqlite_fast import SqliteStore  # it builds on this module

        store = SqliteStore(engine, parsed.database, busy_timeout_ms=sqlite_busy_timeout_ms)
    else:
        store = SqlStore(engine)
    if migrate:
        await store.migrate()
    return store
