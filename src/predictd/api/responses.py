"""JSON responses (orjson) and the retry headers every error answer carries."""

from __future__ import annotations

import math
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from ..errors import ApiError


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


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
