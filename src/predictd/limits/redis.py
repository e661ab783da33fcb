"""Limits shared by every API process, kept in Redis and decided by atomic Lua scripts.

The rate script is the same GCRA arithmetic as gcra.py (one stored theoretical arrival time per key,
Redis's clock for "now"); in-flight predictions are a sorted set per account. Losing Redis forgets the
counters, which fails open for a moment; it never refuses work that is allowed.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..core.ports import LimitsUnavailable, RateDecision
from ..core.redis_keys import RedisKeys

# KEYS: one per limit; ARGV: limit_1, window_1, limit_2, window_2, ...
# Returns per key: allowed (0/1), remaining, reset_s, retry_after_s (the floats as strings).
GCRA_ALL = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local out, tats, ttls = {}, {}, {}
local all_allowed = true
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i - 1])
  local window = tonumber(ARGV[2 * i])
  local interval = window / limit
  local tat = tonumber(redis.call('GET', key)) or now
  local start = math.max(tat, now)
  local new_tat = start + interval
  local allow_at = new_tat - window
  if now < allow_at then
    all_allowed = false
    table.insert(out, 0); table.insert(out, 0)
    table.insert(out, string.format('%.6f', start - now))
    table.insert(out, string.format('%.6f', allow_at - now))
  else
    local remaining = math.max(0, math.floor((window - (new_tat - now)) / interval + 1e-9))
    tats[i] = new_tat
    ttls[i] = math.ceil((new_tat - now) * 1000) + 1000
    table.insert(out, 1); table.insert(out, remaining)
    table.insert(out, string.format('%.6f', new_tat - now))
    table.insert(out, '0')
  end
end
if all_allowed then
  for i, key in ipairs(KEYS) do
    redis.call('SET', key, string.format('%.6f', tats[i]), 'PX', ttls[i])
  end
end
return out
"""

# KEYS[1]: the account's in-flight set; ARGV: prediction id, limit (-1: none). Returns 1 if counted.
ACQUIRE = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 1 end
local limit = tonumber(ARGV[2])
if limit >= 0 and redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]), ARGV[1])
return 1
"""


class RedisLimits:
    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
        self._redis = redis
        self._keys = keys
        self._gcra = redis.register_script(GCRA_ALL)
        self._acquire = redis.register_script(ACQUIRE)

    async def hit_all(self, limits: list[tuple[str, int, float]]) -> list[RateDecision]:
        if not limits:
            return []
        keys = [self._keys.rate(key) for key, _, _ in limits]
        args: list[float] = []
        for _, limit, window in limits:
            args += [limit, window]
        try:
            flat = await self._gcra(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise LimitsUnavailable(repr(exc)) from exc
        decisions = []
        for i, (_, limit, window) in enumerate(limits):
            allowed, remaining, reset_s, retry_s = flat[4 * i : 4 * i + 4]
            decisions.append(
                RateDecision(
                    allowed=int(allowed) == 1,
                    limit=limit,
                    remaining=int(remaining),
                    reset_s=float(reset_s),
                    retry_after_s=float(retry_s),
                    window_s=window,
                )
            )
        return decisions

    async def try_acquire(self, account_id: str, prediction_id: str, limit: int | None) -> bool:
        try:
            counted = await self._acquire(
                keys=[self._keys.inflight(account_id)], args=[prediction_id, -1 if limit is None else limit]
            )
        except (RedisError, OSError) as exc:
            raise LimitsUnavailable(repr(exc)) from exc
        return int(counted) == 1

    async def release(self, account_id: str, prediction_id: str) -> None:
        try:
            await self._redis.zrem(self._keys.inflight(account_id), prediction_id)
        except (RedisError, OSError) as exc:
            raise LimitsUnavailable(repr(exc)) from exc

    async def in_flight(self, account_id: str) -> int:
        try:
            return int(await self._redis.zcard(self._keys.inflight(account_id)))
        except (RedisError, OSError) as exc:
            raise LimitsUnavailable(repr(exc)) from exc
