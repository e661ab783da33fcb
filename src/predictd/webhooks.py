"""Webhooks: what to send on each state change, how it is signed, and the durable delivery loop.

Deliveries are rows of an outbox written in the same transaction as the state change they report, so a
crash can delay a webhook but never lose it. Each keeps one ``webhook-id`` across all its attempts, so a
receiver de-duplicates by it. Signatures follow the Standard Webhooks spec (``webhook-id``,
``webhook-timestamp``, ``webhook-signature``), with one signature per valid secret while a rotation is in
progress. Outbound connections go through the same SSRF guard as image fetches.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import structlog
from standardwebhooks import Webhook

from .config.settings import DEFAULT_WEBHOOK_SCHEDULE_S
from .core.domain import NewDelivery, Prediction, Status, WebhookAttempt, WebhookDelivery, new_id, utcnow
from .core.ports import Store
from .errors import ApiError, ErrorId
from .media import MediaLimits, guarded_transport

log = structlog.get_logger("predictd.webhooks")

EVENTS = ("start", "output", "completed")
DEFAULT_EVENTS = frozenset({"completed"})
MAX_URL_LENGTH = 2048

Renderer = Callable[[Prediction, str, str], dict[str, Any]]  # (prediction, base_url, event) -> payload


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    url: str
    events: frozenset[str]
    surface: str
    base_url: str

    def to_extra(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "events": sorted(self.events),
            "surface": self.surface,
            "base_url": self.base_url,
        }

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> WebhookTarget | None:
        raw = extra.get("webhook")
        if not isinstance(raw, dict):
            return None
        return cls(raw["url"], frozenset(raw["events"]), raw["surface"], raw["base_url"])


def _check_url(url: Any, where: str) -> str:
    if not isinstance(url, str) or not url:
        raise ApiError(ErrorId.INVALID_INPUT, f"{where} must be an http(s) URL.")
    import httpx  # on the first webhook, not at start: about 2 MiB the API process does not need idle

    parsed = httpx.URL(url) if len(url) <= MAX_URL_LENGTH else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host or parsed.userinfo:
        raise ApiError(
            ErrorId.INVALID_INPUT, f"{where} must be an http(s) URL of at most {MAX_URL_LENGTH} chars."
        )
    return url


def native_target(value: Any, base_url: str) -> WebhookTarget:
    """The Skytells surface's ``webhook: {url, events}``."""
    if not isinstance(value, dict):
        raise ApiError(ErrorId.INVALID_INPUT, "Field 'webhook' must be an object {url, events}.")
    unknown = sorted(set(value) - {"url", "events"})
    if unknown:
        raise ApiError(ErrorId.INVALID_INPUT, f"Field 'webhook' has unknown field(s) {', '.join(unknown)}.")
    url = _check_url(value.get("url"), "webhook.url")
    events = value.get("events", sorted(DEFAULT_EVENTS))
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        raise ApiError(
            ErrorId.INVALID_INPUT, f"webhook.events must be a non-empty list of {', '.join(EVENTS)}."
        )
    bad = sorted(set(events) - set(EVENTS))
    if bad:
        raise ApiError(
            ErrorId.INVALID_INPUT,
            f"webhook.events has unknown event(s) {', '.join(bad)}; allowed: {', '.join(EVENTS)}.",
        )
    return WebhookTarget(url, frozenset(events), "native", base_url)


def fashn_target(url: Any, base_url: str) -> WebhookTarget:
    """The FASHN surface's ``webhook_url`` query parameter: called when the prediction ends."""
    return WebhookTarget(_check_url(url, "webhook_url"), DEFAULT_EVENTS, "fashn", base_url)


def events_for(target: Status, prediction: Prediction) -> list[str]:
    if target is Status.PROCESSING:
        return ["start"]
    if target is Status.SUCCEEDED:
        return ["output", "completed"]
    if prediction.terminal:
        return ["completed"]
    return []


class Planner:
    """Turns a state change into outbox rows, rendered by the surface the prediction was submitted on."""

    def __init__(self, renderers: dict[str, Renderer]) -> None:
        self._renderers = renderers

    def __call__(self, prediction: Prediction) -> list[NewDelivery]:
        target = WebhookTarget.from_extra(prediction.extra)
        if target is None:
            return []
        render = self._renderers[target.surface]
        return [
            NewDelivery(
                id=new_id("msg_"),
                prediction_id=prediction.id,
                account_id=prediction.account_id,
                event=event,
                url=target.url,
                payload=render(prediction, target.base_url, event),
            )
            for event in events_for(prediction.status, prediction)
            if event in target.events
        ]


def signature_header(secrets_: Sequence[str], message_id: str, timestamp: datetime, body: bytes) -> str:
    """``v1,<sig>`` per valid secret, space-separated: receivers accept any one of them."""
    return " ".join(Webhook(s).sign(message_id, timestamp, body.decode()) for s in secrets_)


def next_delay(attempt: int, schedule: Sequence[float], rng: random.Random) -> float | None:
    """Seconds until the attempt after ``attempt`` (1-based), with ±20 % jitter; None once out of tries."""
    if attempt > len(schedule):
        return None
    return schedule[attempt - 1] * rng.uniform(0.8, 1.2)


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    schedule_s: tuple[float, ...] = DEFAULT_WEBHOOK_SCHEDULE_S
    attempt_timeout_s: float = 10.0
    concurrency: int = 4
    limits: MediaLimits = field(default_factory=MediaLimits)


def _post(
    url: str, body: bytes, headers: dict[str, str], config: DeliveryConfig
) -> tuple[int | None, str | None]:
    """One synchronous, SSRF-guarded POST (run in a thread). Returns (status code, error)."""
    import httpx

    deadline = time.monotonic() + config.attempt_timeout_s
    timeout = httpx.Timeout(config.attempt_timeout_s)
    try:
        with httpx.Client(
            transport=guarded_transport(config.limits, deadline),
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
        ) as client:
            response = client.post(url, content=body, headers=headers)
            return response.status_code, None
    except Exception as exc:  # any failure of the receiver is recorded, never raised
        return None, (str(exc) or type(exc).__name__)[:500]


class Dispatcher:
    """Sends due outbox rows; woken at once by new rows, otherwise sleeps until the next retry is due."""

    def __init__(self, store: Store, config: DeliveryConfig, rng: random.Random | None = None) -> None:
        self._store = store
        self._config = config
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(config.concurrency)
        self._inflight: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        self._wake.set()

    async def run_forever(self) -> None:
        while True:
            try:
                await self._drain()
            except Exception:
                log.exception("webhook dispatch failed; retrying")
            await self._sleep_until_due()

    async def _sleep_until_due(self) -> None:
        self._wake.clear()
        due = await self._store.next_delivery_at()
        delay = 5.0 if due is None else max(0.0, (due - utcnow()).total_seconds())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(delay, 5.0)):
                await self._wake.wait()

    async def _drain(self) -> None:
        while True:
            due = await self._store.due_deliveries(utcnow(), limit=32)
            if not due:
                return
            for delivery in due:
                # Long enough for one attempt; a delivery whose sender died is picked up again after it.
                lease = utcnow() + timedelta(seconds=self._config.attempt_timeout_s + 5)
                if not await self._store.claim_delivery(delivery, lease):
                    continue
                await self._slots.acquire()
                task = asyncio.create_task(self._attempt(delivery))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            await asyncio.gather(*self._inflight, return_exceptions=True)

    async def _attempt(self, delivery: WebhookDelivery) -> None:
        try:
            await self._send(delivery)
        finally:
            self._slots.release()

    async def _send(self, delivery: WebhookDelivery) -> None:
        if await self._store.url_disabled(delivery.prediction_id, delivery.url):
            # The receiver answered 410 Gone for this prediction earlier: never call it again for it.
            await self._store.disable_deliveries(delivery.prediction_id, delivery.url)
            return
        attempt_no = delivery.attempts + 1
        body = orjson.dumps(delivery.payload)
        sent_at = utcnow()
        signing = await self._store.webhook_secrets(delivery.account_id)
        headers = {
            "content-type": "application/json",
            "user-agent": "predictd-webhooks/1",
            "webhook-id": delivery.id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": signature_header(signing, delivery.id, sent_at, body),
            "x-predictd-event": delivery.event,
        }
        started = time.perf_counter()
        status_code, error = await asyncio.to_thread(_post, delivery.url, body, headers, self._config)
        attempt = WebhookAttempt(
            attempt_no, sent_at, status_code, error, (time.perf_counter() - started) * 1000
        )
        if status_code is not None and 200 <= status_code < 300:
            await self._store.record_attempt(delivery.id, attempt, "delivered", None)
            return
        if status_code == 410:
            await self._store.record_attempt(delivery.id, attempt, "disabled", None)
            disabled = await self._store.disable_deliveries(delivery.prediction_id, delivery.url)
            log.info(
                "webhook receiver answered 410 Gone; URL disabled for this prediction",
                prediction=delivery.prediction_id,
                also_disabled=disabled,
            )
            return
        delay = next_delay(attempt_no, self._config.schedule_s, self._rng)
        if delay is None:
            await self._store.record_attempt(delivery.id, attempt, "failed", None)
            log.warning("webhook gave up", delivery=delivery.id, attempts=attempt_no)
            return
        await self._store.record_attempt(delivery.id, attempt, "pending", utcnow() + timedelta(seconds=delay))
