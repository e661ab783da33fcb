"""The tables. Alembic migrations in ``migrations/`` must produce exactly this (a test compares them)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    text,
    true,
)
from sqlalchemy.types import TypeEngine

from ..core.domain import TERMINAL, Status


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def sqlite_json(value: Any, text: str) -> str | bytes:
    """How JSON ``text`` (of ``value``) is bound on SQLite. A column declared JSON has NUMERIC affinity there:
    the text of a bare number would be stored as a number, and lose its type or digits (``1.0`` becomes
    ``1``, ``12345678901234567890`` a float) and no longer read as JSON text. As bytes (a BLOB) it is stored
    as it is."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return text.encode()
    return text


def read_sqlite_json(stored: Any, parse: Callable[[Any], Any]) -> Any:
    """A JSON column's value read on SQLite: text or bytes parsed, and a number as it is (a bare number
    written as text before :func:`sqlite_json` existed was stored as a number)."""
    if stored is None:
        return None
    if isinstance(stored, int | float):
        return stored
    return parse(stored)


class Json(TypeDecorator[Any]):
    """JSON, stored as JSONB on PostgreSQL. Chosen per dialect when a statement is compiled (rather than
    ``JSON().with_variant(JSONB(), ...)``) so that an embedded process never loads the PostgreSQL dialect:
    about 2.3 MiB of its memory at rest. On SQLite, bare numbers are bound as bytes (see sqlite_json)."""

    impl = JSON
    cache_ok = True
    should_evaluate_none = True  # as JSON(none_as_null=False): None is stored as the JSON text 'null'

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        inner = super().bind_processor(dialect)
        if dialect.name != "sqlite" or inner is None:
            return inner
        serialize = inner

        def bind(value: Any) -> Any:
            text = serialize(value)
            return sqlite_json(value, text) if isinstance(text, str) else text

        return bind

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        inner = super().result_processor(dialect, coltype)
        if dialect.name != "sqlite" or inner is None:
            return inner
        parse = inner
        return lambda stored: read_sqlite_json(stored, parse)


metadata = MetaData()

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("plan", String(100), nullable=True),
    Column("disabled_models", Json, nullable=True),
    Column("status_reason", Text, nullable=True),
)

plans = Table(
    "plans",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("models", Json, nullable=False),
    Column("rate_limit", Integer, nullable=True),
    Column("rate_window_s", Float, nullable=False),
    Column("key_rate_limit", Integer, nullable=True),
    Column("concurrency_limit", Integer, nullable=True),
    Column("prepaid", Boolean, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    # Last, as migration 0007 added it: rows are read by position (rows.plan_of).
    Column("security_screen", Boolean, nullable=False, server_default=true()),
)

# Append-only. Balance = grants + adjustments - charges; reserved = reserves - releases.
ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("amount_micros", BigInteger, nullable=False),
    Column("prediction_id", String(40), nullable=True),
    Column("note", Text, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_ledger_account", "account_id", "id"),
    Index("ix_ledger_prediction", "prediction_id"),
)

# The ledger's two sums per account (see ledger_entries), changed in the same transaction as every entry
# the store writes, so that a prepaid submit reads one row instead of summing the account's whole history.
# The ledger stays the record: credits_audit() recomputes the sums from it.
account_credits = Table(
    "account_credits",
    metadata,
    Column("account_id", String(40), ForeignKey("accounts.id"), primary_key=True),
    Column("balance_micros", BigInteger, nullable=False),
    Column("reserved_micros", BigInteger, nullable=False),
)

security_events = Table(
    "security_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("rule_id", String(100), nullable=False),
    Column("field", String(200), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_security_events_account", "account_id", "created_at"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False, index=True),
    Column("prefix", String(24), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("label", String(200), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
)

UNFINISHED: tuple[Status, ...] = tuple(sorted(set(Status) - TERMINAL))
UNFINISHED_SQL = text(f"status IN ({', '.join(repr(s.value) for s in UNFINISHED)})")
# Failed predictions still holding their inputs, which the retention sweep removes (migration 0008).
FAILED: tuple[Status, ...] = (Status.FAILED, Status.TIMED_OUT)
FAILED_KEEPING_INPUT_SQL = text(
    f"status IN ({', '.join(repr(s.value) for s in FAILED)}) AND NOT data_removed"
)

predictions = Table(
    "predictions",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("model", String(100), nullable=False),
    Column("status", String(16), nullable=False),
    Column("input", Json, nullable=True),
    Column("output", Json, nullable=True),
    Column("error_name", String(100), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("source", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("started_at", UTCDateTime(), nullable=True),
    Column("completed_at", UTCDateTime(), nullable=True),
    Column("predict_time", Float, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("data_removed", Boolean, nullable=False),
    Column("extra", Json, nullable=False),
    Column("cost", Float, nullable=True),
    Column("version", Integer, nullable=False, server_default="0"),
    Index("ix_predictions_account_created", "account_id", "created_at"),
    # Only the unfinished ones (what recovery and the sweeper look for): a finished prediction leaves the
    # index, which stays as small as the backlog, and moving between finished states never touches it.
    # PostgreSQL's index has the same condition (migration 0006), not declared here: naming a postgresql_
    # option makes SQLAlchemy import its PostgreSQL dialect, 2.4 MiB more in every embedded server.
    Index("ix_predictions_unfinished", "status", sqlite_where=UNFINISHED_SQL),
    Index("ix_predictions_failed_inputs", "completed_at", sqlite_where=FAILED_KEEPING_INPUT_SQL),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("account_id", String(40), ForeignKey("accounts.id"), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("prediction_id", String(40), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

webhook_secrets = Table(
    "webhook_secrets",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False, index=True),
    Column("secret", String(100), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=True),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("prediction_id", String(40), nullable=False, index=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("event", String(16), nullable=False),
    Column("url", Text, nullable=False),
    Column("payload", Json, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("delivered_at", UTCDateTime(), nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("delivery_id", String(40), ForeignKey("webhook_deliveries.id"), nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("duration_ms", Float, nullable=False),
)
