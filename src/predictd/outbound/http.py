"""Outbound HTTP on the SSRF guard: a GET that follows redirects (image inputs) and a POST that does not
(webhook attempts), each within one wall-clock deadline, bodies read under a size cap.

Every URL is http(s) without credentials; every hop of a redirect is checked like the first; proxy
environment variables are ignored (a proxy would resolve names itself, unchecked). Failures raise
:class:`~predictd.outbound.failures.OutboundError`, never an httpx exception.

This module imports httpx, httpcore and ssl (about 15 MiB): callers import it on their first request, so
the API process loads it with its first webhook and a worker with its first image URL, never at rest.
"""

from __future__ import annotations

import contextlib
import time
import typing
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import httpx

from .failures import OutboundError, Unreachable, printable
from .guard import guarded_transport
from .policy import Deadline, OutboundLimits

MAX_URL_LENGTH = 8192


def display_url(url: str | httpx.URL) -> str:
    """A URL as messages show it: no credentials, no query string (signed URLs carry secrets), bounded."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url[:MAX_URL_LENGTH])
        netloc = parsed.netloc.decode("ascii", "replace")
        return printable(f"{parsed.scheme}://{netloc}{parsed.path}")
    except Exception:
        return printable(str(url), 100)


def parse_url(url: str | httpx.URL) -> httpx.URL:
    """``url`` parsed, when it is one predictd may request at all (before any address is looked at)."""
    if isinstance(url, str) and len(url) > MAX_URL_LENGTH:
        raise OutboundError(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except Exception:
        raise OutboundError(f"{display_url(url)} is not a valid URL") from None
    if parsed.scheme not in ("http", "https"):
        scheme = printable(parsed.scheme, 20) or "a relative URL"
        raise OutboundError(f"only http and https URLs can be fetched, not {scheme}")
    if parsed.userinfo:
        raise OutboundError("refusing a URL with credentials (user:password@host)")
    if not parsed.host:
        raise OutboundError(f"{display_url(parsed)} has no host")
    return parsed


def _timeouts(limits: OutboundLimits) -> httpx.Timeout:
    return httpx.Timeout(
        connect=limits.connect_timeout_s,
        read=limits.read_timeout_s,
        write=limits.read_timeout_s,
        pool=limits.connect_timeout_s,
    )


def _client(limits: OutboundLimits, deadline: float, headers: Mapping[str, str]) -> httpx.Client:
    return httpx.Client(
        transport=guarded_transport(limits, deadline),
        timeout=_timeouts(limits),
        follow_redirects=False,
        trust_env=False,
        headers=dict(headers),
    )


def _timed_out(deadline: Deadline, shown: str) -> OutboundError:
    return OutboundError(f"timed out after {round(deadline.allotted_s, 1):g} s", shown)


@contextlib.contextmanager
def _failures(shown: str, limits: OutboundLimits, deadline: Deadline) -> Iterator[None]:
    """httpx's exceptions, and the guard's below it, as OutboundError about ``shown``."""
    try:
        yield
    except Unreachable as exc:
        raise Unreachable(exc.reason, shown) from None
    except OutboundError:
        raise
    except httpx.TimeoutException as exc:
        if time.monotonic() >= deadline.at - 0.05:
            raise _timed_out(deadline, shown) from None
        if isinstance(exc, httpx.ConnectTimeout):
            why = f"connection timed out after {limits.connect_timeout_s:g} s"
        elif isinstance(exc, httpx.ReadTimeout):
            why = f"no data received for {limits.read_timeout_s:g} s"
        else:
            why = "timed out"
        raise OutboundError(why, shown) from None
    except httpx.HTTPError as exc:
        raise OutboundError(printable(str(exc), 160) or type(exc).__name__, shown) from None


def read_capped(response: httpx.Response, *, max_bytes: int, shown: str, deadline: Deadline) -> bytes:
    """The body of ``response``, decoded from gzip / deflate, refused once it (or its raw form) is over
    ``max_bytes``, or when the deadline passes between two chunks."""
    too_large = OutboundError(f"{shown} is larger than {max_bytes} bytes")
    length = response.headers.get("content-length")
    if length is not None and length.strip().isdigit() and int(length) > max_bytes:
        raise too_large
    encoding = response.headers.get("content-encoding", "").strip().lower()
    decompressor: typing.Any = None
    if encoding in ("gzip", "x-gzip", "deflate"):
        decompressor = zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip header, auto-detected
    elif encoding not in ("", "identity"):
        raise OutboundError(f"unsupported Content-Encoding {printable(encoding, 40)}", shown)
    body = bytearray()
    raw_size = 0
    for chunk in response.iter_raw():
        if deadline.passed():
            raise _timed_out(deadline, shown)
        raw_size += len(chunk)
        if raw_size > max_bytes:
            raise too_large
        if decompressor is None:
            body += chunk
        else:
            pending = chunk
            while pending:
                try:
                    body += decompressor.decompress(pending, max_bytes - len(body) + 1)
                except zlib.error:
                    raise OutboundError(f"the body is not valid {encoding}", shown) from None
                if len(body) > max_bytes:
                    raise too_large
                pending = decompressor.unconsumed_tail
        if len(body) > max_bytes:
            raise too_large
    return bytes(body)


def _get(
    url: str,
    limits: OutboundLimits,
    max_bytes: int,
    headers: Mapping[str, str],
    accept_type: Callable[[str], str | None],
    within: Deadline | None,
) -> bytes:
    deadline = Deadline.of(limits, within)
    current = parse_url(url)
    if deadline.passed():
        raise OutboundError("no time was left to fetch it", display_url(current))
    redirects = 0
    with _client(limits, deadline.at, headers) as client:
        while True:
            shown = display_url(current)
            if deadline.passed():
                raise _timed_out(deadline, shown)
            with _failures(shown, limits, deadline), client.stream("GET", current) as response:
                if response.has_redirect_location:
                    if redirects >= limits.max_redirects:
                        raise OutboundError(f"more than {limits.max_redirects} redirects", display_url(url))
                    redirects += 1
                    current = parse_url(response.url.join(response.headers["location"]))
                    continue
                if not 200 <= response.status_code < 300:
                    raise OutboundError(f"HTTP {response.status_code}", shown)
                content_type = response.headers.get("content-type", "")
                refusal = accept_type(content_type.split(";", 1)[0].strip().lower())
                if refusal is not None:
                    raise OutboundError(refusal, shown)
                return read_capped(response, max_bytes=max_bytes, shown=shown, deadline=deadline)


def get(
    url: str,
    *,
    limits: OutboundLimits,
    max_bytes: int,
    headers: Mapping[str, str],
    accept_type: Callable[[str], str | None],
    within: Deadline | None = None,
) -> bytes:
    """The body of ``url``, following at most ``limits.max_redirects`` redirects, each hop checked, within
    ``limits.total_timeout_s``, or ``within`` (a caller's deadline over several requests) if it ends first.

    The answer must be 2xx, and ``accept_type`` must accept its media type (lower case, without
    parameters; "" when there is none): it returns None, or the reason to refuse it.
    """
    try:
        return _get(url, limits, max_bytes, headers, accept_type, within)
    except OutboundError:
        raise
    except Exception as exc:
        reason = f"{type(exc).__name__}: {printable(str(exc), 160)}"
        raise OutboundError(reason, display_url(url)) from None


@dataclass(frozen=True, slots=True)
class Answer:
    """What a POST got back: the status, and the start of the body when it was read (see :func:`post`)."""

    status_code: int
    body_start: bytes = b""


def _start_of_body(response: httpx.Response, limit: int) -> bytes:
    """At most ``limit`` bytes of the body as sent (compressed bodies are not decoded: nothing more than
    ``limit`` is ever inflated), less if the deadline passes first."""
    if response.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity"):
        return b""
    start = bytearray()
    with contextlib.suppress(httpx.TimeoutException, httpx.StreamError, httpx.TransportError):
        for chunk in response.iter_raw():
            start += chunk[: limit - len(start)]
            if len(start) >= limit:
                break
    return bytes(start)


def post(
    url: str, body: bytes, *, headers: Mapping[str, str], limits: OutboundLimits, quote_bytes: int
) -> Answer:
    """POST ``body`` to ``url`` without following redirects, the whole exchange (DNS, connect, TLS, the
    request, the answer's head) within ``limits.total_timeout_s``.

    The answer's body is never read whole: a 2xx answer's not at all, another's only up to ``quote_bytes``
    (what a record of the failure quotes), within the same deadline; then the connection is closed. A
    receiver answering gigabytes, or trickling its answer, costs neither memory nor time past the deadline.
    """
    deadline = Deadline.of(limits)
    try:
        shown = display_url(url)
        with (
            _failures(shown, limits, deadline),
            _client(limits, deadline.at, {**headers, "accept-encoding": "identity"}) as client,
            client.stream("POST", url, content=body) as response,
        ):
            if 200 <= response.status_code < 300:
                return Answer(response.status_code)
            return Answer(response.status_code, _start_of_body(response, quote_bytes))
    except OutboundError:
        raise
    except Exception as exc:
        raise OutboundError(printable(str(exc), 500) or type(exc).__name__, display_url(url)) from None
