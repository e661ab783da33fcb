"""Fire-and-forget steps run beside the request or prediction that caused them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any

import structlog

log = structlog.get_logger("predictd.background")

# How long a cancelled task may take to end before it is cancelled again (see cancel_and_wait).
RECANCEL_S = 1.0


class Background:
    """Runs coroutines as tasks nobody awaits: keeps a reference to each until it ends (the event loop
    holds tasks only weakly, so an unreferenced one can vanish mid-way) and logs a failure instead of
    leaving it unretrieved. For steps whose failure something else repairs (the sweeper, a lease, a retry)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Awaitable[object], what: str) -> None:
        async def guarded() -> None:
            try:
                await work
            except Exception as exc:
                log.warning("background step failed", step=what, error=repr(exc))

        task = asyncio.get_running_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for every step still running (on close)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], recancel_s: float = RECANCEL_S) -> None:
    """Cancel the tasks and wait until every one has ended, cancelling again any still running after
    ``recancel_s``. On Python 3.11 ``asyncio.wait_for`` drops a cancel that arrives just as the operation it
    wraps completes (CPython gh-86296, fixed in 3.12), and redis-py sends every command through it: a
    forever loop whose cancel was dropped would never end, and neither would the process stopping it."""
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=recancel_s)
        if pending:
            names = sorted(task.get_name() for task in pending)
            log.info("tasks outlived their cancel; cancelling again", tasks=names)
    await asyncio.gather(*tasks, return_exceptions=True)  # retrieve each outcome: none is left unread
