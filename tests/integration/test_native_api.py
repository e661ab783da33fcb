"""The Skytells surface over real HTTP against a live embedded server: every API-level error from its real
cause, the prediction lifecycle, cancel, delete, list, models, and failed predictions."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import struct
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from predictd.api.fashn import CREDITS_HEADER
from predictd.core import keys
from predictd.core.domain import AccountStatus
from predictd.errors import API_ERRORS, ErrorId
from predictd.store import Database

from ..conftest import (
    ABSENT_MODEL_FILE,
    FIXTURE_MODELS,
    ONE_SLEEP_SLOT_SENDING_AHEAD,
    ROOT,
    Server,
    revoke_key_of,
)

TERMINAL = {"succeeded", "failed", "cancelled"}


def assert_error(response: httpx.Response, error_id: ErrorId, *fragments: str) -> dict[str, Any]:
    """The documented error: the right status, flat and nested ids, retry signalling, no traceback."""
    spec = API_ERRORS[error_id]
    assert response.status_code == spec.http_status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error_id"] == spec.wire_error_id.value
    assert body["error"]["error_id"] == spec.wire_error_id.value
    assert body["error"]["http_status"] == spec.http_status
    assert body["message"] == body["error"]["message"]
    assert body["message"]
    assert body["retryable"] is spec.retryable
    assert response.headers["x-should-retry"] == ("true" if spec.retryable else "false")
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    assert "id" not in body
    assert "status" not in body
    for fragment in fragments:
        assert fragment in body["message"], body["message"]
    return body


FAILED_INPUTS_TTL_S = 2.0
RAISES_TOML = f"""
[[models]]
slug = "raises"
ref = "{FIXTURE_MODELS}:Raises"
"""


def submit(client: httpx.Client, model: str, inputs: dict[str, Any], wait: bool = False) -> dict[str, Any]:
    response = client.post("/v1/predictions", json={"model": model, "input": inputs, "await": wait})
    assert response.status_code == 201, response.text
    return dict(response.json())


def wait_for(
    client: httpx.Client, prediction_id: str, statuses: set[str], timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/v1/predictions/{prediction_id}").json()
        if body["status"] in statuses:
            return dict(body)
        time.sleep(0.02)
    raise AssertionError(f"{prediction_id} never reached {statuses}")


@pytest.fixture(scope="module")
def client(server: Server) -> httpx.Client:
    return server.client(server.key())


# -- the happy path ----------------------------------------------------------------------------------------


def test_await_returns_the_finished_prediction(client: httpx.Client) -> None:
    body = submit(client, "echo", {"text": "héllo"}, wait=True)
    assert body["status"] == "succeeded"
    assert body["output"] == "héllo"
    assert body["error"] is None
    assert body["model"] == "echo"
    assert body["source"] == "api"
    assert body["data_removed"] is False
    assert body["metrics"]["predict_time"] >= 0
    assert body["metrics"]["total_time"] >= body["metrics"]["predict_time"]
    created = datetime.fromisoformat(body["created_at"])
    assert (
        created <= datetime.fromisoformat(body["started_at"]) <= datetime.fromisoformat(body["completed_at"])
    )
    assert body["urls"]["get"].endswith(f"/v1/predictions/{body['id']}")


def test_an_await_that_times_out_answers_the_state_reached_meanwhile(make_server: Any) -> None:
    """An await is woken only by the end of its prediction; when its wait runs out first, the answer still
    shows how far the prediction got (running, with its start time), not the state it was submitted in."""
    server = make_server("await_timeout_s = 0.5\n")
    with server.client(server.key()) as client:
        started = time.monotonic()
        body = submit(client, "sleep", {"ms": 3000}, wait=True)
        assert time.monotonic() - started < 2.5
        assert body["status"] == "processing"
        assert body["started_at"] is not None
        assert body["output"] is None
        done = wait_for(client, body["id"], TERMINAL)
    assert done["status"] == "succeeded"


def test_a_bare_number_output_reads_back_whole(make_server: Any) -> None:
    server = make_server(f'[[models]]\nslug = "measure"\nref = "{FIXTURE_MODELS}:Measure"\n')
    with server.client(server.key()) as client:
        done = submit(client, "measure", {"text": "x"}, wait=True)
        assert done["status"] == "succeeded", done
        listed = client.get("/v1/predictions")  # read back through another connection (SQLAlchemy)
        assert listed.status_code == 200, listed.text
        (item,) = [p for p in listed.json()["data"] if p["id"] == done["id"]]
        fetched = client.get(f"/v1/predictions/{done['id']}").json()
    for body in (done, item, fetched):
        assert body["output"] == 1.0
        assert isinstance(body["output"], float)


def test_predict_path_and_bearer_auth_are_equivalent(server: Server) -> None:
    key = server.key()
    with server.client() as anonymous:
        response = anonymous.post(
            "/v1/predict",
            json={"model": "echo", "input": {"text": "x"}, "await": True},
            headers={"Authorization": f"Bearer {key}"},
        )
    assert response.status_code == 201
    assert response.json()["output"] == "x"


def test_without_await_the_prediction_is_pending_then_succeeds(client: httpx.Client) -> None:
    body = submit(client, "sleep", {"ms": 300})
    assert body["status"] in {"pending", "processing"}
    assert body["output"] is None
    assert body["metrics"]["total_time"] is None
    done = wait_for(client, body["id"], TERMINAL)
    assert done["status"] == "succeeded"
    assert done["output"] == "slept 300 ms"
    assert done["metrics"]["predict_time"] >= 0.3


def test_defaults_from_the_schema_apply(client: httpx.Client) -> None:
    assert submit(client, "sleep", {}, wait=True)["output"] == "slept 100 ms"


# -- API-level errors, each from its real cause --------------------------------------------------------------


def test_invalid_input_names_the_field(client: httpx.Client) -> None:
    response = client.post("/v1/predictions", json={"model": "sleep", "input": {"ms": -5}})
    assert_error(response, ErrorId.INVALID_INPUT, "input.ms", "minimum of 0")
    response = client.post("/v1/predictions", json={"model": "echo", "input": {"txt": "x"}})
    assert_error(response, ErrorId.INVALID_INPUT, "unknown field(s) 'txt'", "input.text is required")


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [(b"{not json", "not valid JSON"), (b"[]", "JSON object"), (b"", "empty"), (b"\xff", "not valid JSON")],
)
def test_malformed_bodies_are_invalid_input(client: httpx.Client, raw: bytes, fragment: str) -> None:
    response = client.post("/v1/predictions", content=raw, headers={"content-type": "application/json"})
    assert_error(response, ErrorId.INVALID_INPUT, fragment)


def test_wrong_top_level_types_and_unknown_fields(client: httpx.Client) -> None:
    response = client.post("/v1/predictions", json={"model": 5, "input": {}})
    assert_error(response, ErrorId.INVALID_INPUT, "'model'")
    response = client.post("/v1/predictions", json={"model": "echo", "input": "text"})
    assert_error(response, ErrorId.INVALID_INPUT, "'input'")
    response = client.post("/v1/predictions", json={"model": "echo", "input": {"text": "x"}, "await": "yes"})
    assert_error(response, ErrorId.INVALID_INPUT, "'await'")
    response = client.post("/v1/predictions", json={"model": "echo", "input": {"text": "x"}, "priority": 1})
    assert_error(response, ErrorId.INVALID_INPUT, "'priority'")


def test_unsupported_media_type(client: httpx.Client) -> None:
    response = client.post(
        "/v1/predictions",
        content=b'{"model": "echo", "input": {"text": "x"}}',
        headers={"content-type": "text/plain"},
    )
    assert_error(response, ErrorId.UNSUPPORTED_MEDIA_TYPE, "text/plain")
    response = client.post("/v1/predict", data={"model": "echo"})
    assert_error(response, ErrorId.UNSUPPORTED_MEDIA_TYPE, "application/x-www-form-urlencoded")


def test_missing_required_fields(client: httpx.Client) -> None:
    assert_error(
        client.post("/v1/predictions", json={"input": {"text": "x"}}),
        ErrorId.MISSING_REQUIRED_FIELD,
        "'model'",
    )
    assert_error(
        client.post("/v1/predict", json={"model": "echo"}), ErrorId.MISSING_REQUIRED_FIELD, "'input'"
    )


@pytest.mark.parametrize(
    "query", ["per_page=0", "per_page=51", "page=0", "page=-2", "page=abc", "per_page=1.5"]
)
def test_invalid_parameters(client: httpx.Client, query: str) -> None:
    assert_error(client.get(f"/v1/predictions?{query}"), ErrorId.INVALID_PARAMETER, query.split("=")[0])


def test_invalid_fields_parameter(client: httpx.Client) -> None:
    assert_error(client.get("/v1/models?fields=pricing"), ErrorId.INVALID_PARAMETER, "pricing")


@pytest.mark.parametrize("query", ["from=yesterday", "to=2026-02-30", "since=22.11.2026", "until=noon"])
def test_invalid_date_format(client: httpx.Client, query: str) -> None:
    assert_error(client.get(f"/v1/predictions?{query}"), ErrorId.INVALID_DATE_FORMAT, query.split("=")[0])


def test_invalid_date_range(client: httpx.Client) -> None:
    response = client.get("/v1/predictions?from=2026-11-22&to=2026-11-01")
    assert_error(response, ErrorId.INVALID_DATE_RANGE, "'from'", "'to'")


def test_unauthorized_missing_unknown_and_revoked(server: Server) -> None:
    with server.client() as anonymous:
        assert_error(anonymous.get("/v1/models"), ErrorId.UNAUTHORIZED, "x-api-key")
        assert_error(anonymous.get("/v1/models", headers={"x-api-key": "pd_not_a_key"}), ErrorId.UNAUTHORIZED)
        assert_error(
            anonymous.get("/v1/models", headers={"Authorization": "Basic abc"}), ErrorId.UNAUTHORIZED
        )
    key = server.key()
    with server.client(key) as client:
        assert client.get("/v1/models").status_code == 200
        server.with_database(lambda db: revoke_key_of(db, key))
        assert_error(client.get("/v1/models"), ErrorId.UNAUTHORIZED, "revoked")


GUESSING_GUARDED = """
[legal]
trusted_proxies = ["127.0.0.1/32"]

[access]
failed_keys_per_address = 3
window_s = 60
"""


def test_unknown_keys_are_throttled_per_address_and_logged_without_the_key(make_server: Any) -> None:
    guarded = make_server(GUESSING_GUARDED)
    key = guarded.key("guessed-co")
    revoked = guarded.key("guessed-co")
    guarded.with_database(lambda db: revoke_key_of(db, revoked))
    guesses = [keys.generate_key().secret for _ in range(5)]
    guesser = {"x-forwarded-for": "203.0.113.50"}
    with guarded.client() as client:
        for guess in guesses[:3]:  # the allowance: refused as any wrong key is
            assert_error(
                client.get("/v1/models", headers={**guesser, "x-api-key": guess}), ErrorId.UNAUTHORIZED
            )
        throttled = client.get("/v1/models", headers={**guesser, "x-api-key": guesses[3]})
        assert_error(throttled, ErrorId.RATE_LIMIT_EXCEEDED, "invalid API key from your address", "retry in")
        assert 1 <= int(throttled.headers["retry-after"]) <= 20  # one more every 60 / 3 s
        fashn = client.post(
            "/v1/run",
            json={"model_name": "echo", "inputs": {"text": "x"}},
            headers={**guesser, "authorization": f"Bearer {guesses[4]}"},
        )
        assert fashn.status_code == API_ERRORS[ErrorId.RATE_LIMIT_EXCEEDED].fashn_status
        assert fashn.json()["error"] == "RateLimitExceeded"
        # Only a key no account holds counts: a valid key from that address is served, a revoked one and
        # none at all are refused as before.
        assert client.get("/v1/models", headers={**guesser, "x-api-key": key}).status_code == 200
        assert_error(
            client.get("/v1/models", headers={**guesser, "x-api-key": revoked}), ErrorId.UNAUTHORIZED
        )
        assert_error(client.get("/v1/models", headers=guesser), ErrorId.UNAUTHORIZED, "x-api-key")
        # Another address has its own allowance.
        elsewhere = {"x-forwarded-for": "203.0.113.51", "x-api-key": guesses[0]}
        assert_error(client.get("/v1/models", headers=elsewhere), ErrorId.UNAUTHORIZED)
    log = guarded.log()
    refused = [line for line in log.splitlines() if "API key refused" in line]
    assert len(refused) == 4, log  # three from the guesser, one from elsewhere
    assert all("203.0.113.5" in line for line in refused)
    assert f"key_prefix={guesses[0][:10]}" in refused[0]
    throttled_lines = [line for line in log.splitlines() if "API key checks throttled" in line]
    assert len(throttled_lines) == 1  # once per address and window, not once per refused request
    assert "203.0.113.50" in throttled_lines[0]
    for secret in [*guesses, revoked, key]:
        assert secret not in log
        assert secret[:11] not in log  # never more than the ten characters a key list shows


async def _suspend(db: Database, name: str) -> None:
    account = await db.accounts.get_account_by_name(name)
    assert account is not None
    await db.accounts.update_account(account.id, status=AccountStatus.SUSPENDED)


def test_suspended_account(server: Server) -> None:
    key = server.key("to-suspend")
    server.with_database(lambda db: _suspend(db, "to-suspend"))
    with server.client(key) as client:
        assert_error(client.get("/v1/models"), ErrorId.ACCOUNT_SUSPENDED, "suspended")


def test_model_not_found(client: httpx.Client) -> None:
    assert_error(
        client.post("/v1/predictions", json={"model": "nope", "input": {}}), ErrorId.MODEL_NOT_FOUND, "'nope'"
    )
    assert_error(client.get("/v1/model/nope"), ErrorId.MODEL_NOT_FOUND, "'nope'")
    assert_error(client.get("/v1/models/nope"), ErrorId.MODEL_NOT_FOUND)


def test_prediction_not_found_also_for_another_accounts_prediction(
    server: Server, client: httpx.Client
) -> None:
    assert_error(client.get("/v1/predictions/does-not-exist"), ErrorId.PREDICTION_NOT_FOUND)
    theirs = submit(client, "echo", {"text": "private"}, wait=True)
    with server.client(server.key()) as other:
        missing = assert_error(other.get("/v1/predictions/does-not-exist"), ErrorId.PREDICTION_NOT_FOUND)
        foreign = assert_error(other.get(f"/v1/predictions/{theirs['id']}"), ErrorId.PREDICTION_NOT_FOUND)
        assert foreign["message"].replace(theirs["id"], "X") == missing["message"].replace(
            "does-not-exist", "X"
        )
        assert_error(other.post(f"/v1/predictions/{theirs['id']}/cancel"), ErrorId.PREDICTION_NOT_FOUND)
        assert_error(other.delete(f"/v1/predictions/{theirs['id']}/delete"), ErrorId.PREDICTION_NOT_FOUND)
        assert theirs["id"] not in other.get("/v1/predictions").text
    assert client.get(f"/v1/predictions/{theirs['id']}").json()["input"] == {"text": "private"}


# -- status reads answered from memory (api/context.FastRoutes) ----------------------------------------------
# After its first request a key's principal is remembered, and the embedded store remembers predictions, so a
# polled status read is answered without the route. These hold that answer to the route's, and to every
# change that must refuse it; the scaled backend, which remembers nothing, answers the same through the route.


def _status_reads(client: httpx.Client, prediction_id: str) -> tuple[httpx.Response, httpx.Response]:
    return client.get(f"/v1/predictions/{prediction_id}"), client.get(f"/v1/status/{prediction_id}")


def _segments_received(sock: socket.socket) -> int:
    # Linux's struct tcp_info: tcpi_segs_in is the u32 at byte 140.
    return int(struct.unpack_from("I", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256), 140)[0])


def _read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    fields = (line.partition(b":") for line in head.split(b"\r\n")[1:])
    length = next(int(value) for name, _, value in fields if name.lower() == b"content-length")
    while len(body) < length:
        body += sock.recv(65536)
    return head, body


def test_each_response_reaches_the_client_in_one_tcp_segment(server: Server) -> None:
    """A response's head and body are written together: one segment for the client to receive per response,
    not two, on a status read answered from memory and on a routed request alike."""
    key = server.key()
    with server.client(key) as client:
        done = submit(client, "echo", {"text": "one write"}, wait=True)
    paths = [f"/v1/predictions/{done['id']}", "/v1/models"]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for path in paths:  # the first of each is routed; the status reads after it come from memory
            sock.sendall(f"GET {path} HTTP/1.1\r\nhost: t\r\nx-api-key: {key}\r\n\r\n".encode())
            _read_response(sock)
        time.sleep(0.05)
        for path in paths:
            before = _segments_received(sock)
            for _ in range(20):
                sock.sendall(f"GET {path} HTTP/1.1\r\nhost: t\r\nx-api-key: {key}\r\n\r\n".encode())
                head, body = _read_response(sock)
                assert head.startswith(b"HTTP/1.1 200 "), head
                assert json.loads(body)
            time.sleep(0.05)
            per_response = (_segments_received(sock) - before) / 20
            assert per_response < 1.3, f"{path}: {per_response} segments per response"


def test_a_status_read_from_memory_answers_what_the_route_answers(server: Server) -> None:
    owner = f"acct-{uuid.uuid4().hex[:8]}"
    with server.client(server.key(owner)) as client:
        done = submit(client, "echo", {"text": "same answer"}, wait=True)
    # A new key of the same account: its first request is authenticated by the route, the next ones not.
    with server.client(server.key(owner)) as client:
        first = _status_reads(client, done["id"])
        again = _status_reads(client, done["id"])
        traced = client.get(f"/v1/predictions/{done['id']}", headers={"X-Request-Id": "trace-42"})
    for routed, remembered in zip(first, again, strict=True):
        assert routed.status_code == remembered.status_code == 200
        assert routed.content == remembered.content
        assert sorted(routed.headers) == sorted(remembered.headers)
        assert routed.headers["content-type"] == remembered.headers["content-type"] == "application/json"
        assert routed.headers["x-request-id"] != remembered.headers["x-request-id"]
    assert first[0].json() == done
    fashn_body = {"id": done["id"], "status": "completed", "output": ["same answer"], "error": None}
    assert first[1].json() == fashn_body
    assert first[1].headers[CREDITS_HEADER] == again[1].headers[CREDITS_HEADER]
    assert traced.headers["x-request-id"] == "trace-42"
    assert traced.content == first[0].content


def test_a_rotated_out_key_is_refused_while_the_new_key_keeps_reading(server: Server) -> None:
    account = f"acct-{uuid.uuid4().hex[:8]}"
    old_key, new_key = server.key(account), server.key(account)
    with server.client(old_key) as old, server.client(new_key) as new:
        done = submit(old, "echo", {"text": "x"}, wait=True)
        for client in (old, new, old, new):
            assert [r.status_code for r in _status_reads(client, done["id"])] == [200, 200]
        server.with_database(lambda db: revoke_key_of(db, old_key))
        assert [r.status_code for r in _status_reads(new, done["id"])] == [200, 200]
        native, fashn = _status_reads(old, done["id"])
        assert [r.status_code for r in _status_reads(new, done["id"])] == [200, 200]
    assert_error(native, ErrorId.UNAUTHORIZED, "revoked")
    assert fashn.status_code == API_ERRORS[ErrorId.UNAUTHORIZED].fashn_status
    assert fashn.json()["error"] == API_ERRORS[ErrorId.UNAUTHORIZED].fashn_name


def test_an_account_suspended_while_its_prediction_runs_cannot_read_it_after(server: Server) -> None:
    name = f"acct-{uuid.uuid4().hex[:8]}"
    with server.client(server.key(name)) as client:
        running = submit(client, "sleep", {"ms": 1500})
        for _ in range(3):
            assert [r.status_code for r in _status_reads(client, running["id"])] == [200, 200]
        server.with_database(lambda db: _suspend(db, name))
        with server.client(server.key()) as bystander:  # its request has the server see the change
            assert bystander.get("/v1/models").status_code == 200
        # The worker's outcome is remembered after that; the read after it must still be refused.
        assert server.with_database(lambda db: _ended(db, running["id"])) == "succeeded"
        native, fashn = _status_reads(client, running["id"])
    assert_error(native, ErrorId.ACCOUNT_SUSPENDED, "suspended")
    assert fashn.status_code == API_ERRORS[ErrorId.ACCOUNT_SUSPENDED].fashn_status


async def _ended(db: Database, prediction_id: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = await db.predictions.get_prediction(prediction_id)
        assert found is not None
        if found.terminal:
            return found.status.value
        await asyncio.sleep(0.05)
    raise AssertionError(f"{prediction_id} did not end")


def test_a_prediction_read_by_its_owner_stays_not_found_for_another_account(server: Server) -> None:
    with server.client(server.key()) as owner, server.client(server.key()) as other:
        done = submit(owner, "echo", {"text": "mine"}, wait=True)
        assert other.get("/v1/models").status_code == 200  # both principals remembered from here on
        for _ in range(3):
            assert [r.status_code for r in _status_reads(owner, done["id"])] == [200, 200]
        native, fashn = _status_reads(other, done["id"])
    assert_error(native, ErrorId.PREDICTION_NOT_FOUND, done["id"])
    assert fashn.status_code == API_ERRORS[ErrorId.PREDICTION_NOT_FOUND].fashn_status


def test_status_reads_count_against_a_rate_limit(make_server: Any) -> None:
    limited = make_server("rate_limit = 4\nrate_window_s = 60\n")
    with limited.client(limited.key()) as client:
        done = submit(client, "echo", {"text": "x"}, wait=True)
        reads = [client.get(f"/v1/predictions/{done['id']}") for _ in range(3)]
        assert [r.headers["RateLimit-Remaining"] for r in reads] == ["2", "1", "0"]
        refused = client.get(f"/v1/predictions/{done['id']}")
    assert_error(refused, ErrorId.RATE_LIMIT_EXCEEDED, "4 requests in 60 s")


def test_unknown_route_and_method(client: httpx.Client) -> None:
    assert_error(client.get("/v1/no-such-route"), ErrorId.NOT_FOUND, "/v1/no-such-route")
    assert_error(client.put("/v1/predictions"), ErrorId.NOT_FOUND, "PUT")
    with httpx.Client(base_url=str(client.base_url)) as anonymous:
        assert_error(anonymous.get("/nowhere"), ErrorId.NOT_FOUND)


def test_prediction_not_cancellable_once_terminal(client: httpx.Client) -> None:
    done = submit(client, "echo", {"text": "x"}, wait=True)
    body = assert_error(
        client.post(f"/v1/predictions/{done['id']}/cancel"), ErrorId.PREDICTION_NOT_CANCELLABLE
    )
    assert "succeeded" in body["message"]


def test_a_model_whose_setup_fails_is_unavailable_and_not_worth_retrying(client: httpx.Client) -> None:
    """Its setup raises on every start: the contract's MODEL_UNAVAILABLE at the contract's 500, told not to
    retry (a retry cannot help until an operator fixes the model), on both surfaces alike."""
    response = client.post("/v1/predictions", json={"model": "broken", "input": {"text": "x"}})
    body = assert_error(response, ErrorId.MODEL_SETUP_FAILED, "'broken'", "weights/broken.onnx not found")
    assert body["error_id"] == "MODEL_UNAVAILABLE"
    assert response.status_code == 500
    assert body["retryable"] is False
    assert "retry-after" not in response.headers
    model = client.get("/v1/model/broken").json()
    assert model["status"] == "unavailable"
    assert "FileNotFoundError" in model["status_detail"]


def test_a_model_that_fails_to_load_shows_clients_the_reason_not_the_servers_paths(
    server: Server, client: httpx.Client
) -> None:
    response = client.post("/v1/predictions", json={"model": "absent", "input": {"text": "x"}})
    body = assert_error(response, ErrorId.MODEL_SETUP_FAILED, "'absent'", "absent_model.py")
    shown = [body["message"], client.get("/v1/model/absent").json()["status_detail"], response.text]
    for text in shown:
        assert str(ROOT) not in text, text
        assert "no-such-folder" not in text, text
    assert str(ABSENT_MODEL_FILE) in server.log(), "the log keeps the whole path"


@pytest.mark.parametrize(
    ("webhook", "fragment"),
    [
        ("http://127.0.0.1:9", "'webhook' must be an object"),
        ({"url": "ftp://example.com/hook"}, "webhook.url"),
        ({"url": "http://127.0.0.1:9", "events": ["finished"]}, "unknown event(s) finished"),
        ({"url": "http://127.0.0.1:9", "events": []}, "non-empty list"),
        ({"url": "http://127.0.0.1:9", "secret": "x"}, "unknown field(s) secret"),
    ],
)
def test_invalid_webhook_specs_name_the_field(client: httpx.Client, webhook: object, fragment: str) -> None:
    response = client.post(
        "/v1/predictions", json={"model": "echo", "input": {"text": "x"}, "webhook": webhook}
    )
    assert_error(response, ErrorId.INVALID_INPUT, fragment)


def test_oversized_body_is_an_infrastructure_error(make_server: Any) -> None:
    small = make_server("max_body_bytes = 2048\n")
    with small.client(small.key()) as client:
        response = client.post("/v1/predictions", json={"model": "echo", "input": {"text": "x" * 5000}})
        assert_error(response, ErrorId.INFRASTRUCTURE_ERROR, "2048 byte limit")
        assert submit(client, "echo", {"text": "fits"}, wait=True)["output"] == "fits"


@pytest.mark.backends("embedded")
def test_service_unavailable_when_the_database_is_locked(make_server: Any) -> None:
    """Contention is no fault: 503 with Retry-After and retryable, naming nothing of the engine; the log
    says what it was busy with, with the request id."""
    locked = make_server("sqlite_busy_timeout_ms = 200\n")
    key = locked.key()
    holder = sqlite3.connect(locked.data_dir / "predictd.sqlite3", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with locked.client(key) as client:
            response = client.post("/v1/predictions", json={"model": "echo", "input": {"text": "x"}})
            body = assert_error(response, ErrorId.SERVICE_UNAVAILABLE, response.headers["x-request-id"])
            assert response.headers["retry-after"] == "1"
            assert "sqlite" not in response.text.lower()
            assert "database is locked" not in response.text
        holder.execute("ROLLBACK")
    finally:
        holder.close()
    assert body["request_id"] in locked.log(), "the contention is logged with its request id"
    assert "SQLite database locked by another writer past sqlite_busy_timeout_ms" in locked.log()
    with locked.client(key) as client:
        assert submit(client, "echo", {"text": "back"}, wait=True)["output"] == "back"


@pytest.mark.backends("embedded")
def test_an_internal_error_on_a_routed_request_is_answered_and_logged_once(make_server: Any) -> None:
    """The direct routes answer their own errors; every other route goes through Starlette's error layer,
    which answers and then re-raises: the error must still be logged once, with its request id, and not
    reach uvicorn (which would log it again and drop the keep-alive connection). The fault: a table an
    operator renamed away from under the server (contention would be a 503, test above)."""
    broken = make_server()
    key = broken.key()
    holder = sqlite3.connect(broken.data_dir / "predictd.sqlite3", isolation_level=None)
    with broken.client(key) as client:
        try:
            holder.execute("ALTER TABLE webhook_secrets RENAME TO webhook_secrets_away")
            response = client.post("/v1/webhooks/secret/rotate")  # routed, written through SQLAlchemy
            body = assert_error(response, ErrorId.INTERNAL_ERROR, response.headers["x-request-id"])
            holder.execute("ALTER TABLE webhook_secrets_away RENAME TO webhook_secrets")
        finally:
            holder.close()
        # uvicorn would log after the answer: a later answer on the same connection comes after that.
        assert submit(client, "echo", {"text": "back"}, wait=True)["output"] == "back"
    log = broken.log()
    assert log.count(body["request_id"]) == 1, "logged once, with its request id"
    assert log.count("unhandled error") == 1
    assert "Exception in ASGI application" not in log


@pytest.mark.backends("embedded")
def test_contention_on_a_routed_request_is_answered_and_logged_once(make_server: Any) -> None:
    """The 503 of contention takes the same error layer as an internal error: logged once, not by uvicorn."""
    locked = make_server("sqlite_busy_timeout_ms = 200\n")
    key = locked.key()
    holder = sqlite3.connect(locked.data_dir / "predictd.sqlite3", isolation_level=None)
    with locked.client(key) as client:
        try:
            holder.execute("BEGIN EXCLUSIVE")
            response = client.post("/v1/webhooks/secret/rotate")  # routed, written through SQLAlchemy
            body = assert_error(response, ErrorId.SERVICE_UNAVAILABLE, response.headers["x-request-id"])
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        assert submit(client, "echo", {"text": "back"}, wait=True)["output"] == "back"
    log = locked.log()
    assert log.count(body["request_id"]) == 1, "logged once, with its request id"
    assert log.count("database busy; answered 503") == 1
    assert "unhandled error" not in log
    assert "Exception in ASGI application" not in log


# -- cancel, delete, list, models ----------------------------------------------------------------------


def test_cancel_stops_a_running_prediction_in_its_worker(server: Server) -> None:
    with server.client(server.key()) as client:
        running = submit(client, "sleep", {"ms": 20000})
        wait_for(client, running["id"], {"processing"})
        started = time.monotonic()
        cancelled = client.post(f"/v1/predictions/{running['id']}/cancel")
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "cancelled"
        # Both sleep workers are free again quickly: the interrupted one did not sleep on.
        quick = [submit(client, "sleep", {"ms": 50}) for _ in range(2)]
        for prediction in quick:
            assert wait_for(client, prediction["id"], TERMINAL)["status"] == "succeeded"
        assert time.monotonic() - started < 10
        time.sleep(0.3)
        final = client.get(f"/v1/predictions/{running['id']}").json()
        assert final["status"] == "cancelled"
        assert final["output"] is None
        assert final["metrics"]["predict_time"] is not None
        assert_error(
            client.post(f"/v1/predictions/{running['id']}/cancel"), ErrorId.PREDICTION_NOT_CANCELLABLE
        )


def test_cancel_a_queued_prediction_means_it_never_runs(server: Server) -> None:
    with server.client(server.key()) as client:
        blockers = [submit(client, "sleep", {"ms": 1500}) for _ in range(2)]
        queued = submit(client, "sleep", {"ms": 10})
        assert client.get(f"/v1/predictions/{queued['id']}").json()["status"] == "pending"
        assert client.post(f"/v1/predictions/{queued['id']}/cancel").json()["status"] == "cancelled"
        for blocker in blockers:
            wait_for(client, blocker["id"], TERMINAL)
        after = client.get(f"/v1/predictions/{queued['id']}").json()
        assert after["status"] == "cancelled"
        assert after["started_at"] is None


def test_a_prediction_sent_ahead_to_a_busy_worker_and_cancelled_never_runs(make_server: Any) -> None:
    """With a backlog, the slot sends the next predictions ahead to its worker; cancelling one of those
    stops exactly that one (not the one running, not the one after it) before it ever runs."""
    server = make_server(ONE_SLEEP_SLOT_SENDING_AHEAD)
    with server.client(server.key()) as client:
        first = submit(client, "sleep", {"ms": 300})
        running = submit(client, "sleep", {"ms": 1500})
        doomed = submit(client, "sleep", {"ms": 30000})
        last = submit(client, "sleep", {"ms": 50})
        wait_for(client, running["id"], {"processing"})
        started = time.monotonic()
        assert client.post(f"/v1/predictions/{doomed['id']}/cancel").json()["status"] == "cancelled"
        assert wait_for(client, last["id"], TERMINAL)["status"] == "succeeded"
        assert time.monotonic() - started < 10, "the cancelled 30 s prediction did not run"
        outcomes = {
            p["id"]: client.get(f"/v1/predictions/{p['id']}").json() for p in (first, running, doomed)
        }
        assert outcomes[first["id"]]["output"] == "slept 300 ms"
        assert outcomes[running["id"]]["output"] == "slept 1500 ms"
        assert outcomes[doomed["id"]]["status"] == "cancelled"
        assert outcomes[doomed["id"]]["output"] is None


def test_delete_removes_inputs_and_outputs(client: httpx.Client) -> None:
    done = submit(client, "echo", {"text": "secret"}, wait=True)
    for path in (f"/v1/predictions/{done['id']}/delete", f"/v1/predictions/{done['id']}"):
        response = client.delete(path)
        assert response.status_code == 200
        body = response.json()
        assert body["data_removed"] is True
        assert body["input"] is None
        assert body["output"] is None
        assert body["status"] == "succeeded"
    stored = client.get(f"/v1/predictions/{done['id']}").json()
    assert (stored["data_removed"], stored["input"], stored["output"]) == (True, None, None)


def test_delete_of_a_running_prediction_cancels_it_first(client: httpx.Client) -> None:
    running = submit(client, "sleep", {"ms": 20000})
    body = client.delete(f"/v1/predictions/{running['id']}/delete").json()
    assert body["status"] == "cancelled"
    assert body["data_removed"] is True


def test_list_filters_and_paginates(server: Server) -> None:
    with server.client(server.key()) as client:
        echoes = [submit(client, "echo", {"text": str(i)}, wait=True) for i in range(5)]
        sleeps = [submit(client, "sleep", {"ms": 1}, wait=True) for _ in range(2)]
        everything = client.get("/v1/predictions?per_page=50").json()
        assert everything["pagination"] == {"current_page": 1, "per_page": 50, "total": 7, "last_page": 1}
        newest_first = [p["id"] for p in everything["data"]]
        assert newest_first == [p["id"] for p in reversed(echoes + sleeps)]

        page2 = client.get("/v1/predictions?per_page=3&page=2").json()
        assert page2["pagination"] == {"current_page": 2, "per_page": 3, "total": 7, "last_page": 3}
        assert [p["id"] for p in page2["data"]] == newest_first[3:6]
        assert client.get("/v1/predictions?per_page=3&page=9").json()["data"] == []

        only_sleep = client.get("/v1/predictions?model=sleep").json()
        assert {p["id"] for p in only_sleep["data"]} == {p["id"] for p in sleeps}
        assert only_sleep["pagination"]["total"] == 2

        today = datetime.now(UTC).date()
        tomorrow = today + timedelta(days=1)
        assert client.get(f"/v1/predictions?from={today}&to={today}").json()["pagination"]["total"] == 7
        assert client.get(f"/v1/predictions?since={tomorrow}").json()["pagination"]["total"] == 0
        cut = echoes[2]["created_at"]
        after_cut = client.get("/v1/predictions", params={"from": cut}).json()
        assert after_cut["pagination"]["total"] == 5


def test_models_with_schemas(client: httpx.Client) -> None:
    models = client.get("/v1/models").json()
    by_slug = {m["slug"]: m for m in models}
    assert {"echo", "sleep", "broken"} <= set(by_slug)
    assert "input_schema" not in by_slug["echo"]
    assert by_slug["echo"]["status"] == "available"
    with_schemas = {m["slug"]: m for m in client.get("/v1/models?fields=input_schema,output_schema").json()}
    assert with_schemas["sleep"]["input_schema"]["properties"]["ms"]["maximum"] == 3_600_000
    assert with_schemas["echo"]["output_schema"] == {"type": "string"}
    single = client.get("/v1/model/echo?fields=input_schema").json()
    assert single["input_schema"]["required"] == ["text"]
    assert "output_schema" not in single


# -- failed predictions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "name", "error_id", "fragment"),
    [
        ("pose", "PoseError", "UNPROCESSABLE_ENTITY", "no person found"),
        ("inconsistent", "InputValidationError", "UNPROCESSABLE_ENTITY", "width and height"),
        ("bug", "PipelineError", "INTERNAL_ERROR", "KeyError"),
    ],
)
def test_failed_prediction_payload(
    client: httpx.Client, kind: str, name: str, error_id: str, fragment: str
) -> None:
    response = client.post(
        "/v1/predictions", json={"model": "raises", "input": {"kind": kind}, "await": True}
    )
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "failed"
    assert body["error_name"] == name
    assert body["error_id"] == error_id
    assert fragment in body["error"]
    assert body["output"] is None
    assert body["input"] == {"kind": kind}  # kept, to see what failed and run it again
    assert body["data_removed"] is False
    assert body["metrics"]["predict_time"] is not None
    assert body["metrics"]["total_time"] is not None
    assert body["model"] == "raises"
    assert body["source"] == "api"
    again = client.get(f"/v1/predictions/{body['id']}").json()
    assert (again["status"], again["input"], again["data_removed"]) == ("failed", {"kind": kind}, False)


def test_a_failed_predictions_input_is_removed_after_its_retention(make_server: Any) -> None:
    """failed_inputs_ttl_s after a failure the sweep removes its input; a success keeps its own."""
    server = make_server(f"failed_inputs_ttl_s = {FAILED_INPUTS_TTL_S}\n{RAISES_TOML}")
    with server.client(server.key()) as client:
        failed = submit(client, "raises", {"kind": "pose"}, wait=True)
        succeeded = submit(client, "echo", {"text": "kept"}, wait=True)
        assert (failed["status"], failed["input"], failed["data_removed"]) == (
            "failed",
            {"kind": "pose"},
            False,
        )
        ended = time.monotonic()
        deadline = ended + 2 * FAILED_INPUTS_TTL_S + 10
        while (body := client.get(f"/v1/predictions/{failed['id']}").json())["data_removed"] is False:
            assert time.monotonic() < deadline, "the failed prediction's input was never removed"
            time.sleep(0.1)
        assert time.monotonic() - ended >= FAILED_INPUTS_TTL_S - 0.5  # not before its retention
        assert (body["status"], body["input"], body["output"]) == ("failed", None, None)
        assert (body["error_name"], body["error"]) == ("PoseError", failed["error"])
        kept = client.get(f"/v1/predictions/{succeeded['id']}").json()
        assert (kept["input"], kept["output"], kept["data_removed"]) == ({"text": "kept"}, "kept", False)


def test_a_worker_that_dies_is_replaced_and_the_prediction_retried_then_failed(client: httpx.Client) -> None:
    body = submit(client, "crash", {"after_ms": 10}, wait=True)
    assert body["status"] == "failed"
    assert body["error_name"] == "UnavailableError"
    assert body["error_id"] == "MODEL_UNAVAILABLE"
    assert "died 2 time(s)" in body["error"]
    # The model is served again by a fresh worker.
    assert client.get("/v1/model/crash").json()["status"] == "available"


def test_a_prediction_over_its_deadline_fails(client: httpx.Client) -> None:
    body = submit(client, "slow", {"ms": 10_000}, wait=True)
    assert body["status"] == "failed"
    assert body["error_name"] == "DeadlineExceeded"
    assert "1 s deadline" in body["error"]
    assert body["metrics"]["predict_time"] == pytest.approx(1.0, abs=0.5)
    assert submit(client, "slow", {"ms": 10}, wait=True)["status"] == "succeeded"


def _http_metrics(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The API process's HTTP samples: (sample name, sorted labels) -> value."""
    text = httpx.get(f"{server.base_url}/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("predictd_http")
        for sample in family.samples
    }


def test_metrics_count_and_time_every_answered_request(server: Server, client: httpx.Client) -> None:
    route = "/v1/predictions/{prediction_id}"
    done = submit(client, "echo", {"text": "x"}, wait=True)
    before = _http_metrics(server)
    for _ in range(5):
        assert client.get(f"/v1/predictions/{done['id']}").status_code == 200
    assert client.get("/v1/predictions/no-such-prediction").status_code == 404
    after = _http_metrics(server)

    def added(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert added("predictd_http_requests_total", method="GET", route=route, status="200") == 5
    assert added("predictd_http_requests_total", method="GET", route=route, status="404") == 1
    assert added("predictd_http_request_duration_seconds_count", route=route) == 6
    assert added("predictd_http_request_duration_seconds_bucket", route=route, le="+Inf") == 6
    assert added("predictd_http_request_duration_seconds_sum", route=route) > 0
    buckets = sorted(
        (float(dict(labels)["le"]), value)
        for (name, labels), value in after.items()
        if name == "predictd_http_request_duration_seconds_bucket" and dict(labels)["route"] == route
    )
    counts = [value for _, value in buckets]
    assert counts == sorted(counts)  # cumulative, as Prometheus reads them
    assert counts[-1] == after[("predictd_http_request_duration_seconds_count", (("route", route),))]


def test_openapi_and_health_and_metrics(server: Server, client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert "/v1/predictions" in spec["paths"]
    assert "/v1/model/{slug}" in spec["paths"]
    health = client.get("/health").json()
    assert health["models"]["echo"] == "available"
    assert health["models"]["broken"] == "unavailable"
    assert health["mode"] == ("scaled-out" if server.scaled else "embedded")
    submit(client, "echo", {"text": "x"}, wait=True)
    metrics = server.metrics_text()
    assert 'predictd_predictions_total{model="echo",status="succeeded"}' in metrics
    assert 'predictd_model_available{model="broken"} 0.0' in metrics
    assert "predictd_http_requests_total" in metrics
