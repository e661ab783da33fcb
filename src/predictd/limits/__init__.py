"""Rate limits (GCRA) and concurrency limits (in-flight predictions), per account: in this process
(embedded mode) or in Redis (scaled out, ``limits.redis``)."""

from .gcra import gcra
from .memory import MemoryConcurrency, MemoryLimits, MemoryRateLimiter

__all__ = ["MemoryConcurrency", "MemoryLimits", "MemoryRateLimiter", "gcra"]
