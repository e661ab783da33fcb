"""The asynchronous client: ``predictd.AsyncClient`` (same API as Client, awaitable)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from datetime import date, datetime
from types import TracebackType
from typing import Any

import httpx

from . import _base
from ._base import OnUpdate, Page, Prediction, PredictionRef, ServerSentEvent, prediction_id
from .errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    PredictionTimeout,
    error_from_response,
)


class AsyncClient:
    """The asyncio twin of :class:`predictd.Client`: every method is a coroutine, ``predictions.list`` and
    ``predictions.stream`` are async iterators."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int = _base.DEFAULT_MAX_RETRIES,
        poll_interval: float = 0.25,
        max_poll_interval: float = 2.0,
        headers: Mapping[str, str] | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._settings = _base.make_settings(
            api_key, base_url, timeout, max_retries, poll_interval, max_poll_interval, headers
        )
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=self._settings.timeout)
        self._stream_supported: bool | None = None
        self.predictions = AsyncPredictions(self)
        self.models = AsyncModels(self)

    @property
    def base_url(self) -> str:
        return self._settings.base_url

    @property
    def api_key(self) -> str | None:
        return self._settings.api_key

    @property
    def max_retries(self) -> int:
        return self._settings.max_retries

    @property
    def timeout(self) -> httpx.Timeout:
        return self._settings.timeout

    def with_options(
        self,
        *,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int | None = None,
        poll_interval: float | None = None,
    ) -> AsyncClient:
        """A client with some settings changed, sharing this one's connection pool."""
        s = self._settings
        return AsyncClient(
            s.api_key,
            base_url=s.base_url,
            timeout=timeout if timeout is not None else s.timeout,
            max_retries=max_retries if max_retries is not None else s.max_retries,
            poll_interval=poll_interval if poll_interval is not None else s.poll_interval,
            max_poll_interval=s.max_poll_interval,
            headers=s.headers,
            http_client=self._http,
        )

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- top level -----------------------------------------------------------------------------------------

    async def run(
        self,
        model: str,
        input: Mapping[str, Any],
        *,
        timeout: float | None = None,
        on_update: OnUpdate | None = None,
        idempotency_key: str | None = None,
    ) -> Prediction:
        """Create a prediction and wait until it ends; see :meth:`predictd.Client.run`."""
        prediction = await self.predictions.create(
            model, input, wait=timeout is None, idempotency_key=idempotency_key
        )
        if on_update is not None:
            on_update(prediction)
        if not _base.is_terminal(prediction):
            prediction = await self.predictions.wait(prediction, timeout=timeout, on_update=on_update)
        return _base.ensure_succeeded(prediction)

    async def account(self) -> dict[str, Any]:
        """``GET /v1/account``: the key's account."""
        return dict(await self._json("GET", "/v1/account"))

    async def credits(self) -> dict[str, Any]:
        """``GET /v1/credits``: the account's credit balance."""
        return dict(await self._json("GET", "/v1/credits"))

    # -- transport -----------------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self._settings.base_url}{path}"

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> httpx.Response:
        headers = self._settings.request_headers
        content: bytes | None = None
        if body is not None:
            content = _base.encode_json(body)
            headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = await self._http.request(
                    method,
                    self._url(path),
                    content=content,
                    params=params,
                    headers=headers,
                    timeout=self._settings.timeout,
                )
            except httpx.TransportError as exc:
                if attempt >= self._settings.max_retries:
                    kind = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
                    raise kind(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
            else:
                if response.is_success:
                    return response
                if attempt >= self._settings.max_retries or not _base.should_retry(response):
                    raise error_from_response(response)
            await asyncio.sleep(_base.retry_delay(attempt, response))
            attempt += 1

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return _base.decode_json(await self._request(method, path, **kwargs))


class AsyncPredictions:
    """``client.predictions`` of an AsyncClient."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        model: str,
        input: Mapping[str, Any],
        *,
        wait: bool = False,
        stream: bool | None = None,
        webhook: Mapping[str, Any] | str | None = None,
        idempotency_key: str | None = None,
    ) -> Prediction:
        """``POST /v1/predictions``; see :meth:`predictd.sdk.Predictions.create`."""
        return dict(
            await self._client._json(
                "POST",
                "/v1/predictions",
                body=_base.create_body(model, input, wait, stream, webhook),
                idempotency_key=idempotency_key or _base.new_idempotency_key(),
            )
        )

    async def get(self, prediction: PredictionRef) -> Prediction:
        path = f"/v1/predictions/{_base.segment(prediction_id(prediction))}"
        return dict(await self._client._json("GET", path))

    async def cancel(self, prediction: PredictionRef) -> Prediction:
        path = f"/v1/predictions/{_base.segment(prediction_id(prediction))}/cancel"
        return dict(await self._client._json("POST", path))

    async def delete(self, prediction: PredictionRef) -> Prediction:
        path = f"/v1/predictions/{_base.segment(prediction_id(prediction))}/delete"
        return dict(await self._client._json("DELETE", path))

    async def list_page(
        self,
        page: int = 1,
        *,
        per_page: int | None = None,
        model: str | None = None,
        since: str | date | datetime | None = None,
        until: str | date | datetime | None = None,
    ) -> Page:
        params = _base.list_params(page, per_page, model, since, until)
        return Page.parse(await self._client._json("GET", "/v1/predictions", params=params))

    async def list(
        self,
        *,
        per_page: int | None = None,
        model: str | None = None,
        since: str | date | datetime | None = None,
        until: str | date | datetime | None = None,
        page: int = 1,
    ) -> AsyncIterator[Prediction]:
        """Every prediction (newest first) across pages: ``async for p in client.predictions.list()``."""
        while True:
            current = await self.list_page(page, per_page=per_page, model=model, since=since, until=until)
            for item in current.data:
                yield item
            if not current.has_next:
                return
            page = current.current_page + 1

    async def stream(
        self, prediction: PredictionRef, *, timeout: float | None = None
    ) -> AsyncGenerator[ServerSentEvent, None]:
        """The events of ``GET /v1/predictions/{id}/stream``; see :meth:`predictd.sdk.Predictions.stream`."""
        client = self._client
        ident = prediction_id(prediction)
        path = f"/v1/predictions/{_base.segment(ident)}/stream"
        headers = {**client._settings.request_headers, "Accept": "text/event-stream"}
        request_timeout = client._settings.timeout if timeout is None else httpx.Timeout(timeout)
        try:
            async with client._http.stream(
                "GET", client._url(path), headers=headers, timeout=request_timeout
            ) as r:
                if not r.is_success:
                    await r.aread()
                    raise error_from_response(r)
                if not _base.is_event_stream(r):
                    raise APIError(
                        f"GET {path} answered {r.headers.get('content-type')!r}, not an event stream",
                        status=r.status_code,
                        error_id="NOT_AN_EVENT_STREAM",
                        headers=dict(r.headers.items()),
                    )
                decoder = _base.SSEDecoder()
                async for line in r.aiter_lines():
                    event = decoder.feed(line)
                    if event is not None:
                        yield event
                last = decoder.feed("")
                if last is not None:
                    yield last
        except httpx.TransportError as exc:
            kind = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
            raise kind(f"GET {path}: {type(exc).__name__}: {exc}") from exc

    async def wait(
        self,
        prediction: PredictionRef,
        *,
        timeout: float | None = None,
        on_update: OnUpdate | None = None,
    ) -> Prediction:
        """Wait until the prediction ends; see :meth:`predictd.sdk.Predictions.wait`."""
        client = self._client
        deadline = None if timeout is None else time.monotonic() + timeout
        current = await self.get(prediction) if isinstance(prediction, str) else dict(prediction)
        ident = prediction_id(current)
        if _base.is_terminal(current):
            return current
        if client._stream_supported is not False:
            remaining = None if deadline is None else max(0.001, deadline - time.monotonic())
            events = self.stream(ident, timeout=remaining)
            try:
                async for event in events:
                    update = event.prediction(ident)
                    if update is not None:
                        if on_update is not None and update.get("status") != current.get("status"):
                            on_update(update)
                        current = update
                        if _base.is_terminal(update):
                            break
                    if event.ends_stream:
                        break
                client._stream_supported = True
            except APIError as exc:
                if _base.stream_missing(exc):
                    client._stream_supported = False
            except APIConnectionError:
                pass  # fall back to polling
            finally:
                await events.aclose()
            latest = await self.get(ident)
            if on_update is not None and latest.get("status") != current.get("status"):
                on_update(latest)
            current = latest
            if _base.is_terminal(current):
                return current
        for delay in _base.poll_delays(client._settings.poll_interval, client._settings.max_poll_interval):
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PredictionTimeout(current, timeout or 0)
                delay = min(delay, remaining)
            await asyncio.sleep(delay)
            latest = await self.get(ident)
            if on_update is not None and latest.get("status") != current.get("status"):
                on_update(latest)
            current = latest
            if _base.is_terminal(current):
                return current
        raise AssertionError("unreachable")


class AsyncModels:
    """``client.models`` of an AsyncClient."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(self, *, fields: Sequence[str] | None = None) -> list[dict[str, Any]]:
        return list(await self._client._json("GET", "/v1/models", params=_base.fields_params(fields)))

    async def get(self, slug: str, *, fields: Sequence[str] | None = None) -> dict[str, Any]:
        path = f"/v1/model/{_base.segment(slug)}"
        return dict(await self._client._json("GET", path, params=_base.fields_params(fields)))
