"""Rate limits (GCRA) and concurrency limits (in-flight predictions), per account: in this process
(embedded mode) or in Redis (scaled out, ``limits.redis``)."""

from .gcra import RateDecision, gcra
from .memory import LimitsUnavailable, MemoryConcurrency, MemoryLimits, MemoryRateLimiter

__all__ = [
    "LimitsUnavailable",
    "MemoryConcurrency",
    "MemoryLimits",
    "MemoryRateLimiter",
    "RateDecision",
    "gcra",
]
