"""The wire-compatible APIs this server speaks, registered in one place. Each declares its routes, error
bodies, status names, webhook payloads and fast-lane routes (see ``surface.py``); nothing else names one, so
a third surface is one more entry here."""

from __future__ import annotations

from starlette.responses import Response

from ..errors import ApiError
from ..webhooks import Renderer
from . import fashn, native
from .fast import FastRoutes
from .surface import Surface

SURFACES: tuple[Surface, ...] = (native.SURFACE, fashn.SURFACE)

WEBHOOK_RENDERERS: dict[str, Renderer] = {s.name: s.webhook_body for s in SURFACES}


def surface_for(path: str) -> Surface:
    """The surface that renders errors on ``path``: the one that claims it, else the one that claims the
    rest."""
    fallback = None
    for surface in SURFACES:
        if surface.claims is None:
            fallback = surface
        elif surface.claims(path):
            return surface
    assert fallback is not None, "one surface renders the errors of unclaimed paths"
    return fallback


def error_response(path: str, error: ApiError, request_id: str) -> Response:
    return surface_for(path).error_response(error, request_id)


def fast_routes() -> FastRoutes:
    return FastRoutes(
        [route for s in SURFACES for route in s.fast_routes()],
        answers_now={endpoint: now for s in SURFACES for endpoint, now in s.answers_now.items()},
    )
