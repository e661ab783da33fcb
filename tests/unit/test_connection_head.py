"""Measuring a request's head as its bytes arrive, and counting connections per client, at the limits'
exact edges (the connection that uses them is tested for real in tests/integration/test_http_limits.py)."""

from __future__ import annotations

import ipaddress

import pytest

from predictd.api.connection.guard import client_key
from predictd.api.connection.head import HeadMeter, Oversize
from predictd.config.settings import HttpSettings
from predictd.errors import ErrorId

SETTINGS = HttpSettings(max_request_line_bytes=100, max_header_bytes=80, max_head_bytes=400)


def measure(*reads: bytes) -> Oversize | None:
    """What the protocol does with each read: pass it whole, or take it a line at a time."""
    meter = HeadMeter(SETTINGS)
    for data in reads:
        if meter.fits(len(data)):
            meter.count_in(data)
            continue
        pos = 0
        while pos < len(data):
            newline = data.find(b"\n", pos)
            end = len(data) if newline < 0 else newline + 1
            oversize = meter.take(data[pos:end], newline >= 0)
            if oversize is not None:
                return oversize
            if data[pos:end] in (b"\r\n", b"\n"):
                return None  # the head's end: the rest is the body
            pos = end
    return None


def request_line(size: int) -> bytes:
    prefix, suffix = b"GET /", b" HTTP/1.1\r\n"
    return prefix + b"p" * (size - len(prefix) - len(suffix)) + suffix


def test_a_request_line_at_the_limit_passes_and_one_byte_more_is_414() -> None:
    assert measure(request_line(100), b"Host: x\r\n\r\n") is None
    oversize = measure(request_line(101), b"Host: x\r\n\r\n")
    assert oversize is not None
    assert oversize.error_id is ErrorId.URI_TOO_LONG
    assert "100 byte limit" in oversize.message
    assert oversize.fits == 100


def test_a_line_is_measured_across_reads() -> None:
    line = request_line(101)
    assert measure(line[:60], line[60:]) is not None
    assert measure(request_line(100)[:60], request_line(100)[60:], b"\r\n") is None


def test_a_header_over_its_limit_is_named() -> None:
    header = b"X-Long: " + b"v" * 80 + b"\r\n"
    oversize = measure(b"GET / HTTP/1.1\r\n" + header + b"\r\n")
    assert oversize is not None
    assert oversize.error_id is ErrorId.REQUEST_HEADERS_TOO_LARGE
    assert "The header 'x-long' is longer than this deployment's 80 byte limit" in oversize.message


def test_a_header_whose_start_came_in_an_earlier_read_is_still_named() -> None:
    oversize = measure(b"GET / HTTP/1.1\r\nX-Long: ", b"v" * 200)
    assert oversize is not None
    assert "'x-long'" in oversize.message


def test_the_head_total_is_limited_though_each_line_fits() -> None:
    headers = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 70) for i in range(5))
    oversize = measure(b"GET / HTTP/1.1\r\n" + headers + b"\r\n")
    assert oversize is not None
    assert "400 byte limit" in oversize.message


def test_a_body_in_the_same_read_is_not_measured_as_headers() -> None:
    body = b"{\n" + b'  "a": 1,\n' * 50 + b'  "b": "' + b"x" * 1000 + b'"\n}'
    assert measure(b"POST / HTTP/1.1\r\nHost: x\r\n\r\n" + body) is None


def test_an_ordinary_head_fits_whole_and_a_longer_read_is_taken_by_line() -> None:
    meter = HeadMeter(SETTINGS)
    assert meter.fits(80)
    assert not meter.fits(81)  # might hold a header line over 80 bytes


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        (None, ""),
    ],
)
def test_clients_are_counted_by_address_and_ipv6_by_its_64(host: str | None, key: str) -> None:
    assert client_key(host) == key


@pytest.mark.parametrize("host", ["10.1.2.3", "::ffff:10.1.2.3", "2001:db8::7"])
def test_a_trusted_proxy_is_not_counted_as_one_client(host: str) -> None:
    proxies = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/48"))
    assert client_key(host, proxies) is None
    assert client_key("11.1.2.3", proxies) == "11.1.2.3"
