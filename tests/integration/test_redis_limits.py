"""The Redis limits against a real Redis on 127.0.0.1: the Lua GCRA decides as the Python one does, a
request refused by one limit consumes nothing of the others, and in-flight counts are exact under
concurrency from several clients."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from predictd.core.domain import Prediction, Status, new_id, utcnow
from predictd.core.redis_keys import RedisKeys
from predictd.deploy.scaled import connect
from predictd.dispatch.redis_streams import RedisBroker, RedisNotifier
from predictd.dispatch.redis_tracking import RedisTracking
from predictd.dispatch.registry import RedisCatalog
from predictd.limits import MemoryRateLimiter
from predictd.limits.redis import RedisLimits
from predictd.store import open_database
from predictd.usecases.recovery import INFLIGHT_CHECK_AFTER_S, LostWork

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


async def test_the_sweeper_frees_in_flight_counts_of_ended_predictions_only(
    limits: tuple[RedisLimits, Redis], tmp_path: Path
) -> None:
    """A release that never reached Redis is repaired: an in-flight entry older than the check delay whose
    prediction has ended (or was never stored) is dropped; an unfinished one, or a recent one, stays."""
    _, redis = limits
    keys = RedisKeys(f"t{uuid.uuid4().hex[:12]}")
    shared = RedisLimits(redis, keys)
    db = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}")
    store = db.predictions
    try:
        account = await db.accounts.create_account("a")

        async def stored(status: Status) -> str:
            prediction = Prediction(
                id=new_id(),
                account_id=account.id,
                model="echo",
                status=Status.QUEUED,
                input={},
                created_at=utcnow(),
            )
            await store.insert_prediction(prediction)
            if status is not Status.QUEUED:
                await store.transition(prediction.id, Status.PROCESSING, count_attempt=True)
                await store.transition(prediction.id, status, completed_at=utcnow())
            return prediction.id

        ended, failed, unfinished = (
            await stored(Status.SUCCEEDED),
            await stored(Status.FAILED),
            await stored(Status.QUEUED),
        )
        now = float((await redis.time())[0])
        old = now - INFLIGHT_CHECK_AFTER_S - 60
        await redis.zadd(
            keys.inflight(account.id),
            {ended: old, failed: old, unfinished: old, "never-stored": old, "just-counted": now},
        )
        notifier = RedisNotifier(redis, keys, store.get_prediction)
        sweeper = LostWork(
            store,
            RedisTracking(redis, keys, RedisBroker(redis, keys)),
            RedisCatalog(redis, keys, [], lease_s=15.0),
            shared,
            notifier,
            None,
            interval_s=1.0,
            lease_s=15.0,
        )
        report = await sweeper.sweep()
        assert report.released == 3
        assert set(await redis.zrange(keys.inflight(account.id), 0, -1)) == {unfinished, "just-counted"}
        assert report.requeued == 0  # an unfinished prediction Redis does not know waits a whole lease
    finally:
        await db.close()
        await redis.delete(keys.inflight(account.id))
