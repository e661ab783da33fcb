"""The use cases: authenticate, submit, wait, get, cancel, delete, list, models, recovery.

Written only against the ports; the HTTP surfaces translate requests into these calls and errors into
their own bodies.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import structlog

from ..core import keys
from ..core.background import Background
from ..core.bounded import put_bounded
from ..core.domain import (
    NATIVE_STATUS,
    Account,
    AccountStatus,
    ApiKey,
    CreditsRefused,
    IdempotencyRecord,
    ModelInfo,
    Page,
    Plan,
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
    ListQuery,
    ModelCatalog,
    Notifier,
    Store,
)
from ..core.validation import InputRules, validate_input
from ..errors import UNAVAILABLE_ERROR, ApiError, ErrorId
from ..limits import LimitsUnavailable, MemoryLimits, RateDecision
from ..media import data_uri_size
from ..outputs import LocalOutputs
from ..runtime.executor import failure_changes
from ..runtime.process import unavailable_failure
from ..runtime.types import MODERATION_LEVEL
from ..safety import ModerationLevel, ModerationUnavailable
from ..safety.security import SecurityScreen
from ..safety.text import TextModerator
from ..webhooks import WebhookTarget

log = structlog.get_logger("predictd.service")

MAX_PER_PAGE = 50
DEFAULT_PER_PAGE = 20


@dataclass(frozen=True, slots=True)
class Policy:
    """The deployment's pre-queue rules. ``plan`` applies to accounts without a plan of their own."""

    plan: Plan = field(default_factory=lambda: Plan("default"))
    default_plan_name: str | None = None
    max_inline_media_bytes: int = 50 * 1024 * 1024
    suspend_after: int = 5
    security_window_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class SubmitRequest:
    model: str
    input: Any
    source: str = "api"
    webhook: WebhookTarget | None = None
    idempotency_key: str | None = None
    use_case: str | None = None
    region: str | None = None  # from the trusted proxy's header, if any
    extra: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """What makes two submits "the same request" for an Idempotency-Key."""
        hook = self.webhook.to_extra() if self.webhook else None
        if hook:
            hook.pop("base_url")
        canonical = orjson.dumps(
            {"model": self.model, "input": self.input, "webhook": hook}, option=orjson.OPT_SORT_KEYS
        )
        return hashlib.sha256(canonical).hexdigest()


@dataclass(frozen=True, slots=True)
class Submission:
    prediction: Prediction
    replayed: bool = False


# Principals kept by key digest (only valid keys get here: guessing cannot fill memory).
MAX_REMEMBERED_PRINCIPALS = 4096

IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


class Service:
    def __init__(
        self,
        store: Store,
        broker: Broker,
        notifier: Notifier,
        catalog: ModelCatalog,
        *,
        max_attempts: int,
        policy: Policy | None = None,
        text_moderator: TextModerator | None = None,
        outputs: LocalOutputs | None = None,
        deliveries: DeliveryPlanner | None = None,
        idempotency_ttl_s: float = 86400.0,
        security: SecurityScreen | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.security = security
        self.outputs = outputs
        self.deliveries = deliveries
        self.idempotency_ttl_s = idempotency_ttl_s
        self.store = store
        self.broker = broker
        self.notifier = notifier
        self.catalog = catalog
        self.max_attempts = max_attempts
        self.policy = policy or Policy()
        self.limits: Limits = limits or MemoryLimits()
        self._background = Background()
        self.text_moderator = text_moderator
        self._rules: dict[str, InputRules] = {}  # per model slug
        self._principals: dict[str, tuple[tuple[ApiKey, Account], Principal]] = {}
        notifier.add_listener(self._release_when_done)

    def _release_when_done(self, prediction: Prediction) -> None:
        if prediction.terminal:
            self._background.spawn(self.limits.release(prediction.account_id, prediction.id), "release")

    # -- auth ----------------------------------------------------------------------------------------------

    async def authenticate(self, secret: str | None) -> Principal:
        if not secret:
            raise ApiError(
                ErrorId.UNAUTHORIZED,
                "No API key: send it as 'x-api-key: KEY' or 'Authorization: Bearer KEY'.",
            )
        return await self.authenticate_digest(keys.digest(secret))

    async def authenticate_digest(self, key_hash: str) -> Principal:
        """Who holds the key with this SHA-256 digest (the web console keeps only the digest of its key)."""
        found = await self.store.find_key(key_hash)
        # The digest lookup is an exact index match; compare again in constant time so that no timing
        # difference depends on how much of a guessed key was right.
        if (
            found is None
            or not hmac.compare_digest(key_hash, found[0].key_hash)
            or found[0].revoked_at is not None
        ):
            raise ApiError(ErrorId.UNAUTHORIZED, "The API key is invalid or has been revoked.")
        known = self._principals.get(key_hash)
        if known is not None and known[0] is found:
            return known[1]
        api_key, account = found
        if account.status is AccountStatus.SUSPENDED:
            reason = f" ({account.status_reason})" if account.status_reason else ""
            raise ApiError(ErrorId.ACCOUNT_SUSPENDED, f"Account {account.name!r} is suspended{reason}.")
        plan = await self.plan_of(account)
        principal = Principal(account=account, key_id=api_key.id, plan=plan)
        if (plan is account.plan_details or plan is self.policy.plan) and (
            self.store.remembered_key(key_hash) is found  # a store that reads every time: nothing to keep
        ):
            self._remember_principal(key_hash, found, principal)
        return principal

    def principal_now(self, secret: str) -> Principal | None:
        """The principal ``authenticate(secret)`` gave before, when nothing it was built from can have
        changed and its plan has no rate limit to count: answered without I/O. None means "take the
        asynchronous path", which also gives every refusal (unknown, revoked, suspended, rate-limited)."""
        if not self._principals:
            return None  # nothing remembered (a store that reads every time): not even the digest to take
        key_hash = keys.digest(secret)
        found = self.store.remembered_key(key_hash)
        if found is None:
            return None
        known = self._principals.get(key_hash)
        # Remembered only after every check of authenticate_digest passed on this very (immutable) object.
        if known is None or known[0] is not found:
            return None
        plan = known[1].plan
        if plan.rate_limit is not None or plan.key_rate_limit is not None:
            return None
        return known[1]

    def prediction_now(self, principal: Principal, prediction_id: str) -> Prediction | None:
        """What ``get`` would answer, when the store can tell without I/O; None: take the async path."""
        return self.store.remembered_prediction(prediction_id, principal.account.id)

    def _remember_principal(self, key_hash: str, found: tuple[ApiKey, Account], principal: Principal) -> None:
        """Keep the principal built from the store's answer ``found``, for as long as the store keeps
        answering with that very object (compared with ``is``). A store that remembers rows (SQLite's) hands
        out a new object once the key, its account or the plan read with it may have changed, so a revoked
        key or a suspended account is never served from here; a store that reads every time keeps nothing.
        Only a plan read with the key (or the deployment's own) counts: another plan row has no such guard.
        """
        put_bounded(self._principals, key_hash, (found, principal), MAX_REMEMBERED_PRINCIPALS)

    async def plan_of(self, account: Account) -> Plan:
        name = account.plan or self.policy.default_plan_name
        if name:
            # An account read with its key carries its plan's row, read in the same statement.
            plan = account.plan_details
            if plan is None or plan.name != name:
                plan = await self.store.get_plan(name)
            if plan is not None:
                return plan
            log.warning("plan not found; using the deployment's limits", account=account.id, plan=name)
        return self.policy.plan

    async def check_rate(self, principal: Principal) -> RateDecision | None:
        """Count one request against the key's and the account's rate limits; the tighter one answers."""
        plan = principal.plan
        limits = []
        if plan.key_rate_limit is not None:
            limits.append((f"key:{principal.key_id}", plan.key_rate_limit, plan.rate_window_s))
        if plan.rate_limit is not None:
            limits.append((f"acct:{principal.account.id}", plan.rate_limit, plan.rate_window_s))
        try:
            decisions = await self.limits.hit_all(limits) if limits else []
        except LimitsUnavailable as exc:
            # Availability over strictness: a Redis outage must not stop the API. Logged for operators.
            log.warning("rate limits unavailable; request allowed", error=str(exc))
            return None
        if not decisions:
            return None
        refused = [d for d in decisions if not d.allowed]
        if refused:
            worst = max(refused, key=lambda d: d.retry_after_s)
            raise ApiError(
                ErrorId.RATE_LIMIT_EXCEEDED,
                f"More than {worst.limit} requests in {worst.window_s:g} s; "
                f"retry in {worst.retry_after_s:.1f} s.",
                retry_after=worst.retry_after_s,
                headers=worst.headers(),
            )
        return min(decisions, key=lambda d: d.remaining)

    # -- models --------------------------------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        return list(self.catalog.list())

    def model(self, slug: str) -> ModelInfo:
        info = self.catalog.get(slug)
        if info is None:
            raise ApiError(ErrorId.MODEL_NOT_FOUND, f"The model with slug {slug!r} does not exist.")
        return info

    def _input_rules(self, info: ModelInfo) -> InputRules | None:
        if info.input_schema is None:
            return None
        rules = self._rules.get(info.slug)
        if rules is None or rules.schema is not info.input_schema:  # a worker's restart may replace it
            rules = self._rules[info.slug] = InputRules.of(info.input_schema)
        return rules

    # -- predictions ---------------------------------------------------------------------------------------

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
        info = self.model(request.model)
        self._check_entitlement(principal, info, request)
        rules = self._input_rules(info)
        if not info.available or rules is None:
            raise ApiError(
                ErrorId.MODEL_UNAVAILABLE,
                f"Model {info.slug!r} is unavailable: {info.status_detail or 'no worker can run it'}.",
                retry_after=5,
            )
        validate_input(rules, request.input)
        self._check_inline_media(rules, request.input)
        await self._screen_security(principal, request.input)
        self._moderate_text(rules, request.input)
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
        if not await self._acquire(principal.account.id, prediction.id, limit):
            raise ApiError(
                ErrorId.CONCURRENCY_LIMIT_EXCEEDED,
                f"{limit} predictions are already in flight for this account; "
                "wait for one to finish before sending another.",
                retry_after=1,
                headers={"RateLimit-Policy": f'"concurrency";q={limit}', "RateLimit": '"concurrency";r=0'},
            )
        reserve = to_micros(info.max_cost()) if principal.plan.prepaid else None
        try:
            await self.store.insert_prediction(prediction, record, reserve)
        except CreditsRefused as refused:
            self._background.spawn(self.limits.release(principal.account.id, prediction.id), "release")
            raise self._out_of_credits(refused, info) from None
        except IdempotencyKeyTaken:
            # A concurrent identical submit won the race: answer with its prediction.
            self._background.spawn(self.limits.release(principal.account.id, prediction.id), "release")
            replay = await self._replay(principal, request)
            if replay is None:
                raise ApiError(ErrorId.INTERNAL_ERROR, "Idempotency-Key race; retry the request.") from None
            return Submission(replay, replayed=True)
        except BaseException:
            self._background.spawn(self.limits.release(principal.account.id, prediction.id), "release")
            raise
        self.notifier.publish(prediction)
        try:
            await self.broker.enqueue(prediction.id, prediction.model)
        except Exception as exc:
            # Accepted means stored: the sweeper queues what the broker did not take (scaled-out mode).
            log.warning("could not queue an accepted prediction", prediction=prediction.id, error=repr(exc))
        log.debug("prediction accepted", prediction=prediction.id, model=prediction.model)
        return Submission(prediction)

    async def in_flight(self, account_id: str) -> int | None:
        """The account's predictions counted against its concurrency limit; None if that is unknown now."""
        try:
            return await self.limits.in_flight(account_id)
        except LimitsUnavailable:
            return None

    async def _acquire(self, account_id: str, prediction_id: str, limit: int | None) -> bool:
        try:
            return await self.limits.try_acquire(account_id, prediction_id, limit)
        except LimitsUnavailable as exc:
            log.warning("concurrency limits unavailable; prediction allowed", error=str(exc))
            return True

    async def _replay(self, principal: Principal, request: SubmitRequest) -> Prediction | None:
        assert request.idempotency_key is not None
        record = await self.store.find_idempotency(principal.account.id, request.idempotency_key)
        if record is None:
            return None
        if (utcnow() - record.created_at).total_seconds() > self.idempotency_ttl_s:
            await self.store.forget_idempotency(principal.account.id, request.idempotency_key)
            return None
        if record.request_hash != request.fingerprint():
            raise ApiError(
                ErrorId.UNPROCESSABLE_ENTITY,
                f"Idempotency-Key {request.idempotency_key!r} was already used with a different request; "
                "use a new key for a new request.",
            )
        return await self.store.get_prediction(record.prediction_id, principal.account.id)

    @staticmethod
    def _check_entitlement(principal: Principal, info: ModelInfo, request: SubmitRequest) -> None:
        if not principal.plan.allows(info.slug):
            raise ApiError(
                ErrorId.MODEL_ACCESS_DENIED,
                f"Plan {principal.plan.name!r} does not include model {info.slug!r}.",
            )
        if info.slug in principal.account.disabled_models:
            raise ApiError(
                ErrorId.MODEL_NOT_AUTHORIZED,
                f"Model {info.slug!r} is disabled for this account by its operator.",
            )
        if request.region is not None and request.region.lower() in {r.lower() for r in info.blocked_regions}:
            raise ApiError(
                ErrorId.LEGAL_REASONS, f"Model {info.slug!r} is not offered in region {request.region!r}."
            )
        if request.use_case is not None and request.use_case not in info.use_cases:
            offered = ", ".join(info.use_cases) or "none declared"
            raise ApiError(
                ErrorId.USE_CASE_NOT_SUPPORTED,
                f"Model {info.slug!r} does not support use case {request.use_case!r} (supported: {offered}).",
            )

    @staticmethod
    def _out_of_credits(refused: CreditsRefused, info: ModelInfo) -> ApiError:
        credits = refused.credits
        if credits.balance_micros < 0:
            return ApiError(
                ErrorId.PAYMENT_REQUIRED,
                f"The account balance is negative ({from_micros(credits.balance_micros):g} credits); "
                "top it up.",
            )
        return ApiError(
            ErrorId.INSUFFICIENT_CREDITS,
            f"Model {info.slug!r} needs {from_micros(refused.needed_micros):g} credits available; "
            f"{from_micros(credits.available_micros):g} are "
            f"(balance {from_micros(credits.balance_micros):g}, "
            f"{from_micros(credits.reserved_micros):g} reserved by predictions in flight).",
        )

    async def _screen_security(self, principal: Principal, inputs: dict[str, Any]) -> None:
        if self.security is None:
            return
        finding = self.security.screen(inputs)
        if finding is None:
            return
        since = utcnow() - timedelta(seconds=self.policy.security_window_s)
        count = await self.store.record_security_event(
            principal.account.id, finding.rule_id, finding.field, since
        )
        log.warning(
            "security violation",
            account=principal.account.id,
            rule=finding.rule_id,
            field=finding.field,
            count=count,
        )
        if count >= self.policy.suspend_after:
            await self.store.update_account(
                principal.account.id,
                status=AccountStatus.SUSPENDED,
                status_reason=f"{count} security violations within {self.policy.security_window_s:g} s",
            )
        raise ApiError(
            ErrorId.SECURITY_VIOLATION,
            f"{finding.field} was flagged as malicious ({finding.category}: {finding.rule_id}). "
            "Repeated violations suspend the account.",
        )

    def _check_inline_media(self, rules: InputRules, inputs: dict[str, Any]) -> None:
        total = 0
        for name in rules.image_fields:
            value = inputs.get(name)
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str):
                    total += data_uri_size(item)
        if total > self.policy.max_inline_media_bytes:
            raise ApiError(
                ErrorId.INFRASTRUCTURE_ERROR,
                f"Inline media in this request total {total} bytes, over this deployment's "
                f"{self.policy.max_inline_media_bytes} byte limit; send URLs instead.",
            )

    def _moderate_text(self, rules: InputRules, inputs: dict[str, Any]) -> None:
        fields = rules.moderated_fields
        if not fields or self.text_moderator is None:
            return
        level = ModerationLevel(inputs.get(MODERATION_LEVEL, ModerationLevel.CONSERVATIVE))
        for name in fields:
            text = inputs.get(name)
            if not isinstance(text, str):
                continue
            try:
                verdict = self.text_moderator.check(text, level)
            except ModerationUnavailable as exc:
                raise ApiError(
                    ErrorId.MODERATION_ERROR, f"input.{name} could not be moderated: {exc}", retry_after=5
                ) from None
            if not verdict.allowed:
                raise ApiError(ErrorId.CONTENT_POLICY_VIOLATION, f"input.{name}: {verdict.reason}")

    async def wait(self, prediction: Prediction, timeout_s: float) -> Prediction:
        """Block until the prediction is terminal or ``timeout_s`` passes; return its latest state."""
        if prediction.terminal:
            return prediction
        subscription = self.notifier.subscribe(prediction.id, terminal_only=True)
        try:
            # Read after subscribing, so a change between the caller's read and now cannot be missed.
            latest = await self.store.get_prediction(prediction.id) or prediction
            deadline = time.monotonic() + timeout_s
            while not latest.terminal:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    # Woken only by the end: read the state it reached meanwhile (started, say).
                    return await self.store.get_prediction(prediction.id) or latest
                update = await subscription.next(remaining)
                if update is not None:
                    latest = update
            return latest
        finally:
            subscription.close()

    async def get(self, principal: Principal, prediction_id: str) -> Prediction:
        prediction = await self.store.get_prediction(prediction_id, principal.account.id)
        if prediction is None:
            # Another account's prediction is reported exactly like a missing one.
            raise ApiError(ErrorId.PREDICTION_NOT_FOUND, f"No prediction with id {prediction_id!r}.")
        return prediction

    async def cancel(self, principal: Principal, prediction_id: str) -> Prediction:
        current = await self.get(principal, prediction_id)
        if current.terminal:
            raise self._not_cancellable(current)
        cancelled = await self.store.transition(
            prediction_id,
            Status.CANCELLED,
            deliveries=self.deliveries,
            completed_at=utcnow(),
            predict_time=None,
        )
        if cancelled is None:  # it reached a terminal state between the read and the write
            latest = await self.get(principal, prediction_id)
            raise self._not_cancellable(latest)
        self.notifier.publish(cancelled)
        await self.broker.cancel(prediction_id)
        return cancelled

    @staticmethod
    def _not_cancellable(prediction: Prediction) -> ApiError:
        return ApiError(
            ErrorId.PREDICTION_NOT_CANCELLABLE,
            f"Prediction {prediction.id!r} is already {NATIVE_STATUS[prediction.status]} "
            "and cannot be cancelled.",
        )

    async def delete(self, principal: Principal, prediction_id: str) -> Prediction:
        current = await self.get(principal, prediction_id)
        if not current.terminal:
            try:
                await self.cancel(principal, prediction_id)
            except ApiError as exc:
                if exc.error_id is not ErrorId.PREDICTION_NOT_CANCELLABLE:
                    raise
        before = await self.get(principal, prediction_id)
        removed = await self.store.remove_data(prediction_id, principal.account.id)
        if self.outputs is not None:
            self.outputs.delete(before.output)
        if removed is None:
            raise ApiError(ErrorId.PREDICTION_NOT_FOUND, f"No prediction with id {prediction_id!r}.")
        return removed

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
        return await self.store.list_predictions(
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

    # -- startup -------------------------------------------------------------------------------------------

    async def recover(self) -> tuple[int, int]:
        """Put back to work whatever was queued or running when the server last stopped.

        A prediction that was running is queued again until it has used up its attempts; then, and for
        a model no longer served, it fails with UnavailableError. Returns (requeued, failed).
        """
        requeued = failed = 0
        for prediction in await self.store.list_unfinished():
            served = self.catalog.get(prediction.model) is not None
            if served and (prediction.status is Status.QUEUED or prediction.attempts < self.max_attempts):
                back_in_queue = prediction.status is Status.QUEUED or (
                    await self.store.transition(prediction.id, Status.QUEUED) is not None
                )
                if not back_in_queue:
                    continue
                await self._acquire(prediction.account_id, prediction.id, None)
                await self.broker.enqueue(prediction.id, prediction.model)
                requeued += 1
                continue
            reason = (
                f"model {prediction.model!r} is no longer served"
                if not served
                else f"the server stopped while it ran, {prediction.attempts} time(s)"
            )
            failure = unavailable_failure(f"{UNAVAILABLE_ERROR.meaning} ({reason})")
            stored = await self.store.transition(
                prediction.id, Status.FAILED, deliveries=self.deliveries, **failure_changes(failure, utcnow())
            )
            if stored is not None:
                self.notifier.publish(stored)
                failed += 1
        if requeued or failed:
            log.info("recovered unfinished predictions", requeued=requeued, failed=failed)
        return requeued, failed
