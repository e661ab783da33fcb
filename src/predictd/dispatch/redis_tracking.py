"""What Redis knows of the work it dispatches, for the sweep that repairs what it loses
(usecases/recovery.py, ``LostWork``): Redis is only a dispatcher, and may restart empty, or miss a submit it
could not be reached for.

A queued prediction has its ``queued`` marker from the moment it enters its stream until a worker finishes
it; a running one has its ``running`` marker, kept alive by its worker's heartbeat. In-flight counts are one
sorted set per account, each member scored with the time it was counted.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..core.ports import DispatchUnavailable
from ..core.redis_keys import RedisKeys
from .redis_streams import RedisBroker


class RedisTracking:
    """The ``WorkTracking`` port on Redis."""

    def __init__(self, redis: Redis, keys: RedisKeys, broker: RedisBroker) -> None:
        self._redis = redis
        self._keys = keys
        self._broker = broker
        self._owner = uuid.uuid4().hex

    async def lead(self, interval_s: float) -> bool:
        """Hold the sweep lock (one sweep at a time across API processes), renewed each round."""
        try:
            ttl_ms = int(interval_s * 3000)
            if await self._redis.set(self._keys.sweeper_lock, self._owner, nx=True, px=ttl_ms):
                return True
            if await self._redis.get(self._keys.sweeper_lock) == self._owner:
                await self._redis.pexpire(self._keys.sweeper_lock, ttl_ms)
                return True
            return False
        except (RedisError, OSError) as exc:
            raise DispatchUnavailable(repr(exc)) from exc

    async def known(self, prediction_ids: Sequence[str]) -> dict[str, bool]:
        """Whether each prediction is queued or running as far as Redis knows."""
        if not prediction_ids:
            return {}
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for prediction_id in prediction_ids:
                    pipe.exists(self._keys.queued(prediction_id), self._keys.running(prediction_id))
                counts = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise DispatchUnavailable(repr(exc)) from exc
        return {p: int(n) > 0 for p, n in zip(prediction_ids, counts, strict=True)}

    async def requeue(self, prediction_id: str, model: str, *, running: bool) -> None:
        """Queue again a prediction Redis lost; ``running``: it may be PROCESSING on a worker that is gone."""
        try:
            await self._broker.enqueue(prediction_id, model, orphaned=running)
        except (RedisError, OSError) as exc:
            raise DispatchUnavailable(repr(exc)) from exc

    async def counted_since(self, older_than_s: float) -> list[tuple[str, str]]:
        """(account id, prediction id) of every in-flight count made at least ``older_than_s`` ago."""
        counted: list[tuple[str, str]] = []
        try:
            now = float((await self._redis.time())[0])
            async for key in self._redis.scan_iter(match=self._keys.inflight("*"), count=500):
                account_id = str(key).rsplit(":", 1)[1]
                for prediction_id in await self._redis.zrangebyscore(key, "-inf", now - older_than_s):
                    counted.append((account_id, str(prediction_id)))
        except (RedisError, OSError) as exc:
            raise DispatchUnavailable(repr(exc)) from exc
        return counted
