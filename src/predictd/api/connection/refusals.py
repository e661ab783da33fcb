"""The answer the HTTP connection gives by itself, before or instead of the app: an error in the body of the
surface the request's path belongs to (the native one when the path is not known yet), then the connection
closes."""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus

from ...errors import ApiError
from .. import surfaces
from ..context import new_request_id


def refusal(error: ApiError, path: str, default_headers: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
    """The whole answer to write before closing the connection."""
    request_id = new_request_id()
    response = surfaces.error_response(path, error, request_id)
    status = response.status_code
    head = [b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode("ascii"))]
    headers = (
        *default_headers,
        *response.raw_headers,
        (b"x-request-id", request_id.encode("ascii")),
        (b"connection", b"close"),
    )
    head.extend(name + b": " + value + b"\r\n" for name, value in headers)
    return b"".join(head) + b"\r\n" + response.body
