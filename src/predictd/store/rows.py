"""The domain objects the store reads, from rows in their tables' column order, whichever path read them:
SQLAlchemy returns rows already decoded by the columns' types, and embedded mode's sqlite3 connection
decodes its own first (sqlite_values.py). Also the statement both paths authenticate with."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select

from ..core.domain import (
    Account,
    AccountStatus,
    ApiKey,
    IdempotencyRecord,
    NewDelivery,
    Plan,
    Prediction,
    Status,
)
from .schema import accounts, api_keys, plans, predictions

PREDICTION_COLUMNS: tuple[str, ...] = tuple(c.name for c in predictions.columns)
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
), "prediction_of and prediction_values follow the predictions table's column order"


def prediction_of(row: Sequence[Any]) -> Prediction:
    return Prediction(
        id=row[0],
        account_id=row[1],
        model=row[2],
        status=Status(row[3]),
        input=row[4],
        output=row[5],
        error_name=row[6],
        error_message=row[7],
        source=row[8],
        created_at=row[9],
        started_at=row[10],
        completed_at=row[11],
        predict_time=row[12],
        attempts=row[13],
        data_removed=row[14],
        extra=row[15] or {},
        cost=row[16],
        version=row[17],
    )


def prediction_values(p: Prediction) -> tuple[Any, ...]:
    """The prediction's row, in PREDICTION_COLUMNS order."""
    return (
        p.id,
        p.account_id,
        p.model,
        p.status,
        p.input,
        p.output,
        p.error_name,
        p.error_message,
        p.source,
        p.created_at,
        p.started_at,
        p.completed_at,
        p.predict_time,
        p.attempts,
        p.data_removed,
        p.extra,
        p.cost,
        p.version,
    )


def plan_of(row: Sequence[Any]) -> Plan:
    return Plan(
        name=row[0],
        models=tuple(row[1]),
        rate_limit=row[2],
        rate_window_s=row[3],
        key_rate_limit=row[4],
        concurrency_limit=row[5],
        prepaid=bool(row[6]),
        security_screen=bool(row[8]),
    )


def account_of(row: Sequence[Any], plan: Plan | None = None) -> Account:
    return Account(
        id=row[0],
        name=row[1],
        status=AccountStatus(row[2]),
        created_at=row[3],
        plan=row[4],
        disabled_models=tuple(row[5] or ()),
        status_reason=row[6],
        plan_details=plan,
    )


def key_of(row: Sequence[Any]) -> ApiKey:
    return ApiKey(
        id=row[0],
        account_id=row[1],
        prefix=row[2],
        key_hash=row[3],
        label=row[4],
        created_at=row[5],
        revoked_at=row[6],
    )


# The key, its account and the account's plan in one statement: every authenticated request not answered
# from memory runs it.
FIND_KEY = (
    select(
        *api_keys.c,
        *(c.label(f"a_{c.name}") for c in accounts.c),
        *(c.label(f"p_{c.name}") for c in plans.c),
    )
    .select_from(api_keys.join(accounts, accounts.c.id == api_keys.c.account_id))
    .outerjoin(plans, plans.c.name == accounts.c.plan)
    .where(api_keys.c.key_hash == bindparam("key_hash"))
)
_ACCOUNT_AT = len(api_keys.c)
_PLAN_AT = _ACCOUNT_AT + len(accounts.c)


def key_and_account(row: Sequence[Any]) -> tuple[ApiKey, Account]:
    """A FIND_KEY row: the key and its account, with the account's plan when it names one that exists."""
    plan = plan_of(row[_PLAN_AT:]) if row[_PLAN_AT] is not None else None
    return key_of(row), account_of(row[_ACCOUNT_AT:_PLAN_AT], plan)


def idempotency_of(row: Sequence[Any]) -> IdempotencyRecord:
    return IdempotencyRecord(
        account_id=row[0], key=row[1], request_hash=row[2], prediction_id=row[3], created_at=row[4]
    )


def pending_delivery(d: NewDelivery, now: datetime) -> dict[str, Any]:
    """A new outbox row: pending, due at once, never tried."""
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
