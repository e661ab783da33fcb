"""The fast lane: the hottest requests (a submit, a polled status read) called without FastAPI's layers, and
a status read answered from what memory already holds.

How a request travels it (``context.RequestContext`` asks ``FastRoutes.match`` first, for every request):
1. ``FastRoutes.match``: is it a route a surface declared fast (``Surface.fast_endpoints``)? If not, the
   request goes through the whole FastAPI stack as usual.
2. ``principal_now``: the caller's principal when the access use case already holds it for this key and
   its plan has no rate limit to count (no I/O); otherwise the route's own ``authenticated`` dependency
   runs, which gives every refusal.
3. The route's answer-now companion (``Surface.answers_now``, built by ``status_answer_now``): the
   prediction as the store remembers it, provably current, rendered to bytes reused while the store hands
   out the same object (``RenderedBodies``, rendered.py). A polled status read is a few dictionary lookups: no
   Request, no coroutine chain, no Response round trip through the ASGI layers.
4. Whatever memory cannot answer, the route's endpoint answers (``FastRoutes.call``), so that every refusal
   still has one source; its ApiError is rendered by the app's own handler.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fastapi.routing import APIRoute
from starlette.convertors import StringConvertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from ..core.domain import Prediction, Principal
from .auth import authenticated, key_in
from .state import usecases_in

# A route's answer when it needs no I/O: (path params, scope, principal) -> a Response, or None when the
# route must run.
AnswerNow = Callable[[dict[str, str], Scope, Principal], Response | None]


def principal_now(scope: Scope) -> Principal | None:
    """What ``authenticated`` would answer, when that needs no I/O: a key header whose principal the
    access use case already holds, on a plan without rate limits. None means "call ``authenticated``",
    which gives every refusal and serves the console's cookie."""
    key = key_in(scope["headers"])
    return None if key is None else usecases_in(scope).access.principal_now(key)


def status_answer_now(render: Callable[[Prediction, Scope], Response]) -> AnswerNow:
    """A status route's answer-now companion: ``render`` of the prediction its path names when the store
    remembers it for the caller, else None (the route itself then answers)."""

    def answer_now(params: dict[str, str], scope: Scope, principal: Principal) -> Response | None:
        prediction = usecases_in(scope).predictions.prediction_now(principal, params["prediction_id"])
        return None if prediction is None else render(prediction, scope)

    return answer_now


class RenderedJSON(Response):
    """A 200 answer whose JSON is already bytes: the headers are built directly (no header mapping)."""

    media_type = "application/json"

    def __init__(self, body: bytes) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [
            (b"content-length", str(len(body)).encode("latin-1")),
            (b"content-type", b"application/json"),
        ]


class FastRoutes:
    """Routes called straight from ``RequestContext`` instead of through FastAPI's router, request_response
    wrapper and dependency solver (together about 0.25 ms of CPU per request, more than the rest of a status
    read).

    Only endpoints of the shape ``(<str path params>, request, principal=Depends(authenticated))`` that
    return a Response qualify; they keep their FastAPI registration for the OpenAPI document and behave
    the same: the principal comes from the same ``authenticated`` dependency, an ApiError is rendered by
    the app's own handler, anything else goes to the unhandled-error path of ``RequestContext``.
    """

    def __init__(
        self, routes: Iterable[APIRoute], answers_now: dict[Callable[..., Any], AnswerNow] | None = None
    ) -> None:
        self._by_method: dict[str, list[tuple[APIRoute, AnswerNow | None]]] = {}
        routes = list(routes)
        answers_now = answers_now or {}
        unknown = set(answers_now) - {r.endpoint for r in routes}
        if unknown:
            raise ValueError(f"answers now for endpoints that are not fast routes: {unknown}")
        for route in routes:
            if not all(isinstance(c, StringConvertor) for c in route.param_convertors.values()):
                raise ValueError(f"{route.path}: only plain string path parameters are dispatched directly")
            for method in route.methods or ():
                self._by_method.setdefault(method, []).append((route, answers_now.get(route.endpoint)))

    def match(self, scope: Scope) -> tuple[APIRoute, dict[str, str], AnswerNow | None] | None:
        if scope.get("root_path"):
            return None  # mounted under a prefix: let the router resolve paths
        path = scope["path"]
        for route, now in self._by_method.get(scope["method"], ()):
            found = route.path_regex.match(path)
            if found is not None:
                return route, found.groupdict(), now
        return None

    @staticmethod
    def principal_now(scope: Scope) -> Principal | None:
        """The principal ``authenticated`` would give, when that needs no I/O and no rate check; else None."""
        return principal_now(scope)

    @staticmethod
    async def call(
        route: APIRoute, params: dict[str, str], request: Request, principal: Principal | None
    ) -> Response:
        """``route``'s endpoint, for ``principal`` or (None) whoever ``authenticated`` finds."""
        if principal is None:
            principal = await authenticated(request)
        response = await route.endpoint(**params, request=request, principal=principal)
        assert isinstance(response, Response)
        return response
