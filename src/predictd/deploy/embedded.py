"""The composition root: builds the parts a deployment needs and wires them together. Embedded mode is
assembled here; the scaled-out processes (an API process, a worker) in scaled.py, from the same parts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING

import structlog

from ..config.settings import ModelConfig, Settings
from ..core.background import cancel_and_wait
from ..core.domain import Plan, utcnow
from ..core.ports import Broker, DeliveryStore, Limits, ModelCatalog, Notifier, PredictionStore, WorkSource
from ..dispatch.local import LocalBroker, LocalNotifier
from ..limits import MemoryLimits
from ..media import LocalOutputs
from ..outbound import OutboundLimits
from ..runtime.pipeline import CONFIG_ENV, WorkerConfig
from ..runtime.supervisor import Supervisor
from ..safety.security import SecurityScreen
from ..safety.text import TextModerator, TextPolicy
from ..store import Database, open_database, unstorable
from ..store import contention as database_contention
from ..telemetry.metrics import Metrics
from ..usecases import UseCases
from ..usecases.access import Access
from ..usecases.account import OwnAccount
from ..usecases.administration import Administration
from ..usecases.admission import Admission
from ..usecases.catalog import Models
from ..usecases.deliveries import DeliveryConfig, Dispatcher
from ..usecases.policy import Policy
from ..usecases.predictions import Predictions
from ..usecases.recovery import Recovery
from ..usecases.runs import RunRecorder
from ..webhooks import Planner, Renderer

if TYPE_CHECKING:  # Redis is imported by scaled-out processes only
    from redis.asyncio import Redis

    from ..core.redis_keys import RedisKeys

log = structlog.get_logger("predictd")

SWEEP_INTERVAL_S = 600.0


@dataclass
class Deployment:
    """What the HTTP layer runs on, whichever mode assembled it."""

    settings: Settings
    usecases: UseCases
    metrics: Metrics
    outputs: LocalOutputs
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    live_workers: Callable[[], int] | None = None  # scaled out: `predictd worker`s announcing themselves
    redis: tuple[Redis, RedisKeys] | None = None  # scaled out: state shared by the API processes

    def contention(self, failure: BaseException) -> str | None:
        """What the database was busy with, when ``failure`` is contention (a 503 to retry, not a 500)."""
        return database_contention(failure)

    async def close(self) -> None:
        await cancel_and_wait(self.tasks)
        for closer in reversed(self.closers):
            try:
                await closer()
            except Exception:
                log.exception("error while stopping", step=getattr(closer, "__qualname__", repr(closer)))


def watch_model(
    metrics: Metrics, catalog: ModelCatalog, slug: str, depth: Callable[[], int] | None = None
) -> None:
    def available() -> float:
        info = catalog.get(slug)
        return 1.0 if info is not None and info.available else 0.0

    if depth is not None:
        metrics.queue_depth.labels(slug).set_function(lambda: float(depth()))
    metrics.model_available.labels(slug).set_function(available)


def worker_config(settings: Settings, outputs: LocalOutputs) -> WorkerConfig:
    moderation = settings.moderation
    return WorkerConfig(
        outputs_dir=str(outputs.directory.resolve()),
        outputs_ttl_s=settings.outputs_ttl_s,
        media=settings.media.model_dump(exclude={"max_total_inline_bytes"}),
        image_moderation={
            "conservative_threshold": moderation.image_conservative_threshold,
            "permissive_threshold": moderation.image_permissive_threshold,
        },
    )


def policy(settings: Settings) -> Policy:
    return Policy(
        plan=Plan(
            "default",
            rate_limit=settings.rate_limit,
            rate_window_s=settings.rate_window_s,
            concurrency_limit=settings.concurrency_limit,
        ),
        default_plan_name=settings.default_plan,
        max_inline_media_bytes=settings.media.max_total_inline_bytes,
        access=settings.access,
        suspend_after=settings.security.suspend_after,
        security_window_s=settings.security.window_s,
        never_suspend=frozenset(settings.security.never_suspend),
        webhook_allow_private=settings.webhooks.allow_private,
        webhook_allowed_networks=tuple(settings.webhooks.allowed_networks),
    )


def security_screen(settings: Settings) -> SecurityScreen:
    if settings.security.rules_file is not None:
        return SecurityScreen.from_file(settings.security.rules_file, include_default=True)
    return SecurityScreen.default()


def text_moderator(settings: Settings) -> TextModerator:
    moderation = settings.moderation
    return TextModerator(
        TextPolicy(
            conservative_threshold=moderation.text_conservative_threshold,
            permissive_threshold=moderation.text_permissive_threshold,
            blocked_terms=tuple(moderation.blocked_terms),
        )
    )


async def expire_data(outputs: LocalOutputs, store: PredictionStore, settings: Settings) -> None:
    """Expire output files, idempotency keys and failed predictions' inputs past their lifetimes."""
    # A short retention is swept as often: removed at most twice its lifetime after the failure.
    interval = min(SWEEP_INTERVAL_S, settings.failed_inputs_ttl_s)
    while True:
        try:
            removed = await asyncio.to_thread(outputs.sweep)
            now = utcnow()
            keys = await store.purge_idempotency(now - timedelta(seconds=settings.idempotency_ttl_s))
            inputs = await store.purge_failed_inputs(now - timedelta(seconds=settings.failed_inputs_ttl_s))
            if removed or keys or inputs:
                log.info("expired data removed", outputs=removed, idempotency_keys=keys, failed_inputs=inputs)
        except Exception:
            log.exception("sweep failed; will retry")
        await asyncio.sleep(interval)


def delivery_config(settings: Settings) -> DeliveryConfig:
    hooks = settings.webhooks
    return DeliveryConfig(
        schedule_s=tuple(hooks.schedule_s),
        attempt_timeout_s=hooks.attempt_timeout_s,
        concurrency=hooks.concurrency,
        receiver_concurrency=hooks.receiver_concurrency,
        limits=OutboundLimits(
            allow_private=hooks.allow_private,
            allowed_networks=tuple(hooks.allowed_networks),
            connect_timeout_s=min(5.0, hooks.attempt_timeout_s),
            read_timeout_s=hooks.attempt_timeout_s,
            total_timeout_s=hooks.attempt_timeout_s,
        ),
    )


async def open_deployment_database(settings: Settings) -> Database:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return await open_database(
        settings.resolved_database_url,
        sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms,
        postgres_lock_timeout_ms=settings.postgres_lock_timeout_ms,
        remember_bytes=settings.cache.store_bytes,
    )


def build_usecases(
    settings: Settings,
    database: Database,
    broker: Broker,
    notifier: Notifier,
    catalog: ModelCatalog,
    outputs: LocalOutputs,
    planner: Planner,
    limits: Limits | None = None,
) -> tuple[UseCases, Recovery]:
    rules = policy(settings)
    limits = limits or MemoryLimits()
    models = Models(catalog)
    admission = Admission(
        models,
        database.accounts,
        rules,
        security=security_screen(settings),
        text_moderator=text_moderator(settings),
    )
    predictions = Predictions(
        database.predictions,
        admission,
        broker,
        notifier,
        limits,
        outputs=outputs,
        deliveries=planner,
        idempotency_ttl_s=settings.idempotency_ttl_s,
    )
    usecases = UseCases(
        access=Access(database.accounts, limits, rules),
        models=models,
        predictions=predictions,
        account=OwnAccount(
            database.accounts,
            database.deliveries,
            predictions,
            rotation_grace_s=settings.webhooks.rotation_grace_s,
        ),
        administration=Administration(database.accounts),
    )
    recovery = Recovery(
        database.predictions,
        predictions,
        catalog,
        broker,
        notifier,
        max_attempts=settings.max_attempts,
        deliveries=planner,
    )
    return usecases, recovery


def build_supervisor(
    settings: Settings,
    models: list[ModelConfig],
    source: WorkSource,
    runs: RunRecorder,
    outputs: LocalOutputs,
) -> Supervisor:
    return Supervisor(
        models,
        source,
        runs,
        start_timeout_s=settings.worker_start_timeout_s,
        cancel_grace_s=settings.cancel_grace_s,
        worker_env={CONFIG_ENV: worker_config(settings, outputs).to_env()},
        unstorable=unstorable,
    )


def webhook_dispatcher(notifier: Notifier, store: DeliveryStore, settings: Settings) -> Dispatcher:
    dispatcher = Dispatcher(store, delivery_config(settings))
    notifier.add_listener(lambda prediction: dispatcher.wake() if "webhook" in prediction.extra else None)
    return dispatcher


async def start_embedded(settings: Settings, metrics: Metrics, renderers: dict[str, Renderer]) -> Deployment:
    """One process: SQLite (or any SQL URL) state, an in-process queue, worker subprocesses.
    ``renderers`` turn a prediction into each surface's webhook payload (given by the HTTP layer)."""
    database = await open_deployment_database(settings)
    metrics.watch_cache("store", database.remembered_bytes)
    outputs = LocalOutputs(settings.outputs_dir, settings.outputs_ttl_s)
    broker = LocalBroker()
    notifier = LocalNotifier()
    notifier.add_listener(metrics.observe_prediction)
    planner = Planner(renderers)
    dispatcher = webhook_dispatcher(notifier, database.deliveries, settings)
    runs = RunRecorder(database.predictions, notifier, settings.max_attempts, planner)
    models = settings.all_models
    supervisor = build_supervisor(settings, models, broker, runs, outputs)
    for model in models:
        watch_model(metrics, supervisor, model.slug, partial(broker.backlog, model.slug))
    usecases, recovery = build_usecases(settings, database, broker, notifier, supervisor, outputs, planner)
    try:
        await supervisor.start()
        await recovery.recover()
    except BaseException:
        await supervisor.close(0)
        await database.close()
        raise
    deployment = Deployment(settings, usecases, metrics, outputs)
    deployment.closers += [database.close, partial(supervisor.close, settings.shutdown_grace_s)]
    deployment.tasks.append(
        asyncio.create_task(expire_data(outputs, database.predictions, settings), name="expire")
    )
    deployment.tasks.append(asyncio.create_task(dispatcher.run_forever(), name="webhooks"))
    return deployment
