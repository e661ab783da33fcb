"""JSON responses (orjson) and the retry headers every error answer carries."""

from __future__ import annotations

import math
from typing import Any

import orjson
from starlette.responses import Response

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
