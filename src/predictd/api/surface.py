"""An API surface as a declared thing: its routes, its error bodies, its status vocabulary, its webhook
payloads and its fast-lane routes, registered once (see ``surfaces.py``). A third wire-compatible API is
one more ``Surface``, not edits across the app."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.responses import Response

from ..core.domain import Status
from ..errors import ApiError
from ..webhooks import Renderer
from .fast import AnswerNow


@dataclass(frozen=True)
class Surface:
    name: str  # as webhook targets record it: the payloads of a prediction are rendered by its surface
    router: APIRouter
    statuses: Mapping[Status, str]  # how this surface names each internal state
    error_response: Callable[[ApiError, str], Response]  # an error's answer, given the request's id
    webhook_body: Renderer
    # The paths whose errors this surface renders (a 404 for an unknown path included); None: every path
    # that no other surface claims.
    claims: Callable[[str], bool] | None = None
    fast_endpoints: tuple[Callable[..., Any], ...] = ()  # dispatched by the fast lane (see fast.py)
    answers_now: Mapping[Callable[..., Any], AnswerNow] = field(default_factory=dict)

    def fast_routes(self) -> list[APIRoute]:
        routes = [
            r for r in self.router.routes if isinstance(r, APIRoute) and r.endpoint in self.fast_endpoints
        ]
        # One endpoint may serve several paths (an alias), each its own route.
        missing = set(self.fast_endpoints) - {r.endpoint for r in routes}
        assert not missing, f"{self.name}: a fast endpoint has no route"
        return routes
