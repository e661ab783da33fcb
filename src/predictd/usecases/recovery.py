"""Putting back to work what was lost: what a stop left unfinished (``Recovery``, at start), and, scaled
out, what the dispatcher lost (``LostWork``, a sweep every few seconds).

The store is the source of truth; a dispatcher only hands work out. Either way a lost prediction is queued
again, or failed with UnavailableError when its model is no longer served (runtime/outcomes.py, the lost-run
rule, decides which).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from ..core.domain import Prediction, Status, utcnow
from ..core.ports import (
    Broker,
    DeliveryPlanner,
    DispatchUnavailable,
    Limits,
    LimitsUnavailable,
    ModelCatalog,
    Notifier,
    PredictionStore,
    WorkTracking,
)
from ..runtime.outcomes import SERVER_STOPPED, Failed, failure_changes, lost_run_failure, unserved_failure
from .predictions import Predictions

log = structlog.get_logger("predictd.recovery")

# An in-flight count this old is checked against the store (a submit counts, then inserts, within
# milliseconds: a count this old whose prediction is not unfinished has ended, or was never stored).
INFLIGHT_CHECK_AFTER_S = 30.0


class _Repair:
    def __init__(
        self, store: PredictionStore, notifier: Notifier, deliveries: DeliveryPlanner | None
    ) -> None:
        self._store = store
        self._notifier = notifier
        self._deliveries = deliveries

    async def _fail(self, prediction: Prediction, failure: Failed) -> bool:
        """Record the failure (refused if the prediction ended meanwhile); whether it was recorded."""
        stored = await self._store.transition(
            prediction.id, Status.FAILED, deliveries=self._deliveries, **failure_changes(failure, utcnow())
        )
        if stored is not None:
            self._notifier.publish(stored)
        return stored is not None


class Recovery(_Repair):
    def __init__(
        self,
        store: PredictionStore,
        predictions: Predictions,
        catalog: ModelCatalog,
        broker: Broker,
        notifier: Notifier,
        *,
        max_attempts: int,
        deliveries: DeliveryPlanner | None = None,
    ) -> None:
        super().__init__(store, notifier, deliveries)
        self._predictions = predictions
        self._catalog = catalog
        self._broker = broker
        self._max_attempts = max_attempts

    async def recover(self) -> tuple[int, int]:
        """Put back to work whatever was queued or running when the server last stopped.

        A prediction that was running is queued again until it has used up its attempts; then, and for
        a model no longer served, it fails with UnavailableError. Returns (requeued, failed).
        """
        requeued = failed = 0
        for prediction in await self._store.list_unfinished():
            served = self._catalog.get(prediction.model) is not None
            failure = lost_run_failure(prediction, SERVER_STOPPED, self._max_attempts, served=served)
            if failure is None:
                back_in_queue = prediction.status is Status.QUEUED or (
                    await self._store.transition(prediction.id, Status.QUEUED) is not None
                )
                if not back_in_queue:
                    continue
                await self._predictions.acquire(prediction.account_id, prediction.id, None)
                await self._broker.enqueue(prediction.id, prediction.model)
                requeued += 1
            elif await self._fail(prediction, failure):
                failed += 1
        if requeued or failed:
            log.info("recovered unfinished predictions", requeued=requeued, failed=failed)
        return requeued, failed


@dataclass
class Suspicion:
    """Predictions the dispatcher did not know, and since when (time.monotonic())."""

    since: dict[str, float] = field(default_factory=dict)

    def lost(self, unknown: Sequence[str], now: float, grace_s: float) -> list[str]:
        """Given the predictions the dispatcher does not know now, those unknown for at least ``grace_s``."""
        self.since = {pid: self.since.get(pid, now) for pid in unknown}
        return [pid for pid, first in self.since.items() if now - first >= grace_s]


@dataclass
class SweepReport:
    requeued: int = 0
    failed: int = 0
    released: int = 0


class LostWork(_Repair):
    """Scaled out, every ``interval_s`` one API process (holding the dispatcher's sweep lock) compares the
    unfinished predictions in the store with what the dispatcher tracks, and queues again any prediction it
    has lost (Redis restarted without persistence, or a submit could not reach it). It also frees in-flight
    counts whose prediction has ended without the release reaching the limits.

    A prediction counts as lost only once the dispatcher has not known it for a whole worker lease: a live
    worker's heartbeat restores its markers well within that time, so work that is running is not queued
    twice. One lost while running is handed over as such: the worker that takes it applies the lost-run rule
    as it claims it (attempts). Only one whose model is no longer served is failed here."""

    def __init__(
        self,
        store: PredictionStore,
        tracking: WorkTracking,
        catalog: ModelCatalog,
        limits: Limits,
        notifier: Notifier,
        deliveries: DeliveryPlanner | None,
        *,
        interval_s: float,
        lease_s: float,
    ) -> None:
        super().__init__(store, notifier, deliveries)
        self._tracking = tracking
        self._catalog = catalog
        self._limits = limits
        self._interval_s = interval_s
        self._lease_s = lease_s
        self._suspicion = Suspicion()

    async def run_forever(self) -> None:
        while True:
            try:
                if await self._tracking.lead(self._interval_s):
                    report = await self.sweep()
                    if report.requeued or report.failed or report.released:
                        log.info(
                            "swept",
                            requeued=report.requeued,
                            failed=report.failed,
                            released=report.released,
                        )
                else:
                    self._suspicion = Suspicion()  # another process sweeps: start afresh if we lead again
            except (DispatchUnavailable, LimitsUnavailable) as exc:
                log.warning("sweep skipped: Redis unreachable", error=str(exc))
            except Exception:
                log.exception("sweep failed; will retry")
            await asyncio.sleep(self._interval_s)

    async def sweep(self) -> SweepReport:
        report = SweepReport()
        unfinished = await self._store.list_unfinished()
        known = await self._tracking.known([p.id for p in unfinished])
        unknown = [p.id for p in unfinished if not known[p.id]]
        lost = set(self._suspicion.lost(unknown, time.monotonic(), self._lease_s))
        for prediction in unfinished:
            if prediction.id not in lost:
                continue
            self._suspicion.since.pop(prediction.id, None)
            if self._catalog.get(prediction.model) is None:
                if await self._fail(prediction, unserved_failure(prediction.model)):
                    report.failed += 1
                continue
            await self._limits.try_acquire(prediction.account_id, prediction.id, None)
            await self._tracking.requeue(
                prediction.id, prediction.model, running=prediction.status is Status.PROCESSING
            )
            report.requeued += 1
            log.info("queued a prediction Redis had lost", prediction=prediction.id, status=prediction.status)
        report.released = await self._release_finished({p.id for p in unfinished})
        return report

    async def _release_finished(self, unfinished: set[str]) -> int:
        """Drop in-flight counts of predictions that have ended (a release that never reached the limits).

        ``unfinished``: the store's unfinished predictions, read at the start of this sweep."""
        released = 0
        for account_id, prediction_id in await self._tracking.counted_since(INFLIGHT_CHECK_AFTER_S):
            if prediction_id not in unfinished:
                await self._limits.release(account_id, prediction_id)
                released += 1
        return released
