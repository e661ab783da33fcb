"""The server's handle on one worker subprocess (see worker_main.py for the other end of the pipe)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import DEADLINE_EXCEEDED, UNAVAILABLE_ERROR

# Outputs can be large (images as base64); one protocol line may be this long.
MAX_LINE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Succeeded:
    output: Any
    predict_time: float


@dataclass(frozen=True, slots=True)
class Failed:
    error_name: str
    message: str
    predict_time: float | None


@dataclass(frozen=True, slots=True)
class Cancelled:
    predict_time: float | None


@dataclass(frozen=True, slots=True)
class WorkerDied:
    """The worker process ended while it held the prediction: the prediction may be run again."""

    detail: str


Outcome = Succeeded | Failed | Cancelled | WorkerDied


def deadline_failure(timeout_s: float) -> Failed:
    return Failed(DEADLINE_EXCEEDED.name, f"prediction exceeded its {timeout_s:g} s deadline", timeout_s)


def unavailable_failure(detail: str) -> Failed:
    return Failed(UNAVAILABLE_ERROR.name, detail, None)


class WorkerStartError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class ReadyInfo:
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    setup_time: float
    pid: int


class WorkerProcess:
    def __init__(self, proc: asyncio.subprocess.Process, ready: ReadyInfo) -> None:
        self._proc = proc
        self.ready = ready

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc.returncode is None

    @classmethod
    async def start(cls, ref: str, timeout: float, env: dict[str, str] | None = None) -> WorkerProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "predictd.runtime.worker_main",
            ref,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=MAX_LINE_BYTES,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        try:
            message = await asyncio.wait_for(cls._read(proc), timeout)
        except TimeoutError:
            await _terminate(proc)
            raise WorkerStartError(f"model setup did not finish within {timeout:g} s") from None
        if message is None:
            await _terminate(proc)
            raise WorkerStartError(f"worker exited during setup (exit code {proc.returncode})")
        if message.get("type") != "ready":
            await _terminate(proc)
            raise WorkerStartError(str(message.get("message", "model setup failed")))
        ready = ReadyInfo(
            input_schema=message["input_schema"],
            output_schema=message["output_schema"],
            setup_time=float(message["setup_time"]),
            pid=int(message["pid"]),
        )
        return cls(proc, ready)

    @staticmethod
    async def _read(proc: asyncio.subprocess.Process) -> dict[str, Any] | None:
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        if not line:
            return None
        message = orjson.loads(line)
        assert isinstance(message, dict)
        return message

    async def run(self, prediction_id: str, inputs: dict[str, Any], timeout: float) -> Outcome:
        """Run one prediction. On deadline the worker is interrupted, and killed if it does not stop."""
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(orjson.dumps({"type": "predict", "id": prediction_id, "input": inputs}))
            self._proc.stdin.write(b"\n")
            await self._proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            return WorkerDied("worker was gone before the prediction reached it")
        try:
            return await asyncio.wait_for(self._await_answer(prediction_id), timeout)
        except TimeoutError:
            self.interrupt()
            try:
                await asyncio.wait_for(self._await_answer(prediction_id), 2.0)
            except TimeoutError:
                await self.kill()
            return deadline_failure(timeout)

    async def _await_answer(self, prediction_id: str) -> Outcome:
        while True:
            message = await self._read(self._proc)
            if message is None:
                await self._proc.wait()
                return WorkerDied(f"worker exited with code {self._proc.returncode} during the prediction")
            if message.get("id") != prediction_id:
                continue
            kind = message.get("type")
            predict_time = message.get("predict_time")
            if kind == "succeeded":
                return Succeeded(message.get("output"), float(predict_time or 0.0))
            if kind == "failed":
                return Failed(str(message["error_name"]), str(message["message"]), predict_time)
            if kind == "cancelled":
                return Cancelled(predict_time)

    def interrupt(self) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGUSR1)

    async def kill(self) -> None:
        await _terminate(self._proc, graceful=False)

    async def stop(self) -> None:
        await _terminate(self._proc)


async def _terminate(proc: asyncio.subprocess.Process, graceful: bool = True) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        if graceful and proc.stdin is not None:
            proc.stdin.close()  # the worker's loop ends at EOF
        else:
            proc.kill()
    try:
        await asyncio.wait_for(proc.wait(), 5.0 if graceful else 2.0)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
