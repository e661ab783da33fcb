"""The Skytells-compatible ("native") surface: ``/v1/predictions``, ``/v1/predict``, ``/v1/models``.

Error bodies carry the flat ``error_id`` / ``message`` the public page documents AND the nested ``error``
object the official SDK parses (it reads ``error.error_id``, ``error.message``, ``error.details``,
``error.http_status``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Scope

from ..core.domain import NATIVE_STATUS, ModelInfo, Prediction, Principal, iso_utc
from ..errors import API_ERRORS, ApiError, ErrorId, runtime_spec
from ..usecases.admission import SubmitRequest
from ..usecases.predictions import DEFAULT_PER_PAGE, MAX_PER_PAGE
from ..webhooks import native_target
from . import parsing
from .auth import authenticated, caller_region
from .fast import RenderedJSON, status_answer_now
from .listing import elided_list
from .outputs import public_output
from .responses import JSONResponse, base_url, base_url_of, retry_headers
from .state import deployment_of, request_id_of, status_bodies_in, usecases_of
from .surface import Surface

router = APIRouter(prefix="/v1", tags=["predictions (Skytells surface)"])

SUBMIT_FIELDS = frozenset({"model", "input", "await", "stream", "webhook", "use_case"})
MODEL_FIELDS = frozenset({"input_schema", "output_schema"})


# -- documentation models (the OpenAPI document; handlers parse bodies themselves to own every error) ------


class NativeError(BaseModel):
    error_id: str
    message: str
    details: str
    http_status: int
    retryable: bool


class NativeErrorBody(BaseModel):
    error_id: str = Field(examples=["MODEL_NOT_FOUND"])
    message: str = Field(examples=["The model with slug 'example' does not exist."])
    retryable: bool
    request_id: str
    error: NativeError


# Inline (no $defs), so that the request body schema stands alone in the document.
_WEBHOOK_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["url"],
            "properties": {
                "url": {"type": "string", "pattern": "^https?://", "maxLength": 2048},
                "events": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"enum": ["start", "output", "completed"]},
                    "default": ["completed"],
                },
            },
        },
        {"type": "null"},
    ],
    "description": "Called with the prediction as it changes (Standard Webhooks signatures).",
}


class SubmitBody(BaseModel):
    # Unknown top-level fields are refused with INVALID_INPUT, never dropped.
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Model slug.", examples=["echo"])
    input: dict[str, Any] = Field(description="Inputs, checked against the model's input_schema.")
    await_: bool = Field(
        default=False, alias="await", description="Block until the prediction ends (bounded by the server)."
    )
    stream: bool = False
    webhook: Annotated[dict[str, Any] | None, WithJsonSchema(_WEBHOOK_SCHEMA)] = None
    use_case: str | None = Field(default=None, description="One of the model's declared use cases.")


def _errors(*ids: ErrorId) -> dict[int | str, dict[str, Any]]:
    """The documented error answers of a route: ``ids`` plus what any authenticated route can answer."""
    out: dict[int | str, dict[str, Any]] = {}
    for error_id in (*ids, ErrorId.UNAUTHORIZED, ErrorId.RATE_LIMIT_EXCEEDED, ErrorId.INTERNAL_ERROR):
        spec = API_ERRORS[error_id]
        entry = out.setdefault(spec.http_status, {"model": NativeErrorBody, "description": ""})
        entry["description"] = " / ".join(filter(None, [entry["description"], spec.wire_error_id.value]))
    return out


# -- bodies ------------------------------------------------------------------------------------------------


def prediction_body(prediction: Prediction, base_url: str) -> dict[str, Any]:
    url = f"{base_url}v1/predictions/{prediction.id}"
    error_spec = runtime_spec(prediction.error_name) if prediction.error_name else None
    predict_time = prediction.predict_time
    if predict_time is None and prediction.terminal:
        predict_time = 0.0
    return {
        "id": prediction.id,
        "status": NATIVE_STATUS[prediction.status],
        "type": "inference",
        "model": prediction.model,
        "source": prediction.source,
        "input": prediction.input,
        "output": public_output(prediction.output, base_url),
        "error": prediction.error_message,
        "error_id": error_spec.error_id.value if error_spec else None,
        "error_name": prediction.error_name,
        "retryable": error_spec.retryable if error_spec else None,
        "data_removed": prediction.data_removed,
        "credits_used": prediction.credits_used if prediction.terminal else None,
        "metrics": {"predict_time": predict_time, "total_time": prediction.total_time},
        "created_at": iso_utc(prediction.created_at),
        "started_at": iso_utc(prediction.started_at),
        "completed_at": iso_utc(prediction.completed_at),
        "urls": {
            "get": url,
            "cancel": f"{url}/cancel",
            "stream": f"{url}/stream",
            "delete": f"{url}/delete",
        },
    }


def model_body(info: ModelInfo, fields: frozenset[str]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": info.slug,
        "slug": info.slug,
        "namespace": "predictd",
        "description": info.description,
        "privacy": "public",
        "status": "available" if info.available else "unavailable",
    }
    if not info.available:
        body["status_detail"] = info.status_detail
    if "input_schema" in fields:
        body["input_schema"] = info.input_schema
    if "output_schema" in fields:
        body["output_schema"] = info.output_schema
    return body


def error_body(error: ApiError, request_id: str) -> dict[str, Any]:
    spec = error.spec
    wire_id = spec.wire_error_id.value
    return {
        "error_id": wire_id,
        "message": error.message,
        "retryable": spec.retryable,
        "request_id": request_id,
        "error": {
            "error_id": wire_id,
            "message": error.message,
            "details": error.details or spec.meaning,
            "http_status": spec.http_status,
            "retryable": spec.retryable,
        },
    }


def error_response(error: ApiError, request_id: str) -> JSONResponse:
    return JSONResponse(
        error_body(error, request_id), status_code=error.spec.http_status, headers=retry_headers(error)
    )


# -- routes ------------------------------------------------------------------------------------------------


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {},
    }


_IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "1 to 255 visible ASCII characters; the same key and body within 24 h answer the same "
    "prediction (HTTP 200, Idempotent-Replayed: true).",
    "schema": {"type": "string"},
}
_SUBMIT_DOC = {
    "parameters": [_IDEMPOTENCY_HEADER],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": SubmitBody.model_json_schema(by_alias=True),
                "example": {"model": "echo", "input": {"text": "hello"}},
            }
        },
    },
}
# Everything a submit can be refused with, before a prediction exists.
_SUBMIT_ERRORS = _errors(
    ErrorId.INVALID_INPUT,
    ErrorId.UNSUPPORTED_MEDIA_TYPE,
    ErrorId.MISSING_REQUIRED_FIELD,
    ErrorId.INFRASTRUCTURE_ERROR,
    ErrorId.ACCOUNT_SUSPENDED,
    ErrorId.PAYMENT_REQUIRED,
    ErrorId.INSUFFICIENT_CREDITS,
    ErrorId.SECURITY_VIOLATION,
    ErrorId.MODEL_ACCESS_DENIED,
    ErrorId.MODEL_NOT_FOUND,
    ErrorId.UNPROCESSABLE_ENTITY,
    ErrorId.MODERATION_ERROR,
    ErrorId.CONTENT_POLICY_VIOLATION,
    ErrorId.USE_CASE_NOT_SUPPORTED,
    ErrorId.MODEL_NOT_AUTHORIZED,
    ErrorId.CONCURRENCY_LIMIT_EXCEEDED,
    ErrorId.LEGAL_REASONS,
    ErrorId.MODEL_UNAVAILABLE,
)
_SUBMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "An Idempotency-Key replay: the prediction the first request created."},
    **_SUBMIT_ERRORS,
}
_LIST_DOC = {
    "parameters": [
        _query(
            "page",
            "Page number, from 1.",
            {"type": "integer", "minimum": 1, "maximum": parsing.MAX_QUERY_INT},
        ),
        _query(
            "per_page", "Predictions per page, 1 to 50.", {"type": "integer", "minimum": 1, "maximum": 50}
        ),
        _query("model", "Only this model's predictions.", {"type": "string"}),
        *(
            _query(name, f"ISO 8601 date or date-time ({meaning}).", {"type": "string"})
            for name, meaning in (
                ("from", "created at or after"),
                ("to", "created at or before; a bare date covers the whole day"),
                ("since", "alias of from"),
                ("until", "alias of to"),
            )
        ),
    ]
}
_FIELDS_DOC = {
    "parameters": [
        _query(
            "fields",
            "Comma-separated extra fields: input_schema, output_schema.",
            {"type": "string", "example": "input_schema,output_schema"},
        )
    ]
}
_STREAM_DOC = {
    "parameters": [
        {
            "name": "Last-Event-ID",
            "in": "header",
            "required": False,
            "description": "Resume after this event id.",
            "schema": {"type": "string"},
        },
        _query("last_event_id", "Resume after this event id (for clients that cannot set headers).", {}),
    ]
}


@router.post(
    "/predictions",
    summary="Create a prediction",
    status_code=201,
    openapi_extra=_SUBMIT_DOC,
    responses=_SUBMIT_RESPONSES,
)
@router.post(
    "/predict",
    summary="Create a prediction (Skytells SDK path)",
    status_code=201,
    openapi_extra=_SUBMIT_DOC,
    responses=_SUBMIT_RESPONSES,
)
async def create_prediction(request: Request, principal: Principal = Depends(authenticated)) -> JSONResponse:
    parsing.require_json_content_type(request.headers.get("content-type"))
    body = parsing.parse_json_object(await request.body())
    parsing.require_fields(body, "model", "input")
    parsing.reject_unknown_fields(body, SUBMIT_FIELDS)
    model = parsing.expect_type(body, "model", str, "a string (the model slug)")
    parsing.expect_type(body, "input", dict, "a JSON object")
    wait = bool(parsing.expect_type(body, "await", bool, "true or false"))
    parsing.expect_type(body, "stream", bool, "true or false")
    base = base_url_of(request)
    webhook = native_target(body["webhook"], base) if body.get("webhook") is not None else None
    predictions = usecases_of(request).predictions
    submission = await predictions.submit(
        principal,
        SubmitRequest(
            model=model,
            input=body["input"],
            webhook=webhook,
            idempotency_key=request.headers.get("idempotency-key"),
            use_case=parsing.expect_type(body, "use_case", str, "a string"),
            region=caller_region(request),
        ),
    )
    prediction = submission.prediction
    if wait:
        prediction = await predictions.wait(prediction, deployment_of(request).settings.await_timeout_s)
    headers = {"Location": f"{base}v1/predictions/{prediction.id}"}
    if submission.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(
        prediction_body(prediction, base), status_code=200 if submission.replayed else 201, headers=headers
    )


@router.get(
    "/predictions",
    summary="List predictions",
    description="Newest first. An `input` or `output` too large for a list (`[lists]` settings: over 64 KiB "
    "of JSON, or past 2 MiB for the page's inputs and outputs together) reads `null` there, with "
    "`input_elided` / `output_elided` true; `urls.get` answers the prediction whole.",
    openapi_extra=_LIST_DOC,
    responses=_errors(ErrorId.INVALID_PARAMETER, ErrorId.INVALID_DATE_FORMAT, ErrorId.INVALID_DATE_RANGE),
)
async def list_predictions(request: Request, principal: Principal = Depends(authenticated)) -> JSONResponse:
    query = request.query_params
    page = parsing.positive_int("page", query.get("page"), 1)
    per_page = parsing.positive_int("per_page", query.get("per_page"), DEFAULT_PER_PAGE, MAX_PER_PAGE)
    start_name = "from" if "from" in query else "since"
    end_name = "to" if "to" in query else "until"
    since, until = parsing.date_range(
        start_name,
        parsing.iso_datetime(start_name, query.get(start_name)),
        end_name,
        parsing.iso_datetime(end_name, query.get(end_name), end_of_day=True),
    )
    model = query.get("model") or None
    result = await usecases_of(request).predictions.list(
        principal, page=page, per_page=per_page, model=model, since=since, until=until
    )
    base = base_url_of(request)
    lists = deployment_of(request).settings.lists
    return JSONResponse(
        {
            "data": elided_list(
                (prediction_body(p, base) for p in result.items), lists.field_max_bytes, lists.max_bytes
            ),
            "pagination": {
                "current_page": result.page,
                "per_page": result.per_page,
                "total": result.total,
                "last_page": result.last_page,
            },
        }
    )


@router.get(
    "/predictions/{prediction_id}",
    summary="Get a prediction",
    responses=_errors(ErrorId.PREDICTION_NOT_FOUND),
)
async def get_prediction(
    prediction_id: str, request: Request, principal: Principal = Depends(authenticated)
) -> RenderedJSON:
    prediction = await usecases_of(request).predictions.get(principal, prediction_id)
    return _status_response(prediction, request.scope)


def _status_response(prediction: Prediction, scope: Scope) -> RenderedJSON:
    return RenderedJSON(status_bodies_in(scope).json(prediction, base_url(scope), prediction_body))


@router.post(
    "/predictions/{prediction_id}/cancel",
    summary="Cancel a prediction",
    responses=_errors(ErrorId.PREDICTION_NOT_FOUND, ErrorId.PREDICTION_NOT_CANCELLABLE),
)
async def cancel_prediction(
    prediction_id: str, request: Request, principal: Principal = Depends(authenticated)
) -> JSONResponse:
    prediction = await usecases_of(request).predictions.cancel(principal, prediction_id)
    return JSONResponse(prediction_body(prediction, base_url_of(request)))


@router.delete(
    "/predictions/{prediction_id}/delete",
    summary="Delete a prediction's inputs and outputs",
    responses=_errors(ErrorId.PREDICTION_NOT_FOUND),
)
@router.delete(
    "/predictions/{prediction_id}",
    summary="Delete a prediction's inputs and outputs",
    responses=_errors(ErrorId.PREDICTION_NOT_FOUND),
)
async def delete_prediction(
    prediction_id: str, request: Request, principal: Principal = Depends(authenticated)
) -> JSONResponse:
    prediction = await usecases_of(request).predictions.delete(principal, prediction_id)
    return JSONResponse(prediction_body(prediction, base_url_of(request)))


@router.get(
    "/models", summary="List models", openapi_extra=_FIELDS_DOC, responses=_errors(ErrorId.INVALID_PARAMETER)
)
async def list_models(request: Request, _principal: Principal = Depends(authenticated)) -> JSONResponse:
    fields = parsing.csv_choice("fields", request.query_params.get("fields"), MODEL_FIELDS)
    return JSONResponse([model_body(info, fields) for info in usecases_of(request).models.list()])


@router.get(
    "/model/{slug}",
    summary="Get a model",
    openapi_extra=_FIELDS_DOC,
    responses=_errors(ErrorId.MODEL_NOT_FOUND, ErrorId.INVALID_PARAMETER),
)
@router.get(
    "/models/{slug}",
    summary="Get a model",
    openapi_extra=_FIELDS_DOC,
    responses=_errors(ErrorId.MODEL_NOT_FOUND, ErrorId.INVALID_PARAMETER),
)
async def get_model(
    slug: str, request: Request, _principal: Principal = Depends(authenticated)
) -> JSONResponse:
    fields = parsing.csv_choice("fields", request.query_params.get("fields"), MODEL_FIELDS)
    return JSONResponse(model_body(usecases_of(request).models.get(slug), fields))


# -- webhooks and streams -----------------------------------------------------------------------------------


@router.get(
    "/predictions/{prediction_id}/webhooks",
    summary="Webhook deliveries of a prediction, with every attempt",
    responses=_errors(ErrorId.PREDICTION_NOT_FOUND),
)
async def list_webhook_deliveries(
    prediction_id: str, request: Request, principal: Principal = Depends(authenticated)
) -> JSONResponse:
    deliveries = await usecases_of(request).account.deliveries(principal, prediction_id)
    return JSONResponse(
        {
            "data": [
                {
                    "id": d.id,
                    "event": d.event,
                    "url": d.url,
                    "status": d.status,
                    "attempts": d.attempts,
                    "next_attempt_at": iso_utc(d.next_attempt_at) if d.status == "pending" else None,
                    "created_at": iso_utc(d.created_at),
                    "delivered_at": iso_utc(d.delivered_at),
                    "last_status_code": d.last_status_code,
                    "last_error": d.last_error,
                    "history": [
                        {
                            "attempt": a.attempt,
                            "at": iso_utc(a.at),
                            "status_code": a.status_code,
                            "error": a.error,
                            "duration_ms": round(a.duration_ms, 1),
                        }
                        for a in d.history
                    ],
                }
                for d in deliveries
            ]
        }
    )


@router.get(
    "/webhooks/secret", summary="The account's webhook signing secrets (newest first)", responses=_errors()
)
async def webhook_secret(request: Request, principal: Principal = Depends(authenticated)) -> JSONResponse:
    secrets = await usecases_of(request).account.webhook_secrets(principal)
    return JSONResponse({"secret": secrets.valid[0], "valid_secrets": secrets.valid})


@router.post("/webhooks/secret/rotate", summary="Rotate the webhook signing secret", responses=_errors())
async def rotate_webhook_secret(
    request: Request, principal: Principal = Depends(authenticated)
) -> JSONResponse:
    secrets = await usecases_of(request).account.rotate_webhook_secret(principal)
    return JSONResponse(
        {
            "secret": secrets.valid[0],
            "valid_secrets": secrets.valid,
            "previous_valid_for_s": secrets.previous_valid_for_s,
        }
    )


KEEPALIVE_S = 15.0


def _frame(event_id: int, event: str, prediction: Prediction, base_url: str) -> bytes:
    data = orjson.dumps(prediction_body(prediction, base_url)).decode()
    return f"id: {event_id}\nevent: {event}\ndata: {data}\n\n".encode()


def _error_frame(error: ApiError, request_id: str) -> bytes:
    """The last event of a stream its caller may no longer read: the error body a request would get."""
    data = orjson.dumps(error_body(error, request_id)).decode()
    return f"event: error\ndata: {data}\n\n".encode()


def _frames(prediction: Prediction, base_url: str, after: int) -> list[tuple[int, bytes]]:
    """The events of the prediction's state, each with its own id, those after event id ``after`` only.

    Every version of a prediction has two ids: ``2 * version`` for its ``status`` (or, at the end, its
    ``output``) and ``2 * version + 1`` for ``done``, so a client that reconnects with the id of the
    ``output`` it read still gets the ``done`` after it."""
    first = 2 * prediction.version
    if not prediction.terminal:
        events = [(first, "status")]
    else:
        events = [(first, "output")] if prediction.output is not None else []
        events.append((first + 1, "done"))
    return [(i, _frame(i, event, prediction, base_url)) for i, event in events if i > after]


@router.get(
    "/predictions/{prediction_id}/stream",
    summary="Server-Sent Events of a prediction's state changes",
    openapi_extra=_STREAM_DOC,
    responses={
        200: {"content": {"text/event-stream": {}}},
        **_errors(ErrorId.PREDICTION_NOT_FOUND, ErrorId.INVALID_PARAMETER),
    },
)
async def stream_prediction(
    prediction_id: str, request: Request, principal: Principal = Depends(authenticated)
) -> StreamingResponse:
    """Every event has its own id, increasing; reconnecting with Last-Event-ID resumes after it. The
    caller's key is checked again before each event and keepalive: revoking it (or suspending its account)
    ends the stream with an ``error`` event."""
    usecases = usecases_of(request)
    predictions = usecases.predictions
    await predictions.get(principal, prediction_id)
    raw_last = request.headers.get("last-event-id") or request.query_params.get("last_event_id") or "-1"
    try:
        last_sent = int(raw_last)
    except ValueError:
        raise ApiError(
            ErrorId.INVALID_PARAMETER, f"Last-Event-ID must be an event id (got {raw_last!r})."
        ) from None
    base = base_url_of(request)

    async def events() -> AsyncIterator[bytes]:
        sent = last_sent
        async with aclosing(predictions.follow(principal, prediction_id, KEEPALIVE_S)) as changes:
            async for current in changes:
                try:
                    await usecases.access.recheck(principal)
                except ApiError as refused:
                    yield _error_frame(refused, request_id_of(request))
                    return
                if current is None:
                    if await request.is_disconnected():
                        return
                    yield b": keepalive\n\n"
                else:
                    for event_id, frame in _frames(current, base, sent):
                        yield frame
                        sent = event_id

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _webhook_body(prediction: Prediction, base_url: str, event: str) -> dict[str, Any]:
    return {**prediction_body(prediction, base_url), "event": event}


SURFACE = Surface(
    name="native",
    router=router,
    statuses=NATIVE_STATUS,
    error_response=error_response,
    webhook_body=_webhook_body,
    claims=None,  # the errors of every path no other surface claims
    fast_endpoints=(create_prediction, get_prediction),
    answers_now={get_prediction: status_answer_now(_status_response)},
)
