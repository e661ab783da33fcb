"""The app factory: routes, error handlers, health and metrics, and the deployment's lifecycle."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .._version import __version__
from ..config.settings import Settings
from ..errors import ApiError, ErrorId
from ..telemetry.metrics import Metrics
from . import account, admin, console, outputs, surfaces
from .context import RequestContext
from .rendered import RenderedBodies
from .responses import JSONResponse
from .state import Deployment, StartDeployment, deployment_of, request_id_of

log = structlog.get_logger("predictd.api")


def _render(request: Request, error: ApiError) -> Response:
    return surfaces.error_response(request.url.path, error, request_id_of(request))


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _render(request, exc)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code in (404, 405):
        error = ApiError(ErrorId.NOT_FOUND, f"No route {request.method} {request.url.path}.")
    else:
        error = ApiError(ErrorId.INVALID_INPUT, str(exc.detail))
    return _render(request, error)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return _render(request, ApiError(ErrorId.INVALID_PARAMETER, f"{where}: {first.get('msg')}"))


# Contention clears within moments (another writer's transaction ends): when a client may try again.
BUSY_RETRY_AFTER_S = 1


async def _on_unhandled(request: Request, exc: Exception) -> Response:
    request_id = request_id_of(request)
    busy = _contention(request, exc)
    if busy is not None:
        # The reason names the engine and the setting to look at; the client is told only to come back.
        log.warning("database busy; answered 503", request_id=request_id, path=request.url.path, reason=busy)
        return _render(
            request,
            ApiError(
                ErrorId.SERVICE_UNAVAILABLE,
                f"The database is busy with other writes; retry in {BUSY_RETRY_AFTER_S} s "
                f"(quote request id {request_id} if it lasts).",
                retry_after=BUSY_RETRY_AFTER_S,
            ),
        )
    if isinstance(exc, ClientDisconnect):
        # The client left while its body was read, or the connection cut it off (a body too slow, see
        # connection/protocol.py): nothing failed here, and the answer below goes nowhere.
        log.info("client left before its request was read", request_id=request_id, path=request.url.path)
    else:
        log.error("unhandled error", request_id=request_id, path=request.url.path, exc_info=exc)
    response = _render(
        request,
        ApiError(ErrorId.INTERNAL_ERROR, f"An unexpected error occurred; quote request id {request_id}."),
    )
    # Starlette's error layer answers a routed request's unhandled errors before RequestContext sees them.
    response.headers["x-request-id"] = request_id
    return response


def _contention(request: Request, exc: Exception) -> str | None:
    deployment = getattr(request.scope.get("app"), "deployment", None)
    return None if deployment is None else deployment.contention(exc)


class PredictdApp(FastAPI):
    """FastAPI with ``RequestContext`` outermost, outside even Starlette's error middleware, so that the hot
    routes it dispatches directly skip every layer of the stack (about 10 us of a status read), not only
    the router. Every other request goes on through the whole stack as usual."""

    # Set by the lifespan; read through ``state.deployment_of`` (a plain attribute: Starlette's ``app.state``
    # answers through __getattr__, about 3 us per read, twice or more per request).
    deployment: Deployment

    def __init__(
        self, context: Callable[[ASGIApp], RequestContext], status_bodies: RenderedBodies, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.context = context(self._whole_stack)
        self.status_bodies = status_bodies

    async def _whole_stack(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self  # what Starlette sets on the way in, which the direct routes do not pass
        await self.context(scope, receive, send)


def create_app(settings: Settings, start: StartDeployment) -> FastAPI:
    """The app of one server; ``start`` assembles the deployment it runs on (deploy.start_deployment)."""
    metrics = Metrics()
    status_bodies = RenderedBodies(settings.cache.status_bytes)
    metrics.watch_cache("status_bodies", lambda: status_bodies.held_bytes)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        deployment = await start(settings, metrics, surfaces.WEBHOOK_RENDERERS)
        assert isinstance(app, PredictdApp)
        app.deployment = deployment
        log.info("predictd ready", models=[m.slug for m in deployment.usecases.models.list() if m.available])
        try:
            yield
        finally:
            await deployment.close()

    app = PredictdApp(
        lambda whole_stack: RequestContext(
            whole_stack,
            max_body_bytes=settings.max_body_bytes,
            metrics=metrics,
            on_unhandled=_on_unhandled,
            fast_routes=surfaces.fast_routes(),
            render_error=_render,
        ),
        status_bodies,
        title="predictd",
        version=__version__,
        summary="Self-hostable prediction API, wire-compatible with the Skytells and FASHN APIs.",
        lifespan=lifespan,
        redoc_url=None,
        # predictd has its own metrics and logs; FastAPI's OpenTelemetry hooks would otherwise look up the
        # global providers on every request (and trace every dependency) for nothing.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    for surface in surfaces.SURFACES:
        app.include_router(surface.router)
    app.include_router(outputs.router)
    app.include_router(account.router)
    app.include_router(admin.router)
    app.include_router(console.router)
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(Exception, _on_unhandled)

    @app.get("/health", tags=["operations"], summary="Liveness and model availability")
    async def health(request: Request) -> JSONResponse:
        deployment = deployment_of(request)
        models = deployment.usecases.models.list()
        body: dict[str, object] = {
            "status": "ok",
            "version": __version__,
            "mode": "embedded" if deployment.live_workers is None else "scaled-out",
            "models": {m.slug: "available" if m.available else "unavailable" for m in models},
        }
        if deployment.live_workers is not None:
            body["workers"] = deployment.live_workers()
        return JSONResponse(body)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
