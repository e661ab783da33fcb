"""A real worker subprocess (the built-in ``sleep`` model) driven the way a slot drives it: predictions sent
ahead wait in its pipe and run in order; a cancel names its prediction, so it stops that one whether it is
running or still waiting, and never the one after it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from predictd.runtime.outcomes import Cancelled, Succeeded
from predictd.runtime.process import WorkerProcess


@pytest.fixture
async def worker() -> AsyncIterator[WorkerProcess]:
    started = await WorkerProcess.start("predictd.models.sleep:Sleep", timeout=60.0)
    yield started
    await started.stop()


async def test_predictions_sent_ahead_run_in_order(worker: WorkerProcess) -> None:
    for index in range(3):
        assert worker.send(f"p{index}", {"ms": 20})
    for index in range(3):
        outcome = await worker.answer(f"p{index}", timeout=10.0)
        assert isinstance(outcome, Succeeded)
        assert (outcome.output, outcome.predict_time >= 0.02) == ("slept 20 ms", True)


async def test_a_prediction_cancelled_while_it_waits_is_answered_cancelled_without_running(
    worker: WorkerProcess,
) -> None:
    worker.send("running", {"ms": 300})
    worker.send("waiting", {"ms": 5000})
    worker.interrupt("waiting")
    first = await worker.answer("running", timeout=10.0)
    assert isinstance(first, Succeeded)  # the cancel named the other one
    second = await worker.answer("waiting", timeout=2.0)  # it would take 5 s if it ran
    assert isinstance(second, Cancelled)
    assert second.predict_time is not None
    assert second.predict_time < 0.5


async def test_a_cancel_that_arrives_after_its_prediction_ended_does_not_stop_the_next(
    worker: WorkerProcess,
) -> None:
    worker.send("first", {"ms": 10})
    worker.send("second", {"ms": 400})
    assert isinstance(await worker.answer("first", timeout=10.0), Succeeded)
    worker.interrupt("first")  # too late: "first" is done and "second" is running
    outcome = await worker.answer("second", timeout=10.0)
    assert isinstance(outcome, Succeeded)
    assert outcome.output == "slept 400 ms"


async def test_cancelling_the_running_prediction_stops_it_at_once(worker: WorkerProcess) -> None:
    worker.send("long", {"ms": 60_000})
    worker.send("next", {"ms": 10})
    await asyncio.sleep(0.5)  # an idle worker starts it at once
    worker.interrupt("long")
    outcome = await worker.answer("long", timeout=5.0)
    assert isinstance(outcome, Cancelled)
    assert isinstance(await worker.answer("next", timeout=5.0), Succeeded)


async def test_answers_read_together_are_taken_without_waiting_and_in_order(worker: WorkerProcess) -> None:
    """A busy server reads several answers at once; those already read are taken without waiting (so a
    slot records them in one write), each matched to its own prediction, and one not answered yet is not."""
    for index in range(5):
        worker.send(f"p{index}", {"ms": 1})
    worker.send("slow", {"ms": 1500})
    await asyncio.sleep(0.5)  # the first five are answered by now, the last is running
    first = await worker.answer("p0", timeout=10.0)
    assert isinstance(first, Succeeded)
    assert worker.answered("slow") is None  # not answered yet: nothing to take, and nothing waited for
    taken = [worker.answered(f"p{index}") for index in range(1, 5)]
    assert [outcome.output for outcome in taken if isinstance(outcome, Succeeded)] == ["slept 1 ms"] * 4
    assert worker.answered("slow") is None
    last = await worker.answer("slow", timeout=10.0)
    assert isinstance(last, Succeeded)
    assert last.output == "slept 1500 ms"
