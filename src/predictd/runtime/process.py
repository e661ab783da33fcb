"""The server's handle on one worker subprocess (see worker_main.py for the other end of the pipe)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

from .outcomes import Cancelled, Failed, Outcome, Succeeded, WorkerDied, deadline_failure

# Outputs can be large (images as base64); one protocol line may be this long.
MAX_LINE_BYTES = 256 * 1024 * 1024
# What one read from a worker's stdout takes at most: every answer the pipe holds, usually.
_READ_BYTES = 256 * 1024


class WorkerStartError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class ReadyInfo:
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    setup_time: float
    pid: int


class WorkerProcess:
    def __init__(self, proc: asyncio.subprocess.Process, ready: ReadyInfo, cancel_fd: int) -> None:
        self._proc = proc
        self.ready = ready
        self._cancel_fd = cancel_fd  # write end of the worker's cancel pipe (see worker_main.py)
        # Messages read from the worker and not yet taken, and the start of a line not yet whole.
        self._messages: deque[dict[str, Any]] = deque()
        self._partial = bytearray()

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc.returncode is None

    @classmethod
    async def start(cls, ref: str, timeout: float, env: dict[str, str] | None = None) -> WorkerProcess:
        cancel_read, cancel_write = os.pipe()
        os.set_blocking(cancel_write, False)
        try:
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "predictd.runtime.worker_main",
                    ref,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    limit=MAX_LINE_BYTES,
                    pass_fds=(cancel_read,),
                    env={
                        **os.environ,
                        "PYTHONUNBUFFERED": "1",
                        **(env or {}),
                        "PREDICTD_CANCEL_FD": str(cancel_read),
                    },
                )
            finally:
                os.close(cancel_read)  # the worker has its own copy
            return await cls._handshake(proc, timeout, cancel_write)
        except BaseException:
            os.close(cancel_write)
            raise

    @classmethod
    async def _handshake(
        cls, proc: asyncio.subprocess.Process, timeout: float, cancel_fd: int
    ) -> WorkerProcess:
        try:
            async with asyncio.timeout(timeout):
                message = await cls._read(proc)
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
        return cls(proc, ready, cancel_fd)

    @staticmethod
    async def _read(proc: asyncio.subprocess.Process) -> dict[str, Any] | None:
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        if not line:
            return None
        message = orjson.loads(line)
        assert isinstance(message, dict)
        return message

    def send(self, prediction_id: str, inputs: dict[str, Any]) -> bool:
        """Hand the worker a prediction; it runs its predictions in the order sent. False: the worker is gone
        (answer() then reports WorkerDied). The pipe's buffer takes the line at once; a worker that stops
        reading is caught by the deadline."""
        assert self._proc.stdin is not None
        if self._proc.stdin.is_closing():
            return False
        try:
            self._proc.stdin.write(
                orjson.dumps({"type": "predict", "id": prediction_id, "input": inputs}) + b"\n"
            )
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    async def answer(self, prediction_id: str, timeout: float) -> Outcome:
        """The outcome of a prediction sent earlier, once every prediction sent before it has answered.
        On deadline the worker is interrupted, and killed if it does not stop."""
        # asyncio.timeout rather than wait_for: on Python 3.11 wait_for runs the read in a task of its own,
        # two more turns of the event loop per prediction, which a busy API process feels in throughput.
        try:
            async with asyncio.timeout(timeout):
                return await self._await_answer(prediction_id)
        except TimeoutError:
            self.interrupt(prediction_id)
            try:
                async with asyncio.timeout(2.0):
                    await self._await_answer(prediction_id)
            except TimeoutError:
                await self.kill()
            return deadline_failure(timeout)

    async def _await_answer(self, prediction_id: str) -> Outcome:
        messages = self._messages
        while True:
            while messages and messages[0].get("id") != prediction_id:
                messages.popleft()  # the answer of a prediction given up on (its deadline passed)
            outcome = self.answered(prediction_id)
            if outcome is not None:
                return outcome
            if not messages and not await self._read_more():
                await self._proc.wait()
                self._close_cancel_pipe()
                return WorkerDied(f"worker exited with code {self._proc.returncode} during the prediction")

    def answered(self, prediction_id: str) -> Outcome | None:
        """The outcome of the next prediction the worker answers, ``prediction_id``, if that answer has been
        read already; None otherwise, without waiting and without taking any other message (``answer``
        skips those of predictions given up on). Under load a worker runs ahead of the server and several
        answers arrive in one read: the caller can record them together."""
        messages = self._messages
        while messages and messages[0].get("id") == prediction_id:
            outcome = _outcome(messages.popleft())
            if outcome is not None:
                return outcome
        return None

    async def _read_more(self) -> bool:
        """Read what the worker has written, at least one byte; False at its end."""
        assert self._proc.stdout is not None
        chunk = await self._proc.stdout.read(_READ_BYTES)
        if not chunk:
            return False
        partial = self._partial
        searched = len(partial)
        partial += chunk
        end = partial.rfind(b"\n", searched)
        if end < 0:
            if len(partial) > MAX_LINE_BYTES:
                raise ValueError(f"a worker message is longer than {MAX_LINE_BYTES} bytes")
            return True
        lines = bytes(partial[:end]).split(b"\n")
        del partial[: end + 1]
        self._messages.extend(orjson.loads(line) for line in lines if line)
        return True

    def interrupt(self, prediction_id: str) -> None:
        """Cancel the prediction: stopped if running, answered ``cancelled`` unrun if it is still waiting in
        the worker's pipe, and nothing else is touched (the id travels with the signal)."""
        if not self.alive or self._cancel_fd < 0:
            return
        with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
            os.write(self._cancel_fd, prediction_id.encode() + b"\n")
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(signal.SIGUSR1)

    async def kill(self) -> None:
        await _terminate(self._proc, graceful=False)
        self._close_cancel_pipe()

    async def stop(self) -> None:
        await _terminate(self._proc)
        self._close_cancel_pipe()

    def _close_cancel_pipe(self) -> None:
        if self._cancel_fd >= 0:
            os.close(self._cancel_fd)
            self._cancel_fd = -1


def _outcome(message: dict[str, Any]) -> Outcome | None:
    kind = message.get("type")
    predict_time = message.get("predict_time")
    if kind == "succeeded":
        return Succeeded(message.get("output"), float(predict_time or 0.0))
    if kind == "failed":
        return Failed(str(message["error_name"]), str(message["message"]), predict_time)
    if kind == "cancelled":
        return Cancelled(predict_time)
    return None


async def _terminate(proc: asyncio.subprocess.Process, graceful: bool = True) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        if graceful and proc.stdin is not None:
            proc.stdin.close()  # the worker's loop ends at EOF
        else:
            proc.kill()
    try:
        async with asyncio.timeout(5.0 if graceful else 2.0):
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
