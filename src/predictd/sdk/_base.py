"""What the sync and async clients share: settings, retry policy, SSE decoding, paging. No I/O here."""

from __future__ import annotations

import email.utils
import os
import random
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from .. import __version__
from .errors import PredictionCancelled, PredictionFailed

Prediction = dict[str, Any]

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


def _moment(value: str | date | datetime) -> str:
    return value if isinstance(value, str) else value.isoformat()


def list_params(
    page: int,
    per_page: int | None,
    model: str | None,
    since: str | date | datetime | None,
    until: str | date | datetime | None,
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
