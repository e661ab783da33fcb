"""The failure rules: what each way a run ends does to its prediction, and what a lost run becomes."""

from __future__ import annotations

from datetime import datetime

import pytest

from predictd.core.domain import ModelInfo, Prediction, Status, new_id, utcnow
from predictd.runtime.outcomes import (
    SERVER_STOPPED,
    STOPPED_ANSWERING,
    Cancelled,
    Failed,
    LostRun,
    Succeeded,
    WorkerDied,
    deadline_failure,
    final_state,
    lost_run_failure,
    storable,
    unstorable_failure,
)

NOW = datetime(2026, 1, 1)
PER_SECOND = ModelInfo("m", "", True, None, None, price=0.5, price_unit="second", timeout_s=10.0)


def prediction(status: Status = Status.PROCESSING, attempts: int = 1) -> Prediction:
    return Prediction(new_id(), "acct", "echo", status, {"text": "x"}, utcnow(), attempts=attempts)


def test_a_success_keeps_its_output_and_pays_per_second_up_to_the_deadline_only() -> None:
    assert final_state(Succeeded("out", 4.0), PER_SECOND, NOW) == (
        Status.SUCCEEDED,
        {"output": "out", "completed_at": NOW, "predict_time": 4.0, "cost": 2.0},
    )
    status, changes = final_state(Succeeded("out", 60.0), PER_SECOND, NOW)
    assert (status, changes["cost"]) == (Status.SUCCEEDED, 5.0)


def test_a_failure_keeps_its_input_has_no_output_costs_nothing_and_a_deadline_times_out() -> None:
    status, changes = final_state(Failed("PipelineError", "boom", 0.5), PER_SECOND, NOW)
    assert status is Status.FAILED
    assert changes == {
        "error_name": "PipelineError",
        "error_message": "boom",
        "completed_at": NOW,
        "predict_time": 0.5,
        "output": None,
    }
    status, changes = final_state(deadline_failure(30.0), PER_SECOND, NOW)
    assert (status, changes["error_name"], changes["error_message"]) == (
        Status.TIMED_OUT,
        "DeadlineExceeded",
        "prediction exceeded its 30 s deadline",
    )
    assert final_state(Cancelled(0.25), PER_SECOND, NOW) == (
        Status.CANCELLED,
        {"completed_at": NOW, "predict_time": 0.25},
    )


@pytest.mark.parametrize("lost", [WorkerDied("killed"), STOPPED_ANSWERING, SERVER_STOPPED])
def test_a_lost_run_is_queued_again_while_attempts_remain(lost: LostRun) -> None:
    assert lost_run_failure(prediction(attempts=1), lost, max_attempts=2) is None
    assert lost_run_failure(prediction(Status.QUEUED, attempts=5), lost, max_attempts=2) is None


def test_a_lost_run_out_of_attempts_fails_as_unavailable_saying_why() -> None:
    died = lost_run_failure(prediction(attempts=2), WorkerDied("exit code -9"), max_attempts=2)
    assert died == Failed(
        "UnavailableError", "the worker running this prediction died 2 time(s): exit code -9", None
    )
    stopped = lost_run_failure(prediction(attempts=2), SERVER_STOPPED, max_attempts=2)
    assert stopped is not None
    assert stopped.error_name == "UnavailableError"
    assert stopped.message.endswith("(the server stopped while it ran, 2 time(s))")


def test_a_run_of_a_model_no_longer_served_fails_whatever_its_attempts() -> None:
    failure = lost_run_failure(prediction(Status.QUEUED, attempts=0), SERVER_STOPPED, 2, served=False)
    assert failure is not None
    assert (failure.error_name, failure.message.endswith("(model 'echo' is no longer served)")) == (
        "UnavailableError",
        True,
    )


def test_an_output_holding_a_nul_becomes_a_named_failure_and_failure_texts_are_escaped() -> None:
    """PostgreSQL stores no NUL: what a run ends with is made storable the same way on both backends."""
    assert storable(Succeeded({"a": ["ok"]}, 1.0)) == Succeeded({"a": ["ok"]}, 1.0)
    failed = storable(Succeeded({"a": ["ok", "x\x00"]}, 1.5))
    assert isinstance(failed, Failed)
    assert (failed.error_name, failed.predict_time) == ("PipelineError", 1.5)
    assert "NUL character" in failed.message
    assert "at output.a[1]," in failed.message
    keyed = storable(Succeeded({"k\x00": 1}, 1.0))
    assert isinstance(keyed, Failed)
    assert "\x00" not in keyed.message
    assert "output.k\\u0000" in keyed.message
    assert storable(Failed("PipelineError", "bad\x00byte", None)) == Failed(
        "PipelineError", "bad\\u0000byte", None
    )


def test_an_outcome_the_database_refuses_is_recorded_as_a_named_failure() -> None:
    reason = "PostgreSQL refused a value (22P05: unsupported Unicode escape sequence)"
    for ended in (Succeeded("x", 2.0), Failed("PoseError", "no pose", 2.0)):
        failed = unstorable_failure(ended, reason)
        assert failed == Failed(
            "PipelineError", f"the prediction's outcome could not be stored: {reason}", 2.0
        )
    assert unstorable_failure(Cancelled(1.0), reason) == Cancelled(1.0)
