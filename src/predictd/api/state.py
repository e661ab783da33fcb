"""What the HTTP layer runs on, and reaching it (its use cases first) from a request.

The composition root (deploy/) assembles a deployment and hands the app the function that starts one
(``create_app(settings, start)``): the HTTP layer never imports what it is built from.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

from starlette.requests import Request
from starlette.types import Scope

from ..config.settings import Settings
from ..media.outputs import LocalOutputs
from ..telemetry.metrics import Metrics
from ..usecases import UseCases
from ..webhooks import Renderer
from .rendered import RenderedBodies

if TYPE_CHECKING:  # only scaled-out deployments keep console sessions in Redis
    from redis.asyncio import Redis

    from ..core.redis_keys import RedisKeys

R = TypeVar("R")


class Deployment(Protocol):
    """A running deployment, whichever mode assembled it."""

    settings: Settings
    usecases: UseCases
    outputs: LocalOutputs
    live_workers: Callable[[], int] | None  # scaled out: `predictd worker`s announcing themselves
    redis: tuple[Redis, RedisKeys] | None  # scaled out: state shared by the API processes

    def contention(self, failure: BaseException) -> str | None:
        """What the database was busy with, when ``failure`` is contention (store/contention.py)."""
        ...

    async def close(self) -> None: ...


# Starts the deployment a server runs on: (settings, the app's metrics, each surface's webhook payloads).
StartDeployment = Callable[[Settings, Metrics, dict[str, Renderer]], Awaitable[Deployment]]


class _Serving(Protocol):
    # api.app.PredictdApp, which imports this module
    deployment: Deployment
    status_bodies: RenderedBodies


def deployment_in(scope: Scope) -> Deployment:
    return cast(_Serving, scope["app"]).deployment


def deployment_of(request: Request) -> Deployment:
    return deployment_in(request.scope)


def status_bodies_in(scope: Scope) -> RenderedBodies:
    """The app's rendered status bodies (one per app: its byte budget is the app's)."""
    return cast(_Serving, scope["app"]).status_bodies


def usecases_of(request: Request) -> UseCases:
    return deployment_of(request).usecases


def usecases_in(scope: Scope) -> UseCases:
    """``usecases_of`` for code that has the ASGI scope and no Request."""
    return deployment_in(scope).usecases


def request_id_of(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))
