"""Recording the runs of predictions in the store: claim a prediction, then record what its worker reported.

Every write is a state-machine transition in the store, so a prediction cancelled meanwhile, or already
completed elsewhere, refuses the late write instead of being overwritten. What each outcome writes is
decided by runtime/outcomes.py.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..core.domain import ModelInfo, Prediction, Status, utcnow
from ..core.ports import DeliveryPlanner, Move, Notifier, PredictionStore
from ..runtime.outcomes import STOPPED_ANSWERING, Outcome, WorkerDied, final_state, lost_run_failure


class RunRecorder:
    """The store side of worker slots (the RunRecords port of runtime/supervisor.py)."""

    def __init__(
        self,
        store: PredictionStore,
        notifier: Notifier,
        max_attempts: int,
        deliveries: DeliveryPlanner | None = None,
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
        claimed = (await self.claim_many([prediction_id]))[0]
        if claimed is None and orphaned:
            current = await self._store.get_prediction(prediction_id)
            if current is not None and current.status is Status.PROCESSING:
                _, requeued = await self.record(current, STOPPED_ANSWERING)
                if requeued:
                    claimed = (await self.claim_many([prediction_id]))[0]
        return claimed

    async def claim_many(self, prediction_ids: Sequence[str]) -> list[Prediction | None]:
        """Claim several predictions in one transaction (none of them orphaned); each as ``claim``."""
        return await self._move([_claim(p) for p in prediction_ids])

    async def record(
        self, prediction: Prediction, outcome: Outcome, model: ModelInfo | None = None
    ) -> tuple[Prediction | None, bool]:
        """Write the outcome. Returns the stored prediction (None if the write was refused) and whether
        the prediction should be queued again."""
        ((stored, requeue),), _ = await self.record_many_and_claim([(prediction, outcome)], model, ())
        return stored, requeue

    async def record_many_and_claim(
        self, ended: Sequence[tuple[Prediction, Outcome]], model: ModelInfo | None, claims: Sequence[str]
    ) -> tuple[list[tuple[Prediction | None, bool]], list[Prediction | None]]:
        """Several outcomes (each as ``record``: the stored prediction and whether to queue it again) and
        ``claim_many``, all in one transaction: a worker slot pays one commit for the answers it has read
        and the predictions it sends in their place."""
        outcome_moves = [self._outcome_move(prediction, outcome, model) for prediction, outcome in ended]
        moved = await self._move([move for move, _ in outcome_moves] + [_claim(p) for p in claims])
        stored = moved[: len(ended)]
        recorded = [
            (s, requeue and s is not None) for s, (_, requeue) in zip(stored, outcome_moves, strict=True)
        ]
        return recorded, moved[len(ended) :]

    async def _move(self, moves: list[Move]) -> list[Prediction | None]:
        moved = await self._store.transitions(moves, deliveries=self._deliveries)
        for prediction in moved:
            if prediction is not None:
                self._notifier.publish(prediction)
        return moved

    def _outcome_move(
        self, prediction: Prediction, outcome: Outcome, model: ModelInfo | None
    ) -> tuple[Move, bool]:
        """The move that records ``outcome``, and whether it queues the prediction again."""
        if isinstance(outcome, WorkerDied):
            failure = lost_run_failure(prediction, outcome, self._max_attempts)
            if failure is None:
                return Move(prediction.id, Status.QUEUED), True
            outcome = failure
        status, changes = final_state(outcome, model, utcnow())
        return Move(prediction.id, status, changes=changes), False


def _claim(prediction_id: str) -> Move:
    return Move(prediction_id, Status.PROCESSING, count_attempt=True, changes={"started_at": utcnow()})
