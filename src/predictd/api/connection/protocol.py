"""uvicorn's httptools protocol, with a response's head and body written to the socket together.

uvicorn writes a response in two transport writes, the head when the app sends ``http.response.start`` and
the body with ``http.response.body``: two ``send()`` system calls and two TCP segments per response, the
second of which the client must read as well (py-spy put 44 % of the API process under status reads on
those two lines). Here the first write of a burst is held, and goes out with the next write made before
control returns to the event loop, or alone at the loop's next turn (a streamed response's later chunks, a
head whose body is still being computed). Measured at concurrency 32: status reads 14,100-14,600 ->
15,300-15,500 requests/s; the raw ASGI floor 30,100 -> 31,200.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ...config.settings import Settings
from ...errors import ApiError, ErrorId
from .guard import ConnectionGuard
from .head import HeadMeter, too_many_headers
from .refusals import refusal


class _Coalescing:
    """A transport whose writes made in one turn of the event loop leave as one."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is None:
            self._held = bytes(data)
            self._loop.call_soon(self._flush)
        else:
            self._held = None
            self._transport.write(held + data)

    def _flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a coalescing transport."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        coalescing = _Coalescing(cast(asyncio.Transport, transport), self.loop)
        super().connection_made(cast(asyncio.Transport, coalescing))  # every other method is the transport's


# What a connection is receiving (or waiting for), which says which deadline applies to it.
_IDLE = 0  # nothing yet: the connection is new, or between requests
_HEAD = 1  # a request's line and headers, from its first byte on: header_timeout_s, the head's size limits
_BODY = 2  # its body: min_body_rate over each body_rate_window_s
_DONE = 3  # the request is read: none while its answer is under way (a stream, an await), then keep_alive_s
_CLOSED = 4


class _Refused(Exception):
    """Raised from a parser callback to stop the parser on a request refused here (``_refusal`` says why)."""


class GuardedHttpToolsProtocol(CoalescingHttpToolsProtocol):
    """The coalescing protocol, with the ``[http]`` limits: connections counted in by the server's guard,
    a request's head measured as it arrives (``head``), and each phase's deadline checked at the
    guard's tick (``expire``). Made for one server by ``guarded``."""

    guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = self.guard.settings
        # uvicorn's own keep-alive timer, armed after each answer: the same limit as the idle deadline here.
        self.timeout_keep_alive = settings.keep_alive_s  # type: ignore[assignment]  # call_later takes a float
        self._head = HeadMeter(settings)
        self._body_cap = self.guard.body_cap
        self._phase = _IDLE
        self._since = 0.0  # when the phase began, on the guard's clock; in _BODY, when the rate window began
        self._body_bytes = 0
        self._window_mark = 0  # _body_bytes when the rate window began
        self._max_headers = settings.max_headers
        self._refusal: ApiError | None = None  # what a parse error raised from a callback here stands for

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        refused = self.guard.admit(self, self.client[0] if self.client else None, self.loop)
        if refused is not None:
            self._refuse(refused, "")
            return
        self._since = self.guard.now

    def connection_lost(self, exc: Exception | None) -> None:
        self._phase = _CLOSED
        self.guard.release(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        phase = self._phase
        if phase == _BODY:
            self._body_bytes += len(data)
            if self._body_bytes > self._body_cap and self.cycle.response_complete:
                self._refuse(None, "")
                return
            super().data_received(data)
            return
        if phase != _HEAD:
            if phase == _CLOSED:
                return
            self._phase = _HEAD
            self._since = self.guard.now
            self._head.reset()
        if self._head.fits(len(data)):
            super().data_received(data)
            if self._phase == _HEAD:  # the head goes on in a later read
                self._head.count_in(data)
                self._check_header_count()
        else:
            self._receive_head_by_line(data)

    def _receive_head_by_line(self, data: bytes) -> None:
        """Feed the parser ``data`` a line at a time, each counted first, until the head ends (what follows
        goes on whole) or a line would pass a limit (what fits of it goes, then the request is refused).
        A request pipelined behind this one in the same read goes uncounted: at most one read's bytes."""
        pos, size = 0, len(data)
        while pos < size:
            newline = data.find(b"\n", pos)
            end = size if newline < 0 else newline + 1
            segment = data[pos:end]
            oversize = self._head.take(segment, newline >= 0)
            if oversize is not None:
                if oversize.fits:  # the parser sees the request's path, which says the answer's surface
                    super().data_received(segment[: oversize.fits])
                if not self.transport.is_closing():
                    self._refuse(oversize.error(), self._head_path())
                return
            super().data_received(segment)
            pos = end
            if self._phase != _HEAD or self.transport.is_closing():
                break
        if self._phase == _HEAD:
            self._check_header_count()
        elif pos < size and self._phase != _CLOSED and not self.transport.is_closing():
            rest = data[pos:]
            if self._phase == _BODY:
                self._body_bytes += len(rest)
            super().data_received(rest)

    def _check_header_count(self) -> None:
        """A head that goes on in a later read may not hold more headers than the limit already."""
        if self.headers is not None and len(self.headers) > self._max_headers:
            self._refuse(too_many_headers(self._max_headers), self._head_path())

    def on_headers_complete(self) -> None:
        if len(self.headers) > self._max_headers:
            self._refusal = too_many_headers(self._max_headers)
            raise _Refused  # stops the parser: uvicorn answers the parse error through send_400_response
        self._phase = _BODY
        self._since = self.guard.now
        self._body_bytes = self._window_mark = 0
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request the parser could not take: ours when it was ours to refuse."""
        if self._refusal is None:
            super().send_400_response(msg)
        else:
            self._refuse(self._refusal, self._head_path())

    def on_message_complete(self) -> None:
        self._phase = _DONE
        self._since = self.guard.now
        super().on_message_complete()

    def expire(self, now: float) -> None:
        settings = self.guard.settings
        # The least time the phase has lasted: it began at most one interval after the tick it is stamped
        # with. A deadline is thus never met early, and acted on within two intervals after.
        lasted = now - self._since - self.guard.interval
        phase = self._phase
        if phase == _HEAD:
            if lasted >= settings.header_timeout_s:
                message = f"The request's headers did not arrive within {settings.header_timeout_s:g} s."
                self._refuse(ApiError(ErrorId.REQUEST_TIMEOUT, message), self._head_path())
        elif phase == _BODY:
            self._check_body_rate(now, lasted)
        elif phase != _CLOSED and lasted >= settings.keep_alive_s and self._idle():
            self._refuse(None, "")

    def _check_body_rate(self, now: float, lasted: float) -> None:
        """Each window of the body (the first is the grace period) must bring min_body_rate per second."""
        settings = self.guard.settings
        cycle = self.cycle
        if self.flow.read_paused or cycle.waiting_for_100_continue or not settings.min_body_rate:
            # The app is not reading yet (or has not let the client send): not the client's delay.
            self._since, self._window_mark = now, self._body_bytes
            return
        window = settings.body_rate_window_s
        if lasted < window:
            return
        if self._body_bytes - self._window_mark >= settings.min_body_rate * window:
            self._since, self._window_mark = now, self._body_bytes
            return
        message = f"The request body arrived slower than {settings.min_body_rate} bytes/s over {window:g} s."
        self._refuse(ApiError(ErrorId.REQUEST_TIMEOUT, message), cycle.scope["path"])

    def _idle(self) -> bool:
        """No answer under way, and uvicorn's keep-alive timer (armed after an answer) not counting."""
        cycle = self.cycle
        return cycle is None or (cycle.response_complete and self.timeout_keep_alive_task is None)

    def _head_path(self) -> str:
        """The path of the request whose head is arriving, as far as the parser has seen it."""
        url: bytes = getattr(self, "url", b"")  # set by uvicorn at a request's first byte
        return url.split(b"?", 1)[0].decode("latin-1")

    def _refuse(self, error: ApiError | None, path: str) -> None:
        """Answer ``error`` (None: none) if no other answer is under way on the connection, then close it.
        An app still waiting for this request's body is told the client left."""
        cycle = self.cycle
        if self._phase == _BODY:
            may_answer = not cycle.response_started
        else:
            may_answer = cycle is None or cycle.response_complete
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        self._phase = _CLOSED
        if error is not None and may_answer:
            self.transport.write(refusal(error, path, self.server_state.default_headers))
        self.transport.close()


def guarded(settings: Settings) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for one server, with its own guard: what ``predictd serve`` gives uvicorn."""
    attributes = {"guard": ConnectionGuard(settings)}
    return type("PredictdHttpProtocol", (GuardedHttpToolsProtocol,), attributes)
