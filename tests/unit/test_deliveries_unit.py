"""Pure parts of the webhook delivery loop: which receiver a URL goes to, and the retry schedule."""

from __future__ import annotations

import random

import pytest

from predictd.usecases.deliveries import next_delay, receiver_of


@pytest.mark.parametrize(
    ("url", "receiver", "origin"),
    [
        ("https://Hooks.Example/in?x=1", "hooks.example:443", "https://Hooks.Example"),
        ("http://hooks.example:80/in", "hooks.example:80", "http://hooks.example:80"),
        ("http://hooks.example./in", "hooks.example:80", "http://hooks.example."),
        ("http://hooks.example?token=a/b", "hooks.example:80", "http://hooks.example"),
        ("http://hooks.example#top", "hooks.example:80", "http://hooks.example"),
        ("http://hooks.example", "hooks.example:80", "http://hooks.example"),
        ("http://127.0.0.1:8080/hook", "127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://[::1]:9000/hook", "::1:9000", "http://[::1]:9000"),
    ],
)
def test_a_url_names_its_receiver_by_host_and_port(url: str, receiver: str, origin: str) -> None:
    assert receiver_of(url) == (receiver, origin)


def test_retries_follow_the_schedule_with_jitter_then_stop() -> None:
    rng = random.Random(7)
    schedule = (5.0, 30.0)
    first, second = next_delay(1, schedule, rng), next_delay(2, schedule, rng)
    assert first is not None
    assert 4.0 <= first <= 6.0
    assert second is not None
    assert 24.0 <= second <= 36.0
    assert next_delay(3, schedule, rng) is None
