"""The synchronous client, ``predictd.Client``: performs the core's plans with ``httpx.Client``."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack
from typing import Any, Never, ParamSpec, Self, TypeVar

import httpx

from ._effects import IO, Close, Emit, Emits, NextLine, Plan, Read, Send, Sleep, Steps
from ._surface import BaseClient, BaseModels, BasePredictions, SyncAPI

P = ParamSpec("P")
R = TypeVar("R")
E = TypeVar("E")


class Client(BaseClient[httpx.Client], SyncAPI):
    """A predictd client.

    ``api_key`` defaults to ``$PREDICTD_API_KEY``, ``base_url`` to ``$PREDICTD_BASE_URL`` or
    ``http://127.0.0.1:8000``. Connection errors, 429 and 500/502/503/504 are retried ``max_retries`` times
    with exponential backoff and full jitter (or after the server's ``Retry-After``).
    """

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _attach_resources(self) -> None:
        self.predictions = Predictions(self)
        self.models = Models(self)

    # -- the driver: the only I/O --------------------------------------------------------------------------

    def _open_pool(self, timeout: httpx.Timeout) -> httpx.Client:
        return httpx.Client(timeout=timeout)

    def _bind(self, plan: Callable[P, Plan[R]]) -> Callable[P, R]:
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            steps: Steps[Never, R] = Steps(plan(*args, **kwargs))
            for _ in self._perform(steps):
                pass  # a plan with a result hands nothing out
            return steps.result

        return call

    def _bind_iter(self, plan: Callable[P, Emits[E]]) -> Callable[P, Generator[E, None, None]]:
        def each(*args: P.args, **kwargs: P.kwargs) -> Generator[E, None, None]:
            return self._perform(Steps(plan(*args, **kwargs)))

        return each

    def _perform(self, steps: Steps[E, Any]) -> Generator[E, None, None]:
        """Performs each effect the plan asks for, handing out what it emits; closes what it left open."""
        with ExitStack() as opened:
            lines: dict[httpx.Response, Iterator[str]] = {}
            for effect in steps:
                if isinstance(effect, Emit):
                    yield effect.value
                else:
                    steps.answer = self._do(effect, opened, lines)

    def _do(self, effect: IO, opened: ExitStack, lines: dict[httpx.Response, Iterator[str]]) -> object:
        try:
            match effect:
                case Send(request, stream):
                    response = self._http.send(request.build(self._http), stream=stream)
                    if stream:
                        opened.callback(response.close)
                        lines[response] = response.iter_lines()
                    return response
                case Read(response):
                    response.read()
                case NextLine(response):
                    return next(lines[response], None)
                case Close(response):
                    response.close()
                case Sleep(seconds):
                    time.sleep(seconds)
        except httpx.TransportError as exc:
            return exc
        return None


class Predictions(BasePredictions, SyncAPI):
    """``client.predictions``."""


class Models(BaseModels, SyncAPI):
    """``client.models``."""
