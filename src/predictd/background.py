"""Fire-and-forget steps run beside the request or prediction that caused them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import structlog

log = structlog.get_logger("predictd.background")


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
