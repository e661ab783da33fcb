"""The Redis limits against a real Redis on 127.0.0.1: the Lua GCRA decides as the Python one does, a
request refused by one limit consumes nothing of the others, and in-flight counts are exact under
concurrency from several clients."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from predictd.limits import MemoryRateLimiter
from predictd.limits.redis import RedisLimits
from predictd.redis_keys import RedisKeys, connect

from ..conftest import REDIS_URL


@pytest.fixture
async def limits() -> AsyncIterator[tuple[RedisLimits, Redis]]:
    redis = connect(REDIS_URL)
    keys = RedisKeys(f"t{uuid.uuid4().hex[:12]}")
    yield RedisLimits(redis, keys), redis
    stale = [k async for k in redis.scan_iter(match=f"{keys.prefix}:*")]
    if stale:
        await redis.delete(*stale)
    await redis.aclose()


async def test_lua_gcra_allows_a_burst_then_refuses_like_the_python_one(
    limits: tuple[RedisLimits, Redis],
) -> None:
    shared, _ = limits
    local = MemoryRateLimiter()
    remote = [await shared.hit_all([("k", 5, 60.0)]) for _ in range(7)]
    here = [local.hit_all([("k", 5, 60.0)]) for _ in range(7)]
    assert [d[0].allowed for d in remote] == [d[0].allowed for d in here] == [True] * 5 + [False] * 2
    assert [d[0].remaining for d in remote] == [d[0].remaining for d in here] == [4, 3, 2, 1, 0, 0, 0]
    refused = remote[-1][0]
    assert 11.0 < refused.retry_after_s <= 12.0  # one request per 12 s refills
    assert refused.headers()["RateLimit-Limit"] == "5"


async def test_a_request_refused_by_one_limit_consumes_nothing_of_the_other(
    limits: tuple[RedisLimits, Redis],
) -> None:
    shared, _ = limits
    for _ in range(2):
        assert all(d.allowed for d in await shared.hit_all([("key", 2, 60.0), ("acct", 10, 60.0)]))
    refused = await shared.hit_all([("key", 2, 60.0), ("acct", 10, 60.0)])
    assert [d.allowed for d in refused] == [False, True]
    # The account limit still has 8 of its 10: the refused request took none.
    assert (await shared.hit_all([("acct", 10, 60.0)]))[0].remaining == 7


async def test_in_flight_counts_are_exact_under_concurrency(limits: tuple[RedisLimits, Redis]) -> None:
    shared, _ = limits
    granted = await asyncio.gather(*(shared.try_acquire("acct", f"p{i}", 5) for i in range(40)))
    assert sum(granted) == 5
    assert await shared.in_flight("acct") == 5
    held = [f"p{i}" for i, ok in enumerate(granted) if ok]
    assert await shared.try_acquire("acct", held[0], 5)  # the same prediction is counted once
    await shared.release("acct", held[0])
    await shared.release("acct", held[0])  # releasing twice frees one place, not two
    assert await shared.in_flight("acct") == 4
    assert await shared.try_acquire("acct", "late", 5)
    assert not await shared.try_acquire("acct", "later", 5)
    assert await shared.try_acquire("acct", "unlimited", None)
