"""Running one prediction against the store: claim it, then record what the worker reported.

Every write is a state-machine transition in the store, so a prediction cancelled meanwhile, or already
completed elsewhere, refuses the late write instead of being overwritten.
"""

from __future__ import annotations

from typing import Any

from ..domain import ModelInfo, Prediction, Status, price_of, utcnow
from ..errors import DEADLINE_EXCEEDED, UNAVAILABLE_ERROR
from ..ports import DeliveryPlanner, Notifier, Store
from .process import Cancelled, Failed, Outcome, Succeeded, WorkerDied


class Executor:
    def __init__(
        self, store: Store, notifier: Notifier, max_attempts: int, deliveries: DeliveryPlanner | None = None
    ) -> None:
        self._store = store
        self._notifier = notifier
        self._max_attempts = max_attempts
        self._deliveries = deliveries

    async def claim(self, prediction_id: str, *, orphaned: bool = False) -> Prediction | None:
        """QUEUED -> PROCESSING; None when the prediction is no longer queued (cancelled, or taken).

        ``orphaned``: the prediction may be PROCESSING on a worker that is gone. That run counts as one
        whose worker died: the prediction is queued again and claimed here if attempts remain, otherwise
        it fails with UnavailableError (and None is returned)."""
        claimed = await self._take(prediction_id)
        if claimed is None and orphaned:
            current = await self._store.get_prediction(prediction_id)
            if current is not None and current.status is Status.PROCESSING:
                _, requeued = await self.record(current, WorkerDied("its worker stopped answering"))
                if requeued:
                    claimed = await self._take(prediction_id)
        return claimed

    async def _take(self, prediction_id: str) -> Prediction | None:
        claimed = await self._store.transition(
            prediction_id,
            Status.PROCESSING,
            count_attempt=True,
            deliveries=self._deliveries,
            started_at=utcnow(),
        )
        if claimed is not None:
            self._notifier.publish(claimed)
        return claimed

    async def record(
        self, prediction: Prediction, outcome: Outcome, model: ModelInfo | None = None
    ) -> tuple[Prediction | None, bool]:
        """Write the outcome. Returns the stored prediction (None if the write was refused) and whether
        the prediction should be queued again."""
        now = utcnow()
        changes: dict[str, Any]
        if isinstance(outcome, Succeeded):
            target = Status.SUCCEEDED
            changes = {
                "output": outcome.output,
                "completed_at": now,
                "predict_time": outcome.predict_time,
                "cost": cost_of(model, outcome.predict_time),
            }
        elif isinstance(outcome, Cancelled):
            target = Status.CANCELLED
            changes = {"completed_at": now, "predict_time": outcome.predict_time}
        elif isinstance(outcome, WorkerDied) and prediction.attempts < self._max_attempts:
            requeued = await self._store.transition(prediction.id, Status.QUEUED)
            if requeued is not None:
                self._notifier.publish(requeued)
            return requeued, requeued is not None
        else:
            if isinstance(outcome, WorkerDied):
                outcome = Failed(
                    UNAVAILABLE_ERROR.name,
                    f"the worker running this prediction died {prediction.attempts} time(s): "
                    f"{outcome.detail}",
                    None,
                )
            target = failure_status(outcome)
            changes = failure_changes(outcome, now)
        stored = await self._store.transition(prediction.id, target, deliveries=self._deliveries, **changes)
        if stored is not None:
            self._notifier.publish(stored)
        return stored, False


def failure_status(failure: Failed) -> Status:
    return Status.TIMED_OUT if failure.error_name == DEADLINE_EXCEEDED.name else Status.FAILED


def failure_changes(failure: Failed, now: Any) -> dict[str, Any]:
    """A failed prediction keeps no inputs or outputs (data_removed) and is never charged."""
    return {
        "error_name": failure.error_name,
        "error_message": failure.message,
        "completed_at": now,
        "predict_time": failure.predict_time,
        "input": None,
        "output": None,
        "data_removed": True,
    }


def cost_of(model: ModelInfo | None, predict_time: float) -> float:
    """The price of a success; per-second pricing counts at most the model's deadline, which is what a
    prepaid account had reserved."""
    if model is None:
        return 0.0
    return price_of(model.price, model.price_unit, min(predict_time, model.timeout_s))
