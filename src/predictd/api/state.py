"""Reaching the running deployment, and its use cases, from a request."""

from __future__ import annotations

from typing import Protocol, TypeVar, cast

from starlette.requests import Request
from starlette.types import Scope

from ..deploy.embedded import Deployment
from ..usecases import UseCases

R = TypeVar("R")


class _Serving(Protocol):
    deployment: Deployment  # api.app.PredictdApp, which imports this module


def deployment_in(scope: Scope) -> Deployment:
    return cast(_Serving, scope["app"]).deployment


def deployment_of(request: Request) -> Deployment:
    return deployment_in(request.scope)


def usecases_of(request: Request) -> UseCases:
    return deployment_of(request).usecases


def usecases_in(scope: Scope) -> UseCases:
    """``usecases_of`` for code that has the ASGI scope and no Request."""
    return deployment_in(scope).usecases


def request_id_of(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))
