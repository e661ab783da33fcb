"""The FASHN-compatible surface: ``/v1/run``, ``/v1/status/{id}``, ``/v1/cancel/{id}``.

API-level errors answer ``{"error": "<Name>", "message": ...}`` with the FASHN page's status for that name
and no ``id`` / ``status``; a failed prediction answers 200 with ``error: {name, message}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.types import Scope

from ..core.domain import Prediction, Principal, Status
from ..errors import API_ERRORS, ApiError, ErrorId
from ..usecases.admission import SubmitRequest
from ..webhooks import fashn_target
from . import parsing
from .auth import authenticated, caller_region
from .fast import status_answer_now
from .outputs import public_output
from .responses import JSONResponse, base_url, base_url_of, retry_headers
from .state import usecases_of
from .surface import Surface

router = APIRouter(prefix="/v1", tags=["predictions (FASHN surface)"])

PATH_PREFIXES = ("/v1/run", "/v1/status/", "/v1/cancel/", "/v1/credits")
RUN_FIELDS = frozenset({"model_name", "inputs", "use_case"})
# The official SDK's subscribe() sends its own polling options in the body; they mean nothing to the server.
SDK_CLIENT_OPTIONS = frozenset({"pollInterval", "timeout", "maxRetries", "onEnqueued", "onQueueUpdate"})
CREDITS_HEADER = "x-fashn-credits-used"
STATUSES: dict[Status, str] = {
    Status.QUEUED: "in_queue",
    Status.PROCESSING: "processing",
    Status.SUCCEEDED: "completed",
    Status.FAILED: "failed",
    Status.CANCELLED: "canceled",
    Status.TIMED_OUT: "time_out",
}


class FashnErrorBody(BaseModel):
    error: str = Field(examples=["BadRequest"])
    message: str
    retryable: bool
    request_id: str


class RunBody(BaseModel):
    # Unknown top-level fields are refused with BadRequest, except the official SDK's polling options.
    model_config = ConfigDict(extra="forbid")

    model_name: str = Field(examples=["echo"])
    inputs: dict[str, Any]
    use_case: str | None = Field(default=None, description="One of the model's declared use cases.")
    pollInterval: Any = Field(default=None, description="Sent by the official SDK's subscribe(); ignored.")
    timeout: Any = Field(default=None, description="Sent by the official SDK's subscribe(); ignored.")
    maxRetries: Any = Field(default=None, description="Sent by the official SDK's subscribe(); ignored.")
    onEnqueued: Any = Field(default=None, description="Sent by the official SDK's subscribe(); ignored.")
    onQueueUpdate: Any = Field(default=None, description="Sent by the official SDK's subscribe(); ignored.")


def _errors(*ids: ErrorId) -> dict[int | str, dict[str, Any]]:
    """The documented error answers of a route: ``ids`` plus what any authenticated route can answer."""
    out: dict[int | str, dict[str, Any]] = {}
    for error_id in (*ids, ErrorId.UNAUTHORIZED, ErrorId.RATE_LIMIT_EXCEEDED, ErrorId.INTERNAL_ERROR):
        spec = API_ERRORS[error_id]
        entry = out.setdefault(spec.fashn_status, {"model": FashnErrorBody, "description": ""})
        if spec.fashn_name not in entry["description"]:
            entry["description"] = " / ".join(filter(None, [entry["description"], spec.fashn_name]))
    return out


def error_response(error: ApiError, request_id: str) -> JSONResponse:
    spec = error.spec
    return JSONResponse(
        {
            "error": spec.fashn_name,
            "message": error.message,
            "retryable": spec.retryable,
            "request_id": request_id,
        },
        status_code=spec.fashn_status,
        headers=retry_headers(error),
    )


def serves(path: str) -> bool:
    return path.startswith(PATH_PREFIXES)


def _as_list(output: Any) -> list[Any] | None:
    if output is None:
        return None
    return output if isinstance(output, list) else [output]


def status_body(prediction: Prediction, base_url: str) -> dict[str, Any]:
    error = None
    if prediction.error_name:
        error = {"name": prediction.error_name, "message": prediction.error_message or ""}
    return {
        "id": prediction.id,
        "status": STATUSES[prediction.status],
        "output": _as_list(public_output(prediction.output, base_url)),
        "error": error,
    }


def _credit_headers(prediction: Prediction) -> dict[str, str]:
    if not prediction.terminal:
        return {}
    used = prediction.credits_used if prediction.status is Status.SUCCEEDED else 0
    return {CREDITS_HEADER: f"{used:g}"}


@router.post(
    "/run",
    summary="Submit a prediction (FASHN SDK path)",
    openapi_extra={
        "parameters": [
            {
                "name": "webhook_url",
                "in": "query",
                "required": False,
                "description": "http(s) URL called with the status body when the prediction ends.",
                "schema": {"type": "string", "maxLength": 2048},
            },
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "The same key and body within 24 h answer the same prediction.",
                "schema": {"type": "string"},
            },
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": RunBody.model_json_schema(),
                    "example": {"model_name": "echo", "inputs": {"text": "hello"}},
                }
            },
        },
    },
    responses=_errors(
        ErrorId.INVALID_INPUT,
        ErrorId.MODEL_NOT_FOUND,
        ErrorId.CONTENT_POLICY_VIOLATION,
        ErrorId.CONCURRENCY_LIMIT_EXCEEDED,
        ErrorId.INSUFFICIENT_CREDITS,
        ErrorId.MODEL_UNAVAILABLE,
    ),
)
async def run(request: Request, principal: Principal = Depends(authenticated)) -> JSONResponse:
    parsing.require_json_content_type(request.headers.get("content-type"))
    body = parsing.parse_json_object(await request.body())
    parsing.require_fields(body, "model_name", "inputs")
    parsing.reject_unknown_fields(body, RUN_FIELDS | SDK_CLIENT_OPTIONS)
    model = parsing.expect_type(body, "model_name", str, "a string (the model name)")
    parsing.expect_type(body, "inputs", dict, "a JSON object")
    base = base_url_of(request)
    hook_url = request.query_params.get("webhook_url")
    submission = await usecases_of(request).predictions.submit(
        principal,
        SubmitRequest(
            model=model,
            input=body["inputs"],
            webhook=fashn_target(hook_url, base) if hook_url else None,
            idempotency_key=request.headers.get("idempotency-key"),
            use_case=parsing.expect_type(body, "use_case", str, "a string"),
            region=caller_region(request),
        ),
    )
    headers = {"Idempotent-Replayed": "true"} if submission.replayed else {}
    return JSONResponse({"id": submission.prediction.id, "error": None}, headers=headers)


@router.get(
    "/status/{prediction_id}",
    summary="Prediction status (FASHN SDK path)",
    responses=_errors(ErrorId.PREDICTION_NOT_FOUND),
)
async def status(
    prediction_id: str, request: Request, principal: Principal = Depends(authenticated)
) -> JSONResponse:
    prediction = await usecases_of(request).predictions.get(principal, prediction_id)
    return _status_response(prediction, request.scope)


def _status_response(prediction: Prediction, scope: Scope) -> JSONResponse:
    return JSONResponse(status_body(prediction, base_url(scope)), headers=_credit_headers(prediction))


@router.post(
    "/cancel/{prediction_id}",
    summary="Cancel a prediction (FASHN path)",
    responses=_errors(ErrorId.PREDICTION_NOT_FOUND, ErrorId.PREDICTION_NOT_CANCELLABLE),
)
async def cancel(
    prediction_id: str, request: Request, principal: Principal = Depends(authenticated)
) -> JSONResponse:
    prediction = await usecases_of(request).predictions.cancel(principal, prediction_id)
    return JSONResponse(status_body(prediction, base_url_of(request)), headers=_credit_headers(prediction))


SURFACE = Surface(
    name="fashn",
    router=router,
    statuses=STATUSES,
    error_response=error_response,
    webhook_body=lambda prediction, base_url, event: status_body(prediction, base_url),
    claims=serves,
    fast_endpoints=(run, status),
    answers_now={status: status_answer_now(_status_response)},
)
