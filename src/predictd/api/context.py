"""Pure ASGI middleware: a request id on every answer, a bound on request bodies, HTTP metrics, and the
direct dispatch of the hottest routes."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi.routing import APIRoute
from starlette.convertors import StringConvertor
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import ApiError, ErrorId
from ..metrics import Metrics

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def body_too_large(limit: int) -> ApiError:
    return ApiError(
        ErrorId.INFRASTRUCTURE_ERROR, f"The request body exceeds this deployment's {limit} byte limit."
    )


UnhandledHandler = Callable[[Request, Exception], Awaitable[Response]]
ErrorRenderer = Callable[[Request, ApiError], Response]
Authenticator = Callable[[Request], Awaitable[Any]]


class FastRoutes:
    """Routes called straight from here instead of through FastAPI's router, request_response wrapper and
    dependency solver (together about 0.25 ms of CPU per request, more than the rest of a status read).

    Only endpoints of the shape ``(<str path params>, request, principal=Depends(authenticated))`` that
    return a Response qualify; they keep their FastAPI registration for the OpenAPI document and behave
    the same: the principal comes from the same ``authenticated`` dependency, an ApiError is rendered by
    the app's own handler, anything else goes to the unhandled-error path below.
    """

    def __init__(self, routes: Iterable[APIRoute], authenticate: Authenticator) -> None:
        self._authenticate = authenticate
        self._by_method: dict[str, list[APIRoute]] = {}
        for route in routes:
            if not all(isinstance(c, StringConvertor) for c in route.param_convertors.values()):
                raise ValueError(f"{route.path}: only plain string path parameters are dispatched directly")
            for method in route.methods or ():
                self._by_method.setdefault(method, []).append(route)

    def match(self, scope: Scope) -> tuple[APIRoute, dict[str, str]] | None:
        if scope.get("root_path"):
            return None  # mounted under a prefix: let the router resolve paths
        for route in self._by_method.get(scope["method"], ()):
            found = route.path_regex.match(scope["path"])
            if found is not None:
                return route, found.groupdict()
        return None

    async def call(self, route: APIRoute, params: dict[str, str], request: Request) -> Response:
        principal = await self._authenticate(request)
        response = await route.endpoint(**params, request=request, principal=principal)
        assert isinstance(response, Response)
        return response


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
        incoming = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else f"req_{secrets.token_hex(16)}"
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        started_response = False
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
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                started_response = True
                status = message["status"]
                headers = MutableHeaders(scope=message)
                if "x-request-id" not in headers:
                    headers.append("x-request-id", request_id)
                for name, value in scope["state"].get("rate_headers", {}).items():
                    if name not in headers:
                        headers.append(name, value)
            await send(message)

        fast = self.fast_routes.match(scope) if self.fast_routes is not None else None
        try:
            if fast is None:
                await self.app(scope, bounded_receive, send_with_id)
            else:
                await self._dispatch(fast[0], fast[1], scope, bounded_receive, send_with_id)
        except Exception as exc:
            # Answered here rather than by Starlette's outermost layer, which re-raises after answering:
            # uvicorn would then log the traceback a second time (without the request id) and close the
            # connection under a keep-alive client, whose next request would fail with a reset.
            if started_response or self.on_unhandled is None:
                raise
            response = await self.on_unhandled(Request(scope), exc)
            await response(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.metrics.observe_http(scope["method"], template, status, time.perf_counter() - started)

    async def _dispatch(
        self, route: APIRoute, params: dict[str, str], scope: Scope, receive: Receive, send: Send
    ) -> None:
        """What Starlette's router and FastAPI's request_response would do for ``route``, minus the layers."""
        assert self.fast_routes is not None
        assert self.render_error is not None
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = params
        request = Request(scope, receive, send)
        try:
            response = await self.fast_routes.call(route, params, request)
        except ApiError as error:
            response = self.render_error(request, error)
        await response(scope, receive, send)
