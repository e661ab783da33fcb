"""Which worker serves which model, in Redis: workers announce themselves every few seconds; API processes
read the announcements into their ModelCatalog. A worker silent for a lease is dead to the catalog, so a
model with no live worker answers MODEL_UNAVAILABLE."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..config.settings import ModelConfig
from ..core.domain import ModelInfo
from ..core.redis_keys import RedisKeys

log = structlog.get_logger("predictd.dispatch")

Schemas = tuple[dict[str, Any], dict[str, Any]]


def announcement(worker_id: str, models: Sequence[ModelInfo], slots: dict[str, int]) -> dict[str, Any]:
    return {
        "worker": worker_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "models": {
            m.slug: {
                "available": m.available,
                "detail": m.status_detail,
                "setup_failed": m.setup_failed,
                "slots": slots.get(m.slug, 0),
                "input_schema": m.input_schema,
                "output_schema": m.output_schema,
            }
            for m in models
        },
    }


@dataclass(frozen=True, slots=True)
class ModelView:
    """What the live workers say about one model."""

    available: bool
    schemas: Schemas | None
    detail: str
    slots: int
    setup_failed: bool = False  # every worker announcing it says its setup raised


def model_views(announcements: Sequence[dict[str, Any]]) -> dict[str, ModelView]:
    """Merge live workers' announcements per model: available if any worker can run it."""
    views: dict[str, ModelView] = {}
    for worker in announcements:
        for slug, said in (worker.get("models") or {}).items():
            schemas = None
            if said.get("input_schema") is not None and said.get("output_schema") is not None:
                schemas = (said["input_schema"], said["output_schema"])
            current = views.get(slug)
            available = bool(said.get("available"))
            slots = int(said.get("slots") or 0) if available else 0
            setup_failed = not available and bool(said.get("setup_failed"))
            if current is None:
                views[slug] = ModelView(
                    available, schemas, str(said.get("detail") or ""), slots, setup_failed
                )
                continue
            views[slug] = ModelView(
                current.available or available,
                current.schemas if current.schemas is not None and current.available else schemas,
                current.detail if not available else "",
                current.slots + slots,
                current.setup_failed and setup_failed,
            )
    return views


class WorkerAnnouncer:
    """Runs in a worker: says every lease/5 which models it serves, and withdraws on a clean stop."""

    def __init__(
        self,
        redis: Redis,
        keys: RedisKeys,
        worker_id: str,
        describe: Callable[[], dict[str, Any]],
        lease_s: float,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.worker_id = worker_id
        self._describe = describe
        self._lease_s = lease_s

    async def announce(self) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._keys.worker_info, self.worker_id, orjson.dumps(self._describe()).decode())
            pipe.zadd(self._keys.workers, {self.worker_id: time.time()})
            await pipe.execute()

    async def run_forever(self) -> None:
        while True:
            try:
                await self.announce()
            except (RedisError, OSError) as exc:
                log.warning("could not announce this worker; retrying", error=repr(exc))
            await asyncio.sleep(self._lease_s / 5)

    async def withdraw(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self._keys.workers, self.worker_id)
                pipe.hdel(self._keys.worker_info, self.worker_id)
                await pipe.execute()


class RedisCatalog:
    """The ModelCatalog of an API process: the configured models, available when a live worker says so.
    Refreshed in the background (once a second), so a request never waits on Redis for it."""

    def __init__(self, redis: Redis, keys: RedisKeys, models: Sequence[ModelConfig], lease_s: float) -> None:
        self._redis = redis
        self._keys = keys
        self._models = {m.slug: m for m in models}
        self._lease_s = lease_s
        self._views: dict[str, ModelView] = {}
        self._schemas: dict[str, Schemas] = {}
        self.workers: list[dict[str, Any]] = []

    def list(self) -> list[ModelInfo]:
        return [self._info(slug) for slug in self._models]

    def get(self, slug: str) -> ModelInfo | None:
        return self._info(slug) if slug in self._models else None

    def _info(self, slug: str) -> ModelInfo:
        view = self._views.get(slug)
        config = self._models[slug]
        if view is None:
            return config.info(
                available=False, schemas=None, status_detail="no live worker serves this model"
            )
        detail = "" if view.available else (view.detail or "no live worker can run this model")
        return config.info(
            available=view.available,
            schemas=self._schemas.get(slug),
            status_detail=detail,
            setup_failed=view.setup_failed,
        )

    async def refresh(self) -> None:
        now = time.time()
        stale = await self._redis.zrangebyscore(self._keys.workers, "-inf", now - self._lease_s)
        if stale:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self._keys.workers, *stale)
                pipe.hdel(self._keys.worker_info, *stale)
                await pipe.execute()
        live = [
            str(w) for w in await self._redis.zrangebyscore(self._keys.workers, now - self._lease_s, "+inf")
        ]
        raw = await self._redis.hmget(self._keys.worker_info, live) if live else []
        self.workers = [orjson.loads(r) for r in raw if r]
        self._views = model_views(self.workers)
        for slug, view in self._views.items():
            # Keep the same schema objects while they do not change: compiled validators are cached on them.
            if view.schemas is not None and self._schemas.get(slug) != view.schemas:
                self._schemas[slug] = view.schemas

    async def run_forever(self, interval_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.refresh()
            except (RedisError, OSError) as exc:
                log.warning("could not read the worker registry; keeping the last view", error=repr(exc))
