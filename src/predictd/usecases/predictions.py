"""The prediction lifecycle as the caller sees it: submit, wait, get, follow, cancel, delete, list.

A submit passes admission, counts against the account's concurrency limit, and is stored (with its credit
reservation and Idempotency-Key, in one transaction) before it is queued: accepted means stored. Every
read is scoped to the caller's account; another account's prediction is answered exactly like a missing one.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime

import structlog

from ..core.background import Background
from ..core.domain import (
    NATIVE_STATUS,
    CreditsRefused,
    DailyUsage,
    IdempotencyRecord,
    ModelInfo,
    Page,
    Prediction,
    Principal,
    Status,
    from_micros,
    new_id,
    to_micros,
    utcnow,
)
from ..core.ports import (
    Broker,
    DeliveryPlanner,
    IdempotencyKeyTaken,
    Limits,
    LimitsUnavailable,
    ListQuery,
    Notifier,
    PredictionStore,
)
from ..errors import ApiError, ErrorId
from ..media import LocalOutputs
from .admission import Admission, SubmitRequest

log = structlog.get_logger("predictd.predictions")

MAX_PER_PAGE = 50
DEFAULT_PER_PAGE = 20

IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


@dataclass(frozen=True, slots=True)
class Submission:
    prediction: Prediction
    replayed: bool = False


class Predictions:
    def __init__(
        self,
        store: PredictionStore,
        admission: Admission,
        broker: Broker,
        notifier: Notifier,
        limits: Limits,
        *,
        outputs: LocalOutputs | None = None,
        deliveries: DeliveryPlanner | None = None,
        idempotency_ttl_s: float = 86400.0,
    ) -> None:
        self._store = store
        self._admission = admission
        self._broker = broker
        self._notifier = notifier
        self._limits = limits
        self._outputs = outputs
        self._deliveries = deliveries
        self._idempotency_ttl_s = idempotency_ttl_s
        self._background = Background()
        notifier.add_listener(self._release_when_done)

    def _release_when_done(self, prediction: Prediction) -> None:
        if prediction.terminal:
            self._background.spawn(self._limits.release(prediction.account_id, prediction.id), "release")

    # -- submit --------------------------------------------------------------------------------------------

    async def submit(self, principal: Principal, request: SubmitRequest) -> Submission:
        if request.idempotency_key is not None:
            if not IDEMPOTENCY_KEY.match(request.idempotency_key):
                raise ApiError(
                    ErrorId.INVALID_INPUT,
                    "Header 'Idempotency-Key' must be 1 to 255 visible ASCII characters.",
                )
            replay = await self._replay(principal, request)
            if replay is not None:
                return Submission(replay, replayed=True)
        info = await self._admission.admit(principal, request)
        prediction = Prediction(
            id=new_id(),
            account_id=principal.account.id,
            model=info.slug,
            status=Status.QUEUED,
            input=request.input,
            created_at=utcnow(),
            source=request.source,
            extra={**request.extra, **({"webhook": request.webhook.to_extra()} if request.webhook else {})},
        )
        record = None
        if request.idempotency_key is not None:
            record = IdempotencyRecord(
                principal.account.id, request.idempotency_key, request.fingerprint(), prediction.id, utcnow()
            )
        limit = principal.plan.concurrency_limit
        if not await self.acquire(principal.account.id, prediction.id, limit):
            raise ApiError(
                ErrorId.CONCURRENCY_LIMIT_EXCEEDED,
                f"{limit} predictions are already in flight for this account; "
                "wait for one to finish before sending another.",
                retry_after=1,
                headers={"RateLimit-Policy": f'"concurrency";q={limit}', "RateLimit": '"concurrency";r=0'},
            )
        reserve = to_micros(info.max_cost()) if principal.plan.prepaid else None
        try:
            await self._store.insert_prediction(prediction, record, reserve)
        except CreditsRefused as refused:
            self._release(principal, prediction)
            raise _out_of_credits(refused, info) from None
        except IdempotencyKeyTaken:
            # A concurrent identical submit won the race: answer with its prediction.
            self._release(principal, prediction)
            replay = await self._replay(principal, request)
            if replay is None:
                raise ApiError(ErrorId.INTERNAL_ERROR, "Idempotency-Key race; retry the request.") from None
            return Submission(replay, replayed=True)
        except BaseException:
            self._release(principal, prediction)
            raise
        self._notifier.publish(prediction)
        try:
            await self._broker.enqueue(prediction.id, prediction.model)
        except Exception as exc:
            # Accepted means stored: the sweeper queues what the broker did not take (scaled-out mode).
            log.warning("could not queue an accepted prediction", prediction=prediction.id, error=repr(exc))
        log.debug("prediction accepted", prediction=prediction.id, model=prediction.model)
        return Submission(prediction)

    def _release(self, principal: Principal, prediction: Prediction) -> None:
        self._background.spawn(self._limits.release(principal.account.id, prediction.id), "release")

    async def acquire(self, account_id: str, prediction_id: str, limit: int | None) -> bool:
        """Count the prediction against the account's in-flight limit (allowed while limits are down)."""
        try:
            return await self._limits.try_acquire(account_id, prediction_id, limit)
        except LimitsUnavailable as exc:
            log.warning("concurrency limits unavailable; prediction allowed", error=str(exc))
            return True

    async def in_flight(self, account_id: str) -> int | None:
        """The account's predictions counted against its concurrency limit; None if that is unknown now."""
        try:
            return await self._limits.in_flight(account_id)
        except LimitsUnavailable:
            return None

    async def _replay(self, principal: Principal, request: SubmitRequest) -> Prediction | None:
        assert request.idempotency_key is not None
        record = await self._store.find_idempotency(principal.account.id, request.idempotency_key)
        if record is None:
            return None
        if (utcnow() - record.created_at).total_seconds() > self._idempotency_ttl_s:
            await self._store.forget_idempotency(principal.account.id, request.idempotency_key)
            return None
        if record.request_hash != request.fingerprint():
            raise ApiError(
                ErrorId.UNPROCESSABLE_ENTITY,
                f"Idempotency-Key {request.idempotency_key!r} was already used with a different request; "
                "use a new key for a new request.",
            )
        return await self._store.get_prediction(record.prediction_id, principal.account.id)

    # -- reads ---------------------------------------------------------------------------------------------

    async def get(self, principal: Principal, prediction_id: str) -> Prediction:
        prediction = await self._store.get_prediction(prediction_id, principal.account.id)
        if prediction is None:
            # Another account's prediction is reported exactly like a missing one.
            raise ApiError(ErrorId.PREDICTION_NOT_FOUND, f"No prediction with id {prediction_id!r}.")
        return prediction

    def prediction_now(self, principal: Principal, prediction_id: str) -> Prediction | None:
        """What ``get`` would answer, when the store can tell without I/O; None: take the async path."""
        return self._store.remembered_prediction(prediction_id, principal.account.id)

    async def wait(self, prediction: Prediction, timeout_s: float) -> Prediction:
        """Block until the prediction is terminal or ``timeout_s`` passes; return its latest state."""
        if prediction.terminal:
            return prediction
        subscription = self._notifier.subscribe(prediction.id, terminal_only=True)
        try:
            # Read after subscribing, so a change between the caller's read and now cannot be missed.
            latest = await self._store.get_prediction(prediction.id) or prediction
            deadline = time.monotonic() + timeout_s
            while not latest.terminal:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    # Woken only by the end: read the state it reached meanwhile (started, say).
                    return await self._store.get_prediction(prediction.id) or latest
                update = await subscription.next(remaining)
                if update is not None:
                    latest = update
            return latest
        finally:
            subscription.close()

    async def follow(
        self, principal: Principal, prediction_id: str, keepalive_s: float
    ) -> AsyncGenerator[Prediction | None]:
        """The prediction as it is, then each newer state of it until it ends; None after each
        ``keepalive_s`` without a change (so that the caller can check its client is still there)."""
        subscription = self._notifier.subscribe(prediction_id)
        try:
            current = await self.get(principal, prediction_id)  # after subscribing: nothing missed
            yield current
            while not current.terminal:
                update = await subscription.next(keepalive_s)
                if update is None:
                    yield None
                elif update.version > current.version:
                    current = update
                    yield current
        finally:
            subscription.close()

    async def daily_usage(self, principal: Principal, since: datetime) -> list[DailyUsage]:
        """The caller's predictions and credits consumed per UTC day from ``since`` on."""
        return await self._store.daily_usage(principal.account.id, since)

    async def list(
        self,
        principal: Principal,
        *,
        page: int = 1,
        per_page: int = DEFAULT_PER_PAGE,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        statuses: frozenset[Status] | None = None,
    ) -> Page:
        return await self._store.list_predictions(
            ListQuery(
                account_id=principal.account.id,
                page=page,
                per_page=per_page,
                model=model,
                since=since,
                until=until,
                statuses=statuses,
            )
        )

    # -- changes -------------------------------------------------------------------------------------------

    async def cancel(self, principal: Principal, prediction_id: str) -> Prediction:
        current = await self.get(principal, prediction_id)
        if current.terminal:
            raise _not_cancellable(current)
        cancelled = await self._store.transition(
            prediction_id,
            Status.CANCELLED,
            deliveries=self._deliveries,
            completed_at=utcnow(),
            predict_time=None,
        )
        if cancelled is None:  # it reached a terminal state between the read and the write
            latest = await self.get(principal, prediction_id)
            raise _not_cancellable(latest)
        self._notifier.publish(cancelled)
        await self._broker.cancel(prediction_id)
        return cancelled

    async def delete(self, principal: Principal, prediction_id: str) -> Prediction:
        current = await self.get(principal, prediction_id)
        if not current.terminal:
            try:
                await self.cancel(principal, prediction_id)
            except ApiError as exc:
                if exc.error_id is not ErrorId.PREDICTION_NOT_CANCELLABLE:
                    raise
        before = await self.get(principal, prediction_id)
        removed = await self._store.remove_data(prediction_id, principal.account.id)
        if self._outputs is not None:
            self._outputs.delete(before.output)
        if removed is None:
            raise ApiError(ErrorId.PREDICTION_NOT_FOUND, f"No prediction with id {prediction_id!r}.")
        return removed


def _not_cancellable(prediction: Prediction) -> ApiError:
    return ApiError(
        ErrorId.PREDICTION_NOT_CANCELLABLE,
        f"Prediction {prediction.id!r} is already {NATIVE_STATUS[prediction.status]} "
        "and cannot be cancelled.",
    )


def _out_of_credits(refused: CreditsRefused, info: ModelInfo) -> ApiError:
    credits = refused.credits
    if credits.balance_micros < 0:
        return ApiError(
            ErrorId.PAYMENT_REQUIRED,
            f"The account balance is negative ({from_micros(credits.balance_micros):g} credits); top it up.",
        )
    return ApiError(
        ErrorId.INSUFFICIENT_CREDITS,
        f"Model {info.slug!r} needs {from_micros(refused.needed_micros):g} credits available; "
        f"{from_micros(credits.available_micros):g} are "
        f"(balance {from_micros(credits.balance_micros):g}, "
        f"{from_micros(credits.reserved_micros):g} reserved by predictions in flight).",
    )
