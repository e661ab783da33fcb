"""The composition root: builds the parts a deployment mode needs and wires them together."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from .config import Settings
from .dispatch.local import LocalBroker, LocalNotifier
from .metrics import Metrics
from .runtime.executor import Executor
from .runtime.supervisor import Supervisor
from .service import Service
from .store import SqlStore, open_store

log = structlog.get_logger("predictd")


@dataclass
class Embedded:
    settings: Settings
    store: SqlStore
    broker: LocalBroker
    supervisor: Supervisor
    service: Service
    metrics: Metrics

    async def close(self) -> None:
        await self.supervisor.close(self.settings.shutdown_grace_s)
        await self.store.close()


def _watch_model(metrics: Metrics, broker: LocalBroker, supervisor: Supervisor, slug: str) -> None:
    def depth() -> float:
        return float(broker.depth(slug))

    def available() -> float:
        info = supervisor.get(slug)
        return 1.0 if info is not None and info.available else 0.0

    metrics.queue_depth.labels(slug).set_function(depth)
    metrics.model_available.labels(slug).set_function(available)


async def start_embedded(settings: Settings, metrics: Metrics) -> Embedded:
    """One process: SQLite (or any SQL URL) state, an in-process queue, worker subprocesses."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = await open_store(
        settings.resolved_database_url, sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms
    )
    broker = LocalBroker()
    notifier = LocalNotifier()
    notifier.add_listener(metrics.observe_prediction)
    executor = Executor(store, notifier, settings.max_attempts)
    models = settings.all_models
    supervisor = Supervisor(
        models,
        broker,
        executor,
        start_timeout_s=settings.worker_start_timeout_s,
        cancel_grace_s=settings.cancel_grace_s,
    )
    for model in models:
        _watch_model(metrics, broker, supervisor, model.slug)
    service = Service(store, broker, notifier, supervisor, max_attempts=settings.max_attempts)
    try:
        await supervisor.start()
        await service.recover()
    except BaseException:
        await supervisor.close(0)
        await store.close()
        raise
    return Embedded(settings, store, broker, supervisor, service, metrics)
