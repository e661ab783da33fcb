"""Putting back to work what a stop left unfinished (embedded mode, at start)."""

from __future__ import annotations

import structlog

from ..core.domain import Status, utcnow
from ..core.ports import Broker, DeliveryPlanner, ModelCatalog, Notifier, PredictionStore
from ..runtime.outcomes import SERVER_STOPPED, failure_changes, lost_run_failure
from .predictions import Predictions

log = structlog.get_logger("predictd.recovery")


class Recovery:
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
        self._store = store
        self._predictions = predictions
        self._catalog = catalog
        self._broker = broker
        self._notifier = notifier
        self._max_attempts = max_attempts
        self._deliveries = deliveries

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
                continue
            stored = await self._store.transition(
                prediction.id,
                Status.FAILED,
                deliveries=self._deliveries,
                **failure_changes(failure, utcnow()),
            )
            if stored is not None:
                self._notifier.publish(stored)
                failed += 1
        if requeued or failed:
            log.info("recovered unfinished predictions", requeued=requeued, failed=failed)
        return requeued, failed
