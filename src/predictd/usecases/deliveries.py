"""The webhook delivery loop: sends the outbox's due deliveries, records every attempt, and schedules the
next one (retries with jitter for about three days, 410 Gone disabling the URL for that prediction).

Deliveries are planned by :mod:`predictd.webhooks` in the same transaction as the state change they report,
so this loop only reads due rows, claims each for one attempt (of several dispatchers, scaled out, one
sends it), sends it through :mod:`predictd.outbound` on a thread, and records what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import orjson
import structlog

from ..config.settings import DEFAULT_WEBHOOK_SCHEDULE_S
from ..core.domain import WebhookAttempt, WebhookDelivery, utcnow
from ..core.ports import DeliveryStore
from ..outbound import OutboundError, OutboundLimits, printable
from ..webhooks import signed_headers

log = structlog.get_logger("predictd.webhooks")


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
    limits: OutboundLimits = field(default_factory=OutboundLimits)


# Of a failed attempt's answer, read at most this much, and quote this many characters of it in its error:
# enough to tell "wrong signature" from a proxy's error page, never the receiver's whole answer.
QUOTED_ANSWER_BYTES = 1024
QUOTED_ANSWER_CHARS = 200


def post(
    url: str, body: bytes, headers: Mapping[str, str], limits: OutboundLimits
) -> tuple[int | None, str | None]:
    """One synchronous, SSRF-guarded POST (run on a thread). Returns (status code, error): the error is
    why no answer came, or the start of a non-2xx answer."""
    from ..outbound import http  # on the first webhook: the API process does not load httpx at rest

    try:
        answer = http.post(url, body, headers=headers, limits=limits, quote_bytes=QUOTED_ANSWER_BYTES)
    except OutboundError as exc:  # any failure of the receiver is recorded, never raised
        return None, exc.reason[:500]
    except Exception as exc:
        return None, (str(exc) or type(exc).__name__)[:500]
    quoted = " ".join(answer.body_start.decode("utf-8", "replace").split())
    return answer.status_code, printable(quoted, QUOTED_ANSWER_CHARS) or None


class Dispatcher:
    """Sends due outbox rows; woken at once by new rows, otherwise sleeps until the next retry is due."""

    def __init__(
        self, store: DeliveryStore, config: DeliveryConfig, rng: random.Random | None = None
    ) -> None:
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
        headers = signed_headers(signing, delivery.id, delivery.event, sent_at, body)
        started = time.perf_counter()
        status_code, error = await asyncio.to_thread(post, delivery.url, body, headers, self._config.limits)
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
