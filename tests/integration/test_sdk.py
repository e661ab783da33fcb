"""The Python SDK (``predictd.Client`` / ``predictd.AsyncClient``) against a live predictd on 127.0.0.1.

Retries, idempotency keys and the stream endpoint are exercised through a REAL HTTP proxy on 127.0.0.1
(``FlakyProxy``) that forwards to the live server but can answer a scripted error first, drop a connection,
answer 404 for the stream route (as a server without it does) or serve the stream route itself.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest
import standardwebhooks

import predictd
from predictd.errors import API_ERRORS, ErrorId
from predictd.sdk import (
    ERROR_CLASSES,
    APIConnectionError,
    APIError,
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PredictionFailed,
    RateLimitError,
    error_from_response,
)
from predictd.sdk.webhooks import WebhookVerificationError, verify

from ..conftest import Server, free_port

TERMINAL = {"succeeded", "failed", "cancelled"}

# -- a real flaky HTTP server in front of the live predictd -----------------------------------------------

Scripted = tuple[int, dict[str, str], dict[str, Any]] | str  # (status, headers, JSON body) or "drop"


def native_error(error_id: ErrorId, message: str) -> dict[str, Any]:
    spec = API_ERRORS[error_id]
    return {
        "error_id": error_id.value,
        "message": message,
        "retryable": spec.retryable,
        "request_id": "req_proxy",
        "error": {
            "error_id": error_id.value,
            "message": message,
            "details": spec.meaning,
            "http_status": spec.http_status,
            "retryable": spec.retryable,
        },
    }


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    answered: int | str


@dataclass
class FlakyProxy:
    upstream: str
    create_script: list[Scripted] = field(default_factory=list)
    stream_mode: str = "forward"  # forward | missing (404 NOT_FOUND) | serve (SSE polled from upstream)
    seen: list[Seen] = field(default_factory=list)
    base_url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def creates(self) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST" and s.path == "/v1/predictions"]

    def record(self, handler: BaseHTTPRequestHandler, answered: int | str) -> None:
        headers = {k.lower(): v for k, v in handler.headers.items()}
        with self.lock:
            self.seen.append(Seen(handler.command, handler.path, headers, answered))

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        body = handler.rfile.read(length) if length else b""
        path = handler.path.split("?")[0]
        if handler.command == "POST" and path == "/v1/predictions":
            with self.lock:
                scripted = self.create_script.pop(0) if self.create_script else None
            if scripted is not None:
                self.answer_scripted(handler, scripted)
                return
        if handler.command == "GET" and path.endswith("/stream") and self.stream_mode != "forward":
            if self.stream_mode == "missing":
                error = native_error(ErrorId.NOT_FOUND, f"No route GET {path}.")
                self.answer_scripted(handler, (404, {"x-should-retry": "false"}, error))
            else:
                self.serve_stream(handler, path)
            return
        self.forward(handler, body)

    def answer_scripted(self, handler: BaseHTTPRequestHandler, scripted: Scripted) -> None:
        self.record(handler, scripted if isinstance(scripted, str) else scripted[0])
        if scripted == "drop":
            handler.close_connection = True
            handler.connection.shutdown(2)
            return
        assert not isinstance(scripted, str)
        status, headers, body = scripted
        payload = orjson.dumps(body)
        handler.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def forward(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in {"host", "content-length"}}
        with httpx.Client(base_url=self.upstream, timeout=60) as upstream:
            response = upstream.request(handler.command, handler.path, headers=headers, content=body)
        self.record(handler, response.status_code)
        handler.send_response(response.status_code)
        skip = {"content-length", "transfer-encoding", "connection", "content-encoding", "server", "date"}
        for name, value in response.headers.items():
            if name.lower() not in skip:
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(response.content)))
        handler.end_headers()
        handler.wfile.write(response.content)

    def serve_stream(self, handler: BaseHTTPRequestHandler, path: str) -> None:
        """The stream route as Server-Sent Events of the prediction's states, polled from upstream."""
        self.record(handler, 200)
        prediction_path = path.removesuffix("/stream")
        key = handler.headers.get("x-api-key", "")
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(b": connected\n\n")
        last_status = None
        with httpx.Client(base_url=self.upstream, headers={"x-api-key": key}, timeout=30) as upstream:
            for version in range(1000):
                state = upstream.get(prediction_path).json()
                if state["status"] != last_status:
                    last_status = state["status"]
                    name = "done" if state["status"] in TERMINAL else "status"
                    data = orjson.dumps(state).decode()
                    handler.wfile.write(f"id: {version}\nevent: {name}\ndata: {data}\n\n".encode())
                    handler.wfile.flush()
                if state["status"] in TERMINAL:
                    return
                time.sleep(0.05)


@pytest.fixture
def proxy(server: Server) -> Iterator[FlakyProxy]:
    flaky = FlakyProxy(server.base_url)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            flaky.handle(self)

        def do_POST(self) -> None:
            flaky.handle(self)

        def do_DELETE(self) -> None:
            flaky.handle(self)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    flaky.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield flaky
    httpd.shutdown()
    httpd.server_close()


# -- clients -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    return server.key()


@pytest.fixture(scope="module")
def client(server: Server, key: str) -> Iterator[Client]:
    with Client(key, base_url=server.base_url, poll_interval=0.05) as sdk:
        yield sdk


def account_predictions(server: Server, key: str) -> list[dict[str, Any]]:
    """The account's predictions as the server lists them (raw HTTP, not the SDK under test)."""
    with server.client(key) as raw:
        body = raw.get("/v1/predictions", params={"per_page": 50}).json()
    return list(body["data"])


def expect(
    cls: type[APIError], error_id: ErrorId, status: int, caught: pytest.ExceptionInfo[Any]
) -> APIError:
    error = caught.value
    assert type(error) is cls, repr(error)
    assert type(error) is ERROR_CLASSES[error_id.value]
    assert type(error).__name__ == "".join(p.capitalize() for p in error_id.value.split("_")) + (
        "" if error_id.value.endswith("ERROR") else "Error"
    )
    assert error.status == status == API_ERRORS[error_id].http_status
    assert error.error_id == error_id.value
    assert error.retryable is API_ERRORS[error_id].retryable
    assert error.message
    assert error.request_id is not None
    assert error.request_id == error.headers["x-request-id"]
    assert error.headers["x-should-retry"] == ("true" if error.retryable else "false")
    return error


# -- the lifecycle -----------------------------------------------------------------------------------------


def test_the_package_exports_the_clients_lazily() -> None:
    probe = "import sys, predictd; assert 'httpx' not in sys.modules and 'predictd.sdk' not in sys.modules"
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=30)
    assert predictd.Client is Client
    assert predictd.AsyncClient is AsyncClient
    assert predictd.PredictionFailed is PredictionFailed


def test_run_returns_the_succeeded_prediction(client: Client) -> None:
    prediction = client.run("echo", {"text": "héllo"})
    assert prediction["status"] == "succeeded"
    assert prediction["output"] == "héllo"
    assert prediction["model"] == "echo"
    assert client.predictions.get(prediction["id"])["output"] == "héllo"


def test_create_then_wait(client: Client) -> None:
    created = client.predictions.create("sleep", {"ms": 400})
    assert created["status"] in {"pending", "processing"}
    statuses: list[str] = []
    done = client.predictions.wait(created, timeout=30, on_update=lambda p: statuses.append(p["status"]))
    assert done["id"] == created["id"]
    assert done["status"] == "succeeded"
    assert done["output"] == "slept 400 ms"
    assert statuses[-1] == "succeeded"
    assert client.predictions.wait(created["id"])["status"] == "succeeded"  # by id, already terminal


def test_wait_times_out_without_losing_the_prediction(client: Client) -> None:
    created = client.predictions.create("sleep", {"ms": 5000})
    started = time.monotonic()
    with pytest.raises(predictd.sdk.PredictionTimeout) as caught:
        client.predictions.wait(created, timeout=0.5)
    assert time.monotonic() - started < 4
    assert caught.value.id == created["id"]
    assert caught.value.prediction["status"] in {"pending", "processing"}
    client.predictions.cancel(created)


def test_list_iterates_over_pages(server: Server) -> None:
    key = server.key()
    with Client(key, base_url=server.base_url) as sdk:
        created = [sdk.run("echo", {"text": f"item {n}"})["id"] for n in range(5)]
        first = sdk.predictions.list_page(per_page=2)
        assert (first.current_page, first.per_page, first.total, first.last_page) == (1, 2, 5, 3)
        assert len(first.data) == 2
        listed = [p["id"] for p in sdk.predictions.list(per_page=2)]
        assert listed == list(reversed(created))  # every prediction once, newest first, across 3 pages
        assert [p["id"] for p in sdk.predictions.list(per_page=2, model="sleep")] == []
        by_model = list(sdk.predictions.list(per_page=50, model="echo", since=datetime.now(UTC).date()))
        assert len(by_model) == 5


def test_cancel_and_not_cancellable(client: Client) -> None:
    created = client.predictions.create("sleep", {"ms": 10_000})
    cancelled = client.predictions.cancel(created["id"])
    assert cancelled["status"] == "cancelled"
    assert client.predictions.wait(created)["status"] == "cancelled"
    with pytest.raises(ConflictError) as caught:
        client.predictions.cancel(created)
    error = expect(
        predictd.sdk.PredictionNotCancellableError, ErrorId.PREDICTION_NOT_CANCELLABLE, 409, caught
    )
    assert isinstance(error, APIError)


def test_delete_removes_inputs_and_outputs(client: Client) -> None:
    prediction = client.run("echo", {"text": "secret"})
    deleted = client.predictions.delete(prediction)
    assert deleted["id"] == prediction["id"]
    assert deleted["data_removed"] is True
    again = client.predictions.get(prediction["id"])
    assert again["data_removed"] is True
    assert again["output"] != "secret"


def test_models(client: Client) -> None:
    slugs = {m["slug"] for m in client.models.list()}
    assert {"echo", "sleep", "thumbnail", "broken"} <= slugs
    with_schemas = client.models.list(fields=["input_schema", "output_schema"])
    assert all("input_schema" in m for m in with_schemas)
    echo = client.models.get("echo", fields=["input_schema"])
    assert echo["slug"] == "echo"
    assert echo["input_schema"]["required"] == ["text"]
    assert "output_schema" not in echo
    assert client.models.get("broken")["status"] == "unavailable"


# -- errors, each from a real cause --------------------------------------------------------------------------


def test_model_not_found(client: Client) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.run("nope", {})
    error = expect(predictd.sdk.ModelNotFoundError, ErrorId.MODEL_NOT_FOUND, 404, caught)
    assert "'nope'" in error.message
    with pytest.raises(predictd.sdk.ModelNotFoundError):
        client.models.get("nope")


def test_invalid_input(client: Client) -> None:
    with pytest.raises(BadRequestError) as caught:
        client.predictions.create("sleep", {"ms": -5})
    error = expect(predictd.sdk.InvalidInputError, ErrorId.INVALID_INPUT, 400, caught)
    assert "input.ms" in error.message


def test_unauthorized(server: Server) -> None:
    with (
        Client("pd_not_a_key", base_url=server.base_url) as sdk,
        pytest.raises(AuthenticationError) as caught,
    ):
        sdk.predictions.get("0" * 28)
    expect(predictd.sdk.UnauthorizedError, ErrorId.UNAUTHORIZED, 401, caught)


def test_prediction_not_found(client: Client) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.predictions.get("0" * 28)
    expect(predictd.sdk.PredictionNotFoundError, ErrorId.PREDICTION_NOT_FOUND, 404, caught)


def test_model_unavailable(client: Client) -> None:
    with pytest.raises(InternalServerError) as caught:
        client.with_options(max_retries=0).run("broken", {"text": "x"})
    # The broken model's setup fails on every start: the wire's MODEL_UNAVAILABLE, at 500, not retryable.
    error = caught.value
    assert type(error) is predictd.sdk.ModelUnavailableError
    assert (error.status, error.error_id, error.retryable) == (500, "MODEL_UNAVAILABLE", False)
    assert error.headers["x-should-retry"] == "false"
    assert "weights/broken.onnx not found" in error.message
    assert "retry-after" not in error.headers


def test_a_failed_prediction_raises_prediction_failed(client: Client) -> None:
    with pytest.raises(PredictionFailed) as caught:
        client.run("raises", {"kind": "pose"})
    failure = caught.value
    assert not isinstance(failure, APIError)
    assert failure.error_name == "PoseError"
    assert failure.error_id == "UNPROCESSABLE_ENTITY"
    assert "no person found" in failure.message
    assert failure.prediction["status"] == "failed"
    assert failure.prediction["id"] == failure.id
    assert "PoseError" in str(failure)


def test_fashn_error_bodies_parse_too(server: Server, key: str) -> None:
    with server.client(key) as raw:
        missing = raw.post("/v1/run", json={"model_name": "nope", "inputs": {}})
        unavailable = raw.post("/v1/run", json={"model_name": "broken", "inputs": {"text": "x"}})
    with server.client("pd_not_a_key") as anonymous:
        unauthorized = anonymous.get("/v1/status/" + "0" * 28)
    assert missing.json()["error"] == "NotFound"
    error = error_from_response(missing)
    assert type(error) is NotFoundError  # the FASHN name is shared by several catalog ids
    assert (error.status, error.error_id, error.fashn_name) == (404, "NotFound", "NotFound")
    assert "'nope'" in error.message
    assert error.request_id == missing.headers["x-request-id"]
    error = error_from_response(unauthorized)
    assert type(error) is AuthenticationError
    assert (error.status, error.error_id, error.retryable) == (401, "UnauthorizedAccess", False)
    error = error_from_response(unavailable)
    assert type(error) is InternalServerError
    # The broken model's setup fails on every start: the body says a retry cannot help.
    assert (error.status, error.error_id, error.retryable) == (500, "InternalServerError", False)
    # a FASHN name that maps to one catalog id gets that id's class
    limited = httpx.Response(
        429, json={"error": "RateLimitExceeded", "message": "slow down", "retryable": True, "request_id": "r"}
    )
    error = error_from_response(limited)
    assert type(error) is predictd.sdk.RateLimitExceededError
    assert isinstance(error, RateLimitError)
    assert (error.error_id, error.message, error.request_id) == ("RATE_LIMIT_EXCEEDED", "slow down", "r")


# -- the async client --------------------------------------------------------------------------------------


async def test_async_run_get_list_and_errors(server: Server) -> None:
    key = server.key()
    async with AsyncClient(key, base_url=server.base_url, poll_interval=0.05) as sdk:
        first = await sdk.run("echo", {"text": "a"})
        assert (first["status"], first["output"]) == ("succeeded", "a")
        assert (await sdk.predictions.get(first["id"]))["output"] == "a"
        created = await sdk.predictions.create("sleep", {"ms": 200})
        done = await sdk.predictions.wait(created, timeout=30)
        assert done["output"] == "slept 200 ms"
        third = await sdk.run("echo", {"text": "c"})
        listed = [p["id"] async for p in sdk.predictions.list(per_page=2)]
        assert listed == [third["id"], created["id"], first["id"]]
        assert {m["slug"] for m in await sdk.models.list()} >= {"echo", "sleep"}
        with pytest.raises(PredictionFailed) as failed:
            await sdk.run("raises", {"kind": "pose"})
        assert failed.value.error_name == "PoseError"
        with pytest.raises(predictd.sdk.ModelNotFoundError):
            await sdk.run("nope", {})
        with pytest.raises(predictd.sdk.PredictionNotFoundError):
            await sdk.predictions.get("0" * 28)
        cancelled = await sdk.predictions.cancel(await sdk.predictions.create("sleep", {"ms": 10_000}))
        assert cancelled["status"] == "cancelled"
        assert (await sdk.predictions.delete(first))["data_removed"] is True


# -- retries and idempotency through a flaky proxy --------------------------------------------------------


def test_retries_with_one_idempotency_key_make_one_prediction(server: Server, proxy: FlakyProxy) -> None:
    key = server.key()
    proxy.create_script = [
        (429, {"Retry-After": "1"}, native_error(ErrorId.RATE_LIMIT_EXCEEDED, "Too many requests.")),
        (503, {}, native_error(ErrorId.MODEL_UNAVAILABLE, "Try again.")),
    ]
    with Client(key, base_url=proxy.base_url) as sdk:
        started = time.monotonic()
        prediction = sdk.run("echo", {"text": "once"})
        elapsed = time.monotonic() - started
    assert prediction["output"] == "once"
    assert elapsed >= 1.0  # Retry-After: 1 was honoured
    attempts = proxy.creates()
    assert [a.answered for a in attempts] == [429, 503, 201]
    keys = {a.headers["idempotency-key"] for a in attempts}
    assert len(keys) == 1
    assert uuid.UUID(keys.pop()).version == 4
    listed = account_predictions(server, key)
    assert [p["id"] for p in listed] == [prediction["id"]]


def test_each_create_has_its_own_idempotency_key(server: Server, proxy: FlakyProxy) -> None:
    with Client(server.key(), base_url=proxy.base_url) as sdk:
        sdk.run("echo", {"text": "1"})
        sdk.predictions.create("echo", {"text": "2"})
        sdk.predictions.create("echo", {"text": "3"}, idempotency_key="mine-123")
    keys = [a.headers["idempotency-key"] for a in proxy.creates()]
    assert len(set(keys)) == 3
    assert keys[2] == "mine-123"


def test_no_retry_on_a_400(server: Server, proxy: FlakyProxy) -> None:
    with Client(server.key(), base_url=proxy.base_url) as sdk, pytest.raises(predictd.sdk.InvalidInputError):
        sdk.predictions.create("sleep", {"ms": -5})
    assert [a.answered for a in proxy.creates()] == [400]


def test_no_retry_when_the_server_says_so(server: Server, proxy: FlakyProxy) -> None:
    proxy.create_script = [
        (503, {"x-should-retry": "false"}, native_error(ErrorId.MODEL_UNAVAILABLE, "Do not retry.")),
    ]
    with Client(server.key(), base_url=proxy.base_url) as sdk, pytest.raises(InternalServerError) as caught:
        sdk.run("echo", {"text": "x"})
    assert caught.value.message == "Do not retry."
    assert [a.answered for a in proxy.creates()] == [503]


def test_retries_run_out(server: Server, proxy: FlakyProxy) -> None:
    key = server.key()
    proxy.create_script = [
        (502, {}, {"detail": "bad gateway"}),
        (504, {"retry-after-ms": "100"}, {"detail": "gateway timeout"}),
        (500, {}, native_error(ErrorId.INTERNAL_ERROR, "Boom.")),
    ]
    with (
        Client(key, base_url=proxy.base_url, max_retries=2) as sdk,
        pytest.raises(InternalServerError) as caught,
    ):
        sdk.run("echo", {"text": "x"})
    assert type(caught.value) is predictd.sdk.InternalError
    assert caught.value.status == 500
    assert [a.answered for a in proxy.creates()] == [502, 504, 500]
    assert len({a.headers["idempotency-key"] for a in proxy.creates()}) == 1
    assert account_predictions(server, key) == []


def test_a_dropped_connection_is_retried(server: Server, proxy: FlakyProxy) -> None:
    key = server.key()
    proxy.create_script = ["drop"]
    with Client(key, base_url=proxy.base_url) as sdk:
        prediction = sdk.run("echo", {"text": "after a drop"})
    assert prediction["output"] == "after a drop"
    attempts = proxy.creates()
    assert [a.answered for a in attempts] == ["drop", 201]
    assert attempts[0].headers["idempotency-key"] == attempts[1].headers["idempotency-key"]
    assert [p["id"] for p in account_predictions(server, key)] == [prediction["id"]]


def test_an_unreachable_server_is_a_connection_error() -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"
    with Client("pd_x", base_url=unreachable, max_retries=1) as sdk, pytest.raises(APIConnectionError):
        sdk.models.list()


async def test_async_retries_with_one_idempotency_key(server: Server, proxy: FlakyProxy) -> None:
    key = server.key()
    proxy.create_script = [
        (429, {"retry-after-ms": "200"}, native_error(ErrorId.RATE_LIMIT_EXCEEDED, "Too many.")),
        "drop",
    ]
    async with AsyncClient(key, base_url=proxy.base_url) as sdk:
        prediction = await sdk.run("echo", {"text": "async once"})
    assert prediction["output"] == "async once"
    attempts = proxy.creates()
    assert [a.answered for a in attempts] == [429, "drop", 201]
    assert len({a.headers["idempotency-key"] for a in attempts}) == 1
    assert [p["id"] for p in account_predictions(server, key)] == [prediction["id"]]


# -- waiting: the stream endpoint, or polling without it ----------------------------------------------------


def stream_requests(proxy: FlakyProxy) -> list[Seen]:
    return [s for s in proxy.seen if s.path.endswith("/stream")]


def test_wait_follows_the_stream_when_offered(server: Server, proxy: FlakyProxy, key: str) -> None:
    proxy.stream_mode = "serve"
    with Client(key, base_url=proxy.base_url, poll_interval=0.05) as sdk:
        created = sdk.predictions.create("sleep", {"ms": 500})
        statuses: list[str] = []
        done = sdk.predictions.wait(created, on_update=lambda p: statuses.append(p["status"]))
        assert done["status"] == "succeeded"
        assert statuses[-1] == "succeeded"
        gets = [s for s in proxy.seen if s.method == "GET" and s.path == f"/v1/predictions/{created['id']}"]
        assert len(stream_requests(proxy)) == 1
        assert len(gets) == 1  # one final read after the stream's last event: no polling
        events = list(sdk.predictions.stream(created["id"]))
    assert events[-1].event == "done"
    assert events[-1].prediction(created["id"]) is not None
    assert events[-1].json()["status"] == "succeeded"


def test_wait_polls_when_the_server_has_no_stream(server: Server, proxy: FlakyProxy, key: str) -> None:
    proxy.stream_mode = "missing"
    with Client(key, base_url=proxy.base_url, poll_interval=0.05) as sdk:
        created = sdk.predictions.create("sleep", {"ms": 500})
        assert sdk.predictions.wait(created, timeout=30)["output"] == "slept 500 ms"
        assert [s.answered for s in stream_requests(proxy)] == [404]
        gets = [s for s in proxy.seen if s.method == "GET" and s.path == f"/v1/predictions/{created['id']}"]
        assert len(gets) >= 2  # polled
        second = sdk.predictions.create("sleep", {"ms": 100})
        assert sdk.predictions.wait(second)["status"] == "succeeded"
        assert len(stream_requests(proxy)) == 1  # the missing route is remembered
        with pytest.raises(NotFoundError) as caught:
            next(iter(sdk.predictions.stream(second["id"])))
        assert caught.value.error_id == "NOT_FOUND"


async def test_async_wait_follows_the_stream(server: Server, proxy: FlakyProxy, key: str) -> None:
    proxy.stream_mode = "serve"
    async with AsyncClient(key, base_url=proxy.base_url) as sdk:
        created = await sdk.predictions.create("sleep", {"ms": 300})
        done = await sdk.predictions.wait(created)
        assert done["output"] == "slept 300 ms"
        events = [event async for event in sdk.predictions.stream(created)]
    assert events[-1].event == "done"
    assert len(stream_requests(proxy)) == 2


# -- webhook verification ----------------------------------------------------------------------------------


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def signed(secret: str, payload: bytes, at: datetime | None = None) -> dict[str, str]:
    moment = at or datetime.now(UTC)
    signature = standardwebhooks.Webhook(secret).sign("msg_1", moment, payload.decode())
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature,
    }


def test_webhook_verification_accepts_any_current_secret() -> None:
    old, new, unrelated = new_secret(), new_secret(), new_secret()
    payload = orjson.dumps({"id": "p1", "status": "succeeded", "output": "hello"})
    headers = signed(new, payload)
    assert verify(payload, headers, [old, new]) == {"id": "p1", "status": "succeeded", "output": "hello"}
    assert verify(payload, {k.title(): v for k, v in headers.items()}, [new])["id"] == "p1"
    assert verify(payload, signed(old, payload), [old, new])["id"] == "p1"
    with pytest.raises(WebhookVerificationError, match="did not verify"):
        verify(payload.replace(b"hello", b"HELLO"), headers, [old, new])
    with pytest.raises(WebhookVerificationError):
        verify(payload, headers, [old, unrelated])
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(payload, signed(new, payload, datetime.now(UTC) - timedelta(hours=1)), [new])
    with pytest.raises(WebhookVerificationError, match="Missing"):
        verify(payload, {}, [new])
    with pytest.raises(WebhookVerificationError):
        verify(payload, headers, [])
    assert issubclass(WebhookVerificationError, predictd.sdk.PredictdError)
