"""Reaching the running deployment from a request."""

from __future__ import annotations

from typing import cast

from starlette.requests import Request

from ..assemble import Deployment
from ..service import Service


def deployment_of(request: Request) -> Deployment:
    return cast(Deployment, request.app.state.deployment)


def service_of(request: Request) -> Service:
    return deployment_of(request).service


def request_id_of(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))
