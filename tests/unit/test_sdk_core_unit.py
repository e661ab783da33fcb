"""The SDK's core stepped without I/O: each test answers a plan's effects as a server and a clock would, then
checks what the plan asked for, in order, and what it returned or raised. The sync and async clients only
perform these effects; tests/integration/test_sdk.py runs them against a live predictd."""

from __future__ import annotations

import uuid
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

import predictd.sdk
from predictd.sdk import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    BadRequestError,
    InternalServerError,
    NotFoundError,
    PredictionFailed,
    PredictionTimeout,
    ServerSentEvent,
)
from predictd.sdk._base import INITIAL_RETRY_DELAY, ClientPlans, Session, make_settings
from predictd.sdk._effects import IO, Close, Emit, NextLine, Send, Sleep, Steps

START = 1000.0  # the fake clock's first reading; every delay below is exact in binary


@dataclass
class Script:
    """Plays the server and the clock for a plan: answers each Send and NextLine with the next scripted
    answer, moves the clock on by each Sleep, and logs every effect and every emitted value."""

    answers: list[object]
    now: float = START
    log: list[IO | Emit[Any]] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    def run(self, plan: Generator[IO | Emit[Any], object, Any]) -> Any:
        steps = Steps(plan)
        for effect in steps:
            self.log.append(effect)
            if isinstance(effect, Sleep):
                self.now += effect.seconds
            elif isinstance(effect, Send | NextLine):
                steps.answer = self.answers.pop(0)
        assert self.answers == [], "the plan ended before its script did"
        return steps.result

    def sends(self) -> list[Send]:
        return [effect for effect in self.log if isinstance(effect, Send)]

    def sleeps(self) -> list[float]:
        return [effect.seconds for effect in self.log if isinstance(effect, Sleep)]

    def kinds(self) -> list[str]:
        return [type(effect).__name__ for effect in self.log]


def plans(script: Script, max_retries: int = 2, poll: float = 0.25, max_poll: float = 2.0) -> ClientPlans:
    settings = make_settings("pd_test", "http://h:8000", None, max_retries, poll, max_poll, None)
    return ClientPlans(Session(settings, clock=script.clock))


def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def error_body(error_id: str, message: str) -> dict[str, Any]:
    return {"error_id": error_id, "message": message}


def state(status: str, ident: str = "p1", **fields: Any) -> dict[str, Any]:
    return {"id": ident, "status": status, **fields}


def event_stream() -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"})


# -- requests and retries ----------------------------------------------------------------------------------


def test_a_create_is_retried_with_one_idempotency_key() -> None:
    script = Script(
        [
            answer(429, error_body("RATE_LIMIT_EXCEEDED", "slow down"), {"Retry-After": "1"}),
            httpx.ConnectError("refused"),
            answer(201, state("pending")),
        ]
    )
    created = script.run(plans(script).predictions.create("echo", {"text": "hi"}, wait=True))
    assert created == state("pending")
    assert script.kinds() == ["Send", "Sleep", "Send", "Sleep", "Send"]
    first, *retries = [send.request for send in script.sends()]
    assert retries == [first, first]  # the same request each time: same body, same Idempotency-Key
    assert (first.method, first.url) == ("POST", "http://h:8000/v1/predictions")
    assert uuid.UUID(first.headers["Idempotency-Key"]).version == 4
    assert (first.headers["x-api-key"], first.headers["Content-Type"]) == ("pd_test", "application/json")
    assert orjson.loads(first.content or b"") == {"model": "echo", "input": {"text": "hi"}, "await": True}
    after_429, after_drop = script.sleeps()
    assert after_429 == 1  # the server's Retry-After
    assert 0 <= after_drop <= INITIAL_RETRY_DELAY * 2  # full jitter, second attempt


def test_each_create_has_its_own_key_unless_given() -> None:
    script = Script([])
    predictions = plans(script).predictions
    for plan in (
        predictions.create("echo", {}),
        predictions.create("echo", {}),
        predictions.create("echo", {}, idempotency_key="mine"),
    ):
        script.answers = [answer(201, state("pending"))]
        script.run(plan)
    keys = [send.request.headers["Idempotency-Key"] for send in script.sends()]
    assert len(set(keys)) == 3
    assert keys[2] == "mine"


@pytest.mark.parametrize(
    ("status", "error_id", "headers", "max_retries", "raised"),
    [
        (503, "MODEL_UNAVAILABLE", {"x-should-retry": "false"}, 2, InternalServerError),
        (400, "INVALID_INPUT", {}, 2, BadRequestError),
        (404, "PREDICTION_NOT_FOUND", {}, 2, NotFoundError),
        (409, "PREDICTION_NOT_CANCELLABLE", {"x-should-retry": "true"}, 2, APIError),
        (503, "MODEL_UNAVAILABLE", {}, 0, InternalServerError),
    ],
)
def test_answers_that_are_not_retried(
    status: int, error_id: str, headers: dict[str, str], max_retries: int, raised: type[APIError]
) -> None:
    script = Script([answer(status, error_body(error_id, "no"), headers)])
    with pytest.raises(raised) as caught:
        script.run(plans(script, max_retries=max_retries).predictions.cancel("p1"))
    assert (caught.value.status, caught.value.error_id, caught.value.message) == (status, error_id, "no")
    assert script.kinds() == ["Send"]
    assert script.sends()[0].request.path == "/v1/predictions/p1/cancel"


def test_retries_run_out_on_the_last_answer() -> None:
    script = Script(
        [
            answer(502, {"detail": "bad gateway"}),
            answer(504, {"detail": "gateway timeout"}, {"retry-after-ms": "100"}),
            answer(500, error_body("INTERNAL_ERROR", "Boom.")),
        ]
    )
    with pytest.raises(predictd.sdk.InternalError) as caught:
        script.run(plans(script).models.list())
    assert caught.value.message == "Boom."
    assert script.kinds() == ["Send", "Sleep", "Send", "Sleep", "Send"]
    assert script.sleeps()[1] == 0.1  # retry-after-ms


def test_no_answer_at_all() -> None:
    refused = [httpx.ConnectError("refused") for _ in range(3)]
    script = Script(list(refused))
    with pytest.raises(APIConnectionError) as caught:
        script.run(plans(script).models.get("echo", fields=["input_schema"]))
    assert type(caught.value) is APIConnectionError
    assert str(caught.value) == "GET /v1/model/echo: ConnectError: refused"
    assert caught.value.__cause__ is refused[2]
    assert script.kinds() == ["Send", "Sleep", "Send", "Sleep", "Send"]
    assert script.sends()[0].request.params == {"fields": "input_schema"}

    script = Script([httpx.ReadTimeout("slow")])
    with pytest.raises(APITimeoutError, match="GET /v1/account: ReadTimeout: slow"):
        script.run(plans(script, max_retries=0).account())


def test_ids_and_slugs_cannot_reach_another_route() -> None:
    script = Script([answer(200, state("succeeded", "a/../b?c"))])
    script.run(plans(script).predictions.get({"id": "a/../b?c"}))
    assert script.sends()[0].request.path == "/v1/predictions/a%2F..%2Fb%3Fc"
    with pytest.raises(ValueError, match="no 'id'"):
        script.run(plans(script).predictions.wait({"status": "processing"}))


# -- pages -------------------------------------------------------------------------------------------------


def page(current: int, last: int, *ids: str) -> httpx.Response:
    data = [state("succeeded", ident) for ident in ids]
    pagination = {"current_page": current, "per_page": 2, "total": 3, "last_page": last}
    return answer(200, {"data": data, "pagination": pagination})


def test_list_reads_each_page_when_the_iteration_reaches_it() -> None:
    script = Script([page(1, 2, "c", "b"), page(2, 2, "a")])
    script.run(plans(script).predictions.list(per_page=2, model="echo", since="2024-01-01"))
    assert script.kinds() == ["Send", "Emit", "Emit", "Send", "Emit"]
    assert [effect.value["id"] for effect in script.log if isinstance(effect, Emit)] == ["c", "b", "a"]
    assert [send.request.params for send in script.sends()] == [
        {"page": "1", "per_page": "2", "model": "echo", "from": "2024-01-01"},
        {"page": "2", "per_page": "2", "model": "echo", "from": "2024-01-01"},
    ]


def test_an_empty_page_ends_the_list() -> None:
    script = Script([page(1, 5)])
    script.run(plans(script).predictions.list())
    assert script.kinds() == ["Send"]


# -- the event stream --------------------------------------------------------------------------------------


def test_stream_hands_out_each_event_and_the_last_one_without_a_blank_line() -> None:
    response = event_stream()
    script = Script(
        [
            response,
            ": hello",
            "",
            "id: 1",
            "event: status",
            'data: {"status": "processing"}',
            "",
            "data: x",
            None,
        ]
    )
    script.run(plans(script).predictions.stream("p1", timeout=5))
    request = script.sends()[0].request
    assert (request.path, request.headers["Accept"], request.timeout) == (
        "/v1/predictions/p1/stream",
        "text/event-stream",
        httpx.Timeout(5),
    )
    assert script.sends()[0].stream
    events = [effect.value for effect in script.log if isinstance(effect, Emit)]
    assert events == [
        ServerSentEvent("status", '{"status": "processing"}', "1"),
        ServerSentEvent("message", "x", "1"),
    ]
    assert script.log[-1] == Close(response)


def test_stream_errors() -> None:
    script = Script([answer(404, error_body("PREDICTION_NOT_FOUND", "gone"), {"x-should-retry": "false"})])
    with pytest.raises(predictd.sdk.PredictionNotFoundError):
        script.run(plans(script).predictions.stream("p1"))
    assert script.kinds() == ["Send", "Read"]  # the body of a streamed error answer is read for its error

    not_sse = answer(200, state("processing"))
    script = Script([not_sse])
    with pytest.raises(APIError) as caught:
        script.run(plans(script).predictions.stream("p1"))
    assert caught.value.error_id == "NOT_AN_EVENT_STREAM"
    assert script.log[-1] == Close(not_sse)

    script = Script([event_stream(), "data: x", httpx.RemoteProtocolError("peer closed")])
    with pytest.raises(APIConnectionError, match="GET /v1/predictions/p1/stream: RemoteProtocolError"):
        script.run(plans(script).predictions.stream("p1"))


# -- waiting -----------------------------------------------------------------------------------------------


def test_wait_follows_the_stream_then_reads_the_prediction_once() -> None:
    response = event_stream()
    script = Script(
        [
            response,
            "event: status",
            'data: {"id": "p1", "status": "processing"}',
            "",
            "event: done",
            'data: {"id": "p1", "status": "succeeded"}',
            "",
            answer(200, state("succeeded", output="hi")),
        ]
    )
    client = plans(script)
    updates: list[str] = []
    done = script.run(
        client.predictions.wait(state("pending"), on_update=lambda p: updates.append(p["status"]))
    )
    assert done == state("succeeded", output="hi")
    assert updates == ["processing", "succeeded"]  # each new status once
    assert script.kinds()[-2:] == ["Close", "Send"]  # the stream is closed before the final read
    assert script.log[-2] == Close(response)
    assert script.sends()[-1].request.path == "/v1/predictions/p1"
    assert script.sleeps() == []
    assert client.session.stream_supported is True


def test_wait_polls_with_backoff_where_the_server_has_no_stream() -> None:
    missing = answer(404, error_body("NOT_FOUND", "No route GET /v1/predictions/p1/stream."))
    processing = answer(200, state("processing"))
    script = Script([processing, missing, *[processing] * 4, answer(200, state("succeeded"))])
    client = plans(script, poll=0.25, max_poll=0.5)
    assert script.run(client.predictions.wait("p1"))["status"] == "succeeded"
    assert script.kinds()[:4] == ["Send", "Send", "Read", "Send"]  # read it, try the stream, read it again
    assert script.sleeps() == [0.25, 0.375, 0.5, 0.5]  # x1.5 up to max_poll_interval
    assert client.session.stream_supported is False

    script.log.clear()
    script.answers = [answer(200, state("succeeded", "p2"))]
    script.run(client.predictions.wait(state("pending", "p2")))
    assert script.kinds() == ["Sleep", "Send"]  # the missing stream is remembered


def test_wait_gives_up_at_its_timeout() -> None:
    refused = httpx.ConnectError("refused")
    processing = answer(200, state("processing", progress=0.5))
    script = Script([refused, *[processing] * 4])
    client = plans(script, poll=0.25)
    with pytest.raises(PredictionTimeout) as caught:
        script.run(client.predictions.wait(state("pending"), timeout=1))
    assert script.sends()[0].request.timeout == httpx.Timeout(1)  # the stream gets what is left of it
    assert script.sleeps() == [0.25, 0.375, 0.375]  # the last one cut to the time left
    assert script.now == START + 1
    assert (caught.value.id, caught.value.prediction) == ("p1", state("processing", progress=0.5))
    assert client.session.stream_supported is None  # a failed connection says nothing about the route


def test_run_raises_when_the_awaited_prediction_failed() -> None:
    failed = state("failed", error="no person found", error_name="PoseError")
    script = Script([answer(201, failed)])
    updates: list[dict[str, Any]] = []
    with pytest.raises(PredictionFailed) as caught:
        script.run(plans(script).run("pose", {"image": "x"}, on_update=updates.append))
    assert (caught.value.error_name, caught.value.message) == ("PoseError", "no person found")
    assert updates == [failed]
    assert script.kinds() == ["Send"]
    assert orjson.loads(script.sends()[0].request.content or b"")["await"] is True


def test_run_with_a_timeout_creates_without_await_then_waits() -> None:
    script = Script([answer(201, state("pending")), event_stream(), None, answer(200, state("succeeded"))])
    assert script.run(plans(script).run("echo", {"text": "x"}, timeout=30))["status"] == "succeeded"
    create, stream, read = script.sends()
    assert "await" not in orjson.loads(create.request.content or b"")
    assert (stream.stream, stream.request.timeout) == (True, httpx.Timeout(30))
    assert read.request.path == "/v1/predictions/p1"
