"""Reaching the running deployment from a request, and answering a status read from what it holds in
memory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar, cast

from starlette.requests import Request
from starlette.types import Scope

from ..core.domain import Prediction, Principal
from ..deploy.embedded import Deployment
from ..usecases.service import Service

R = TypeVar("R")


class _Serving(Protocol):
    deployment: Deployment  # api.app.PredictdApp, which imports this module


def deployment_in(scope: Scope) -> Deployment:
    return cast(_Serving, scope["app"]).deployment


def deployment_of(request: Request) -> Deployment:
    return deployment_in(request.scope)


def service_of(request: Request) -> Service:
    return deployment_of(request).service


def service_in(scope: Scope) -> Service:
    """``service_of`` for code that has the ASGI scope and no Request."""
    return deployment_in(scope).service


def status_answer_now(
    render: Callable[[Prediction, Scope], R],
) -> Callable[[dict[str, str], Scope, Principal], R | None]:
    """A status route's answer-now companion (see context.FastRoutes): ``render`` of the prediction its path
    names when the service holds it in memory for the caller, else None (the route itself then answers)."""

    def answer_now(params: dict[str, str], scope: Scope, principal: Principal) -> R | None:
        prediction = service_in(scope).prediction_now(principal, params["prediction_id"])
        return None if prediction is None else render(prediction, scope)

    return answer_now


def request_id_of(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))
