"""How an outbound request fails: exceptions whose messages are worded for whoever chose the URL.

Media turns them into ``ImageLoadError`` with the input's name in front; the webhook delivery loop records
their reason on the attempt. Neither needs httpx to catch them.
"""

from __future__ import annotations


def printable(text: str, limit: int = 200) -> str:
    """Untrusted text (a URL, a header value, an answer) as a message may quote it: printable characters
    only, at most ``limit`` of them."""
    text = "".join(ch if ch.isprintable() else "?" for ch in text[: limit + 1])
    return text if len(text) <= limit else text[:limit] + "..."


class OutboundError(Exception):
    """An outbound request that failed.

    ``str()`` is the whole message: ``could not fetch <url>: <reason>``, or the reason alone when it names
    what went wrong by itself (an invalid URL, a body over its cap). ``reason`` is the part after the URL,
    for a record that shows the URL elsewhere (a webhook attempt).
    """

    def __init__(self, reason: str, url: str | None = None) -> None:
        super().__init__(reason if url is None else f"could not fetch {url}: {reason}")
        self.reason = reason
        self.url = url


class Refused(OutboundError):
    """The guard refused before connecting: an address in a blocked range, a unix socket."""


class Unreachable(OutboundError):
    """The host could not be resolved; raised below httpx, the request that met it adds the URL."""
