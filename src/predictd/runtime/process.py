"""The server's handle on one worker subprocess (its body: worker_main.py; what they say: protocol.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections import deque
from typing import Any

from . import protocol
from .outcomes import Cancelled, Failed, Outcome, Succeeded, WorkerDied, deadline_failure

# What one read from a worker's stdout takes at most: every answer the pipe holds, usually.
_READ_BYTES = 256 * 1024


class WorkerStartError(Exception):
    """The worker did not get ready. ``setup_failed``: the model's own loading or setup raised (as opposed
    to a worker that died, or was too slow): it will fail the same way until an operator fixes it."""

    def __init__(self, message: str, *, setup_failed: bool = False) -> None:
        super().__init__(message)
        self.setup_failed = setup_failed


class WorkerProcess:
    def __init__(self, proc: asyncio.subprocess.Process, ready: protocol.Ready, cancel_fd: int) -> None:
        self._proc = proc
        self.ready = ready
        self._cancel_fd = cancel_fd  # write end of the worker's cancel pipe (see protocol.py)
        # Answers read from the worker and not yet taken, and the start of a line not yet whole.
        self._answers: deque[protocol.Answer] = deque()
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
                    limit=protocol.MAX_LINE_BYTES,
                    pass_fds=(cancel_read,),
                    env={
                        **os.environ,
                        "PYTHONUNBUFFERED": "1",
                        **(env or {}),
                        protocol.CANCEL_FD_ENV: str(cancel_read),
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
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                line = await proc.stdout.readline()
        except TimeoutError:
            await _terminate(proc)
            raise WorkerStartError(f"model setup did not finish within {timeout:g} s") from None
        if not line:
            await _terminate(proc)
            raise WorkerStartError(f"worker exited during setup (exit code {proc.returncode})")
        setup = protocol.decode_setup(line)
        if not isinstance(setup, protocol.Ready):
            await _terminate(proc)
            if setup is None:
                raise WorkerStartError("model setup failed")
            raise WorkerStartError(setup.message, setup_failed=True)
        return cls(proc, setup, cancel_fd)

    def send(self, prediction_id: str, inputs: dict[str, Any]) -> bool:
        """Hand the worker a prediction; it runs its predictions in the order sent. False: the worker is gone
        (answer() then reports WorkerDied). The pipe's buffer takes the line at once; a worker that stops
        reading is caught by the deadline."""
        assert self._proc.stdin is not None
        if self._proc.stdin.is_closing():
            return False
        try:
            self._proc.stdin.write(protocol.Predict(prediction_id, inputs).encode())
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
        answers = self._answers
        while True:
            while answers and answers[0].id != prediction_id:
                answers.popleft()  # the answer of a prediction given up on (its deadline passed)
            outcome = self.answered(prediction_id)
            if outcome is not None:
                return outcome
            if not answers and not await self._read_more():
                await self._proc.wait()
                self._close_cancel_pipe()
                return WorkerDied(f"worker exited with code {self._proc.returncode} during the prediction")

    def answered(self, prediction_id: str) -> Outcome | None:
        """The outcome of the next prediction the worker answers, ``prediction_id``, if that answer has been
        read already; None otherwise, without waiting and without taking any other answer (``answer``
        skips those of predictions given up on). Under load a worker runs ahead of the server and several
        answers arrive in one read: the caller can record them together."""
        answers = self._answers
        if answers and answers[0].id == prediction_id:
            return _outcome(answers.popleft())
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
            if len(partial) > protocol.MAX_LINE_BYTES:
                raise ValueError(f"a worker message is longer than {protocol.MAX_LINE_BYTES} bytes")
            return True
        lines = bytes(partial[:end]).split(b"\n")
        del partial[: end + 1]
        answers = (protocol.decode_answer(line) for line in lines if line)
        self._answers.extend(answer for answer in answers if answer is not None)
        return True

    def interrupt(self, prediction_id: str) -> None:
        """Cancel the prediction: stopped if running, answered ``cancelled`` unrun if it is still waiting in
        the worker's pipe, and nothing else is touched (the id travels with the signal)."""
        if not self.alive or self._cancel_fd < 0:
            return
        with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
            os.write(self._cancel_fd, protocol.Cancel(prediction_id).encode())
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


def _outcome(answer: protocol.Answer) -> Outcome:
    if isinstance(answer, protocol.Done):
        return Succeeded(answer.output, answer.predict_time)
    if isinstance(answer, protocol.Failed):
        return Failed(answer.error_name, answer.message, answer.predict_time)
    return Cancelled(answer.predict_time)


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
