"""Serving stored output images under their unguessable, expiring URLs (no API key: like a CDN link)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from ..errors import ApiError, ErrorId
from ..media import outputs
from .state import deployment_of

router = APIRouter(tags=["outputs"])

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg"}


def public_output(output: Any, base_url: str) -> Any:
    return outputs.to_public(output, base_url)


@router.get(
    "/v1/outputs/{name}",
    summary="An output image",
    include_in_schema=True,
    responses={
        200: {"content": {"image/png": {}, "image/jpeg": {}}},
        # The Skytells surface's error body (NativeErrorBody in native.py, which imports this module).
        404: {
            "description": "NOT_FOUND: no such output, or it has expired",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NativeErrorBody"}}},
        },
    },
)
async def get_output(name: str, request: Request) -> Response:
    path = deployment_of(request).outputs.path_if_live(name)
    if path is None:
        raise ApiError(ErrorId.NOT_FOUND, "No such output, or it has expired.")
    return FileResponse(
        path,
        media_type=MEDIA_TYPES[path.suffix.lstrip(".")],
        headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
