"""Fetching input images over http(s) under the SSRF, size and time rules of :mod:`predictd.media`.

Split from media.py so that httpx, httpcore and ssl are imported only by a process that fetches a URL
(media.py imports this module on first use).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
import threading
import time
import typing
import zlib

import httpcore
import httpx

from predictd.errors import ImageLoadError

from .media import (
    _USER_AGENT,
    MAX_URL_LENGTH,
    MediaLimits,
    _address_kind,
    _clean,
    _Failure,
    is_blocked_address,
)


def _remaining(deadline: float, timeout: float | None) -> float:
    """The socket timeout to use: ``timeout`` clamped to what is left of the deadline (0 when past it)."""
    left = max(deadline - time.monotonic(), 0.0)
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """Clamps every read / write / TLS handshake timeout of the wrapped stream to the fetch deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def _timeout(self, timeout: float | None, error: type[Exception]) -> float:
        left = _remaining(self._deadline, timeout)
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

    threading.Thread(target=resolve, name="predictd-media-dns", daemon=True).start()
    if not done.wait(timeout):
        raise httpcore.ConnectTimeout(f"resolving {host} timed out")
    if failure:
        raise _Failure(f"could not resolve {host}: {failure[0]}")
    return result[0]


class SafeNetworkBackend(httpcore.NetworkBackend):
    """An httpcore network backend that resolves, validates and pins the address of every connection.

    httpx 0.28's ``HTTPTransport`` builds an ``httpcore.ConnectionPool``, and every new connection of that
    pool calls ``network_backend.connect_tcp(host, port, ...)`` with the URL's host name, then - for https -
    ``stream.start_tls(ssl_context, server_hostname=<URL host>)``. This backend's ``connect_tcp``:

    1. resolves ``host`` once (bounded by the deadline) and refuses (``_Failure``) when ANY resolved
       address is blocked by :func:`is_blocked_address`, before any socket is opened;
    2. connects, through httpcore's own ``SyncBackend``, to the validated IP literal itself - no second
       lookup happens, so a DNS-rebinding answer cannot redirect the socket;
    3. wraps the stream so every later timeout is clamped to the fetch deadline.

    The request line and ``Host`` header come from the URL (httpx), and TLS gets the URL's host name as
    ``server_hostname`` (httpcore), so SNI and certificate hostname verification are unchanged.
    """

    def __init__(self, limits: MediaLimits, deadline: float) -> None:
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
            left = _remaining(self._deadline, timeout)
            if left <= 0:
                raise httpcore.ConnectTimeout("the fetch deadline has passed") from None
            addresses = _getaddrinfo(host, port, left)
            is_literal = False
        if not addresses:
            raise _Failure(f"could not resolve {host}: no addresses")
        unique = list(dict.fromkeys(addresses))
        for address in unique:
            ip = ipaddress.ip_address(address)
            if is_blocked_address(ip, self._limits):
                kind = _address_kind(ip) or "blocked"
                if is_literal:
                    raise _Failure(f"refusing to fetch from {ip} ({kind} address)", refusal=True)
                raise _Failure(
                    f"refusing to fetch from {host} (it resolves to {ip}, a {kind} address)", refusal=True
                )
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
            left = _remaining(self._deadline, timeout)
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
        raise _Failure("unix sockets are not allowed", refusal=True)

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
            raise RuntimeError("httpx.HTTPTransport has no _pool to replace; predictd.media needs updating")
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context, max_connections=4, network_backend=backend
        )


# ---------------------------------------------------------------------------------------------------------
# Fetching


def _display(url: str | httpx.URL) -> str:
    """A URL for messages: no credentials, no query string (signed URLs carry secrets), bounded."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url[:MAX_URL_LENGTH])
        netloc = parsed.netloc.decode("ascii", "replace")
        return _clean(f"{parsed.scheme}://{netloc}{parsed.path}")
    except Exception:
        return _clean(str(url), 100)


def _parse_url(url: str | httpx.URL, field: str) -> httpx.URL:
    if isinstance(url, str) and len(url) > MAX_URL_LENGTH:
        raise ImageLoadError(f"{field}: the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except Exception:
        raise ImageLoadError(f"{field}: {_display(url)} is not a valid URL") from None
    if parsed.scheme not in ("http", "https"):
        scheme = _clean(parsed.scheme, 20) or "a relative URL"
        raise ImageLoadError(f"{field}: only http and https URLs can be fetched, not {scheme}")
    if parsed.userinfo:
        raise ImageLoadError(f"{field}: refusing a URL with credentials (user:password@host)")
    if not parsed.host:
        raise ImageLoadError(f"{field}: {_display(parsed)} has no host")
    return parsed


def _too_large(field: str, shown: str, limits: MediaLimits) -> ImageLoadError:
    return ImageLoadError(f"{field}: {shown} is larger than {limits.max_bytes} bytes")


def _timed_out(field: str, shown: str, limits: MediaLimits) -> ImageLoadError:
    return ImageLoadError(f"{field}: could not fetch {shown}: timed out after {limits.total_timeout_s:g} s")


def _read_body(
    response: httpx.Response, *, field: str, shown: str, limits: MediaLimits, deadline: float
) -> bytes:
    length = response.headers.get("content-length")
    if length is not None and length.strip().isdigit() and int(length) > limits.max_bytes:
        raise _too_large(field, shown, limits)
    encoding = response.headers.get("content-encoding", "").strip().lower()
    decompressor: typing.Any = None
    if encoding in ("gzip", "x-gzip", "deflate"):
        decompressor = zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip header, auto-detected
    elif encoding not in ("", "identity"):
        raise ImageLoadError(
            f"{field}: could not fetch {shown}: unsupported Content-Encoding {_clean(encoding, 40)}"
        )
    body = bytearray()
    raw_size = 0
    for chunk in response.iter_raw():
        if time.monotonic() >= deadline:
            raise _timed_out(field, shown, limits)
        raw_size += len(chunk)
        if raw_size > limits.max_bytes:
            raise _too_large(field, shown, limits)
        if decompressor is None:
            body += chunk
        else:
            pending = chunk
            while pending:
                try:
                    body += decompressor.decompress(pending, limits.max_bytes - len(body) + 1)
                except zlib.error:
                    raise ImageLoadError(
                        f"{field}: could not fetch {shown}: the body is not valid {encoding}"
                    ) from None
                if len(body) > limits.max_bytes:
                    raise _too_large(field, shown, limits)
                pending = decompressor.unconsumed_tail
        if len(body) > limits.max_bytes:
            raise _too_large(field, shown, limits)
    return bytes(body)


def _fetch(url: str, field: str, limits: MediaLimits) -> bytes:
    deadline = time.monotonic() + limits.total_timeout_s
    current = _parse_url(url, field)
    timeout = httpx.Timeout(
        connect=limits.connect_timeout_s,
        read=limits.read_timeout_s,
        write=limits.read_timeout_s,
        pool=limits.connect_timeout_s,
    )
    headers = {"User-Agent": _USER_AGENT, "Accept": "image/*", "Accept-Encoding": "identity"}
    transport = _PinnedTransport(SafeNetworkBackend(limits, deadline))
    redirects = 0
    with httpx.Client(
        transport=transport, timeout=timeout, follow_redirects=False, trust_env=False, headers=headers
    ) as client:
        while True:
            shown = _display(current)
            if time.monotonic() >= deadline:
                raise _timed_out(field, shown, limits)
            try:
                with client.stream("GET", current) as response:
                    if response.has_redirect_location:
                        if redirects >= limits.max_redirects:
                            raise ImageLoadError(
                                f"{field}: could not fetch {_display(url)}: "
                                f"more than {limits.max_redirects} redirects"
                            )
                        redirects += 1
                        current = _parse_url(response.url.join(response.headers["location"]), field)
                        continue
                    if not 200 <= response.status_code < 300:
                        raise ImageLoadError(f"{field}: could not fetch {shown}: HTTP {response.status_code}")
                    content_type = response.headers.get("content-type", "")
                    mime = content_type.split(";", 1)[0].strip().lower()
                    if not mime:
                        raise ImageLoadError(
                            f"{field}: could not fetch {shown}: no Content-Type, expected an image/* type"
                        )
                    if not mime.startswith("image/") or mime == "image/":
                        kind = _clean(mime, 60)
                        raise ImageLoadError(
                            f"{field}: could not fetch {shown}: Content-Type {kind} is not an image"
                        )
                    return _read_body(response, field=field, shown=shown, limits=limits, deadline=deadline)
            except _Failure as exc:
                if exc.refusal:
                    raise ImageLoadError(f"{field}: {exc}") from None
                raise ImageLoadError(f"{field}: could not fetch {shown}: {exc}") from None
            except httpx.TimeoutException as exc:
                if time.monotonic() >= deadline - 0.05:
                    raise _timed_out(field, shown, limits) from None
                if isinstance(exc, httpx.ConnectTimeout):
                    why = f"connection timed out after {limits.connect_timeout_s:g} s"
                elif isinstance(exc, httpx.ReadTimeout):
                    why = f"no data received for {limits.read_timeout_s:g} s"
                else:
                    why = "timed out"
                raise ImageLoadError(f"{field}: could not fetch {shown}: {why}") from None
            except httpx.HTTPError as exc:
                reason = _clean(str(exc), 160) or type(exc).__name__
                raise ImageLoadError(f"{field}: could not fetch {shown}: {reason}") from None


def fetch_image_bytes(url: str, *, field: str, limits: MediaLimits) -> bytes:
    """The body of an image URL, fetched under the SSRF, size and time rules of the module docstring."""
    try:
        return _fetch(url, field, limits)
    except ImageLoadError:
        raise
    except Exception as exc:
        raise ImageLoadError(
            f"{field}: could not fetch {_display(url)}: {type(exc).__name__}: {_clean(str(exc), 160)}"
        ) from None


def display_url(url: str | httpx.URL) -> str:
    """A URL as error messages show it (no credentials, no query string, bounded)."""
    return _display(url)


def guarded_transport(limits: MediaLimits, deadline: float) -> httpx.HTTPTransport:
    """See :func:`predictd.media.guarded_transport`."""
    return _PinnedTransport(SafeNetworkBackend(limits, deadline))
