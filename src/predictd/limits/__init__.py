"""Rate limits (GCRA) and concurrency limits (in-flight predictions), per account."""

from .gcra import RateDecision, gcra
from .memory import MemoryConcurrency, MemoryRateLimiter

__all__ = ["MemoryConcurrency", "MemoryRateLimiter", "RateDecision", "gcra"]
