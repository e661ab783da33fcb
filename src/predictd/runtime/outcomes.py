"""How a run ends, and what each ending does to its prediction: every failure rule, in one place.

    Outcome: what a worker slot learns of a run
     ├── Succeeded ──────────────────────────> SUCCEEDED  output kept; charged cost_of(): the model's flat
     │                                                    price, or its price per second of predict_time
     │                                                    counting at most the model's deadline (what a
     │                                                    prepaid account had reserved)
     ├── Cancelled ──────────────────────────> CANCELLED  never charged
     ├── Failed ──┬── DeadlineExceeded ──────> TIMED_OUT ─┐ no output, never charged; the input is kept
     │            │   (deadline_failure)                  │ (to run it again) until failed_inputs_ttl_s
     │            └── any other error name ──> FAILED ────┘ (failure_status, failure_changes)
     └── WorkerDied ── a lost run, below

    A lost run (lost_run_failure): the worker died holding it (WorkerDied), its worker stopped answering
    and its lease was taken over (STOPPED_ANSWERING), or the server stopped while it ran (SERVER_STOPPED)
     ├── its model is no longer served ──────> Failed(UnavailableError, "... is no longer served")
     ├── still QUEUED, or attempts remain ───> QUEUED again: the next claim counts another attempt
     └── its attempts are used up ───────────> Failed(UnavailableError, what happened, how many times)

Pure data and rules, applied to the store by the run recorder (usecases/runs.py) and by recovery at start
(usecases/recovery.py, Recovery). The scaled-out sweep (usecases/recovery.py, LostWork) fails a run Redis lost
only when its model is no longer served (unserved_failure): any other it hands over as orphaned, and the
worker that takes it records the lost run, under the same rule, as it claims it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..core.domain import ModelInfo, Prediction, Status, price_of
from ..core.nul import NUL, escape_nul, nul_path
from ..errors import DEADLINE_EXCEEDED, PIPELINE_ERROR, UNAVAILABLE_ERROR


@dataclass(frozen=True, slots=True)
class Succeeded:
    output: Any
    predict_time: float


@dataclass(frozen=True, slots=True)
class Failed:
    error_name: str
    message: str
    predict_time: float | None


@dataclass(frozen=True, slots=True)
class Cancelled:
    predict_time: float | None


@dataclass(frozen=True, slots=True)
class WorkerDied:
    """The worker process ended while it held the prediction: the prediction may be run again."""

    detail: str


@dataclass(frozen=True, slots=True)
class ServerStopped:
    """The prediction was found PROCESSING when the server started: the server stopped while it ran."""


Outcome = Succeeded | Failed | Cancelled | WorkerDied
LostRun = WorkerDied | ServerStopped

# A job handed over as orphaned (its worker's lease ran out) whose prediction is still PROCESSING.
STOPPED_ANSWERING = WorkerDied("its worker stopped answering")
SERVER_STOPPED = ServerStopped()


def deadline_failure(timeout_s: float) -> Failed:
    return Failed(DEADLINE_EXCEEDED.name, f"prediction exceeded its {timeout_s:g} s deadline", timeout_s)


def storable(outcome: Outcome) -> Outcome:
    """``outcome`` as both databases can store it. PostgreSQL keeps no NUL character in text or jsonb
    (SQLite would): an output holding one fails its prediction by name, on both backends alike, instead of
    a write retried forever; a NUL in a failure's text is written as the six characters ``\\u0000``."""
    if isinstance(outcome, Succeeded):
        where = nul_path(outcome.output, "output")
        if where is None:
            return outcome
        return Failed(
            PIPELINE_ERROR.name,
            f"the model's output holds a NUL character (\\u0000) at {escape_nul(where)}, which predictd "
            "cannot store",
            outcome.predict_time,
        )
    if isinstance(outcome, Failed) and (NUL in outcome.message or NUL in outcome.error_name):
        return Failed(escape_nul(outcome.error_name), escape_nul(outcome.message), outcome.predict_time)
    return outcome


def unstorable_failure(outcome: Outcome, reason: str) -> Outcome:
    """What is recorded instead of an ended run whose outcome the database refused (``reason``): a failure
    by name, which it can store, rather than a write retried for ever."""
    if isinstance(outcome, Succeeded | Failed):
        why = f"the prediction's outcome could not be stored: {escape_nul(reason)}"
        return Failed(PIPELINE_ERROR.name, why, outcome.predict_time)
    return outcome


def final_state(
    outcome: Succeeded | Failed | Cancelled, model: ModelInfo | None, now: datetime
) -> tuple[Status, dict[str, Any]]:
    """The status an ended run moves its prediction to, and the columns it sets."""
    if isinstance(outcome, Succeeded):
        changes = {
            "output": outcome.output,
            "completed_at": now,
            "predict_time": outcome.predict_time,
            "cost": cost_of(model, outcome.predict_time),
        }
        return Status.SUCCEEDED, changes
    if isinstance(outcome, Cancelled):
        return Status.CANCELLED, {"completed_at": now, "predict_time": outcome.predict_time}
    return failure_status(outcome), failure_changes(outcome, now)


def failure_status(failure: Failed) -> Status:
    return Status.TIMED_OUT if failure.error_name == DEADLINE_EXCEEDED.name else Status.FAILED


def failure_changes(failure: Failed, now: datetime) -> dict[str, Any]:
    """A failed prediction has no output and is never charged. It keeps its input, so that its owner can
    see what failed and run it again, until the retention sweep removes it (failed_inputs_ttl_s)."""
    return {
        "error_name": failure.error_name,
        "error_message": failure.message,
        "completed_at": now,
        "predict_time": failure.predict_time,
        "output": None,
    }


def cost_of(model: ModelInfo | None, predict_time: float) -> float:
    """The price of a success; per-second pricing counts at most the model's deadline, which is what a
    prepaid account had reserved."""
    if model is None:
        return 0.0
    return price_of(model.price, model.price_unit, min(predict_time, model.timeout_s))


def lost_run_failure(
    prediction: Prediction, lost: LostRun, max_attempts: int, *, served: bool = True
) -> Failed | None:
    """The lost-run rule: None when the prediction is to be queued again, else the failure to record.
    ``prediction`` as it was when the run was lost (its attempts count that run); a prediction still QUEUED
    lost no run and is queued again whatever its attempts."""
    if not served:
        return unserved_failure(prediction.model)
    if prediction.status is Status.QUEUED or prediction.attempts < max_attempts:
        return None
    if isinstance(lost, ServerStopped):
        why = f"{UNAVAILABLE_ERROR.meaning} (the server stopped while it ran, {prediction.attempts} time(s))"
    else:
        why = f"the worker running this prediction died {prediction.attempts} time(s): {lost.detail}"
    return Failed(UNAVAILABLE_ERROR.name, why, None)


def unserved_failure(model: str) -> Failed:
    """No worker will ever take a prediction whose model is no longer served."""
    return Failed(
        UNAVAILABLE_ERROR.name, f"{UNAVAILABLE_ERROR.meaning} (model {model!r} is no longer served)", None
    )
