"""Reaching the running deployment from a request."""

from __future__ import annotations

from typing import Protocol, cast

from starlette.requests import Request
from starlette.types import Scope

from ..assemble import Deployment
from ..service import Service


class _Serving(Protocol):
    deployment: Deployment  # api.app.PredictdApp, which imports this module


def deployment_of(request: Request) -> Deployment:
    return cast(_Serving, request.scope["app"]).deployment


def service_of(request: Request) -> Service:
    return deployment_of(request).service


def service_in(scope: Scope) -> Service:
    """``service_of`` for code that has the ASGI scope and no Request."""
    return cast(_Serving, scope["app"]).deployment.service


def request_id_of(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))
