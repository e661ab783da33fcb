"""Where a prediction's webhooks go: the receiver URL and events a submit asked for, on either surface.

Checked when the prediction is submitted (a bad URL is the submit's 400, naming the field), then kept in
the prediction's ``extra`` so that every later state change is planned against it (see planning.py).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Any

from ..errors import ApiError, ErrorId
from ..outbound.policy import IPAddress, OutboundLimits, address_kind, is_blocked_address

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

    try:
        parsed = httpx.URL(url) if len(url) <= MAX_URL_LENGTH else None
    except httpx.InvalidURL as exc:  # a port that is not a number, a host that cannot be one, ...
        raise ApiError(ErrorId.INVALID_INPUT, f"{where} is not a valid URL: {exc}.") from None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host or parsed.userinfo:
        raise ApiError(
            ErrorId.INVALID_INPUT, f"{where} must be an http(s) URL of at most {MAX_URL_LENGTH} chars."
        )
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise ApiError(ErrorId.INVALID_INPUT, f"{where} has port {parsed.port}; a port is 1 to 65535.")
    return url


# Names that are loopback by definition (RFC 6761): judged without asking a resolver.
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
_LOOPBACK_ADDRESSES = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
_LEGACY_IPV4 = re.compile(r"^[0-9a-fx.]+$")  # 2130706433, 0x7f.1, 127.1: what getaddrinfo reads as IPv4


def _known_addresses(host: str) -> tuple[IPAddress, ...]:
    """The addresses ``host`` reaches when that needs no resolver (an IP literal, in any form the system's
    resolver reads as one, or a loopback name); () for a name only DNS can answer."""
    name = host.strip("[]").rstrip(".").lower()
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return _LOOPBACK_ADDRESSES
    try:
        return (ipaddress.ip_address(name.split("%", 1)[0]),)
    except ValueError:
        pass
    if _LEGACY_IPV4.match(name):
        try:
            return (ipaddress.IPv4Address(socket.inet_aton(name)),)
        except OSError:
            return ()
    return ()


def refusal(target: WebhookTarget, allow_private: bool, allowed_networks: tuple[str, ...]) -> str | None:
    """Why deliveries to ``target`` would be refused by the address guard (its ``allow_private`` and
    ``allowed_networks``), when that is certain without DNS; None otherwise. A name is judged again, as it
    resolves, at every attempt: checking it here too would put a DNS lookup, and its delays, on every
    submit."""
    import httpx

    host = httpx.URL(target.url).host
    addresses = _known_addresses(host)
    limits = OutboundLimits(allow_private=allow_private, allowed_networks=allowed_networks)
    if not addresses or not all(is_blocked_address(ip, limits) for ip in addresses):
        return None
    kind = address_kind(addresses[0]) or "private"
    where = "webhook_url" if target.surface == "fashn" else "webhook.url"
    return (
        f"{where} {target.url!r} is a {kind} address, which webhooks are not delivered to unless the "
        "operator allows it ([webhooks] allow_private, or allowed_networks)."
    )


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
