"""Pure ASGI middleware: a request id on every answer, a bound on request bodies, HTTP metrics, and the
fast lane (fast.py) tried first."""

from __future__ import annotations

import itertools
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import ApiError, ErrorId
from ..telemetry.metrics import Metrics
from .fast import AnswerNow, FastRoutes
from .parsing import nul_in_target

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def body_too_large(limit: int) -> ApiError:
    return ApiError(
        ErrorId.INFRASTRUCTURE_ERROR, f"The request body exceeds this deployment's {limit} byte limit."
    )


# A random tag per process and a counter: unique ids without reading the system's random source per request.
_ID_PREFIX = "req_" + secrets.token_hex(10)
_ID_COUNTER = itertools.count()


def new_request_id() -> str:
    """``req_``, the process's 20 hex digits, the request's number in hex (formatted without a width: a
    third of the time of ``:012x``)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):x}"


def _request_id(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The caller's ``X-Request-Id`` when it is a sane one, otherwise a new one."""
    for name, value in headers:
        if name == b"x-request-id":
            incoming = value.decode("latin-1")
            if _VALID_REQUEST_ID.match(incoming):
                return incoming
            break
    return new_request_id()


def _with_context_headers(
    raw: Iterable[tuple[bytes, bytes]], request_id: str, extra: dict[str, str] | None
) -> list[tuple[bytes, bytes]]:
    """A response's headers plus the request id and ``extra``, each unless the response set it itself."""
    headers = list(raw)
    present = {name.lower() for name, _ in headers}
    if b"x-request-id" not in present:
        headers.append((b"x-request-id", request_id.encode("latin-1")))
    if extra:
        for name, value in extra.items():
            key = name.lower().encode("latin-1")
            if key not in present:
                headers.append((key, value.encode("latin-1")))
    return headers


UnhandledHandler = Callable[[Request, Exception], Awaitable[Response]]
ErrorRenderer = Callable[[Request, ApiError], Response]


class RequestContext:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        metrics: Metrics,
        on_unhandled: UnhandledHandler | None = None,
        fast_routes: FastRoutes | None = None,
        render_error: ErrorRenderer | None = None,
    ) -> None:
        if fast_routes is not None and render_error is None:
            raise ValueError("fast_routes need render_error")
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.on_unhandled = on_unhandled
        self.fast_routes = fast_routes
        self.render_error = render_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope["headers"])
        started = time.perf_counter()
        refused = nul_in_target(scope["path"], scope["query_string"])
        if refused is not None and self.render_error is not None:
            # Before any route: every id, name and filter it could reach is refused alike, fast lane included.
            scope.setdefault("state", {})["request_id"] = request_id
            refusal = self.render_error(Request(scope), refused)
            await _send_whole(refusal, request_id, None, send)
            self.metrics.observe_http(
                scope["method"], "unmatched", refusal.status_code, time.perf_counter() - started
            )
            return
        fast_routes = self.fast_routes
        fast = fast_routes.match(scope) if fast_routes is not None else None
        principal = None
        if fast is not None:
            assert fast_routes is not None
            route, params, answer_now = fast
            try:
                # Looked up once: the route's own endpoint gets it too when memory cannot answer.
                principal = fast_routes.principal_now(scope)
                response = (
                    None if principal is None or answer_now is None else answer_now(params, scope, principal)
                )
            except Exception as exc:
                if self.on_unhandled is None:
                    raise
                scope.setdefault("state", {})["request_id"] = request_id
                response = await self.on_unhandled(Request(scope), exc)  # logged there, with the request id
            if response is not None:
                await _send_whole(response, request_id, None, send)
                self.metrics.observe_http(
                    scope["method"], route.path, response.status_code, time.perf_counter() - started
                )
                return
        await self._layered(scope, receive, send, request_id, started, fast, principal)

    async def _layered(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: str,
        started: float,
        fast: tuple[APIRoute, dict[str, str], AnswerNow | None] | None,
        principal: Any,
    ) -> None:
        """Every request but those answered from memory: through the app's stack, or a fast route's
        endpoint; with the body bounded, and an unhandled error answered with the request id."""
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started_response = completed_response = False
        limit = self.max_body_bytes
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise body_too_large(limit)
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response, completed_response
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                completed_response = True
            elif message["type"] == "http.response.start":
                started_response = True
                status = message["status"]
                message["headers"] = _with_context_headers(
                    message.get("headers", ()), request_id, scope["state"].get("rate_headers")
                )
            await send(message)

        try:
            if fast is None:
                await self.app(scope, bounded_receive, send_with_id)
                return
            scope["route"] = fast[0]
            response = await self._dispatch(fast[0], fast[1], scope, bounded_receive, send_with_id, principal)
            if _is_whole(response):
                # Sent here rather than by Response.__call__ through send_with_id: two layers less.
                status = response.status_code
                started_response = True
                await _send_whole(response, request_id, scope["state"].get("rate_headers"), send)
                completed_response = True
            else:
                await response(scope, bounded_receive, send_with_id)
        except Exception as exc:
            # Answered (or found answered) here rather than re-raised to uvicorn, which would log the
            # traceback a second time (without the request id) and close the connection under a keep-alive
            # client, whose next request would then fail with a reset.
            if completed_response:
                return  # Starlette's error layer answered through on_unhandled, then re-raised
            if started_response or self.on_unhandled is None:
                raise  # a response broken off midway: only closing the connection can tell the client
            response = await self.on_unhandled(Request(scope), exc)
            await response(scope, receive, send_with_id)
        finally:
            template = fast[0].path if fast is not None else getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe_http(scope["method"], template, status, time.perf_counter() - started)

    async def _dispatch(
        self,
        route: APIRoute,
        params: dict[str, str],
        scope: Scope,
        receive: Receive,
        send: Send,
        principal: Any,
    ) -> Response:
        """What Starlette's router and FastAPI's request_response would do for ``route``, minus the layers:
        the route's response, or its error rendered by the app's own handler."""
        assert self.fast_routes is not None
        assert self.render_error is not None
        scope["endpoint"] = route.endpoint
        scope["path_params"] = params
        request = Request(scope, receive, send)
        try:
            return await self.fast_routes.call(route, params, request, principal)
        except ApiError as error:
            return self.render_error(request, error)


async def _send_whole(response: Response, request_id: str, extra: dict[str, str] | None, send: Send) -> None:
    headers = _with_context_headers(response.raw_headers, request_id, extra)
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


def _is_whole(response: Response) -> bool:
    """A response whose body is all in ``body`` and that has nothing to run after it is sent."""
    return type(response).__call__ is Response.__call__ and response.background is None
