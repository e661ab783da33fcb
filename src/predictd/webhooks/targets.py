"""Where a prediction's webhooks go: the receiver URL and events a submit asked for, on either surface.

Checked when the prediction is submitted (a bad URL is the submit's 400, naming the field), then kept in
the prediction's ``extra`` so that every later state change is planned against it (see planning.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ApiError, ErrorId

EVENTS = ("start", "output", "completed")
DEFAULT_EVENTS = frozenset({"completed"})
MAX_URL_LENGTH = 2048


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    url: str
    events: frozenset[str]
    surface: str
    base_url: str

    def to_extra(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "events": sorted(self.events),
            "surface": self.surface,
            "base_url": self.base_url,
        }

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> WebhookTarget | None:
        raw = extra.get("webhook")
        if not isinstance(raw, dict):
            return None
        return cls(raw["url"], frozenset(raw["events"]), raw["surface"], raw["base_url"])


def _check_url(url: Any, where: str) -> str:
    if not isinstance(url, str) or not url:
        raise ApiError(ErrorId.INVALID_INPUT, f"{where} must be an http(s) URL.")
    import httpx  # on the first webhook, not at start: about 2 MiB the API process does not need idle

    parsed = httpx.URL(url) if len(url) <= MAX_URL_LENGTH else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host or parsed.userinfo:
        raise ApiError(
            ErrorId.INVALID_INPUT, f"{where} must be an http(s) URL of at most {MAX_URL_LENGTH} chars."
        )
    return url


def native_target(value: Any, base_url: str) -> WebhookTarget:
    """The Skytells surface's ``webhook: {url, events}``."""
    if not isinstance(value, dict):
        raise ApiError(ErrorId.INVALID_INPUT, "Field 'webhook' must be an object {url, events}.")
    unknown = sorted(set(value) - {"url", "events"})
    if unknown:
        raise ApiError(ErrorId.INVALID_INPUT, f"Field 'webhook' has unknown field(s) {', '.join(unknown)}.")
    url = _check_url(value.get("url"), "webhook.url")
    events = value.get("events", sorted(DEFAULT_EVENTS))
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        raise ApiError(
            ErrorId.INVALID_INPUT, f"webhook.events must be a non-empty list of {', '.join(EVENTS)}."
        )
    bad = sorted(set(events) - set(EVENTS))
    if bad:
        raise ApiError(
            ErrorId.INVALID_INPUT,
            f"webhook.events has unknown event(s) {', '.join(bad)}; allowed: {', '.join(EVENTS)}.",
        )
    return WebhookTarget(url, frozenset(events), "native", base_url)


def fashn_target(url: Any, base_url: str) -> WebhookTarget:
    """The FASHN surface's ``webhook_url`` query parameter: called when the prediction ends."""
    return WebhookTarget(_check_url(url, "webhook_url"), DEFAULT_EVENTS, "fashn", base_url)
