"""JSON responses (orjson) and the retry headers every error answer carries."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from ..core.bounded import put_bounded
from ..core.domain import Prediction
from ..errors import ApiError


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


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


class RenderedBodies:
    """The JSON of each prediction's latest rendering, reused while the store hands out the same
    ``Prediction`` object for it: the SQLite store keeps returning one object until the row changes, and a
    changed row is always a new object. Holding the object itself (compared with ``is``) makes the check
    exact. Polling clients read the same unchanged prediction many times over."""

    def __init__(self, render: Callable[[Prediction, str], dict[str, Any]], limit: int = 4096) -> None:
        self._render = render
        self._limit = limit
        self._bodies: dict[str, tuple[Prediction, str, bytes]] = {}

    def json(self, prediction: Prediction, base_url: str) -> bytes:
        found = self._bodies.get(prediction.id)
        if found is not None and found[0] is prediction and found[1] == base_url:
            return found[2]
        body = orjson.dumps(self._render(prediction, base_url), option=orjson.OPT_NON_STR_KEYS)
        put_bounded(self._bodies, prediction.id, (prediction, base_url, body), self._limit)
        return body


def retry_headers(error: ApiError) -> dict[str, str]:
    """Retry signalling beyond the anchors: generated clients retry every 409 / 429 / 5xx unless told."""
    headers = dict(error.headers)
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
        headers["retry-after-ms"] = str(max(1, math.ceil(error.retry_after * 1000)))
    headers["x-should-retry"] = "true" if error.spec.retryable else "false"
    return headers


# Host / root-path combinations seen -> the base URL Starlette builds for them (kept small: the Host header
# is the client's to choose).
_BASE_URLS: dict[tuple[Any, ...], str] = {}
_MAX_BASE_URLS = 256


def base_url_of(request: Request) -> str:
    return base_url(request.scope)


def base_url(scope: Scope) -> str:
    """``str(request.base_url)``, built once per distinct (scheme, Host header, server, root paths) instead
    of on every request (URL parsing and the Host header's validation are ~10 % of a status read)."""
    host = None
    for name, value in scope["headers"]:
        if name == b"host":
            host = value
            break
    key = (scope.get("scheme"), host, scope.get("server"), scope.get("root_path"), scope.get("app_root_path"))
    found = _BASE_URLS.get(key)
    if found is None:
        found = str(Request(scope).base_url)
        if len(_BASE_URLS) >= _MAX_BASE_URLS:
            _BASE_URLS.clear()
        _BASE_URLS[key] = found
    return found
