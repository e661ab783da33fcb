"""The sweeper: the store is the source of truth, Redis only a dispatcher. Every few seconds one API process
(holding a short Redis lock) compares the unfinished predictions in the store with what Redis tracks, and
queues again any prediction Redis has lost (Redis restarted without persistence, or a submit could not
reach it). It also frees in-flight counts whose prediction has ended without the release reaching Redis.

A prediction counts as lost only once Redis has not known it for a whole worker lease: a live worker's
heartbeat restores its markers well within that time, so work that is running is not queued twice.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..core.domain import Prediction, Status, utcnow
from ..core.ports import DeliveryPlanner, Limits, ModelCatalog, Notifier, PredictionStore
from ..core.redis_keys import RedisKeys
from ..runtime.outcomes import Failed, failure_changes, unserved_failure
from .redis_streams import RedisBroker

log = structlog.get_logger("predictd.sweeper")

# An in-flight count this old is checked against the store.
INFLIGHT_CHECK_AFTER_S = 30.0


@dataclass
class Suspicion:
    """Predictions Redis did not know, and since when (time.monotonic())."""

    since: dict[str, float] = field(default_factory=dict)

    def lost(self, unknown: Sequence[str], now: float, grace_s: float) -> list[str]:
        """Given the predictions Redis does not know now, those unknown for at least ``grace_s``."""
        self.since = {pid: self.since.get(pid, now) for pid in unknown}
        return [pid for pid, first in self.since.items() if now - first >= grace_s]


@dataclass
class SweepReport:
    requeued: int = 0
    failed: int = 0
    released: int = 0


class Sweeper:
    def __init__(
        self,
        redis: Redis,
        keys: RedisKeys,
        store: PredictionStore,
        broker: RedisBroker,
        catalog: ModelCatalog,
        limits: Limits,
        notifier: Notifier,
        deliveries: DeliveryPlanner | None,
        *,
        interval_s: float,
        lease_s: float,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._store = store
        self._broker = broker
        self._catalog = catalog
        self._limits = limits
        self._notifier = notifier
        self._deliveries = deliveries
        self._interval_s = interval_s
        self._lease_s = lease_s
        self._owner = uuid.uuid4().hex
        self._suspicion = Suspicion()

    async def run_forever(self) -> None:
        while True:
            try:
                if await self._lead():
                    report = await self.sweep()
                    if report.requeued or report.failed or report.released:
                        log.info(
                            "swept",
                            requeued=report.requeued,
                            failed=report.failed,
                            released=report.released,
                        )
            except (RedisError, OSError) as exc:
                log.warning("sweep skipped: Redis unreachable", error=repr(exc))
            except Exception:
                log.exception("sweep failed; will retry")
            await asyncio.sleep(self._interval_s)

    async def _lead(self) -> bool:
        """Hold the sweeper lock (one sweeper at a time across API processes); renewed each round."""
        ttl_ms = int(self._interval_s * 3000)
        if await self._redis.set(self._keys.sweeper_lock, self._owner, nx=True, px=ttl_ms):
            return True
        if await self._redis.get(self._keys.sweeper_lock) == self._owner:
            await self._redis.pexpire(self._keys.sweeper_lock, ttl_ms)
            return True
        self._suspicion = Suspicion()  # another process sweeps: start afresh if we lead again
        return False

    async def sweep(self) -> SweepReport:
        report = SweepReport()
        unfinished = await self._store.list_unfinished()
        known = await self._known(unfinished)
        unknown = [p.id for p in unfinished if not known[p.id]]
        lost = set(self._suspicion.lost(unknown, time.monotonic(), self._lease_s))
        for prediction in unfinished:
            if prediction.id not in lost:
                continue
            self._suspicion.since.pop(prediction.id, None)
            if self._catalog.get(prediction.model) is None:
                await self._fail(prediction, unserved_failure(prediction.model))
                report.failed += 1
                continue
            await self._limits.try_acquire(prediction.account_id, prediction.id, None)
            await self._broker.enqueue(
                prediction.id, prediction.model, orphaned=prediction.status is Status.PROCESSING
            )
            report.requeued += 1
            log.info("queued a prediction Redis had lost", prediction=prediction.id, status=prediction.status)
        report.released = await self._release_finished({p.id for p in unfinished})
        return report

    async def _known(self, predictions: Sequence[Prediction]) -> dict[str, bool]:
        if not predictions:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for p in predictions:
                pipe.exists(self._keys.queued(p.id), self._keys.running(p.id))
            counts = await pipe.execute()
        return {p.id: int(n) > 0 for p, n in zip(predictions, counts, strict=True)}

    async def _fail(self, prediction: Prediction, failure: Failed) -> None:
        stored = await self._store.transition(
            prediction.id, Status.FAILED, deliveries=self._deliveries, **failure_changes(failure, utcnow())
        )
        if stored is not None:
            self._notifier.publish(stored)

    async def _release_finished(self, unfinished: set[str]) -> int:
        """Drop in-flight counts of predictions that have ended (a release that never reached Redis).

        ``unfinished``: the store's unfinished predictions, read at the start of this sweep. An entry older
        than INFLIGHT_CHECK_AFTER_S was counted before that read (a submit counts, then inserts, within
        milliseconds), so one missing from it has ended or was never stored."""
        released = 0
        now = float((await self._redis.time())[0])
        async for key in self._redis.scan_iter(match=self._keys.inflight("*"), count=500):
            account_id = str(key).rsplit(":", 1)[1]
            for prediction_id in await self._redis.zrangebyscore(key, "-inf", now - INFLIGHT_CHECK_AFTER_S):
                if str(prediction_id) not in unfinished:
                    await self._limits.release(account_id, str(prediction_id))
                    released += 1
        return released
