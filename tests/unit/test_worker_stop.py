"""A `predictd worker` always ends after a stop signal: a stop that hangs is given up, and the log says
what it was waiting for."""

from __future__ import annotations

import asyncio
import contextlib
import time

from structlog.testing import capture_logs

from predictd.core.background import cancel_and_wait
from predictd.deploy.scaled import stop_within


async def test_a_stop_that_ends_in_time_is_not_reported() -> None:
    async def stop() -> None:
        await asyncio.sleep(0.01)

    with capture_logs() as logs:
        assert await stop_within(stop, 5.0) is True
    assert logs == []


async def test_a_stop_that_hangs_is_given_up_with_the_stacks_of_what_it_waits_for() -> None:
    never = asyncio.Event()

    async def wait_for_a_reply_that_never_comes() -> None:
        await never.wait()

    async def stop() -> None:
        await asyncio.gather(asyncio.create_task(wait_for_a_reply_that_never_comes()))

    started = time.monotonic()
    with capture_logs() as logs:
        assert await stop_within(stop, 0.2) is False
    assert time.monotonic() - started < 5
    (entry,) = logs
    assert entry["event"] == "stop overran; giving up on it"
    assert entry["log_level"] == "error"
    assert "wait_for_a_reply_that_never_comes" in entry["pending"]


async def test_tasks_the_stop_left_are_cancelled_and_one_that_refuses_is_reported() -> None:
    released = asyncio.Event()

    async def polite() -> None:
        await asyncio.Event().wait()

    async def stubborn() -> None:
        while not released.is_set():
            with contextlib.suppress(asyncio.CancelledError):  # swallows cancels until released
                await released.wait()

    async def stop() -> None:
        await asyncio.sleep(0)

    quiet = asyncio.create_task(polite())
    refusing = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    with capture_logs() as logs:
        assert await stop_within(stop, 0.2) is False
    assert quiet.cancelled()
    (entry,) = logs
    assert "stubborn" in entry["pending"]
    assert "polite" not in entry["pending"]
    released.set()
    await refusing


async def test_a_task_that_drops_a_cancel_is_cancelled_again_until_it_ends() -> None:
    dropped = 0

    async def loop_that_drops_cancels() -> None:
        # As redis-py's send does on Python 3.11 when the cancel meets the completing write (gh-86296).
        nonlocal dropped
        while dropped < 2:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                dropped += 1
        await asyncio.Event().wait()

    task = asyncio.create_task(loop_that_drops_cancels())
    await asyncio.sleep(0)
    started = time.monotonic()
    await cancel_and_wait([task], recancel_s=0.05)
    assert task.cancelled()
    assert dropped == 2
    assert time.monotonic() - started < 5
