"""Server-Sent Events of a prediction's state changes (with Last-Event-ID resume), and Idempotency-Key
submits on both surfaces, including concurrent identical submits."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from predictd.errors import ErrorId

from ..conftest import Server, revoke_key_of
from .test_native_api import assert_error, submit


def read_events(
    client: httpx.Client, prediction_id: str, last_event_id: str | None = None, limit_s: float = 30
) -> list[dict[str, Any]]:
    """Every event until the server ends the stream."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    started = time.monotonic()
    with client.stream(
        "GET", f"/v1/predictions/{prediction_id}/stream", headers=headers, timeout=limit_s
    ) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            assert time.monotonic() - started < limit_s
            if line == "":
                if "data" in current:
                    events.append({**current, "data": json.loads(current["data"])})
                current = {}
            elif line.startswith(":"):
                continue
            else:
                name, _, value = line.partition(": ")
                current[name] = value
    return events


@pytest.fixture(scope="module")
def client(server: Server) -> httpx.Client:
    return server.client(server.key())


def test_stream_follows_a_prediction_to_its_end(client: httpx.Client) -> None:
    prediction = submit(client, "sleep", {"ms": 600})
    events = read_events(client, prediction["id"])
    kinds = [e["event"] for e in events]
    assert kinds[-2:] == ["output", "done"]
    assert "status" in kinds
    statuses = [e["data"]["status"] for e in events if e["event"] == "status"]
    assert statuses[-1] == "processing"
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(set(ids)), "every event has its own id, increasing"
    assert events[-1]["data"]["status"] == "succeeded"
    assert events[-1]["data"]["output"] == "slept 600 ms"


def test_stream_resumes_after_last_event_id_without_loss(client: httpx.Client) -> None:
    prediction = submit(client, "sleep", {"ms": 800})
    first: list[dict[str, Any]] = []
    with client.stream("GET", f"/v1/predictions/{prediction['id']}/stream") as response:
        frame: dict[str, str] = {}
        for line in response.iter_lines():
            if line == "" and frame:
                first.append(frame)
                if json.loads(frame["data"])["status"] == "processing":
                    break  # the client drops the connection mid-prediction
                frame = {}
            elif line and not line.startswith(":"):
                key, _, value = line.partition(": ")
                frame[key] = value
    resumed = read_events(client, prediction["id"], last_event_id=first[-1]["id"])
    assert [e["event"] for e in resumed] == ["output", "done"]
    assert int(resumed[0]["id"]) > int(first[-1]["id"])
    assert resumed[-1]["data"]["status"] == "succeeded"
    # Reconnecting after the end with the last id gets nothing more, and the stream closes.
    assert read_events(client, prediction["id"], last_event_id=resumed[-1]["id"]) == []


def test_a_resume_after_the_output_event_still_gets_done(client: httpx.Client) -> None:
    """``output`` and ``done`` are two events with two ids: a client that read ``output`` and reconnects
    with its id gets ``done`` (once both carried the same id, and that reconnect got an empty stream)."""
    finished = submit(client, "echo", {"text": "x"}, wait=True)
    events = read_events(client, finished["id"])
    assert [e["event"] for e in events] == ["output", "done"]
    resumed = read_events(client, finished["id"], last_event_id=events[0]["id"])
    assert [(e["event"], e["id"]) for e in resumed] == [("done", events[1]["id"])]
    assert resumed[0]["data"]["status"] == "succeeded"


def test_stream_of_a_finished_prediction_and_of_a_cancelled_one(client: httpx.Client) -> None:
    done = submit(client, "echo", {"text": "x"}, wait=True)
    assert [e["event"] for e in read_events(client, done["id"])] == ["output", "done"]
    running = submit(client, "sleep", {"ms": 20000})
    results: list[list[dict[str, Any]]] = []
    reader = threading.Thread(target=lambda: results.append(read_events(client, running["id"])))
    reader.start()
    time.sleep(0.5)
    client.post(f"/v1/predictions/{running['id']}/cancel")
    reader.join(10)
    assert results, "the stream did not end when the prediction was cancelled"
    assert results[0][-1]["event"] == "done"
    assert results[0][-1]["data"]["status"] == "cancelled"


def test_a_stream_ends_when_its_key_is_revoked(server: Server) -> None:
    """An open stream is not a way around a revocation: no event is delivered after it, and the stream
    ends with an ``error`` event carrying the refusal a request would get."""
    key = server.key()
    with server.client(key) as client:
        running = submit(client, "sleep", {"ms": 3000})
        seen: list[dict[str, str]] = []
        with client.stream("GET", f"/v1/predictions/{running['id']}/stream", timeout=30) as response:
            frame: dict[str, str] = {}
            for line in response.iter_lines():
                if line == "" and frame:
                    seen.append(frame)
                    if len(seen) == 1:  # the state at connection time: now revoke, mid-stream
                        server.with_database(lambda db: revoke_key_of(db, key))
                    frame = {}
                elif line and not line.startswith(":"):
                    name, _, value = line.partition(": ")
                    frame[name] = value
        assert [f["event"] for f in seen[1:]] == ["error"], seen
        assert json.loads(seen[-1]["data"])["error_id"] == ErrorId.UNAUTHORIZED.value
        assert "done" not in {f["event"] for f in seen}


def test_stream_is_tenant_isolated(server: Server, client: httpx.Client) -> None:
    mine = submit(client, "echo", {"text": "x"}, wait=True)
    with server.client(server.key()) as other:
        assert_error(other.get(f"/v1/predictions/{mine['id']}/stream"), ErrorId.PREDICTION_NOT_FOUND)
    assert_error(
        client.get(f"/v1/predictions/{mine['id']}/stream", headers={"Last-Event-ID": "x"}),
        ErrorId.INVALID_PARAMETER,
        "Last-Event-ID",
    )


# -- idempotency ---------------------------------------------------------------------------------------------


def test_same_key_same_body_returns_the_same_prediction(server: Server) -> None:
    with server.client(server.key()) as c:
        body = {"model": "echo", "input": {"text": "once"}}
        first = c.post("/v1/predictions", json=body, headers={"Idempotency-Key": "order-1"})
        again = c.post("/v1/predictions", json=body, headers={"Idempotency-Key": "order-1"})
        assert first.status_code == 201
        assert again.status_code == 200
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json()["id"] == first.json()["id"]
        other = c.post("/v1/predictions", json=body, headers={"Idempotency-Key": "order-2"})
        assert other.json()["id"] != first.json()["id"]
        assert c.get("/v1/predictions").json()["pagination"]["total"] == 2


def test_same_key_different_body_is_unprocessable(server: Server) -> None:
    with server.client(server.key()) as c:
        c.post(
            "/v1/predictions",
            json={"model": "echo", "input": {"text": "a"}},
            headers={"Idempotency-Key": "k"},
        )
        response = c.post(
            "/v1/predictions",
            json={"model": "echo", "input": {"text": "b"}},
            headers={"Idempotency-Key": "k"},
        )
        assert_error(response, ErrorId.UNPROCESSABLE_ENTITY, "Idempotency-Key 'k'", "different request")
        bad = c.post(
            "/v1/predictions",
            json={"model": "echo", "input": {"text": "b"}},
            headers={"Idempotency-Key": "x" * 300},
        )
        assert_error(bad, ErrorId.INVALID_INPUT, "Idempotency-Key")


def test_keys_are_per_account(server: Server) -> None:
    body = {"model": "echo", "input": {"text": "a"}}
    with server.client(server.key()) as alice, server.client(server.key()) as bob:
        a = alice.post("/v1/predictions", json=body, headers={"Idempotency-Key": "shared"}).json()["id"]
        b = bob.post("/v1/predictions", json=body, headers={"Idempotency-Key": "shared"}).json()["id"]
        assert a != b


def test_concurrent_identical_submits_make_one_prediction(server: Server) -> None:
    key = server.key()
    body = {"model": "sleep", "input": {"ms": 50}}

    def send(_: int) -> httpx.Response:
        with server.client(key) as c:
            return c.post("/v1/predictions", json=body, headers={"Idempotency-Key": "burst"})

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(send, range(16)))
    assert {r.status_code for r in responses} <= {200, 201}
    assert [r.status_code for r in responses].count(201) == 1
    assert len({r.json()["id"] for r in responses}) == 1
    with server.client(key) as c:
        assert c.get("/v1/predictions").json()["pagination"]["total"] == 1


def test_fashn_run_honours_idempotency_keys(server: Server) -> None:
    with server.client(server.key()) as c:
        body = {"model_name": "echo", "inputs": {"text": "x"}}
        first = c.post("/v1/run", json=body, headers={"Idempotency-Key": "f-1"}).json()["id"]
        again = c.post("/v1/run", json=body, headers={"Idempotency-Key": "f-1"})
        assert again.json()["id"] == first
        assert again.headers["Idempotent-Replayed"] == "true"


def test_fashn_run_refuses_a_reused_key_with_another_body(server: Server) -> None:
    from .test_fashn_api import assert_fashn_error

    with server.client(server.key()) as c:
        c.post(
            "/v1/run",
            json={"model_name": "echo", "inputs": {"text": "a"}},
            headers={"Idempotency-Key": "f-2"},
        )
        other = c.post(
            "/v1/run",
            json={"model_name": "echo", "inputs": {"text": "b"}},
            headers={"Idempotency-Key": "f-2"},
        )
        assert_fashn_error(other, ErrorId.UNPROCESSABLE_ENTITY, "different request")
