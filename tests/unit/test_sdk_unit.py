"""The SDK's pure parts: exception classes generated from the catalog, error bodies of both surfaces,
the retry policy, the SSE decoder, and the CLI's input parsing. No I/O."""

from __future__ import annotations

import email.utils
import time
from pathlib import Path

import httpx
import pytest

import predictd.sdk
from predictd.cli.client import is_image_ref, parse_input
from predictd.errors import API_ERRORS, FASHN_STATUS, ErrorId
from predictd.sdk import (
    ERROR_CLASSES,
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    PredictdError,
    PredictionFailed,
    RateLimitError,
    UnprocessableEntityError,
    error_from_response,
)
from predictd.sdk._base import (
    INITIAL_RETRY_DELAY,
    MAX_RETRY_DELAY,
    ServerSentEvent,
    SSEDecoder,
    normalize_base_url,
    retry_after_seconds,
    retry_delay,
    should_retry,
)
from predictd.sdk.errors import class_name, family_for

FAMILY = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    500: InternalServerError,
    503: InternalServerError,
}


# -- generated classes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("error_id", list(ErrorId))
def test_every_catalog_error_has_its_class(error_id: ErrorId) -> None:
    spec = API_ERRORS[error_id]
    cls = ERROR_CLASSES[error_id.value]
    assert issubclass(cls, APIError)
    assert issubclass(cls, FAMILY.get(spec.http_status, APIError))
    assert cls.__name__ == class_name(error_id.value)
    assert getattr(predictd.sdk, cls.__name__) is cls
    assert getattr(predictd.sdk.errors, cls.__name__) is cls
    if cls is not family_for(spec.http_status):
        assert cls.catalog_id == error_id.value
        assert spec.meaning in (cls.__doc__ or "")


def test_class_names() -> None:
    assert class_name("MODEL_NOT_FOUND") == "ModelNotFoundError"
    assert class_name("INTERNAL_ERROR") == "InternalError"
    assert ERROR_CLASSES["MODEL_NOT_FOUND"].__name__ == "ModelNotFoundError"
    assert ERROR_CLASSES["NOT_FOUND"] is NotFoundError  # the catalog's plain 404 is the family itself
    assert ERROR_CLASSES["UNPROCESSABLE_ENTITY"] is UnprocessableEntityError
    assert issubclass(ERROR_CLASSES["MODEL_UNAVAILABLE"], InternalServerError)
    assert not issubclass(PredictionFailed, APIError)
    assert issubclass(PredictionFailed, PredictdError)


# -- error bodies ------------------------------------------------------------------------------------------


def test_a_native_body_flat_or_nested() -> None:
    flat = httpx.Response(
        404,
        json={
            "error_id": "PREDICTION_NOT_FOUND",
            "message": "gone",
            "retryable": False,
            "request_id": "req_1",
        },
    )
    error = error_from_response(flat)
    assert type(error) is predictd.sdk.PredictionNotFoundError
    assert (error.status, error.error_id, error.message, error.request_id) == (
        404,
        "PREDICTION_NOT_FOUND",
        "gone",
        "req_1",
    )
    assert error.fashn_name == "NotFound"
    nested = httpx.Response(
        409,
        json={"error": {"error_id": "PREDICTION_NOT_CANCELLABLE", "message": "done", "details": "d"}},
        headers={"x-request-id": "req_2", "x-should-retry": "false"},
    )
    error = error_from_response(nested)
    assert type(error) is predictd.sdk.PredictionNotCancellableError
    assert (error.message, error.details, error.request_id, error.retryable) == ("done", "d", "req_2", False)
    assert error.headers["x-request-id"] == "req_2"


@pytest.mark.parametrize("name", sorted(FASHN_STATUS))
def test_a_fashn_body(name: str) -> None:
    status = FASHN_STATUS[name]
    error = error_from_response(httpx.Response(status, json={"error": name, "message": "m"}))
    assert isinstance(error, FAMILY.get(status, APIError))
    assert error.fashn_name == name
    assert error.message == "m"
    ids = [spec.error_id.value for spec in API_ERRORS.values() if spec.fashn_name == name]
    if len(ids) == 1:
        assert error.error_id == ids[0]
        assert type(error) is ERROR_CLASSES[ids[0]]
    else:
        assert error.error_id == name
        assert type(error) is family_for(status)


def test_a_body_that_is_not_ours() -> None:
    error = error_from_response(httpx.Response(502, text="<html>Bad Gateway</html>"))
    assert type(error) is InternalServerError
    assert (error.error_id, error.retryable) == ("HTTP_502", True)
    assert "Bad Gateway" in error.message
    error = error_from_response(httpx.Response(418, json={"detail": "teapot"}))
    assert type(error) is APIError
    assert (error.error_id, error.message, error.retryable) == ("HTTP_418", "teapot", False)


# -- retries -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "retry"),
    [
        (429, {}, True),
        (500, {}, True),
        (502, {}, True),
        (503, {}, True),
        (504, {}, True),
        (503, {"x-should-retry": "false"}, False),
        (429, {"x-should-retry": "false"}, False),
        (400, {}, False),
        (401, {}, False),
        (404, {}, False),
        (409, {"x-should-retry": "true"}, False),
        (422, {"x-should-retry": "true"}, False),
        (501, {}, False),
    ],
)
def test_what_is_retried(status: int, headers: dict[str, str], retry: bool) -> None:
    assert should_retry(httpx.Response(status, headers=headers)) is retry


def test_the_server_says_when() -> None:
    assert retry_after_seconds({"Retry-After": "2"}) == 2
    assert retry_after_seconds({"retry-after-ms": "250", "Retry-After": "1"}) == 0.25
    assert retry_after_seconds({"RateLimit-Reset": "3"}) == 3
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    now = time.time()
    in_ten = email.utils.formatdate(now + 10, usegmt=True)
    wanted = retry_after_seconds({"Retry-After": in_ten}, now=now)
    assert wanted is not None
    assert 9 <= wanted <= 10
    assert retry_delay(0, httpx.Response(429, headers={"Retry-After": "1"})) == 1
    assert retry_delay(3, httpx.Response(503, headers={"retry-after-ms": "40"})) == 0.04


def test_backoff_is_exponential_with_full_jitter() -> None:
    for attempt in range(8):
        cap = min(MAX_RETRY_DELAY, INITIAL_RETRY_DELAY * 2**attempt)
        delays = [retry_delay(attempt, None) for _ in range(200)]
        assert all(0 <= d <= cap for d in delays)
        assert max(delays) > cap / 2  # spread over the whole range
        assert min(delays) < cap / 2
    # an absurd Retry-After falls back to our own backoff
    assert retry_delay(0, httpx.Response(429, headers={"Retry-After": "86400"})) <= INITIAL_RETRY_DELAY


# -- SSE ---------------------------------------------------------------------------------------------------


def test_sse_decoding() -> None:
    decoder = SSEDecoder()
    lines = [
        ": keepalive",
        "",
        "id: 3",
        "event: status",
        'data: {"id": "p1",',
        'data:  "status": "processing"}',
        "retry: 1500",
        "",
        "data: plain",
        "",
        "event: done",
        'data: {"id": "p1", "status": "succeeded"}',
    ]
    events = [event for line in lines if (event := decoder.feed(line)) is not None]
    last = decoder.feed("")
    assert last is not None
    events.append(last)
    assert [e.event for e in events] == ["status", "message", "done"]
    assert events[0] == ServerSentEvent("status", '{"id": "p1",\n "status": "processing"}', "3", 1500)
    assert events[0].prediction("p1") == {"id": "p1", "status": "processing"}
    assert events[0].prediction("other") is None
    assert events[1].prediction("p1") is None
    assert events[1].id == "3"  # the last event id carries over
    assert events[2].ends_stream


# -- settings and the CLI's inputs ---------------------------------------------------------------------------


def test_base_urls() -> None:
    for url in ("http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/"):
        assert normalize_base_url(url) == "http://h:8000"
    with pytest.raises(ValueError, match="http"):
        normalize_base_url("h:8000")


def test_cli_inputs(tmp_path: Path) -> None:
    assert parse_input("ms=100") == ("ms", 100)
    assert parse_input("text=hello world") == ("text", "hello world")
    assert parse_input('tags=["a", 1]') == ("tags", ["a", 1])
    assert parse_input("flag=true") == ("flag", True)
    assert parse_input("expr=a=b") == ("expr", "a=b")
    assert parse_input("handle=@@me") == ("handle", "@me")
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\nrest")
    assert parse_input(f"image=@{photo}") == ("image", "data:image/png;base64,iVBORw0KGgpyZXN0")
    for bad in ("novalue", "=x"):
        with pytest.raises(Exception, match="key=value"):
            parse_input(bad)


def test_image_outputs_are_recognised() -> None:
    assert is_image_ref("data:image/png;base64,AAAA")
    assert is_image_ref("http://127.0.0.1:8000/v1/outputs/abc.png")
    assert is_image_ref("https://cdn.example/x/y.JPEG?sig=1")
    assert not is_image_ref("https://example.com/page")
    assert not is_image_ref("hello")
    assert not is_image_ref("data:text/plain;base64,AAAA")
