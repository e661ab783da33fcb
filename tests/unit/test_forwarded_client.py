"""Who sent a request that came through proxies: the right-most hop that is not a trusted proxy."""

from __future__ import annotations

import ipaddress
import re

import pytest
from pydantic import ValidationError

from predictd.api.auth import forwarded_client
from predictd.config.settings import Settings

TRUSTED = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"))


def test_an_untrusted_peer_is_the_client_whatever_it_forwards() -> None:
    assert forwarded_client("203.0.113.9", ["1.2.3.4"], TRUSTED) == "203.0.113.9"


def test_a_trusted_peer_is_followed_to_the_right_most_untrusted_hop() -> None:
    assert forwarded_client("127.0.0.1", ["198.51.100.7, 10.1.2.3"], TRUSTED) == "198.51.100.7"
    # Entries left of the first untrusted hop were written by the client: they never win.
    assert forwarded_client("127.0.0.1", ["6.6.6.6, 198.51.100.7"], TRUSTED) == "198.51.100.7"
    # Several header lines are one chain, in order.
    assert forwarded_client("127.0.0.1", ["6.6.6.6", "198.51.100.7, 10.0.0.2"], TRUSTED) == "198.51.100.7"


def test_garbage_in_the_chain_is_an_untrusted_hop_not_a_way_through() -> None:
    assert forwarded_client("127.0.0.1", ["198.51.100.7, not-an-ip"], TRUSTED) == "not-an-ip"
    assert forwarded_client("127.0.0.1", ["198.51.100.7, 10.0.0.2\x00"], TRUSTED) == "10.0.0.2\x00"


def test_an_all_trusted_chain_names_its_first_hop() -> None:
    assert forwarded_client("127.0.0.1", ["10.0.0.5, 10.0.0.6"], TRUSTED) == "10.0.0.5"
    assert forwarded_client("127.0.0.1", [], TRUSTED) == "127.0.0.1"


def test_a_trusted_proxy_that_is_not_a_network_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match=re.escape("'10.0.0.300' is not an IP network")):
        Settings(legal={"trusted_proxies": ["10.0.0.300"]})
    networks = ["10.0.0.0/8", "::1"]
    assert Settings(legal={"trusted_proxies": networks}).legal.trusted_proxies == networks
