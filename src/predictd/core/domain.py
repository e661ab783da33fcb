"""Predictions, their state machine, accounts and models. Pure data and rules; no I/O."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """Internal prediction states. Each HTTP surface names them in its own vocabulary (below)."""

    QUEUED = "queued"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


TERMINAL: frozenset[Status] = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.TIMED_OUT})

# The only legal moves. PROCESSING -> QUEUED is a retry after the worker running it died.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.PROCESSING, Status.CANCELLED, Status.FAILED, Status.TIMED_OUT}),
    Status.PROCESSING: frozenset(
        {Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.TIMED_OUT, Status.QUEUED}
    ),
    Status.SUCCEEDED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELLED: frozenset(),
    Status.TIMED_OUT: frozenset(),
}


def can_transition(current: Status, target: Status) -> bool:
    return target in TRANSITIONS[current]


def sources_of(target: Status) -> frozenset[Status]:
    """The states from which ``target`` may be entered: the guard of a conditional store update."""
    return frozenset(s for s, targets in TRANSITIONS.items() if target in targets)


# The Skytells surface's names of the states, which messages use too (each surface declares its own).
NATIVE_STATUS: dict[Status, str] = {
    Status.QUEUED: "pending",
    Status.PROCESSING: "processing",
    Status.SUCCEEDED: "succeeded",
    Status.FAILED: "failed",
    Status.CANCELLED: "cancelled",
    Status.TIMED_OUT: "failed",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str = "") -> str:
    """A time-ordered, unguessable id: 12 hex digits of milliseconds, then 64 random bits."""
    return f"{prefix}{int(time.time() * 1000):012x}{secrets.token_hex(8)}"


def iso_utc(moment: datetime | None) -> str | None:
    """A moment as the wire writes it: ISO 8601 with ``Z`` for UTC."""
    return moment.isoformat().replace("+00:00", "Z") if moment else None


class AccountStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    name: str
    status: AccountStatus
    created_at: datetime
    plan: str | None = None
    disabled_models: tuple[str, ...] = ()
    status_reason: str | None = None
    # The row of ``plan``, when the store read it together with the account (an API key lookup joins it,
    # so that authenticating costs one query); None when not read or when no such plan exists.
    plan_details: Plan | None = field(default=None, compare=False, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status.value,
            "status_reason": self.status_reason,
            "plan": self.plan,
            "disabled_models": list(self.disabled_models),
            "created_at": iso_utc(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """What an account may use: models ("*" for all), request rate, in-flight predictions, prepaid credits."""

    name: str
    models: tuple[str, ...] = ("*",)
    rate_limit: int | None = None
    rate_window_s: float = 60.0
    key_rate_limit: int | None = None
    concurrency_limit: int | None = None
    prepaid: bool = False
    # Whether the models that opt in screen this plan's requests (SECURITY_VIOLATION); off: never screened.
    security_screen: bool = True

    def allows(self, model: str) -> bool:
        return "*" in self.models or model in self.models

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "models": list(self.models),
            "rate_limit": self.rate_limit,
            "rate_window_s": self.rate_window_s,
            "key_rate_limit": self.key_rate_limit,
            "concurrency_limit": self.concurrency_limit,
            "prepaid": self.prepaid,
            "security_screen": self.security_screen,
        }


MICROS = 1_000_000


def to_micros(credits: float) -> int:
    return round(credits * MICROS)


def from_micros(micros: int) -> float:
    return micros / MICROS


@dataclass(frozen=True, slots=True)
class Credits:
    balance_micros: int
    reserved_micros: int

    @property
    def available_micros(self) -> int:
        return self.balance_micros - self.reserved_micros

    def as_dict(self) -> dict[str, float]:
        return {
            "balance": from_micros(self.balance_micros),
            "reserved": from_micros(self.reserved_micros),
            "available": from_micros(self.available_micros),
        }


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    id: int
    kind: str  # grant | adjust | reserve | release | charge
    amount_micros: int
    prediction_id: str | None
    note: str | None
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "amount": from_micros(self.amount_micros),
            "prediction_id": self.prediction_id,
            "note": self.note,
            "created_at": iso_utc(self.created_at),
        }


class CreditsRefused(Exception):
    """Raised by the store when a reservation would overspend; nothing was written."""

    def __init__(self, credits: Credits, needed_micros: int) -> None:
        super().__init__("credits refused")
        self.credits = credits
        self.needed_micros = needed_micros


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    account_id: str
    prefix: str
    label: str
    created_at: datetime
    revoked_at: datetime | None
    key_hash: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the authenticated key, its account and the account's plan."""

    account: Account
    key_id: str
    plan: Plan = field(default_factory=lambda: Plan("default"))
    key_hash: str = field(default="", repr=False)  # the key's SHA-256 digest, to check it again later


@dataclass(slots=True)
class Prediction:
    id: str
    account_id: str
    model: str
    status: Status
    input: dict[str, Any] | None
    created_at: datetime
    source: str = "api"
    output: Any = None
    error_name: str | None = None
    error_message: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    predict_time: float | None = None
    attempts: int = 0
    data_removed: bool = False
    cost: float | None = None
    version: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def credits_used(self) -> float:
        """What the prediction consumed: its cost once succeeded, nothing otherwise."""
        if self.status is not Status.SUCCEEDED:
            return 0.0
        return self.cost or 0.0

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def total_time(self) -> float | None:
        if self.completed_at is None:
            return None
        return max(0.0, (self.completed_at - self.created_at).total_seconds())


def price_of(price: float, unit: str, predict_time: float | None) -> float:
    """The cost of a successful prediction: a flat price, or a price per second of predict_time."""
    if unit == "second":
        return round(price * (predict_time or 0.0), 6)
    return price


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model as the API sees it: its configuration plus what its workers reported."""

    slug: str
    description: str
    available: bool
    input_schema: dict[str, Any] | None
    output_schema: dict[str, Any] | None
    status_detail: str = ""
    # Its own setup raised on every worker that tried to start it: unavailable until an operator fixes it.
    setup_failed: bool = False
    price: float = 0.0
    price_unit: str = "prediction"
    timeout_s: float = 600.0
    use_cases: tuple[str, ...] = ()
    blocked_regions: tuple[str, ...] = ()
    # None: its inputs are not security-screened; () its Prompt inputs; else the inputs named.
    security_fields: tuple[str, ...] | None = None

    def max_cost(self) -> float:
        """The most one prediction can cost: what a prepaid account must have available to start it."""
        return price_of(self.price, self.price_unit, self.timeout_s)


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Prediction]
    total: int
    page: int
    per_page: int

    @property
    def last_page(self) -> int:
        return max(1, -(-self.total // self.per_page))


@dataclass(frozen=True, slots=True)
class DailyUsage:
    """One UTC day of an account's predictions: how many were created and the credits they consumed."""

    day: date
    predictions: int
    credits: float


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    account_id: str
    key: str
    request_hash: str
    prediction_id: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """A webhook to send, written to the outbox in the same transaction as the state change it reports."""

    id: str
    prediction_id: str
    account_id: str
    event: str
    url: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class WebhookAttempt:
    attempt: int
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: float


@dataclass(frozen=True, slots=True)
class WebhookDelivery(NewDelivery):
    """A webhook in the outbox, with how its delivery went so far."""

    status: str  # pending | delivered | failed | disabled
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    history: tuple[WebhookAttempt, ...] = ()
