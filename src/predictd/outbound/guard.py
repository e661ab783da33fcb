"""The SSRF guard at the socket: every connection of an outbound request resolves its host once, refuses a
blocked address before opening a socket, connects to exactly the address it checked, and keeps every
socket operation within the request's deadline.

Imports httpx, httpcore and ssl: a caller imports this module (through :mod:`predictd.outbound.http`) on its
first outbound request, so a process that makes none never loads them (see that module).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
import threading
import time
import typing

import httpcore
import httpx

from .failures import Refused, Unreachable
from .policy import OutboundLimits, address_kind, is_blocked_address


def remaining(deadline: float, timeout: float | None) -> float:
    """The socket timeout to use: ``timeout`` clamped to what is left of the deadline (0 when past it)."""
    left = max(deadline - time.monotonic(), 0.0)
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """Clamps every read / write / TLS handshake timeout of the wrapped stream to the request's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def _timeout(self, timeout: float | None, error: type[Exception]) -> float:
        left = remaining(self._deadline, timeout)
        if left <= 0:
            raise error("the fetch deadline has passed")
        return left

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._timeout(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._timeout(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        tls = self._inner.start_tls(
            ssl_context, server_hostname, self._timeout(timeout, httpcore.ConnectTimeout)
        )
        return _DeadlineStream(tls, self._deadline)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


def _getaddrinfo(host: str, port: int, timeout: float) -> list[str]:
    """The addresses ``host`` resolves to, within ``timeout`` seconds (getaddrinfo itself has no timeout,
    so it runs on a daemon thread that is abandoned if the resolver hangs)."""
    result: list[list[str]] = []
    failure: list[BaseException] = []
    done = threading.Event()

    def resolve() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            result.append([str(info[4][0]) for info in infos])
        except BaseException as exc:  # handed to the caller
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=resolve, name="predictd-outbound-dns", daemon=True).start()
    if not done.wait(timeout):
        raise httpcore.ConnectTimeout(f"resolving {host} timed out")
    if failure:
        raise Unreachable(f"could not resolve {host}: {failure[0]}")
    return result[0]


class SafeNetworkBackend(httpcore.NetworkBackend):
    """An httpcore network backend that resolves, validates and pins the address of every connection.

    httpx 0.28's ``HTTPTransport`` builds an ``httpcore.ConnectionPool``, and every new connection of that
    pool calls ``network_backend.connect_tcp(host, port, ...)`` with the URL's host name, then - for https -
    ``stream.start_tls(ssl_context, server_hostname=<URL host>)``. This backend's ``connect_tcp``:

    1. resolves ``host`` once (bounded by the deadline) and refuses (:class:`Refused`) when ANY resolved
       address is blocked by :func:`is_blocked_address`, before any socket is opened;
    2. connects, through httpcore's own ``SyncBackend``, to the validated IP literal itself - no second
       lookup happens, so a DNS-rebinding answer cannot redirect the socket;
    3. wraps the stream so every later timeout is clamped to the deadline.

    The request line and ``Host`` header come from the URL (httpx), and TLS gets the URL's host name as
    ``server_hostname`` (httpcore), so SNI and certificate hostname verification are unchanged.
    """

    def __init__(self, limits: OutboundLimits, deadline: float) -> None:
        self._limits = limits
        self._deadline = deadline
        self._inner = httpcore.SyncBackend()

    def resolve(self, host: str, port: int, timeout: float | None = None) -> list[str]:
        """The validated addresses to connect to for ``host`` (raises when any of them is blocked)."""
        literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            addresses = [str(ipaddress.ip_address(literal))]
            is_literal = True
        except ValueError:
            left = remaining(self._deadline, timeout)
            if left <= 0:
                raise httpcore.ConnectTimeout("the fetch deadline has passed") from None
            addresses = _getaddrinfo(host, port, left)
            is_literal = False
        if not addresses:
            raise Unreachable(f"could not resolve {host}: no addresses")
        unique = list(dict.fromkeys(addresses))
        for address in unique:
            ip = ipaddress.ip_address(address)
            if is_blocked_address(ip, self._limits):
                kind = address_kind(ip) or "blocked"
                if is_literal:
                    raise Refused(f"refusing to fetch from {ip} ({kind} address)")
                raise Refused(f"refusing to fetch from {host} (it resolves to {ip}, a {kind} address)")
        return unique

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = self.resolve(host, port, timeout)
        options = list(socket_options or [])
        last: Exception | None = None
        for address in addresses:
            left = remaining(self._deadline, timeout)
            if left <= 0:
                raise httpcore.ConnectTimeout("the fetch deadline has passed")
            try:
                stream = self._inner.connect_tcp(
                    address, port, timeout=left, local_address=local_address, socket_options=options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
                continue
            return _DeadlineStream(stream, self._deadline)
        assert last is not None
        raise last

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise Refused("unix sockets are not allowed")

    def sleep(self, seconds: float) -> None:
        time.sleep(max(min(seconds, self._deadline - time.monotonic()), 0.0))


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying client context for every fetch and webhook delivery of the process. Building one loads
    the whole CA bundle (about 25 ms of CPU, mostly holding the GIL), which per request would cost the API
    process more than the delivery itself; a client context is safe to share between threads."""
    return httpx.create_ssl_context(trust_env=False)


class _PinnedTransport(httpx.HTTPTransport):
    """``httpx.HTTPTransport`` whose connection pool uses :class:`SafeNetworkBackend`.

    ``HTTPTransport`` has no ``network_backend`` parameter, so its pool (the ``_pool`` attribute that its
    ``handle_request`` uses, with httpx's exception mapping) is replaced by an equivalent pool built with
    the safe backend. No proxy is ever configured.
    """

    def __init__(self, backend: SafeNetworkBackend) -> None:
        ssl_context = _tls_context()
        super().__init__(verify=ssl_context, trust_env=False)
        if not isinstance(getattr(self, "_pool", None), httpcore.ConnectionPool):
            # Fail closed if a future httpx stops keeping its pool there: never fall back to plain DNS.
            raise RuntimeError(
                "httpx.HTTPTransport has no _pool to replace; predictd.outbound needs updating"
            )
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context, max_connections=4, network_backend=backend
        )


def guarded_transport(limits: OutboundLimits, deadline: float) -> httpx.HTTPTransport:
    """An httpx transport that resolves once, refuses blocked addresses (:class:`Refused`), and connects to
    the address it checked, every socket operation within ``deadline`` (a ``time.monotonic()`` value)."""
    return _PinnedTransport(SafeNetworkBackend(limits, deadline))
