"""Who may open a connection, and the clock every connection's deadlines are read on.

One guard per server. It counts open connections per client address and in total, and refuses one beyond
either cap. Every ``interval`` seconds it stamps ``now`` and asks each open connection whether one of its
deadlines passed: a request's phases cost a read of ``now`` each, not a timer each. A deadline is therefore
never acted on early and at most two intervals late (an interval is a second, or a quarter of the shortest
timeout when that is shorter).
"""

from __future__ import annotations

import asyncio
import ipaddress
import resource
from typing import Protocol

import structlog

from ...config.settings import Settings
from ...errors import ApiError, ErrorId

log = structlog.get_logger("predictd.http")


class Watched(Protocol):
    def expire(self, now: float) -> None:
        """Act on whichever of the connection's deadlines passed by ``now``."""


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_key(host: str | None, proxies: tuple[IPNetwork, ...] = ()) -> str | None:
    """What connections are counted by: the client's IPv4 address, or the /64 of its IPv6 address (what
    one host is usually given); an IPv4-mapped address counts as the IPv4 one. None for a trusted proxy,
    whose connections are many clients': they count in the total only."""
    if host is None:
        return ""  # a Unix socket: one local client
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in proxies):
        return None
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


# Files the server keeps open besides its connections: the database, worker pipes, the listening socket.
FILES_BESIDES_CONNECTIONS = 64


def open_file_shortfall(settings: Settings) -> str | None:
    """Why ``max_connections`` cannot be reached, if it cannot: past the process's open-file limit, new
    connections fail at accept() for every client alike instead of being refused by count."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = settings.http.max_connections + FILES_BESIDES_CONNECTIONS
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return None
    return (
        f"http.max_connections is {settings.http.max_connections} but this process may open only {soft} "
        f"files (ulimit -n); raise that limit to {wanted} or lower the setting"
    )


def check_interval(settings: Settings) -> float:
    http = settings.http
    shortest = min(http.header_timeout_s, http.body_rate_window_s, http.keep_alive_s)
    return min(1.0, max(0.05, shortest / 4))


class ConnectionGuard:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings.http
        proxies = settings.legal.trusted_proxies
        self._proxies = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in proxies)
        # An answered request's body is not read past twice max_body_bytes: the app refused it at
        # max_body_bytes, and the rest is read only so that a sender that reads the answer only once it has
        # sent everything can still get it.
        self.body_cap = 2 * settings.max_body_bytes
        self.interval = check_interval(settings)
        self.now = 0.0
        self._open: dict[Watched, str | None] = {}
        self._per_client: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def admit(
        self, connection: Watched, host: str | None, loop: asyncio.AbstractEventLoop
    ) -> ApiError | None:
        """Count ``connection`` in, or say why it is refused."""
        key = client_key(host, self._proxies)
        if key is not None and self._per_client.get(key, 0) >= self.settings.max_connections_per_client:
            return ApiError(
                ErrorId.TOO_MANY_CONNECTIONS,
                f"This client has {self.settings.max_connections_per_client} connections open, the most "
                "this deployment accepts from one; retry when one of them closes.",
                retry_after=1,
            )
        if len(self._open) >= self.settings.max_connections:
            return ApiError(
                ErrorId.TOO_MANY_CONNECTIONS,
                f"This server has {self.settings.max_connections} connections open, the most it accepts.",
                retry_after=1,
            )
        self._open[connection] = key
        if key is not None:
            self._per_client[key] = self._per_client.get(key, 0) + 1
        if self._timer is None:  # the first connection since the server was last without any
            self._loop = loop
            self.now = loop.time()
            self._timer = loop.call_later(self.interval, self._tick)
        return None

    def release(self, connection: Watched) -> None:
        if connection not in self._open:
            return  # refused, or released already
        key = self._open.pop(connection)
        if key is None:
            return
        left = self._per_client[key] - 1
        if left:
            self._per_client[key] = left
        else:
            del self._per_client[key]

    def _tick(self) -> None:
        assert self._loop is not None
        self.now = now = self._loop.time()
        for connection in list(self._open):
            try:
                connection.expire(now)
            except Exception:
                log.exception("connection deadline check failed")
        self._timer = self._loop.call_later(self.interval, self._tick) if self._open else None
