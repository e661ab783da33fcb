"""The body of a worker subprocess: load one model once, then run predictions sent over stdin.

Protocol: one orjson object per line. The server sends ``{"type": "predict", "id", "input"}``; the worker
answers ``ready`` / ``setup_failed`` once, then ``started`` and one of ``succeeded`` / ``failed`` /
``cancelled`` per prediction. Answers go to a private duplicate of stdout; fd 1 itself is pointed at
stderr so that a model's ``print()`` cannot corrupt the protocol.

Cancelling: the server writes the prediction's id and a newline to the cancel pipe (its fd is in
``PREDICTD_CANCEL_FD``), then sends SIGUSR1. The signal interrupts predict() only when the running prediction
is one of the ids read; a prediction cancelled before it starts (it was sent ahead) is answered
``cancelled`` without running. So a cancel that arrives just as one prediction ends never stops the next.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from types import FrameType
from typing import IO, Any

import orjson
from pydantic import ValidationError

from ..errors import PIPELINE_ERROR, RUNTIME_ERRORS, ModelError
from .pipeline import Pipeline, WorkerConfig
from .predictor import input_model, input_schema, load_predictor_class, output_adapter, output_schema

MAX_MESSAGE_CHARS = 2000


class CancelRequested(BaseException):
    """Raised inside predict() by SIGUSR1. A BaseException so that a model's ``except Exception`` cannot
    swallow it."""


class _State:
    running: str | None = None  # the prediction inside predict() right now
    cancelled: set[str] = set()
    cancel_fd: int | None = None


def _read_cancels() -> None:
    fd = _State.cancel_fd
    if fd is None:
        return
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    _State.cancelled.update(line.decode() for line in data.split(b"\n") if line)


def _on_cancel(_signum: int, _frame: FrameType | None) -> None:
    _read_cancels()
    if _State.running is not None and _State.running in _State.cancelled:
        raise CancelRequested


def _send(channel: IO[bytes], message: dict[str, Any]) -> None:
    channel.write(orjson.dumps(message) + b"\n")
    channel.flush()


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def _validation_message(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "input"
        parts.append(f"input.{where}: {item['msg']}")
    return "; ".join(parts)


def run(ref: str) -> int:
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    cancel_fd = os.environ.get("PREDICTD_CANCEL_FD")
    if cancel_fd:
        _State.cancel_fd = int(cancel_fd)
        os.set_blocking(_State.cancel_fd, False)
    signal.signal(signal.SIGUSR1, _on_cancel)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when workers stop

    started = time.perf_counter()
    try:
        cls = load_predictor_class(ref)
        predictor = cls()
        predictor.setup()
        inputs_model = input_model(cls)
        outputs = output_adapter(cls)
        schema = input_schema(cls)
        pipeline = Pipeline(schema, set(inputs_model.model_fields), WorkerConfig.from_env())
        ready = {
            "type": "ready",
            "input_schema": schema,
            "output_schema": output_schema(cls),
            "setup_time": time.perf_counter() - started,
            "pid": os.getpid(),
        }
    except BaseException as exc:  # a model's setup may fail in any way; the server must hear why
        traceback.print_exc()
        _send(channel, {"type": "setup_failed", "message": _short(f"{type(exc).__name__}: {exc}")})
        return 1
    _send(channel, ready)

    for line in sys.stdin.buffer:
        request = orjson.loads(line)
        if request.get("type") != "predict":
            continue
        prediction_id = request["id"]
        _send(channel, {"type": "started", "id": prediction_id})
        t0 = time.perf_counter()
        answer: dict[str, Any]
        try:
            try:
                _State.running = prediction_id
                _read_cancels()  # cancelled while it waited in the pipe: never run it
                if prediction_id in _State.cancelled:
                    raise CancelRequested
                inputs, options = pipeline.prepare(request["input"])
                values = inputs_model.model_validate(inputs)
                result = predictor.predict(**dict(values))  # type: ignore[attr-defined]
                finished = pipeline.finish(result, options)
            finally:
                _State.running = None
                _State.cancelled.discard(prediction_id)
            answer = {
                "type": "succeeded",
                "output": outputs.dump_python(finished, mode="json", warnings=False),
            }
        except CancelRequested:
            answer = {"type": "cancelled"}
        except ModelError as exc:
            spec = exc.spec()
            answer = {"type": "failed", "error_name": spec.name, "message": _short(str(exc) or spec.meaning)}
        except ValidationError as exc:
            answer = {
                "type": "failed",
                "error_name": RUNTIME_ERRORS["InputValidationError"].name,
                "message": _short(_validation_message(exc)),
            }
        except Exception as exc:
            traceback.print_exc()
            answer = {
                "type": "failed",
                "error_name": PIPELINE_ERROR.name,
                "message": _short(f"{type(exc).__name__}: {exc}"),
            }
        answer["id"] = prediction_id
        answer["predict_time"] = time.perf_counter() - t0
        _send(channel, answer)
    return 0


def main() -> None:
    if len(sys.argv) != 2:
        print("usage: python -m predictd.runtime.worker_main MODULE:CLASS", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(run(sys.argv[1]))


if __name__ == "__main__":
    main()
