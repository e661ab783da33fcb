"""The asynchronous client, ``predictd.AsyncClient``: performs the core's plans with ``httpx.AsyncClient``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Any, Never, ParamSpec, Self, TypeVar

import httpx

from ._effects import IO, Close, Emit, Emits, NextLine, Plan, Read, Send, Sleep, Steps
from ._surface import AsyncAPI, BaseClient, BaseModels, BasePredictions

P = ParamSpec("P")
R = TypeVar("R")
E = TypeVar("E")


class AsyncClient(BaseClient[httpx.AsyncClient], AsyncAPI):
    """The asyncio twin of :class:`predictd.Client`: every method is a coroutine, ``predictions.list`` and
    ``predictions.stream`` are async iterators."""

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _attach_resources(self) -> None:
        self.predictions = AsyncPredictions(self)
        self.models = AsyncModels(self)

    # -- the driver: the only I/O --------------------------------------------------------------------------

    def _open_pool(self, timeout: httpx.Timeout) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=timeout)

    def _bind(self, plan: Callable[P, Plan[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        async def call(*args: P.args, **kwargs: P.kwargs) -> R:
            steps: Steps[Never, R] = Steps(plan(*args, **kwargs))
            async for _ in self._perform(steps):
                pass  # a plan with a result hands nothing out
            return steps.result

        return call

    def _bind_iter(self, plan: Callable[P, Emits[E]]) -> Callable[P, AsyncGenerator[E, None]]:
        def each(*args: P.args, **kwargs: P.kwargs) -> AsyncGenerator[E, None]:
            return self._perform(Steps(plan(*args, **kwargs)))

        return each

    async def _perform(self, steps: Steps[E, Any]) -> AsyncGenerator[E, None]:
        """Performs each effect the plan asks for, handing out what it emits; closes what it left open."""
        async with AsyncExitStack() as opened:
            lines: dict[httpx.Response, AsyncIterator[str]] = {}
            for effect in steps:
                if isinstance(effect, Emit):
                    yield effect.value
                else:
                    steps.answer = await self._do(effect, opened, lines)

    async def _do(
        self, effect: IO, opened: AsyncExitStack, lines: dict[httpx.Response, AsyncIterator[str]]
    ) -> object:
        try:
            match effect:
                case Send(request, stream):
                    response = await self._http.send(request.build(self._http), stream=stream)
                    if stream:
                        opened.push_async_callback(response.aclose)
                        lines[response] = response.aiter_lines()
                    return response
                case Read(response):
                    await response.aread()
                case NextLine(response):
                    return await anext(lines[response], None)
                case Close(response):
                    await response.aclose()
                case Sleep(seconds):
                    await asyncio.sleep(seconds)
        except httpx.TransportError as exc:
            return exc
        return None


class AsyncPredictions(BasePredictions, AsyncAPI):
    """``client.predictions`` of an AsyncClient."""


class AsyncModels(BaseModels, AsyncAPI):
    """``client.models`` of an AsyncClient."""
