"""Which addresses predictd may connect to on a user's behalf, and the time limits of one request.

Pure: no network, no httpx. The address tables are explicit (the stdlib's ``is_private`` / ``is_global``
changed between Python patch releases), and an IPv6 address that carries an IPv4 one (mapped, compatible,
NAT64, 6to4, Teredo) is judged by what it carries.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class OutboundLimits:
    """The network policy and time limits of one outbound request (an image fetch, a webhook attempt).

    Every socket operation (DNS, connect, TLS handshake, each read and write) is also clamped to what is
    left of ``total_timeout_s``, so a server trickling bytes cannot hold the caller past it.
    """

    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0  # longest silence between two reads
    total_timeout_s: float = 30.0  # wall-clock budget for the whole request, redirects included
    max_redirects: int = 3  # each hop is checked like the first
    allow_private: bool = False  # operator switch: allow every private/loopback/reserved address
    allowed_networks: tuple[str, ...] = ()  # CIDRs allowed even when private, e.g. ("127.0.0.1/32",)

    def __post_init__(self) -> None:
        if min(self.connect_timeout_s, self.read_timeout_s, self.total_timeout_s) <= 0:
            raise ValueError("timeouts must be positive")
        if self.max_redirects < 0:
            raise ValueError("max_redirects must be >= 0")
        parse_networks(self.allowed_networks)  # raises ValueError naming a bad CIDR


@dataclass(frozen=True, slots=True)
class Deadline:
    """When a request, or several of them together, must be over (a ``time.monotonic()`` value), and how
    long they were given (what a timeout's message says)."""

    at: float
    allotted_s: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)

    @classmethod
    def of(cls, limits: OutboundLimits, within: Deadline | None = None) -> Deadline:
        """One request's deadline: ``limits.total_timeout_s`` from now, or ``within`` if that ends first."""
        own = cls.after(limits.total_timeout_s)
        return within if within is not None and within.at < own.at else own

    def passed(self) -> bool:
        return time.monotonic() >= self.at


@functools.lru_cache(maxsize=64)
def parse_networks(cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """The networks of ``allowed_networks``; ValueError names the first entry that is not a CIDR."""
    networks: list[IPNetwork] = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError as exc:
            raise ValueError(f"allowed_networks: {cidr!r} is not a CIDR network") from exc
    return tuple(networks)


def _v4(cidr: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(cidr)


def _v6(cidr: str) -> ipaddress.IPv6Network:
    return ipaddress.IPv6Network(cidr)


_V4_SPECIAL: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_v4("0.0.0.0/8"), "unspecified"),
    (_v4("10.0.0.0/8"), "private"),
    (_v4("100.64.0.0/10"), "private CGNAT"),
    (_v4("127.0.0.0/8"), "loopback"),
    (_v4("169.254.0.0/16"), "link-local"),
    (_v4("172.16.0.0/12"), "private"),
    (_v4("192.0.0.0/24"), "reserved"),
    (_v4("192.0.2.0/24"), "reserved"),
    (_v4("192.88.99.0/24"), "reserved"),
    (_v4("192.168.0.0/16"), "private"),
    (_v4("198.18.0.0/15"), "reserved"),
    (_v4("198.51.100.0/24"), "reserved"),
    (_v4("203.0.113.0/24"), "reserved"),
    (_v4("224.0.0.0/4"), "multicast"),
    (_v4("255.255.255.255/32"), "broadcast"),
    (_v4("240.0.0.0/4"), "reserved"),
)
_V6_UNSPECIFIED = ipaddress.IPv6Address("::")
_V6_LOOPBACK = ipaddress.IPv6Address("::1")
_V6_MAPPED = _v6("::ffff:0:0/96")  # IPv4-mapped: the socket talks IPv4 to the embedded address
_V6_COMPAT = _v6("::/96")  # deprecated IPv4-compatible
_V6_NAT64 = _v6("64:ff9b::/96")  # well-known NAT64 prefix: reaches the embedded IPv4 address
_V6_GLOBAL_UNICAST = _v6("2000::/3")
_V6_SPECIAL: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_v6("::ffff:0:0:0/96"), "reserved"),  # SIIT IPv4-translated
    (_v6("64:ff9b:1::/48"), "private"),  # local-use NAT64
    (_v6("100::/64"), "reserved"),  # discard-only
    (_v6("2001:2::/48"), "reserved"),  # benchmarking
    (_v6("2001:10::/28"), "reserved"),  # ORCHID (deprecated)
    (_v6("2001:db8::/32"), "reserved"),  # documentation
    (_v6("3fff::/20"), "reserved"),  # documentation
    (_v6("5f00::/16"), "reserved"),  # SRv6 SIDs
    (_v6("fc00::/7"), "unique-local"),
    (_v6("fe80::/10"), "link-local"),
    (_v6("fec0::/10"), "site-local"),
    (_v6("ff00::/8"), "multicast"),
)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo client)."""
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _V6_MAPPED or ip in _V6_COMPAT or ip in _V6_NAT64:
        return low32
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        server, client = ip.teredo
        # Judge by the worse of the two embedded addresses.
        return client if address_kind(client) is not None else server
    return None


def address_kind(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be connected to by default ("loopback", "private", ...), or None if public."""
    if isinstance(ip, ipaddress.IPv4Address):
        for network4, kind4 in _V4_SPECIAL:
            if ip in network4:
                return kind4
        return None
    if ip == _V6_UNSPECIFIED:
        return "unspecified"
    if ip == _V6_LOOPBACK:
        return "loopback"
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        embedded_kind = address_kind(embedded)
        if embedded_kind is not None:
            return embedded_kind
        if ip in _V6_MAPPED or ip in _V6_NAT64:
            return None  # the socket reaches exactly this public IPv4 address
    for network6, kind6 in _V6_SPECIAL:
        if ip in network6:
            return kind6
    if ip not in _V6_GLOBAL_UNICAST:
        return "reserved"
    return None


def _is_allowed_explicitly(ip: IPAddress, limits: OutboundLimits) -> bool:
    networks = parse_networks(limits.allowed_networks)
    candidates: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        candidates.append(ip.ipv4_mapped)
    return any(candidate in network for candidate in candidates for network in networks)


def is_blocked_address(ip: IPAddress, limits: OutboundLimits) -> bool:
    """True when predictd must not connect to ``ip`` under ``limits``."""
    if limits.allow_private or _is_allowed_explicitly(ip, limits):
        return False
    return address_kind(ip) is not None
