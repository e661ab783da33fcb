"""The webhook delivery loop: sends the outbox's due deliveries, records every attempt, and schedules the
next one (retries with jitter for about three days, 410 Gone disabling the URL for that prediction).

Deliveries are planned by :mod:`predictd.webhooks` in the same transaction as the state change they report,
so this loop only reads due rows, claims each for one attempt (of several dispatchers, scaled out, one
sends it), sends it through :mod:`predictd.outbound` on a thread, and records what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlsplit

import orjson
import structlog

from ..config.settings import DEFAULT_WEBHOOK_SCHEDULE_S
from ..core.background import cancel_and_wait
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
    concurrency: int = 8  # attempts in flight at once
    receiver_concurrency: int = 2  # of which to one receiver (host and port)
    limits: OutboundLimits = field(default_factory=OutboundLimits)


_DEFAULT_PORTS = {"http": 80, "https": 443}


def receiver_of(url: str) -> tuple[str, str]:
    """(receiver, origin) of a webhook URL. The receiver (host and port) is what the per-receiver cap
    counts; the origin is the URL's own text up to its path, which the store matches to leave a busy
    receiver's rows out (one receiver may be spelled several ways: each spelling is an origin of it)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = (parts.hostname or "").rstrip(".")
    receiver = f"{host}:{port or _DEFAULT_PORTS.get(parts.scheme.lower(), 0)}"
    after_scheme = url.find("://") + 3
    marks = [i for i in (url.find(mark, after_scheme) for mark in "/?#") if i >= 0]
    return receiver, url[: min(marks, default=len(url))]


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


# Due rows read at once. A read skips the receivers whose every slot is taken, and the rows it returns of
# receivers that became busy meanwhile teach the next read to skip those too; a few reads per wake-up at most.
BATCH = 32
READS_PER_WAKE = 4
ORIGINS_PER_RECEIVER = 16  # spellings of one busy receiver left out by name; more only wait in the batch
IDLE_S = 5.0  # longest sleep without a wake-up: a row written by another process is seen after this


class Dispatcher:
    """Sends due outbox rows, at most ``concurrency`` at once and ``receiver_concurrency`` of them to one
    receiver, each slot freed as its attempt ends: a slow receiver's backlog waits for its own slots while
    everyone else's webhooks go out. Woken at once by new rows and by each attempt's end, otherwise it
    sleeps until the next retry is due.

    Attempts run on threads of its own (the HTTP client is synchronous), so that slow receivers never hold
    the threads the rest of the process hands blocking work to. The caps are per process: scaled out,
    each API process and worker runs a dispatcher, and the claim of a row makes sure one of them sends it.
    """

    def __init__(
        self, store: DeliveryStore, config: DeliveryConfig, rng: random.Random | None = None
    ) -> None:
        self._store = store
        self._config = config
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._attempts: set[asyncio.Task[None]] = set()
        self._running = 0  # attempts in flight; counted down before the wake-up an attempt's end sends
        self._in_flight: dict[str, int] = {}  # receiver -> attempts in flight
        self._origins: dict[str, set[str]] = {}  # receiver in flight -> the origins its rows came under
        self._threads: ThreadPoolExecutor | None = None  # made with the first attempt

    def wake(self) -> None:
        self._wake.set()

    async def run_forever(self) -> None:
        try:
            while True:
                try:
                    await self._start_due()
                except Exception:
                    log.exception("webhook dispatch failed; retrying")
                await self._sleep_until_due()
        finally:
            # An attempt cut short is sent again once its lease ends, with the same webhook-id.
            await cancel_and_wait(self._attempts)
            if self._threads is not None:
                self._threads.shutdown(wait=False, cancel_futures=True)

    def _busy_origins(self) -> list[str]:
        cap = self._config.receiver_concurrency
        return sorted(
            origin
            for receiver, count in self._in_flight.items()
            if count >= cap
            for origin in self._origins.get(receiver, ())
        )

    def _free_slots(self) -> int:
        return self._config.concurrency - self._running

    async def _sleep_until_due(self) -> None:
        self._wake.clear()
        delay = IDLE_S  # every slot is taken: the end of an attempt wakes it
        if self._free_slots() > 0:
            due = await self._store.next_delivery_at(self._busy_origins())
            if due is not None:
                delay = max(0.0, (due - utcnow()).total_seconds())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(delay, IDLE_S)):
                await self._wake.wait()

    async def _start_due(self) -> None:
        """Start an attempt for every due row a slot is free for, oldest first."""
        for _ in range(READS_PER_WAKE):
            if self._free_slots() <= 0:
                return
            due = await self._store.due_deliveries(utcnow(), BATCH, self._busy_origins())
            if not due or not await self._start_some(due):
                return

    async def _start_some(self, due: list[WebhookDelivery]) -> bool:
        """Start what ``due`` has room for; whether reading again may find more to start."""
        read_again = False
        for delivery in due:
            if self._free_slots() <= 0:
                return False
            receiver, origin = receiver_of(delivery.url)
            if self._in_flight.get(receiver, 0) >= self._config.receiver_concurrency:
                origins = self._origins.setdefault(receiver, set())
                if origin not in origins and len(origins) < ORIGINS_PER_RECEIVER:
                    origins.add(origin)
                    read_again = True  # the next read leaves this spelling of a busy receiver out
                continue
            read_again = True  # claimed here or by another dispatcher, the row is no longer due
            # Long enough for one attempt; a delivery whose sender died is picked up again after it.
            lease = utcnow() + timedelta(seconds=self._config.attempt_timeout_s + 5)
            if await self._store.claim_delivery(delivery, lease):
                self._origins.setdefault(receiver, set()).add(origin)
                self._start(delivery, receiver)
        return read_again

    def _start(self, delivery: WebhookDelivery, receiver: str) -> None:
        self._running += 1
        self._in_flight[receiver] = self._in_flight.get(receiver, 0) + 1
        task = asyncio.create_task(self._attempt(delivery, receiver), name=f"webhook {delivery.id}")
        self._attempts.add(task)
        task.add_done_callback(self._attempts.discard)

    async def _attempt(self, delivery: WebhookDelivery, receiver: str) -> None:
        try:
            await self._send(delivery)
        except Exception:
            # Not recorded: the lease runs out and the delivery is attempted again.
            log.exception("webhook attempt failed", delivery=delivery.id)
        finally:
            self._running -= 1
            left = self._in_flight[receiver] - 1
            if left:
                self._in_flight[receiver] = left
            else:
                del self._in_flight[receiver]
                self._origins.pop(receiver, None)
            self._wake.set()  # a slot is free

    async def _post(self, url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int | None, str | None]:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(self._config.concurrency, "predictd-webhooks")
        send = functools.partial(post, url, body, headers, self._config.limits)
        return await asyncio.get_running_loop().run_in_executor(self._threads, send)

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
        status_code, error = await self._post(delivery.url, body, headers)
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
