"""The SDK's core: every decision the sync and async clients make, and no I/O.

Settings, how each request is built, the retry policy, how answers become results and errors, paging, SSE
decoding, and how ``run`` and ``wait`` follow a prediction. Each operation is written once, as a plan: a
generator that yields the effects of :mod:`._effects` (send this, sleep that long) and gets back what they
gave. ``predictd.Client`` and ``predictd.AsyncClient`` only perform those effects.
"""

from __future__ import annotations

import email.utils
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from .._version import __version__
from ._effects import Close, Emit, Emits, NextLine, Plan, Read, Request, Send, Sleep, failure, sent
from .errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    PredictionCancelled,
    PredictionFailed,
    PredictionTimeout,
    error_from_response,
)

Prediction = dict[str, Any]
PredictionRef = str | Mapping[str, Any]
OnUpdate = Callable[[Prediction], None]
Moment = str | date | datetime

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
ENV_BASE_URL = "PREDICTD_BASE_URL"
ENV_API_KEY = "PREDICTD_API_KEY"
# A create with ``await: true`` may be held by the server for its await_timeout_s (60 s by default).
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=10.0)
DEFAULT_MAX_RETRIES = 2
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
MAX_SERVER_RETRY_DELAY = 60.0  # a server asking for longer than this gets our own backoff instead
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
USER_AGENT = f"predictd-python/{__version__}"


@dataclass(frozen=True)
class ClientSettings:
    base_url: str
    api_key: str | None
    timeout: httpx.Timeout
    max_retries: int
    poll_interval: float
    max_poll_interval: float
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def request_headers(self) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **self.headers}
        if self.api_key:
            headers["x-api-key"] = self.api_key
        return headers


def make_settings(
    api_key: str | None,
    base_url: str | None,
    timeout: float | httpx.Timeout | None,
    max_retries: int,
    poll_interval: float,
    max_poll_interval: float,
    headers: Mapping[str, str] | None,
) -> ClientSettings:
    if max_retries < 0:
        raise ValueError("max_retries must be >= 0")
    if timeout is None:
        resolved = DEFAULT_TIMEOUT
    elif isinstance(timeout, httpx.Timeout):
        resolved = timeout
    else:
        resolved = httpx.Timeout(timeout)
    return ClientSettings(
        base_url=normalize_base_url(base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL),
        api_key=api_key if api_key is not None else os.environ.get(ENV_API_KEY),
        timeout=resolved,
        max_retries=max_retries,
        poll_interval=poll_interval,
        max_poll_interval=max(max_poll_interval, poll_interval),
        headers=dict(headers or {}),
    )


def normalize_base_url(url: str) -> str:
    """The server's root: ``http://host:8000``, ``http://host:8000/`` and ``http://host:8000/v1`` alike."""
    url = url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must be an http(s) URL, not {url!r}")
    return url


def segment(value: str) -> str:
    """A path segment (an id or a slug), quoted so that it cannot reach another route."""
    if not value:
        raise ValueError("an id or slug may not be empty")
    return quote(value, safe="")


def encode_json(body: Any) -> bytes:
    return orjson.dumps(body)


def decode_json(response: httpx.Response) -> Any:
    return orjson.loads(response.content)


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


# -- retries -----------------------------------------------------------------------------------------------


def should_retry(response: httpx.Response) -> bool:
    """429 and 500/502/503/504 are retried unless the server says ``x-should-retry: false``; no other 4xx."""
    if response.status_code not in RETRY_STATUSES:
        return False
    verdict: str = response.headers.get("x-should-retry", "")
    return verdict.strip().lower() != "false"


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The server's wish for when to retry: ``retry-after-ms``, ``Retry-After`` (seconds or an HTTP date),
    then ``RateLimit-Reset`` (seconds). None when absent or unreadable."""
    lowered = {key.lower(): value for key, value in headers.items()}
    raw = lowered.get("retry-after-ms")
    if raw is not None:
        try:
            return float(raw) / 1000
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if raw is not None:
        try:
            return float(raw)
        except ValueError:
            try:
                moment = email.utils.parsedate_to_datetime(raw)
            except (TypeError, ValueError, IndexError):
                moment = None
            if moment is not None:
                return moment.timestamp() - (time.time() if now is None else now)
    raw = lowered.get("ratelimit-reset")
    if raw is not None:
        try:
            return float(raw)
        except ValueError:
            pass
    return None


def retry_delay(attempt: int, response: httpx.Response | None) -> float:
    """Seconds to wait before retry number ``attempt + 1``: what the server asked for when it asked for a
    sane amount, else exponential backoff with full jitter (uniform in [0, min(cap, base * 2^attempt)])."""
    if response is not None:
        wanted = retry_after_seconds(response.headers)
        if wanted is not None and 0 <= wanted <= MAX_SERVER_RETRY_DELAY:
            return wanted
    return random.uniform(0, min(MAX_RETRY_DELAY, INITIAL_RETRY_DELAY * 2**attempt))


def connection_error(request: Request, error: httpx.TransportError) -> APIConnectionError:
    """What a request that got no answer raises (after its retries): APITimeoutError when it timed out."""
    kind = APITimeoutError if isinstance(error, httpx.TimeoutException) else APIConnectionError
    return kind(f"{request.method} {request.path}: {type(error).__name__}: {error}")


def poll_delays(first: float, cap: float) -> Iterator[float]:
    """Polling intervals: ``first``, then x1.5 each time, up to ``cap``."""
    delay = first
    while True:
        yield delay
        delay = min(cap, delay * 1.5)


# -- requests ----------------------------------------------------------------------------------------------


def create_body(
    model: str,
    input: Mapping[str, Any],
    wait: bool,
    stream: bool | None,
    webhook: Mapping[str, Any] | str | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "input": dict(input)}
    if wait:
        body["await"] = True
    if stream is not None:
        body["stream"] = stream
    if webhook is not None:
        body["webhook"] = webhook if isinstance(webhook, str) else dict(webhook)
    return body


def prediction_id(ref: PredictionRef) -> str:
    if isinstance(ref, str):
        return ref
    value = ref.get("id")
    if not isinstance(value, str):
        raise ValueError("the prediction has no 'id'")
    return value


def prediction_path(ref: PredictionRef, action: str = "") -> str:
    return f"/v1/predictions/{segment(prediction_id(ref))}{action}"


def _moment(value: Moment) -> str:
    return value if isinstance(value, str) else value.isoformat()


def list_params(
    page: int,
    per_page: int | None,
    model: str | None,
    since: Moment | None,
    until: Moment | None,
) -> dict[str, str]:
    params = {"page": str(page)}
    if per_page is not None:
        params["per_page"] = str(per_page)
    if model:
        params["model"] = model
    if since is not None:
        params["from"] = _moment(since)
    if until is not None:
        params["to"] = _moment(until)
    return params


def fields_params(fields: Sequence[str] | None) -> dict[str, str]:
    return {"fields": ",".join(fields)} if fields else {}


@dataclass(frozen=True)
class Page:
    """One page of ``GET /v1/predictions`` (newest first)."""

    data: list[Prediction]
    current_page: int
    per_page: int
    total: int
    last_page: int

    @property
    def has_next(self) -> bool:
        return bool(self.data) and self.current_page < self.last_page

    @classmethod
    def parse(cls, body: Any) -> Page:
        data = list(body.get("data") or [])
        pagination = body.get("pagination") or {}
        current = int(pagination.get("current_page", 1))
        return cls(
            data=data,
            current_page=current,
            per_page=int(pagination.get("per_page", len(data))),
            total=int(pagination.get("total", len(data))),
            last_page=int(pagination.get("last_page", current)),
        )


# -- outcomes ----------------------------------------------------------------------------------------------


def is_terminal(prediction: Mapping[str, Any]) -> bool:
    return str(prediction.get("status")) in TERMINAL_STATUSES


def ensure_succeeded(prediction: Prediction) -> Prediction:
    """The prediction when it succeeded; PredictionFailed / PredictionCancelled otherwise."""
    status = prediction.get("status")
    if status == "failed":
        raise PredictionFailed(prediction)
    if status == "cancelled":
        raise PredictionCancelled(prediction)
    return prediction


def stream_missing(error: APIError) -> bool:
    """The server has no stream endpoint (as opposed to: the prediction is unknown)."""
    return error.error_id in ("NOT_FOUND", "NotFound", "NOT_AN_EVENT_STREAM") or error.status in (405, 501)


# -- server-sent events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSentEvent:
    """One event of ``GET /v1/predictions/{id}/stream``."""

    event: str
    data: str
    id: str | None = None
    retry: int | None = None

    def json(self) -> Any:
        return orjson.loads(self.data)

    def prediction(self, prediction_id: str) -> Prediction | None:
        """The event's data when it is a state of the given prediction (a JSON object with a status)."""
        try:
            value = self.json()
        except orjson.JSONDecodeError:
            return None
        if (
            isinstance(value, dict)
            and isinstance(value.get("status"), str)
            and value.get("id") in (None, prediction_id)
        ):
            return value
        return None

    @property
    def ends_stream(self) -> bool:
        return self.event in END_EVENTS


END_EVENTS = frozenset({"done", "end", "completed", "error"})


class SSEDecoder:
    """Decodes text/event-stream lines (WHATWG HTML, 9.2.6) into events."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._retry: int | None = None

    def feed(self, line: str) -> ServerSentEvent | None:
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._data and not self._event:
            return None
        event = ServerSentEvent(
            event=self._event or "message", data="\n".join(self._data), id=self._id, retry=self._retry
        )
        self._event, self._data, self._retry = "", [], None
        return event


def is_event_stream(response: httpx.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.split(";")[0].strip() == "text/event-stream"


class EventStream:
    """An open ``text/event-stream`` answer, read one event at a time."""

    def __init__(self, request: Request, response: httpx.Response) -> None:
        self.request = request
        self.response = response
        self._decoder = SSEDecoder()
        self._ended = False

    @classmethod
    def open(cls, session: Session, path: str, timeout: float | None) -> Plan[EventStream]:
        """``GET path`` as a stream, without retries: a wait falls back to polling instead."""
        request = session.request("GET", path, accept="text/event-stream", timeout=timeout)
        answer = sent((yield Send(request, stream=True)))
        if isinstance(answer, httpx.TransportError):
            raise connection_error(request, answer) from answer
        if not answer.is_success:
            problem = failure((yield Read(answer)))
            if problem is not None:
                raise connection_error(request, problem) from problem
            raise error_from_response(answer)
        if not is_event_stream(answer):
            yield Close(answer)
            raise APIError(
                f"GET {path} answered {answer.headers.get('content-type')!r}, not an event stream",
                status=answer.status_code,
                error_id="NOT_AN_EVENT_STREAM",
                headers=dict(answer.headers.items()),
            )
        return cls(request, answer)

    def next_event(self) -> Plan[ServerSentEvent | None]:
        """The next event; None once the stream has ended."""
        while not self._ended:
            line = yield NextLine(self.response)
            problem = failure(line)
            if problem is not None:
                raise connection_error(self.request, problem) from problem
            if not isinstance(line, str):
                self._ended = True
                return self._decoder.feed("")  # the last event need not be followed by a blank line
            event = self._decoder.feed(line)
            if event is not None:
                return event
        return None

    def close(self) -> Plan[None]:
        yield Close(self.response)


# -- the operations, each written once -----------------------------------------------------------------------


class Session:
    """One client's settings and what it has learned about its server; builds, sends and retries requests."""

    def __init__(self, settings: ClientSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        #: Whether the server has ``GET /v1/predictions/{id}/stream``: None until a wait has tried it.
        self.stream_supported: bool | None = None

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        accept: str | None = None,
        timeout: float | None = None,
    ) -> Request:
        headers = self.settings.request_headers
        content: bytes | None = None
        if body is not None:
            content = encode_json(body)
            headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        if accept is not None:
            headers["Accept"] = accept
        return Request(
            method,
            self.settings.base_url,
            path,
            headers,
            self.settings.timeout if timeout is None else httpx.Timeout(timeout),
            params,
            content,
        )

    def send(self, request: Request) -> Plan[httpx.Response]:
        """The request's successful answer. No answer at all, and the answers ``should_retry`` picks, are
        retried ``max_retries`` times after ``retry_delay``; the request goes out unchanged each time, so a
        create keeps its Idempotency-Key. Raises the last answer's APIError, or APIConnectionError."""
        attempt = 0
        while True:
            answer = sent((yield Send(request)))
            last = attempt >= self.settings.max_retries
            if isinstance(answer, httpx.TransportError):
                if last:
                    raise connection_error(request, answer) from answer
                yield Sleep(retry_delay(attempt, None))
            elif answer.is_success:
                return answer
            elif last or not should_retry(answer):
                raise error_from_response(answer)
            else:
                yield Sleep(retry_delay(attempt, answer))
            attempt += 1

    def json(self, method: str, path: str, **options: Any) -> Plan[Any]:
        """The decoded body of the request's successful answer."""
        return decode_json((yield from self.send(self.request(method, path, **options))))


@dataclass
class _Progress:
    """The latest known state of a prediction being waited for; ``on_update`` hears each new status."""

    current: Prediction
    on_update: OnUpdate | None

    def see(self, latest: Prediction) -> None:
        if self.on_update is not None and latest.get("status") != self.current.get("status"):
            self.on_update(latest)
        self.current = latest

    @property
    def ended(self) -> bool:
        return is_terminal(self.current)


class PredictionPlans:
    """``client.predictions``."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def create(
        self,
        model: str,
        input: Mapping[str, Any],
        *,
        wait: bool = False,
        stream: bool | None = None,
        webhook: Mapping[str, Any] | str | None = None,
        idempotency_key: str | None = None,
    ) -> Plan[Prediction]:
        """``POST /v1/predictions``. ``wait=True`` sends ``await: true``. Every create carries an
        ``Idempotency-Key`` (a new UUID unless given), the same on each of its retries."""
        body = create_body(model, input, wait, stream, webhook)
        key = idempotency_key or new_idempotency_key()
        created = yield from self._session.json("POST", "/v1/predictions", body=body, idempotency_key=key)
        return dict(created)

    def get(self, prediction: PredictionRef) -> Plan[Prediction]:
        """``GET /v1/predictions/{id}``."""
        return dict((yield from self._session.json("GET", prediction_path(prediction))))

    def cancel(self, prediction: PredictionRef) -> Plan[Prediction]:
        """``POST /v1/predictions/{id}/cancel``."""
        return dict((yield from self._session.json("POST", prediction_path(prediction, "/cancel"))))

    def delete(self, prediction: PredictionRef) -> Plan[Prediction]:
        """Remove the prediction's inputs and outputs (``data_removed: true``)."""
        return dict((yield from self._session.json("DELETE", prediction_path(prediction, "/delete"))))

    def list_page(
        self,
        page: int = 1,
        *,
        per_page: int | None = None,
        model: str | None = None,
        since: Moment | None = None,
        until: Moment | None = None,
    ) -> Plan[Page]:
        """One page of ``GET /v1/predictions`` (newest first)."""
        params = list_params(page, per_page, model, since, until)
        return Page.parse((yield from self._session.json("GET", "/v1/predictions", params=params)))

    def list(
        self,
        *,
        per_page: int | None = None,
        model: str | None = None,
        since: Moment | None = None,
        until: Moment | None = None,
        page: int = 1,
    ) -> Emits[Prediction]:
        """Every prediction (newest first) across pages, fetching each page as the iteration reaches it."""
        while True:
            current = yield from self.list_page(
                page, per_page=per_page, model=model, since=since, until=until
            )
            for item in current.data:
                yield Emit(item)
            if not current.has_next:
                return
            page = current.current_page + 1

    def stream(self, prediction: PredictionRef, *, timeout: float | None = None) -> Emits[ServerSentEvent]:
        """The events of ``GET /v1/predictions/{id}/stream`` as they arrive. Raises the APIError the
        server answers (NotFoundError with error_id NOT_FOUND from a server without the endpoint)."""
        events = yield from EventStream.open(self._session, prediction_path(prediction, "/stream"), timeout)
        while (event := (yield from events.next_event())) is not None:
            yield Emit(event)
        yield from events.close()

    def wait(
        self,
        prediction: PredictionRef,
        *,
        timeout: float | None = None,
        on_update: OnUpdate | None = None,
    ) -> Plan[Prediction]:
        """Wait until the prediction ends (succeeded, failed or cancelled) and return it: over the stream
        endpoint when the server has one, else by polling with backoff. Raises PredictionTimeout."""
        session = self._session
        deadline = None if timeout is None else session.clock() + timeout
        current = (yield from self.get(prediction)) if isinstance(prediction, str) else dict(prediction)
        ident = prediction_id(current)
        if is_terminal(current):
            return current
        progress = _Progress(current, on_update)
        if session.stream_supported is not False:
            remaining = None if deadline is None else max(0.001, deadline - session.clock())
            yield from self._follow(ident, progress, remaining)
            # Events may carry less than the whole prediction, and the stream may end early: read it once.
            progress.see((yield from self.get(ident)))
            if progress.ended:
                return progress.current
        for delay in poll_delays(session.settings.poll_interval, session.settings.max_poll_interval):
            if deadline is not None:
                remaining = deadline - session.clock()
                if remaining <= 0:
                    raise PredictionTimeout(progress.current, timeout or 0)
                delay = min(delay, remaining)
            yield Sleep(delay)
            progress.see((yield from self.get(ident)))
            if progress.ended:
                return progress.current
        raise AssertionError("poll_delays never ends")

    def _follow(self, ident: str, progress: _Progress, timeout: float | None) -> Plan[None]:
        """Follow the stream endpoint until the prediction or the stream ends, and remember whether the
        server has the endpoint. Whatever goes wrong here only means polling instead."""
        session = self._session
        events: EventStream | None = None
        try:
            events = yield from EventStream.open(session, prediction_path(ident, "/stream"), timeout)
            while (event := (yield from events.next_event())) is not None:
                update = event.prediction(ident)
                if update is not None:
                    progress.see(update)
                    if progress.ended:
                        break
                if event.ends_stream:
                    break
            session.stream_supported = True
        except APIError as exc:
            if stream_missing(exc):
                session.stream_supported = False
        except APIConnectionError:
            pass
        if events is not None:
            yield from events.close()


class ModelPlans:
    """``client.models``."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def get(self, slug: str, *, fields: Sequence[str] | None = None) -> Plan[dict[str, Any]]:
        """``GET /v1/model/{slug}``; ``fields`` may add ``input_schema`` and ``output_schema``."""
        path = f"/v1/model/{segment(slug)}"
        return dict((yield from self._session.json("GET", path, params=fields_params(fields))))

    def list(self, *, fields: Sequence[str] | None = None) -> Plan[list[dict[str, Any]]]:
        """Every model; ``fields`` may add ``input_schema`` and ``output_schema``."""
        return list((yield from self._session.json("GET", "/v1/models", params=fields_params(fields))))


class ClientPlans:
    """The client's own operations, and its predictions' and models'."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.predictions = PredictionPlans(session)
        self.models = ModelPlans(session)

    def run(
        self,
        model: str,
        input: Mapping[str, Any],
        *,
        timeout: float | None = None,
        on_update: OnUpdate | None = None,
        idempotency_key: str | None = None,
    ) -> Plan[Prediction]:
        """Create a prediction and wait until it ends; return it when it succeeded.

        Without ``timeout`` the server holds the create (``await: true``) until the prediction ends or its
        own await limit passes; what is still running then is followed over the stream endpoint when the
        server offers one, else by polling. With ``timeout`` the create returns at once and the wait is
        bounded by it. Raises PredictionFailed, PredictionCancelled, PredictionTimeout or an APIError.
        """
        predictions = self.predictions
        prediction = yield from predictions.create(
            model, input, wait=timeout is None, idempotency_key=idempotency_key
        )
        if on_update is not None:
            on_update(prediction)
        if not is_terminal(prediction):
            prediction = yield from predictions.wait(prediction, timeout=timeout, on_update=on_update)
        return ensure_succeeded(prediction)

    def account(self) -> Plan[dict[str, Any]]:
        """``GET /v1/account``: the key's account."""
        return dict((yield from self.session.json("GET", "/v1/account")))

    def credits(self) -> Plan[dict[str, Any]]:
        """``GET /v1/credits``: the account's credit balance."""
        return dict((yield from self.session.json("GET", "/v1/credits")))
