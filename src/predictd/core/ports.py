"""The small interfaces the use cases are written against. Backends implement them; nothing here does I/O."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from .domain import (
    Account,
    ApiKey,
    Credits,
    DailyUsage,
    IdempotencyRecord,
    LedgerEntry,
    ModelInfo,
    NewDelivery,
    Page,
    Plan,
    Prediction,
    Status,
    WebhookAttempt,
    WebhookDelivery,
)


class IdempotencyKeyTaken(Exception):
    """Another request with the same Idempotency-Key created its prediction first."""


# Given the prediction as a state change left it, the webhooks to write in the same transaction.
DeliveryPlanner = Callable[[Prediction], list[NewDelivery]]


@dataclass(frozen=True, slots=True)
class Move:
    """One state-machine transition of a prediction (see ``PredictionStore.transitions``)."""

    prediction_id: str
    target: Status
    count_attempt: bool = False  # add one to the prediction's attempts
    changes: Mapping[str, Any] = field(default_factory=dict)  # other columns to set


@dataclass(frozen=True, slots=True)
class ListQuery:
    account_id: str
    page: int
    per_page: int
    model: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    statuses: frozenset[Status] | None = None  # None: any status


class AccountStore(Protocol):
    """Accounts, their plans, API keys, the credits ledger and security events."""

    async def create_account(self, name: str, plan: str | None = None) -> Account: ...
    async def update_account(self, account_id: str, **changes: Any) -> Account | None: ...
    async def get_account_by_name(self, name: str) -> Account | None: ...
    async def list_accounts(self) -> list[Account]: ...

    async def put_plan(self, plan: Plan) -> Plan: ...
    async def get_plan(self, name: str) -> Plan | None: ...
    async def list_plans(self) -> list[Plan]: ...

    async def add_ledger_entry(
        self, account_id: str, kind: str, amount_micros: int, note: str | None
    ) -> Credits: ...
    async def credits(self, account_id: str) -> Credits: ...
    async def ledger(
        self, account_id: str, limit: int = 100, before_id: int | None = None
    ) -> list[LedgerEntry]: ...
    async def record_security_event(
        self, account_id: str, rule_id: str, field: str, since: datetime
    ) -> int: ...

    async def create_key(self, account_id: str, key_hash: str, prefix: str, label: str) -> ApiKey: ...
    async def find_key(self, key_hash: str) -> tuple[ApiKey, Account] | None: ...
    def remembered_key(self, key_hash: str) -> tuple[ApiKey, Account] | None:
        """What ``find_key`` would answer, when the store can tell without I/O; None otherwise (including
        when the key is unknown). While nothing changed, the very same object ``find_key`` returned."""
        ...

    async def list_keys(self, account_id: str) -> list[ApiKey]: ...
    async def revoke_key(self, key_id: str) -> bool: ...
    async def revoke_keys_labelled(self, account_id: str, label: str) -> int: ...


class PredictionStore(Protocol):
    """Predictions, their state machine and idempotency records. A prepaid submit's reservation and a
    terminal move's settlement are written in the prediction's own transaction."""

    async def insert_prediction(
        self,
        prediction: Prediction,
        idempotency: IdempotencyRecord | None = None,
        reserve_micros: int | None = None,
    ) -> None:
        """Raises IdempotencyKeyTaken, or CreditsRefused when the reservation would overspend; either way
        nothing is created."""
        ...

    async def get_prediction(
        self, prediction_id: str, account_id: str | None = None
    ) -> Prediction | None: ...
    def remembered_prediction(self, prediction_id: str, account_id: str) -> Prediction | None:
        """What ``get_prediction`` would answer, when the store can tell without I/O; None otherwise."""
        ...

    async def list_predictions(self, query: ListQuery) -> Page: ...
    async def list_unfinished(self) -> list[Prediction]: ...
    async def daily_usage(self, account_id: str, since: datetime) -> list[DailyUsage]:
        """Predictions created and credits consumed per UTC day from ``since`` on (days with none omitted)."""
        ...

    async def transition(
        self,
        prediction_id: str,
        target: Status,
        *,
        count_attempt: bool = False,
        deliveries: DeliveryPlanner | None = None,
        **changes: Any,
    ) -> Prediction | None:
        """Move to ``target`` only from a state the state machine allows; None when the move is refused.
        ``count_attempt`` adds one to the prediction's attempts; ``deliveries`` plans webhooks written in
        the same transaction (a durable outbox). One move of ``transitions``, for the stores that declare
        this port as their base."""
        move = Move(prediction_id, target, count_attempt, changes)
        return (await self.transitions([move], deliveries=deliveries))[0]

    async def transitions(
        self, moves: Sequence[Move], *, deliveries: DeliveryPlanner | None = None
    ) -> list[Prediction | None]:
        """Several transitions in one transaction, in order: each is guarded on its own (a refused one
        gives None and leaves the others be), and they become durable together or not at all."""
        ...

    async def remove_data(self, prediction_id: str, account_id: str) -> Prediction | None: ...
    async def purge_failed_inputs(self, ended_before: datetime) -> int:
        """Removes the inputs of the failed (and timed-out) predictions that ended before then."""
        ...

    async def find_idempotency(self, account_id: str, key: str) -> IdempotencyRecord | None: ...
    async def forget_idempotency(self, account_id: str, key: str) -> None: ...
    async def purge_idempotency(self, older_than: datetime) -> int: ...


class DeliveryStore(Protocol):
    """The webhook outbox (deliveries and their attempts) and each account's signing secrets."""

    async def webhook_secrets(self, account_id: str) -> list[str]: ...
    async def rotate_webhook_secret(self, account_id: str, grace_s: float) -> str: ...
    async def due_deliveries(
        self, now: datetime, limit: int, skip_origins: Sequence[str] = ()
    ) -> list[WebhookDelivery]:
        """Pending deliveries due at ``now``, oldest first, but none to ``skip_origins`` (receivers whose
        every slot is taken): a URL equal to one of them, or going on from it with "/", "?" or "#"."""
        ...

    async def next_delivery_at(self, skip_origins: Sequence[str] = ()) -> datetime | None:
        """When the next pending delivery, leaving out those to ``skip_origins``, is due."""
        ...

    async def claim_delivery(self, delivery: WebhookDelivery, lease_until: datetime) -> bool: ...
    async def record_attempt(
        self, delivery_id: str, attempt: WebhookAttempt, status: str, next_attempt_at: datetime | None
    ) -> None: ...
    async def disable_deliveries(self, prediction_id: str, url: str) -> int: ...
    async def url_disabled(self, prediction_id: str, url: str) -> bool: ...
    async def list_deliveries(self, prediction_id: str) -> list[WebhookDelivery]: ...


class Broker(Protocol):
    """Hands accepted predictions to whatever runs them, and carries cancel requests."""

    async def enqueue(self, prediction_id: str, model: str) -> None: ...
    async def cancel(self, prediction_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Job:
    """One prediction handed to a worker. ``orphaned``: it may be PROCESSING already, on a worker that is
    gone (its lease ran out, or Redis lost track of it), so the worker may take it over."""

    prediction_id: str
    model: str
    orphaned: bool = False
    receipt: str | None = None  # the broker's handle on this delivery (a stream entry id)


CancelHandler = Callable[[str], Awaitable[None]]


class WorkSource(Protocol):
    """The consuming side of a Broker: what worker slots take predictions from."""

    async def take(self, model: str) -> Job: ...
    def take_ready(self, model: str) -> Job | None:
        """A job for the model that can be handed out at once, or None: what a busy worker slot sends ahead
        to its worker (see runtime/supervisor.py). A source that cannot tell without a round trip, or whose
        jobs must not wait behind another in one worker, always answers None."""
        ...

    def backlog(self, model: str) -> int:
        """Jobs queued for the model as far as this process knows without asking anyone (0: unknown)."""
        ...

    async def finish(self, job: Job) -> None:
        """The job's outcome is stored (or it needs no run): the broker may forget it."""
        ...

    async def retry(self, job: Job) -> None:
        """Queue the job again (its worker died, or this worker is stopping)."""
        ...

    def on_cancel(self, handler: CancelHandler) -> None: ...


OutcomeT_contra = TypeVar("OutcomeT_contra", contravariant=True)


class RunRecords(Protocol[OutcomeT_contra]):
    """Where worker slots claim the predictions they run and record how each run ended (implemented by
    usecases/runs.py). Generic in the outcome, which runtime/outcomes.py defines: core stays below runtime."""

    async def claim(self, prediction_id: str, *, orphaned: bool = False) -> Prediction | None:
        """QUEUED -> PROCESSING; None when the prediction is no longer queued. ``orphaned``: it may be
        PROCESSING on a worker that is gone, whose lost run is recorded first."""
        ...

    async def claim_many(self, prediction_ids: Sequence[str]) -> list[Prediction | None]: ...

    async def record_many_and_claim(
        self,
        ended: Sequence[tuple[Prediction, OutcomeT_contra]],
        model: ModelInfo | None,
        claims: Sequence[str],
    ) -> tuple[list[tuple[Prediction | None, bool]], list[Prediction | None]]:
        """Record how the ``ended`` runs ended and claim ``claims``, in one transaction. For each outcome:
        the stored prediction (None if the write was refused) and whether to queue it again."""
        ...


class DispatchUnavailable(Exception):
    """The dispatcher's shared state (Redis, scaled out) cannot be reached: a sweep skips its round."""


class WorkTracking(Protocol):
    """What a dispatcher that can lose work (Redis, scaled out) knows of it, for the sweep that puts back what
    it lost (usecases/recovery.py). Raises DispatchUnavailable when it cannot be asked."""

    async def lead(self, interval_s: float) -> bool:
        """Whether this process sweeps this round (one at a time across processes)."""
        ...

    async def known(self, prediction_ids: Sequence[str]) -> dict[str, bool]:
        """Whether the dispatcher still has each prediction queued or running."""
        ...

    async def requeue(self, prediction_id: str, model: str, *, running: bool) -> None:
        """Queue again a prediction it lost; ``running``: it may be PROCESSING on a worker that is gone."""
        ...

    async def counted_since(self, older_than_s: float) -> list[tuple[str, str]]:
        """(account id, prediction id) of every in-flight count made at least ``older_than_s`` ago."""
        ...


class Notifier(Protocol):
    """Wakes whoever waits for a prediction's state to change (await, streams)."""

    def publish(self, prediction: Prediction) -> None: ...
    def subscribe(self, prediction_id: str, *, terminal_only: bool = False) -> Subscription:
        """Changes of the prediction from now on; with ``terminal_only``, only its final state."""
        ...

    def add_listener(self, listener: Callable[[Prediction], None]) -> None: ...


class Subscription(Protocol):
    async def next(self, timeout: float) -> Prediction | None: ...
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: float  # until the bucket is full again
    retry_after_s: float  # 0 when allowed
    window_s: float

    def headers(self) -> dict[str, str]:
        reset = max(0, math.ceil(self.reset_s))
        window = f"{self.window_s:g}"
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(reset),
            "RateLimit-Policy": f'"account";q={self.limit};w={window}',
            "RateLimit": f'"account";r={self.remaining};t={reset}',
        }


class LimitsUnavailable(Exception):
    """The shared store of limits cannot be reached (Redis down): callers let the request through."""


class Limits(Protocol):
    """Rate limits (GCRA per key) and in-flight predictions per account, shared by every API process."""

    async def hit_all(self, limits: list[tuple[str, int, float]]) -> list[RateDecision]:
        """Decide one request against several (key, limit, window_s); it counts against them only if all
        allow it."""
        ...

    async def try_acquire(self, account_id: str, prediction_id: str, limit: int | None) -> bool:
        """Count the prediction as in flight unless ``limit`` are already; idempotent per prediction."""
        ...

    async def release(self, account_id: str, prediction_id: str) -> None: ...
    async def in_flight(self, account_id: str) -> int: ...


class ModelCatalog(Protocol):
    """The models this deployment serves, and whether a worker can run each right now."""

    def list(self) -> Sequence[ModelInfo]: ...
    def get(self, slug: str) -> ModelInfo | None: ...
