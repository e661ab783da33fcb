"""The composition root: builds the parts a deployment mode needs and wires them together."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial

import structlog
from prometheus_client import start_http_server
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .config import ModelConfig, Settings
from .dispatch.local import LocalBroker, LocalNotifier
from .dispatch.redis_streams import RedisBroker, RedisNotifier, RedisWorkSource, worker_identity
from .dispatch.registry import RedisCatalog, WorkerAnnouncer, announcement
from .dispatch.sweeper import Sweeper
from .domain import Plan, Prediction, utcnow
from .limits.redis import RedisLimits
from .media import MediaLimits
from .metrics import Metrics
from .outputs import LocalOutputs
from .ports import Broker, Limits, ModelCatalog, Notifier, WorkSource
from .redis_keys import RedisKeys, connect
from .runtime.executor import Executor
from .runtime.pipeline import CONFIG_ENV, WorkerConfig
from .runtime.supervisor import Supervisor
from .safety.security import SecurityScreen
from .safety.text import TextModerator, TextPolicy
from .service import Policy, Service
from .store import SqlStore, open_store
from .webhooks import DeliveryConfig, Dispatcher, Planner, Renderer

log = structlog.get_logger("predictd")

SWEEP_INTERVAL_S = 600.0


@dataclass
class Deployment:
    """What the HTTP layer runs on, whichever mode assembled it."""

    settings: Settings
    store: SqlStore
    service: Service
    metrics: Metrics
    outputs: LocalOutputs
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    live_workers: Callable[[], int] | None = None  # scaled out: `predictd worker`s announcing themselves
    redis: tuple[Redis, RedisKeys] | None = None  # scaled out: state shared by the API processes

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for closer in reversed(self.closers):
            try:
                await closer()
            except Exception:
                log.exception("error while stopping", step=getattr(closer, "__qualname__", repr(closer)))


def _watch_model(
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
        suspend_after=settings.security.suspend_after,
        security_window_s=settings.security.window_s,
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


async def _expire_data(outputs: LocalOutputs, store: SqlStore, settings: Settings) -> None:
    """Expire output files and idempotency keys past their lifetimes."""
    while True:
        try:
            removed = await asyncio.to_thread(outputs.sweep)
            keys = await store.purge_idempotency(utcnow() - timedelta(seconds=settings.idempotency_ttl_s))
            if removed or keys:
                log.info("expired data removed", outputs=removed, idempotency_keys=keys)
        except Exception:
            log.exception("sweep failed; will retry")
        await asyncio.sleep(SWEEP_INTERVAL_S)


def delivery_config(settings: Settings) -> DeliveryConfig:
    hooks = settings.webhooks
    return DeliveryConfig(
        schedule_s=tuple(hooks.schedule_s),
        attempt_timeout_s=hooks.attempt_timeout_s,
        concurrency=hooks.concurrency,
        limits=MediaLimits(
            allow_private=hooks.allow_private,
            allowed_networks=tuple(hooks.allowed_networks),
            connect_timeout_s=min(5.0, hooks.attempt_timeout_s),
            read_timeout_s=hooks.attempt_timeout_s,
            total_timeout_s=hooks.attempt_timeout_s,
        ),
    )


async def _open_store(settings: Settings) -> SqlStore:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return await open_store(
        settings.resolved_database_url,
        sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms,
        postgres_lock_timeout_ms=settings.postgres_lock_timeout_ms,
    )


def _service(
    settings: Settings,
    store: SqlStore,
    broker: Broker,
    notifier: Notifier,
    catalog: ModelCatalog,
    outputs: LocalOutputs,
    planner: Planner,
    limits: Limits | None = None,
) -> Service:
    return Service(
        store,
        broker,
        notifier,
        catalog,
        max_attempts=settings.max_attempts,
        policy=policy(settings),
        text_moderator=text_moderator(settings),
        outputs=outputs,
        deliveries=planner,
        idempotency_ttl_s=settings.idempotency_ttl_s,
        security=security_screen(settings),
        limits=limits,
    )


def _supervisor(
    settings: Settings,
    models: list[ModelConfig],
    source: WorkSource,
    executor: Executor,
    outputs: LocalOutputs,
) -> Supervisor:
    return Supervisor(
        models,
        source,
        executor,
        start_timeout_s=settings.worker_start_timeout_s,
        cancel_grace_s=settings.cancel_grace_s,
        worker_env={CONFIG_ENV: worker_config(settings, outputs).to_env()},
    )


def _webhooks(notifier: Notifier, store: SqlStore, settings: Settings) -> Dispatcher:
    dispatcher = Dispatcher(store, delivery_config(settings))
    notifier.add_listener(lambda prediction: dispatcher.wake() if "webhook" in prediction.extra else None)
    return dispatcher


async def start_embedded(settings: Settings, metrics: Metrics, renderers: dict[str, Renderer]) -> Deployment:
    """One process: SQLite (or any SQL URL) state, an in-process queue, worker subprocesses.
    ``renderers`` turn a prediction into each surface's webhook payload (given by the HTTP layer)."""
    store = await _open_store(settings)
    outputs = LocalOutputs(settings.data_dir / "outputs", settings.outputs_ttl_s)
    broker = LocalBroker()
    notifier = LocalNotifier()
    notifier.add_listener(metrics.observe_prediction)
    planner = Planner(renderers)
    dispatcher = _webhooks(notifier, store, settings)
    executor = Executor(store, notifier, settings.max_attempts, planner)
    models = settings.all_models
    supervisor = _supervisor(settings, models, broker, executor, outputs)
    for model in models:
        _watch_model(metrics, supervisor, model.slug, partial(broker.depth, model.slug))
    service = _service(settings, store, broker, notifier, supervisor, outputs, planner)
    try:
        await supervisor.start()
        await service.recover()
    except BaseException:
        await supervisor.close(0)
        await store.close()
        raise
    deployment = Deployment(settings, store, service, metrics, outputs)
    deployment.closers += [store.close, partial(supervisor.close, settings.shutdown_grace_s)]
    deployment.tasks.append(asyncio.create_task(_expire_data(outputs, store, settings), name="expire"))
    deployment.tasks.append(asyncio.create_task(dispatcher.run_forever(), name="webhooks"))
    return deployment


def _redis(settings: Settings) -> tuple[Redis, RedisKeys]:
    assert settings.redis_url is not None
    return connect(settings.redis_url), RedisKeys(settings.redis_prefix)


async def start_api(settings: Settings, metrics: Metrics, renderers: dict[str, Renderer]) -> Deployment:
    """A stateless API process of a scaled-out deployment: state in the SQL store (PostgreSQL), dispatch,
    limits and signals in Redis, predictions run by `predictd worker` processes (see start_worker)."""
    store = await _open_store(settings)
    redis, keys = _redis(settings)
    outputs = LocalOutputs(settings.data_dir / "outputs", settings.outputs_ttl_s)
    broker = RedisBroker(redis, keys)
    notifier = RedisNotifier(redis, keys, store)
    notifier.add_listener(metrics.observe_prediction)
    planner = Planner(renderers)
    dispatcher = _webhooks(notifier, store, settings)
    catalog = RedisCatalog(redis, keys, settings.all_models, settings.worker_lease_s)
    limits = RedisLimits(redis, keys)
    for model in settings.all_models:
        _watch_model(metrics, catalog, model.slug)
    service = _service(settings, store, broker, notifier, catalog, outputs, planner, limits)
    sweeper = Sweeper(
        redis,
        keys,
        store,
        broker,
        catalog,
        limits,
        notifier,
        planner,
        interval_s=settings.sweep_interval_s,
        lease_s=settings.worker_lease_s,
    )
    try:
        await catalog.refresh()
    except (RedisError, OSError) as exc:
        log.warning("Redis unreachable at start; serving from the store until it is back", error=repr(exc))
    notifier.start()
    deployment = Deployment(settings, store, service, metrics, outputs)
    deployment.live_workers = lambda: len(catalog.workers)
    deployment.redis = (redis, keys)
    deployment.closers += [store.close, redis.aclose, notifier.close]
    deployment.tasks += [
        asyncio.create_task(catalog.run_forever(), name="catalog"),
        asyncio.create_task(sweeper.run_forever(), name="sweeper"),
        asyncio.create_task(_expire_data(outputs, store, settings), name="expire"),
        asyncio.create_task(dispatcher.run_forever(), name="webhooks"),
    ]
    return deployment


@dataclass
class WorkerNode:
    """A `predictd worker`: runs the models it was given on predictions taken from Redis."""

    supervisor: Supervisor
    announcer: WorkerAnnouncer
    stop: Callable[[], Awaitable[None]]


async def start_worker(
    settings: Settings, renderers: dict[str, Renderer], only: list[str] | None = None
) -> WorkerNode:
    known = {m.slug: m for m in settings.all_models}
    unknown = sorted(set(only or ()) - set(known))
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; configured: {sorted(known)}")
    models = [known[slug] for slug in only] if only else list(known.values())
    store = await _open_store(settings)
    redis, keys = _redis(settings)
    outputs = LocalOutputs(settings.data_dir / "outputs", settings.outputs_ttl_s)
    notifier = RedisNotifier(redis, keys, store)
    metrics = Metrics()
    notifier.add_listener(metrics.observe_prediction)
    if settings.worker_metrics_port is not None:
        start_http_server(settings.worker_metrics_port, addr=settings.host, registry=metrics.registry)
    limits = RedisLimits(redis, keys)
    # Concurrency counts are released where a prediction ends, which is mostly here.
    notifier.add_listener(lambda p: _release_in_background(limits, p) if p.terminal else None)
    planner = Planner(renderers)
    dispatcher = _webhooks(notifier, store, settings)
    executor = Executor(store, notifier, settings.max_attempts, planner)
    worker_id = worker_identity()
    slots = {m.slug: m.workers for m in models}
    source = RedisWorkSource(
        redis,
        keys,
        [m.slug for m in models],
        consumer=worker_id,
        lease_s=settings.worker_lease_s,
        slots=slots,
    )
    supervisor = _supervisor(settings, models, source, executor, outputs)
    for model in models:
        _watch_model(metrics, supervisor, model.slug)
    announcer = WorkerAnnouncer(
        redis,
        keys,
        worker_id,
        lambda: announcement(worker_id, supervisor.list(), slots),
        settings.worker_lease_s,
    )
    await source.start()
    await supervisor.start()
    tasks = [
        asyncio.create_task(announcer.run_forever(), name="announce"),
        asyncio.create_task(dispatcher.run_forever(), name="webhooks"),
    ]
    log.info(
        "predictd worker up", worker=worker_id, models=[m.slug for m in supervisor.list() if m.available]
    )

    async def stop() -> None:
        # Stop announcing before withdrawing, so that no late announcement brings this worker back.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await announcer.withdraw()
        await supervisor.close(settings.shutdown_grace_s)
        await source.close()
        await notifier.close()
        await redis.aclose()
        await store.close()

    return WorkerNode(supervisor, announcer, stop)


_RELEASES: set[asyncio.Task[None]] = set()


def _release_in_background(limits: Limits, prediction: Prediction) -> None:
    async def release() -> None:
        try:
            await limits.release(prediction.account_id, prediction.id)
        except Exception as exc:  # the sweeper frees it later
            log.warning("could not release an in-flight count", prediction=prediction.id, error=repr(exc))

    task = asyncio.get_running_loop().create_task(release())
    _RELEASES.add(task)
    task.add_done_callback(_RELEASES.discard)
