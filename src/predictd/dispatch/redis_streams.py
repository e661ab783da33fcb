"""Scaled-out dispatch through Redis: one stream per model read by a consumer group of `predictd worker`
processes, cancel signals and state-change events over pub/sub.

Delivery is at least once and Redis is not the source of truth:
- a worker holds a stream entry from XREADGROUP until the outcome is stored, then XACKs (and XDELs) it;
  while it runs, a heartbeat resets the entry's idle time and keeps a ``running`` marker alive;
- an entry idle longer than the lease (its worker was killed) is taken over by another worker with
  XAUTOCLAIM, flagged ``orphaned`` so that the store counts the lost run as an attempt;
- whatever Redis forgets (a restart without persistence) is queued again from the store by the sweep
  (usecases/recovery.py); the store's state machine refuses a second completion.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from typing import cast

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from ..core.background import Background, cancel_and_wait
from ..core.domain import Prediction
from ..core.ports import CancelHandler, Job
from ..core.redis_keys import CONSUMER_GROUP, RedisKeys
from .local import LocalNotifier, _LocalSubscription

log = structlog.get_logger("predictd.dispatch")

BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)


def backoff(failures: int) -> float:
    return BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]


def job_fields(prediction_id: str, orphaned: bool) -> dict[str, str]:
    return {"id": prediction_id, "orphaned": "1" if orphaned else "0"}


def job_from_entry(model: str, entry_id: str, fields: dict[str, str]) -> Job | None:
    prediction_id = fields.get("id")
    if not prediction_id:
        return None
    return Job(prediction_id, model, orphaned=fields.get("orphaned") == "1", receipt=entry_id)


class RedisBroker:
    """The producing side, used by API processes (and by workers to queue a job again)."""

    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
        self._redis = redis
        self._keys = keys

    async def enqueue(self, prediction_id: str, model: str, *, orphaned: bool = False) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self._keys.stream(model), job_fields(prediction_id, orphaned))  # type: ignore[arg-type]
            pipe.set(self._keys.queued(prediction_id), "1")
            await pipe.execute()

    async def cancel(self, prediction_id: str) -> None:
        await self._redis.publish(self._keys.cancel_channel, prediction_id)

    async def depth(self, model: str) -> int:
        return int(await self._redis.xlen(self._keys.stream(model)))


async def follow_channel(
    redis: Redis,
    channel: str,
    on_message: Callable[[str], Awaitable[None]],
    on_subscribed: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Hand every message of a pub/sub channel to ``on_message``, for ever: resubscribe with backoff when
    the connection is lost (Redis restarted), and call ``on_subscribed`` each time the subscription is
    (re)made, since what was published meanwhile is gone."""
    failures = 0
    while True:
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel)
            failures = 0
            if on_subscribed is not None:
                await on_subscribed()
            while True:
                message = await pubsub.get_message(timeout=5.0)
                if message is not None and message.get("type") == "message":
                    await on_message(str(message["data"]))
        except (RedisError, OSError) as exc:
            log.warning("channel lost; resubscribing", channel=channel, error=repr(exc))
            await asyncio.sleep(backoff(failures))
            failures += 1
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]


def worker_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class RedisWorkSource:
    """The consuming side, in a `predictd worker`: the WorkSource its supervisor's slots read."""

    def __init__(
        self,
        redis: Redis,
        keys: RedisKeys,
        models: list[str],
        *,
        consumer: str,
        lease_s: float,
        slots: dict[str, int],
        block_ms: int = 2000,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._broker = RedisBroker(redis, keys)
        self._models = models
        self.consumer = consumer
        self._lease_s = lease_s
        self._slots = slots
        self._block_ms = block_ms
        self._held: dict[str, Job] = {}  # by receipt: taken, not yet finished
        self._reclaimed: dict[str, deque[Job]] = defaultdict(deque)
        self._cancel_handlers: list[CancelHandler] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for model in self._models:
            await self._ensure_group(model)
        self._tasks += [
            asyncio.create_task(self._every(self._lease_s / 5, self._heartbeat), name="heartbeat"),
            asyncio.create_task(self._every(self._lease_s / 2, self._reclaim), name="reclaim"),
            asyncio.create_task(self._listen_for_cancels(), name="cancels"),
        ]

    async def close(self) -> None:
        await cancel_and_wait(self._tasks)

    async def _ensure_group(self, model: str) -> None:
        # From id 0: entries added before the group existed (after Redis lost it) are read too.
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
            await self._redis.xgroup_create(self._keys.stream(model), CONSUMER_GROUP, id="0", mkstream=True)

    # -- WorkSource ----------------------------------------------------------------------------------------

    async def take(self, model: str) -> Job:
        stream = self._keys.stream(model)
        failures = 0
        while True:
            if self._reclaimed[model]:
                return self._reclaimed[model].popleft()
            try:
                answer = await self._redis.xreadgroup(
                    CONSUMER_GROUP, self.consumer, {stream: ">"}, count=1, block=self._block_ms
                )
                failures = 0
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self._ensure_group(model)  # Redis lost the group (restarted): make it again
                continue
            except (RedisError, OSError) as exc:
                log.warning("cannot read the queue; retrying", model=model, error=repr(exc))
                await asyncio.sleep(backoff(failures))
                failures += 1
                continue
            for _, entries in cast(list[tuple[str, list[tuple[str, dict[str, str]]]]], answer or []):
                for entry_id, fields in entries:
                    job = job_from_entry(model, entry_id, fields)
                    if job is None:
                        await self._redis.xack(stream, CONSUMER_GROUP, entry_id)
                        continue
                    await self._hold(job)
                    return job

    def take_ready(self, model: str) -> Job | None:
        """Never: a worker of the fleet takes one entry at a time, so that no entry waits in one worker's
        pipe while another worker is idle (the stream is the fleet's shared queue)."""
        return None

    def backlog(self, model: str) -> int:
        return 0

    async def _hold(self, job: Job) -> None:
        assert job.receipt is not None
        self._held[job.receipt] = job
        with contextlib.suppress(RedisError, OSError):
            await self._redis.set(self._keys.running(job.prediction_id), self.consumer, px=self._lease_ms)

    async def finish(self, job: Job) -> None:
        self._held.pop(job.receipt or "", None)
        async with self._redis.pipeline(transaction=True) as pipe:
            if job.receipt is not None:
                pipe.xack(self._keys.stream(job.model), CONSUMER_GROUP, job.receipt)
                pipe.xdel(self._keys.stream(job.model), job.receipt)
            pipe.delete(self._keys.queued(job.prediction_id), self._keys.running(job.prediction_id))
            await pipe.execute()

    async def retry(self, job: Job) -> None:
        await self.finish(job)
        await self._broker.enqueue(job.prediction_id, job.model, orphaned=job.orphaned)

    def on_cancel(self, handler: CancelHandler) -> None:
        self._cancel_handlers.append(handler)

    # -- leases --------------------------------------------------------------------------------------------

    @property
    def _lease_ms(self) -> int:
        return int(self._lease_s * 1000)

    async def _every(self, interval_s: float, step: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await step()
            except (RedisError, OSError) as exc:
                log.warning("lease upkeep failed; retrying", step=step.__name__, error=repr(exc))

    async def _heartbeat(self) -> None:
        """Keep every held entry young (XCLAIM to ourselves resets its idle time) and its marker alive."""
        held = list(self._held.values())
        if not held:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for job in held:
                pipe.set(self._keys.running(job.prediction_id), self.consumer, px=self._lease_ms)
            await pipe.execute()
        by_model: dict[str, list[str]] = defaultdict(list)
        for job in held:
            if job.receipt is not None:
                by_model[job.model].append(job.receipt)
        for model, receipts in by_model.items():
            with contextlib.suppress(ResponseError):  # NOGROUP after a Redis restart: nothing to keep
                await self._redis.xclaim(
                    self._keys.stream(model),
                    CONSUMER_GROUP,
                    self.consumer,
                    0,
                    list[int | bytes | str | memoryview](receipts),
                    justid=True,
                )

    async def _reclaim(self) -> None:
        """Take over entries whose worker has been silent for a whole lease (it was killed)."""
        for model in self._models:
            room = self._slots.get(model, 1) - len(self._reclaimed[model])
            if room <= 0:
                continue
            try:
                answer = await self._redis.xautoclaim(
                    self._keys.stream(model),
                    CONSUMER_GROUP,
                    self.consumer,
                    min_idle_time=self._lease_ms,
                    start_id="0-0",
                    count=room,
                )
            except ResponseError:
                await self._ensure_group(model)
                continue
            for entry_id, fields in answer[1]:
                if fields is None:
                    continue
                job = job_from_entry(model, entry_id, fields)
                if job is None:
                    continue
                job = Job(job.prediction_id, model, orphaned=True, receipt=entry_id)
                log.info("took over a prediction from a silent worker", prediction=job.prediction_id)
                await self._hold(job)
                self._reclaimed[model].append(job)

    async def _listen_for_cancels(self) -> None:
        async def on_message(data: str) -> None:
            for handler in self._cancel_handlers:
                await handler(data)

        await follow_channel(self._redis, self._keys.cancel_channel, on_message)


class RedisNotifier:
    """A LocalNotifier whose changes also reach every other process: each state published here is
    announced on a channel (id only), and a process with someone waiting on that prediction reads it from
    the store (``read``: the store's own read, given by the composition root). After losing the channel it
    re-reads every watched prediction, so no wake-up is lost."""

    def __init__(
        self, redis: Redis, keys: RedisKeys, read: Callable[[str], Awaitable[Prediction | None]]
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._read = read
        self._local = LocalNotifier()
        self._origin = uuid.uuid4().hex
        self._announcements = Background()
        self._task: asyncio.Task[None] | None = None

    def add_listener(self, listener: Callable[[Prediction], None]) -> None:
        self._local.add_listener(listener)

    def subscribe(self, prediction_id: str, *, terminal_only: bool = False) -> _LocalSubscription:
        return self._local.subscribe(prediction_id, terminal_only=terminal_only)

    def publish(self, prediction: Prediction) -> None:
        self._local.publish(prediction)
        message = orjson.dumps({"id": prediction.id, "origin": self._origin})
        # A lost announcement is repaired: after a resubscribe every process re-reads what it watches.
        self._announcements.spawn(self._redis.publish(self._keys.events_channel, message), "announce")

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="events")

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
        await self._announcements.drain()

    async def _listen(self) -> None:
        async def on_message(data: str) -> None:
            event = orjson.loads(data)
            if event.get("origin") != self._origin:
                await self._refresh([str(event.get("id"))])

        async def on_subscribed() -> None:
            await self._refresh(self._local.watched())  # what changed while we were not listening

        await follow_channel(self._redis, self._keys.events_channel, on_message, on_subscribed)

    async def _refresh(self, prediction_ids: list[str]) -> None:
        watched = set(self._local.watched())
        for prediction_id in prediction_ids:
            if prediction_id not in watched:
                continue
            try:
                prediction = await self._read(prediction_id)
            except Exception as exc:
                log.warning("could not read a changed prediction", prediction=prediction_id, error=repr(exc))
                continue
            if prediction is not None:
                self._local.deliver(prediction)
