"""Limits kept in this process (embedded mode: one API process)."""

from __future__ import annotations

import time
from collections import defaultdict

from ..core.ports import RateDecision
from .gcra import gcra

# Limits remembered before the first sweep of those whose bucket is full again.
FIRST_SWEEP_AT = 1024


class MemoryRateLimiter:
    """Per key, the theoretical arrival time of GCRA. A key whose time has passed is as good as unknown (its
    bucket is full again), so such keys are swept away once the map has doubled since the last sweep:
    limits keyed by client address or presented key (``[access]``) come and go by the thousand."""

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}
        self._clock = time.monotonic
        self._sweep_at = FIRST_SWEEP_AT

    def hit(self, key: str, limit: int, window_s: float) -> RateDecision:
        return self.hit_all([(key, limit, window_s)])[0]

    def hit_all(self, limits: list[tuple[str, int, float]]) -> list[RateDecision]:
        """Decide one request against several limits; it counts against them only if all allow it, so a
        request refused by one limit consumes nothing of the others."""
        now = self._clock()
        outcomes = [
            (key, *gcra(self._tat.get(key, now), now, limit, window)) for key, limit, window in limits
        ]
        if all(decision.allowed for _, _, decision in outcomes):
            for key, new_tat, _ in outcomes:
                self._tat[key] = new_tat
            if len(self._tat) >= self._sweep_at:
                self._sweep(now)
        return [decision for _, _, decision in outcomes]

    def _sweep(self, now: float) -> None:
        for key in [key for key, tat in self._tat.items() if tat <= now]:
            del self._tat[key]
        self._sweep_at = max(FIRST_SWEEP_AT, 2 * len(self._tat))

    def __len__(self) -> int:
        return len(self._tat)


class MemoryConcurrency:
    """In-flight predictions per account. Acquire and release are idempotent per prediction id, so a
    prediction is counted once and released exactly once, whatever path ends it."""

    def __init__(self) -> None:
        self._inflight: dict[str, set[str]] = defaultdict(set)

    def try_acquire(self, account_id: str, prediction_id: str, limit: int | None) -> bool:
        held = self._inflight[account_id]
        if limit is not None and prediction_id not in held and len(held) >= limit:
            return False
        held.add(prediction_id)
        return True

    def release(self, account_id: str, prediction_id: str) -> None:
        held = self._inflight.get(account_id)
        if held is not None:
            held.discard(prediction_id)
            if not held:
                del self._inflight[account_id]

    def count(self, account_id: str) -> int:
        return len(self._inflight.get(account_id, ()))


class MemoryLimits:
    """The Limits port for embedded mode: both limits in this process."""

    def __init__(self) -> None:
        self.rates = MemoryRateLimiter()
        self.concurrency = MemoryConcurrency()

    async def hit_all(self, limits: list[tuple[str, int, float]]) -> list[RateDecision]:
        return self.rates.hit_all(limits)

    async def try_acquire(self, account_id: str, prediction_id: str, limit: int | None) -> bool:
        return self.concurrency.try_acquire(account_id, prediction_id, limit)

    async def release(self, account_id: str, prediction_id: str) -> None:
        self.concurrency.release(account_id, prediction_id)

    async def in_flight(self, account_id: str) -> int:
        return self.concurrency.count(account_id)
