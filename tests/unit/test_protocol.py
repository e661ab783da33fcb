"""The worker protocol: every message is one JSON line on the wire, read back as the same message; the wire
is the one both ends spoke before the messages had types."""

from __future__ import annotations

import orjson
import pytest

from predictd.runtime.protocol import (
    Cancel,
    Cancelled,
    Done,
    Failed,
    Predict,
    Ready,
    Report,
    Setup,
    SetupFailed,
    Started,
    decode_answer,
    decode_cancels,
    decode_request,
    decode_setup,
)

SETUP = [Ready({"type": "object"}, {"type": "string"}, 1.5, 4242), SetupFailed("ImportError: no torch")]
ANSWERS = [
    Done("p1", {"text": "x", "sizes": [1, 2]}, 0.25),
    Failed("p1", "InputValidationError", "input.size: too big", 0.01),
    Cancelled("p1", 0.5),
]
MESSAGES = [*SETUP, Predict("p1", {"text": "x"}), Started("p1"), *ANSWERS]


@pytest.mark.parametrize("message", MESSAGES, ids=repr)
def test_each_message_is_one_line_that_reads_back_as_itself(message: Setup | Report | Predict) -> None:
    line = message.encode()
    assert line.endswith(b"\n")
    assert b"\n" not in line[:-1]
    assert type(message).decode(orjson.loads(line)) == message


def test_each_end_reads_the_messages_meant_for_it() -> None:
    assert [decode_setup(m.encode()) for m in SETUP] == SETUP
    assert [decode_answer(m.encode()) for m in ANSWERS] == ANSWERS
    assert decode_answer(Started("p1").encode()) is None  # the server has no use for it
    assert decode_request(Predict("p1", {"text": "x"}).encode()) == Predict("p1", {"text": "x"})


def test_the_wire_is_unchanged() -> None:
    assert orjson.loads(Predict("p1", {"text": "x"}).encode()) == {
        "type": "predict",
        "id": "p1",
        "input": {"text": "x"},
    }
    assert decode_answer(b'{"type":"succeeded","output":"x","id":"p1","predict_time":0.1}\n') == Done(
        "p1", "x", 0.1
    )
    assert decode_setup(b'{"type":"setup_failed","message":"boom"}') == SetupFailed("boom")
    assert decode_cancels(Cancel("p1").encode() + Cancel("p2").encode()) == [Cancel("p1"), Cancel("p2")]


def test_a_message_of_a_kind_this_end_does_not_know_is_passed_over() -> None:
    assert decode_answer(b'{"type":"log","id":"p1","text":"hello"}') is None
    assert decode_request(b'{"type":"shutdown"}') is None
    assert decode_setup(b'{"type":"started","id":"p1"}') is None
