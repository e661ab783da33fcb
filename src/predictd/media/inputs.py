"""Input images for models, given as http(s) URLs or ``data:image/...;base64,`` URIs: the entry point
workers call for each image input.

This runs inside worker subprocesses, so it is synchronous. Every failure surfaces as
:class:`predictd.errors.ImageLoadError` whose message starts with the input field and says why; no other
exception type escapes the public functions. URLs are fetched through :mod:`predictd.outbound` (its SSRF
guard, deadline and size cap) and must answer 2xx with an ``image/*`` Content-Type.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..errors import ImageLoadError
from ..outbound import Deadline, OutboundError, printable
from .data_uris import PREFIX_HINT, decode_data_uri
from .decoding import decode_image
from .limits import MediaLimits

if TYPE_CHECKING:
    from PIL import Image

USER_AGENT = "predictd-media/1"
_HEADERS = {"User-Agent": USER_AGENT, "Accept": "image/*", "Accept-Encoding": "identity"}


def _not_an_image(media_type: str) -> str | None:
    """Why a fetched answer of this media type is refused, or None for an image."""
    if not media_type:
        return "no Content-Type, expected an image/* type"
    if not media_type.startswith("image/") or media_type == "image/":
        return f"Content-Type {printable(media_type, 60)} is not an image"
    return None


def fetch_image_bytes(
    url: str, *, field: str, limits: MediaLimits, deadline: Deadline | None = None
) -> bytes:
    """The body of an image URL, fetched under the guard of :mod:`predictd.outbound`, at most
    ``limits.max_bytes`` (also after gzip / deflate decoding), within ``limits.fetch.total_timeout_s`` or
    by ``deadline`` (the prediction's, shared by its images) if that ends first."""
    from ..outbound import http  # httpx, httpcore and ssl: only a worker that fetches a URL loads them

    try:
        return http.get(
            url,
            limits=limits.fetch,
            max_bytes=limits.max_bytes,
            headers=_HEADERS,
            accept_type=_not_an_image,
            within=deadline,
        )
    except OutboundError as exc:
        raise ImageLoadError(f"{field}: {exc}") from None


_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]{0,31}):")


def _load_image(value: str, field: str, limits: MediaLimits, deadline: Deadline | None) -> Image.Image:
    if not isinstance(value, str):
        raise ImageLoadError(f"{field}: expected a URL or data URI string, got {type(value).__name__}")
    head = value[:16].lower()
    if head.startswith("data:"):
        data = decode_data_uri(value, field=field, limits=limits)
        return decode_image(data, field=field, limits=limits, source="data URI")
    if head.startswith(("http://", "https://")):
        from ..outbound.http import display_url

        data = fetch_image_bytes(value, field=field, limits=limits, deadline=deadline)
        return decode_image(data, field=field, limits=limits, source=display_url(value))
    scheme = _SCHEME.match(value[:40])
    if scheme is not None and "/" in value[:48]:
        raise ImageLoadError(
            f"{field}: only http(s) URLs and data URIs are accepted, not {printable(scheme.group(1), 32)}"
        )
    raise ImageLoadError(f"{field}: neither an http(s) URL nor a data URI ({PREFIX_HINT})")


def load_image(
    value: str, *, field: str, limits: MediaLimits, deadline: Deadline | None = None
) -> Image.Image:
    """A fully loaded Pillow image from an http(s) URL or a ``data:image/...;base64,`` URI; a URL is
    fetched by ``deadline`` at the latest (see :func:`fetch_image_bytes`).

    Every failure raises :class:`ImageLoadError` naming ``field`` and the reason.
    """
    try:
        return _load_image(value, field, limits, deadline)
    except ImageLoadError:
        raise
    except Exception as exc:
        raise ImageLoadError(f"{field}: could not load the image ({type(exc).__name__})") from None
