"""The Generic Cell Rate Algorithm as a pure function: ``limit`` requests per ``window_s``, bursts allowed up
to ``limit``. One stored number per key (the theoretical arrival time), so it is cheap and exact, and the
same arithmetic runs in a Redis script for the scaled-out mode."""

from __future__ import annotations

import math

from ..core.ports import RateDecision


def gcra(tat: float, now: float, limit: int, window_s: float) -> tuple[float, RateDecision]:
    """Decide one request; return the new stored TAT and the decision."""
    interval = window_s / limit
    start = max(tat, now)
    new_tat = start + interval
    allow_at = new_tat - window_s
    if now < allow_at:
        remaining = 0
        decision = RateDecision(False, limit, remaining, start - now, allow_at - now, window_s)
        return tat, decision
    remaining = max(0, math.floor((window_s - (new_tat - now)) / interval + 1e-9))
    return new_tat, RateDecision(True, limit, remaining, new_tat - now, 0.0, window_s)
