"""Every message between a worker subprocess (worker_main.py) and the server's handle on it (process.py).

The conversation, in order::

    server                                        worker
    ------                                        ------
    starts `python -m predictd.runtime.worker_main MODULE:CLASS`, handing it the read end of a cancel
    pipe (its fd number in the CANCEL_FD_ENV variable)
                                          <----   Ready(input_schema, output_schema, setup_time, pid)
                                                  or SetupFailed(message), and the worker exits
    Predict(id, inputs)                   ---->   as many as the server likes, sent ahead of their turn:
                                                  the worker runs them in the order sent
                                          <----   Started(id)
                                          <----   one Answer: Done(id, output, predict_time)
                                                  | Failed(id, error_name, message, predict_time)
                                                  | Cancelled(id, predict_time)
    Cancel(id) on the cancel pipe, then SIGUSR1   a running prediction with that id is interrupted; one
                                                  still waiting in the pipe is answered Cancelled unrun
    closes the worker's stdin             ---->   the worker's loop ends and it exits 0

On stdin and stdout the wire is one orjson object per line, its kind under ``"type"``. The worker writes to
a private duplicate of its stdout (fd 1 itself points at stderr, so a model's ``print()`` cannot corrupt the
conversation; a model's logs and tracebacks go to stderr, which the server's process shares). The cancel
pipe carries bare ids, one per line, so that a cancel names its prediction and never stops the next one.

A message of a kind this end does not know decodes to None and is passed over, as the server passes over
Started (it has no use for it yet). This module is imported inside the model's process: it stays stdlib
and orjson only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

# The variable that tells a worker the fd number of its cancel pipe.
CANCEL_FD_ENV = "PREDICTD_CANCEL_FD"
# Outputs can be large (images as base64); one line may be this long.
MAX_LINE_BYTES = 256 * 1024 * 1024

_LINE = orjson.OPT_APPEND_NEWLINE  # one allocation per line: no ``+ b"\n"`` copy of a large output

# -- worker -> server: setup -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ready:
    """The model is loaded: the worker takes predictions from now on."""

    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    setup_time: float
    pid: int

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "type": "ready",
                "input_schema": self.input_schema,
                "output_schema": self.output_schema,
                "setup_time": self.setup_time,
                "pid": self.pid,
            },
            option=_LINE,
        )

    @classmethod
    def decode(cls, fields: dict[str, Any]) -> Ready:
        return cls(
            fields["input_schema"], fields["output_schema"], float(fields["setup_time"]), int(fields["pid"])
        )


@dataclass(frozen=True, slots=True)
class SetupFailed:
    """Loading the model failed; the worker exits after saying why."""

    message: str

    def encode(self) -> bytes:
        return orjson.dumps({"type": "setup_failed", "message": self.message}, option=_LINE)

    @classmethod
    def decode(cls, fields: dict[str, Any]) -> SetupFailed:
        return cls(str(fields["message"]))


Setup = Ready | SetupFailed

# -- server -> worker --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Predict:
    """Run a prediction on these inputs (as the API validated them), after those sent before it."""

    id: str
    inputs: dict[str, Any]

    def encode(self) -> bytes:
        return orjson.dumps({"type": "predict", "id": self.id, "input": self.inputs}, option=_LINE)

    @classmethod
    def decode(cls, fields: dict[str, Any]) -> Predict:
        return cls(fields["id"], fields["input"])


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop this prediction if it runs, skip it if it waits (on the cancel pipe, followed by SIGUSR1)."""

    id: str

    def encode(self) -> bytes:
        return self.id.encode() + b"\n"


# -- worker -> server: per prediction ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Started:
    """The worker took the prediction up (every message before it has been answered)."""

    id: str

    def encode(self) -> bytes:
        return orjson.dumps({"type": "started", "id": self.id}, option=_LINE)

    @classmethod
    def decode(cls, fields: dict[str, Any]) -> Started:
        return cls(fields["id"])


@dataclass(frozen=True, slots=True)
class Done:
    """predict() returned; ``output`` is its result as JSON (media already stored or inlined)."""

    id: str
    output: Any
    predict_time: float

    def encode(self) -> bytes:
        return orjson.dumps(
            {"type": "succeeded", "id": self.id, "output": self.output, "predict_time": self.predict_time},
            option=_LINE,
        )

    @classmethod
    def decode(cls, fields: dict[str, Any]) -> Done:
        return cls(fields["id"], fields.get("output"), float(fields["predict_time"]))


@dataclass(frozen=True, slots=True)
class Failed:
    """The prediction failed: ``error_name`` is a runtime error of the catalog, or a model's own name."""

    id: str
    error_name: str
    message: str
    predict_time: float

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "type": "failed",
                "id": self.id,
                "error_name": self.error_name,
                "message": self.message,
                "predict_time": self.predict_time,
            },
            option=_LINE,
        )

    @classmethod
    def decode(cls, fields: dict[str, Any]) -> Failed:
        return cls(
            fields["id"], str(fields["error_name"]), str(fields["message"]), float(fields["predict_time"])
        )


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The prediction was cancelled: interrupted while it ran, or never run."""

    id: str
    predict_time: float

    def encode(self) -> bytes:
        return orjson.dumps(
            {"type": "cancelled", "id": self.id, "predict_time": self.predict_time}, option=_LINE
        )

    @classmethod
    def decode(cls, fields: dict[str, Any]) -> Cancelled:
        return cls(fields["id"], float(fields["predict_time"]))


Answer = Done | Failed | Cancelled
Report = Started | Answer

# -- decoding ----------------------------------------------------------------------------------------------

_SETUP: dict[str, Callable[[dict[str, Any]], Setup]] = {
    "ready": Ready.decode,
    "setup_failed": SetupFailed.decode,
}
_ANSWERS: dict[str, Callable[[dict[str, Any]], Answer]] = {
    "succeeded": Done.decode,
    "failed": Failed.decode,
    "cancelled": Cancelled.decode,
}


def decode_setup(line: bytes) -> Setup | None:
    """The worker's first line."""
    fields = orjson.loads(line)
    decode = _SETUP.get(fields.get("type"))
    return None if decode is None else decode(fields)


def decode_answer(line: bytes) -> Answer | None:
    """A line the worker wrote about a prediction, if it is an answer. The server has no use for Started, so
    it is passed over undecoded: this is the hot path, a busy server reads many lines per prediction."""
    fields = orjson.loads(line)
    decode = _ANSWERS.get(fields.get("type"))
    return None if decode is None else decode(fields)


def decode_request(line: bytes) -> Predict | None:
    """A line the server wrote to the worker's stdin."""
    fields = orjson.loads(line)
    return Predict.decode(fields) if fields.get("type") == "predict" else None


def decode_cancels(data: bytes) -> list[Cancel]:
    """What the cancel pipe held (whole lines: the server writes each id with its newline in one write)."""
    return [Cancel(line.decode()) for line in data.split(b"\n") if line]
