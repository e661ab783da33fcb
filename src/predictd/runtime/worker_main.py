"""The body of a worker subprocess: load one model once, then run the predictions sent over stdin.

What it says to the server, and when, is in protocol.py. Answers go to a private duplicate of stdout; fd 1
itself is pointed at stderr so that a model's ``print()`` cannot corrupt the conversation.

Cancelling: the server writes the prediction's id to the cancel pipe, then sends SIGUSR1. The signal
interrupts predict() only when the running prediction is one of the ids read; a prediction cancelled before
it starts (it was sent ahead) is answered Cancelled without running. So a cancel that arrives just as one
prediction ends never stops the next.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from types import FrameType
from typing import IO, Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from ..errors import PIPELINE_ERROR, RUNTIME_ERRORS, ModelError
from .pipeline import Pipeline, WorkerConfig
from .predictor import (
    BasePredictor,
    input_model,
    input_schema,
    load_predictor_class,
    output_adapter,
    output_schema,
)
from .protocol import (
    CANCEL_FD_ENV,
    Answer,
    Cancelled,
    Done,
    Failed,
    Predict,
    Ready,
    Report,
    Setup,
    SetupFailed,
    Started,
    decode_cancels,
    decode_request,
)

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
    _State.cancelled.update(cancel.id for cancel in decode_cancels(data))


def _on_cancel(_signum: int, _frame: FrameType | None) -> None:
    _read_cancels()
    if _State.running is not None and _State.running in _State.cancelled:
        raise CancelRequested


def _send(channel: IO[bytes], message: Setup | Report) -> None:
    channel.write(message.encode())
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
    cancel_fd = os.environ.get(CANCEL_FD_ENV)
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
        ready = Ready(schema, output_schema(cls), time.perf_counter() - started, os.getpid())
    except BaseException as exc:  # a model's setup may fail in any way; the server must hear why
        traceback.print_exc()
        _send(channel, SetupFailed(_short(f"{type(exc).__name__}: {exc}")))
        return 1
    _send(channel, ready)

    for line in sys.stdin.buffer:
        request = decode_request(line)
        if request is None:
            continue
        _send(channel, Started(request.id))
        _send(channel, _answer(request, predictor, pipeline, inputs_model, outputs))
    return 0


def _answer(
    request: Predict,
    predictor: BasePredictor,
    pipeline: Pipeline,
    inputs_model: type[BaseModel],
    outputs: TypeAdapter[Any],
) -> Answer:
    """Run one prediction; every way it can end is an answer (a cancel arrives as CancelRequested)."""
    prediction_id = request.id
    t0 = time.perf_counter()
    try:
        try:
            _State.running = prediction_id
            _read_cancels()  # cancelled while it waited in the pipe: never run it
            if prediction_id in _State.cancelled:
                raise CancelRequested
            inputs, options = pipeline.prepare(request.inputs)
            values = inputs_model.model_validate(inputs)
            result = predictor.predict(**dict(values))  # type: ignore[attr-defined]
            finished = pipeline.finish(result, options)
        finally:
            _State.running = None
            _State.cancelled.discard(prediction_id)
        output = outputs.dump_python(finished, mode="json", warnings=False)
        return Done(prediction_id, output, time.perf_counter() - t0)
    except CancelRequested:
        return Cancelled(prediction_id, time.perf_counter() - t0)
    except ModelError as exc:
        spec = exc.spec()
        message = _short(str(exc) or spec.meaning)
        return Failed(prediction_id, spec.name, message, time.perf_counter() - t0)
    except ValidationError as exc:
        name = RUNTIME_ERRORS["InputValidationError"].name
        return Failed(prediction_id, name, _short(_validation_message(exc)), time.perf_counter() - t0)
    except Exception as exc:
        traceback.print_exc()
        message = _short(f"{type(exc).__name__}: {exc}")
        return Failed(prediction_id, PIPELINE_ERROR.name, message, time.perf_counter() - t0)


def main() -> None:
    if len(sys.argv) != 2:
        print("usage: python -m predictd.runtime.worker_main MODULE:CLASS", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(run(sys.argv[1]))


if __name__ == "__main__":
    main()
