"""The scaled-out processes: a stateless API process (`predictd serve --redis`) and a `predictd worker`,
assembled from the same parts as embedded mode (embedded.py) with PostgreSQL state and Redis dispatch."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import start_http_server
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..config.settings import Settings
from ..core.background import Background, cancel_and_wait
from ..core.redis_keys import RedisKeys
from ..dispatch.redis_streams import RedisBroker, RedisNotifier, RedisWorkSource, worker_identity
from ..dispatch.redis_tracking import RedisTracking
from ..dispatch.registry import RedisCatalog, WorkerAnnouncer, announcement
from ..limits.redis import RedisLimits
from ..media import LocalOutputs
from ..runtime.supervisor import Supervisor
from ..telemetry.metrics import Metrics
from ..usecases.recovery import LostWork
from ..usecases.runs import RunRecorder
from ..webhooks import Planner, Renderer
from .embedded import (
    Deployment,
    build_supervisor,
    build_usecases,
    expire_data,
    open_deployment_database,
    watch_model,
    webhook_dispatcher,
)

log = structlog.get_logger("predictd")

# How long a worker's stop may run past its shutdown grace before it is given up (see stop_within).
STOP_OVERRUN_S = 15.0


def _redis(settings: Settings) -> tuple[Redis, RedisKeys]:
    assert settings.redis_url is not None
    return connect(settings.redis_url), RedisKeys(settings.redis_prefix)


def connect(url: str) -> Redis:
    # An answer is awaited at most 5 s (redis-py's default, stated here): a Redis that hangs fails requests
    # instead of hanging them. Blocking reads stay under it (XREADGROUP blocks 2 s; pub/sub polls pass their
    # own timeout). Every loop that uses the connection retries with backoff.
    return Redis.from_url(
        url,
        socket_timeout=5.0,
        socket_connect_timeout=5.0,
        socket_keepalive=True,
        health_check_interval=15,
        decode_responses=True,
    )


async def start_api(settings: Settings, metrics: Metrics, renderers: dict[str, Renderer]) -> Deployment:
    """A stateless API process of a scaled-out deployment: state in the SQL store (PostgreSQL), dispatch,
    limits and signals in Redis, predictions run by `predictd worker` processes (see start_worker)."""
    database = await open_deployment_database(settings)
    metrics.watch_cache("store", database.remembered_bytes)
    redis, keys = _redis(settings)
    outputs = LocalOutputs(settings.outputs_dir, settings.outputs_ttl_s)
    broker = RedisBroker(redis, keys)
    notifier = RedisNotifier(redis, keys, database.predictions.get_prediction)
    notifier.add_listener(metrics.observe_prediction)
    planner = Planner(renderers)
    dispatcher = webhook_dispatcher(notifier, database.deliveries, settings)
    catalog = RedisCatalog(redis, keys, settings.all_models, settings.worker_lease_s)
    limits = RedisLimits(redis, keys)
    for model in settings.all_models:
        watch_model(metrics, catalog, model.slug)
    usecases, _ = build_usecases(settings, database, broker, notifier, catalog, outputs, planner, limits)
    sweeper = LostWork(
        database.predictions,
        RedisTracking(redis, keys, broker),
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
    deployment = Deployment(settings, usecases, metrics, outputs)
    deployment.live_workers = lambda: len(catalog.workers)
    deployment.redis = (redis, keys)
    deployment.closers += [database.close, redis.aclose, notifier.close]
    deployment.tasks += [
        asyncio.create_task(catalog.run_forever(), name="catalog"),
        asyncio.create_task(sweeper.run_forever(), name="sweeper"),
        asyncio.create_task(expire_data(outputs, database.predictions, settings), name="expire"),
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
    database = await open_deployment_database(settings)
    redis, keys = _redis(settings)
    outputs = LocalOutputs(settings.outputs_dir, settings.outputs_ttl_s)
    notifier = RedisNotifier(redis, keys, database.predictions.get_prediction)
    metrics = Metrics()
    notifier.add_listener(metrics.observe_prediction)
    if settings.worker_metrics_port is not None:
        start_http_server(settings.worker_metrics_port, addr=settings.host, registry=metrics.registry)
    limits = RedisLimits(redis, keys)
    # Concurrency counts are released where a prediction ends, which is mostly here.
    releases = Background()  # a release that fails is repaired by the sweeper
    notifier.add_listener(
        lambda p: releases.spawn(limits.release(p.account_id, p.id), "release") if p.terminal else None
    )
    planner = Planner(renderers)
    dispatcher = webhook_dispatcher(notifier, database.deliveries, settings)
    runs = RunRecorder(database.predictions, notifier, settings.max_attempts, planner)
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
    supervisor = build_supervisor(settings, models, source, runs, outputs)
    for model in models:
        watch_model(metrics, supervisor, model.slug)
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
        await cancel_and_wait(tasks)
        await announcer.withdraw()
        await supervisor.close(settings.shutdown_grace_s)
        await source.close()
        await notifier.close()
        await releases.drain()
        await redis.aclose()
        await database.close()

    return WorkerNode(supervisor, announcer, stop)


async def stop_within(stop: Callable[[], Awaitable[None]], limit_s: float) -> bool:
    """Run ``stop``, then cancel every task it left running; False if all that has not ended within
    ``limit_s``, after logging where each task still pending is waiting. A stop must always end: a worker
    that never exits holds its host's slot, and a supervisor (systemd, Kubernetes) can only kill it; leases
    hand its predictions over either way."""
    caller = asyncio.current_task()

    async def stop_and_sweep() -> None:
        await stop()
        await cancel_and_wait(asyncio.all_tasks() - {caller, asyncio.current_task()})

    stopping = asyncio.ensure_future(stop_and_sweep())
    done, _ = await asyncio.wait({stopping}, timeout=limit_s)
    if done:
        stopping.result()
        return True
    # Read the stacks before cancelling: a cancelled wait no longer shows what it was waiting for.
    log.error("stop overran; giving up on it", limit_s=limit_s, pending=pending_tasks())
    stopping.cancel()
    return False


def pending_tasks() -> str:
    """Where every task of the running loop but the caller's is waiting, for a log line: the whole chain
    of coroutines each one awaits (Task.print_stack shows only the outermost)."""
    lines: list[str] = []
    for task in asyncio.all_tasks():
        if task is asyncio.current_task():
            continue
        lines.append(f"{task!r}")
        awaited: Any = task.get_coro()
        while awaited is not None:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is not None:
                lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return "\n".join(lines)
