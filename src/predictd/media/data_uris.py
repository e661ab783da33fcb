"""Images given inline as ``data:image/<format>;base64,<payload>`` URIs: their size, known before decoding
(the API process caps a request's inline media with it before queueing), and their bytes."""

from __future__ import annotations

import base64
import binascii

from ..errors import ImageLoadError
from ..outbound import printable
from .limits import MediaLimits

_DATA_HEADER_MAX = 512  # the "data:image/png;base64," header is searched for a comma in this many chars
PREFIX_HINT = "missing the data:image/<format>;base64, prefix"


def _data_uri_header(value: str) -> tuple[str, int] | None:
    """(header between 'data:' and the comma, index of the comma), or None if not a data URI."""
    if value[:5].lower() != "data:":
        return None
    comma = value.find(",", 0, _DATA_HEADER_MAX)
    if comma < 0:
        return None
    return value[5:comma], comma


def data_uri_size(value: str) -> int:
    """The decoded size of a data URI, estimated from its length without decoding; 0 for other values."""
    parsed = _data_uri_header(value)
    if parsed is None:
        return 0
    header, comma = parsed
    payload_length = len(value) - comma - 1
    if header.rsplit(";", 1)[-1].strip().lower() != "base64":
        return payload_length  # percent-encoded: at most one byte per character
    padding = 2 if value.endswith("==") else 1 if value.endswith("=") else 0
    return max(payload_length * 3 // 4 - padding, 0)


def _decode_data_uri(value: str, field: str, limits: MediaLimits) -> bytes:
    parsed = _data_uri_header(value)
    if parsed is None:
        raise ImageLoadError(f"{field}: {PREFIX_HINT}")
    header, comma = parsed
    parts = [part.strip().lower() for part in header.split(";")]
    mime = parts[0]
    if not mime.startswith("image/") or mime == "image/":
        raise ImageLoadError(
            f"{field}: data URI media type {printable(mime, 60) or '(none)'} is not an image"
        )
    if len(parts) < 2 or parts[-1] != "base64":
        raise ImageLoadError(f"{field}: data URI is not base64 ({PREFIX_HINT})")
    size = data_uri_size(value)
    if size > limits.max_bytes:
        raise ImageLoadError(f"{field}: data URI payload is larger than {limits.max_bytes} bytes")
    if size == 0:
        raise ImageLoadError(f"{field}: data URI payload is empty")
    try:
        return base64.b64decode(value[comma + 1 :], validate=True)
    except (binascii.Error, ValueError):
        raise ImageLoadError(f"{field}: data URI is not base64 (invalid base64 payload)") from None


def decode_data_uri(value: str, *, field: str, limits: MediaLimits) -> bytes:
    """The bytes of a ``data:image/<format>;base64,<payload>`` URI, size-checked before decoding."""
    try:
        return _decode_data_uri(value, field, limits)
    except ImageLoadError:
        raise
    except Exception as exc:
        raise ImageLoadError(f"{field}: invalid data URI ({type(exc).__name__})") from None
