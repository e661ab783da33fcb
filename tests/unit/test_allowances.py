"""What the allowances against key guessing count on, what they log, and that counting them forgets what no
longer matters."""

from __future__ import annotations

import pytest

from predictd.core.keys import generate_key, loggable_prefix
from predictd.limits import MemoryRateLimiter
from predictd.limits.memory import FIRST_SWEEP_AT
from predictd.usecases.access import address_bucket


@pytest.mark.parametrize(
    ("address", "bucket"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),  # the same subscriber's other address
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),  # IPv4 seen through a dual-stack socket: not one bucket
        ("not-an-ip", "not-an-ip"),
        ("x" * 500, "x" * 64),
    ],
)
def test_an_allowance_is_counted_per_ipv4_address_and_per_ipv6_slash_64(address: str, bucket: str) -> None:
    assert address_bucket(address) == bucket


def test_a_presented_key_is_logged_by_a_prefix_never_whole() -> None:
    real = generate_key().secret
    assert loggable_prefix(real) == real[:10]
    assert loggable_prefix("pd_short") == "pd"  # a quarter at most of what was sent
    assert loggable_prefix("") == ""
    assert loggable_prefix("pd_\nforged=1 line\x1b[31m red and long enough") == "pd_?forged"


def test_the_memory_limiter_forgets_buckets_that_are_full_again() -> None:
    limiter = MemoryRateLimiter()
    now = [1000.0]
    limiter._clock = lambda: now[0]
    limiter.hit("steady", 2, 60.0)
    for n in range(FIRST_SWEEP_AT - 2):
        limiter.hit(f"guess:{n}", 5, 1.0)
    assert len(limiter) == FIRST_SWEEP_AT - 1
    now[0] += 2.0  # every guess's bucket is full again; steady's one request is still counted
    limiter.hit("one more", 5, 1.0)
    assert len(limiter) == 2
    assert limiter.hit("steady", 2, 60.0).allowed
    assert not limiter.hit("steady", 2, 60.0).allowed  # what was forgotten never loosened a limit
