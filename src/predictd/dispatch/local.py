"""In-process dispatch for embedded mode: one FIFO queue per model, cancel callbacks, and a notifier."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable

from ..core.domain import Prediction
from ..core.ports import CancelHandler, Job


class LocalBroker:
    """Both sides of the queue in one process: the Broker the service uses and the WorkSource of the
    worker slots."""

    def __init__(self) -> None:
        self._queues: dict[str, asyncio.Queue[Job]] = defaultdict(asyncio.Queue)
        self._cancel_handlers: list[CancelHandler] = []

    async def enqueue(self, prediction_id: str, model: str) -> None:
        self._queues[model].put_nowait(Job(prediction_id, model))

    async def cancel(self, prediction_id: str) -> None:
        for handler in self._cancel_handlers:
            await handler(prediction_id)

    # -- the consuming side (runtime/supervisor.py) --------------------------------------------------------

    async def take(self, model: str) -> Job:
        return await self._queues[model].get()

    def take_ready(self, model: str) -> Job | None:
        queue = self._queues[model]
        return None if queue.empty() else queue.get_nowait()

    def backlog(self, model: str) -> int:
        return self._queues[model].qsize()

    async def finish(self, job: Job) -> None:
        """Nothing to acknowledge: the queue forgot the job when it was taken."""

    async def retry(self, job: Job) -> None:
        self._queues[job.model].put_nowait(job)

    def on_cancel(self, handler: CancelHandler) -> None:
        self._cancel_handlers.append(handler)


class _LocalSubscription:
    def __init__(self, hub: LocalNotifier, prediction_id: str, terminal_only: bool) -> None:
        self._hub = hub
        self._id = prediction_id
        self.terminal_only = terminal_only
        self.queue: asyncio.Queue[Prediction] = asyncio.Queue()

    async def next(self, timeout: float) -> Prediction | None:
        if not self.queue.empty():
            return self.queue.get_nowait()
        try:
            async with asyncio.timeout(timeout):  # not wait_for: no task of its own (Python 3.11)
                return await self.queue.get()
        except TimeoutError:
            return None

    def close(self) -> None:
        self._hub._drop(self._id, self)


class LocalNotifier:
    def __init__(self) -> None:
        self._subscribers: dict[str, set[_LocalSubscription]] = defaultdict(set)
        self._listeners: list[Callable[[Prediction], None]] = []

    def add_listener(self, listener: Callable[[Prediction], None]) -> None:
        """Called with every state this process publishes, for every prediction (metrics, limits)."""
        self._listeners.append(listener)

    def publish(self, prediction: Prediction) -> None:
        for listener in self._listeners:
            listener(prediction)
        self.deliver(prediction)

    def deliver(self, prediction: Prediction) -> None:
        """Wake this process's subscribers of the prediction only (a change another process made)."""
        for subscription in self._subscribers.get(prediction.id, ()):
            # An await waits for the end only: waking it for each step would cost a turn of its task.
            if prediction.terminal or not subscription.terminal_only:
                subscription.queue.put_nowait(prediction)

    def watched(self) -> list[str]:
        """The predictions someone in this process is waiting on."""
        return list(self._subscribers)

    def subscribe(self, prediction_id: str, *, terminal_only: bool = False) -> _LocalSubscription:
        subscription = _LocalSubscription(self, prediction_id, terminal_only)
        self._subscribers[prediction_id].add(subscription)
        return subscription

    def _drop(self, prediction_id: str, subscription: _LocalSubscription) -> None:
        subscribers = self._subscribers.get(prediction_id)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscribers[prediction_id]
