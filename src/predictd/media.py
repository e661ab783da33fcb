"""Input media loading for models: images given as http(s) URLs or ``data:image/...;base64,`` URIs.

This runs inside worker subprocesses, so it is synchronous (httpx's sync client and Pillow). Every failure
surfaces as :class:`predictd.errors.ImageLoadError` whose message starts with the input field and says why;
no other exception type escapes the public functions.

Fetching a URL the user chose is a server-side request forgery (SSRF) risk, so :func:`fetch_image_bytes`:

* accepts only ``http`` and ``https`` URLs without credentials (any port);
* resolves host names itself and refuses the connection when ANY resolved address is loopback, private,
  CGNAT, link-local (incl. cloud metadata 169.254.169.254), unique-local, multicast, reserved, unspecified,
  broadcast, or such an address embedded in IPv6 (IPv4-mapped / -compatible / NAT64 / 6to4 / Teredo) -
  unless :attr:`MediaLimits.allow_private` or :attr:`MediaLimits.allowed_networks` say otherwise;
* connects to exactly the address it validated (no second DNS lookup, so DNS rebinding cannot swap in
  another address), keeping the original ``Host`` header and, for https, the original name for SNI and
  certificate verification; see :class:`SafeNetworkBackend`;
* follows at most ``max_redirects`` redirects itself, validating every hop the same way;
* ignores proxy environment variables (a proxy would do its own, unvalidated, resolution);
* requires a 2xx answer with an ``image/*`` Content-Type, caps the body (also after gzip/deflate
  decoding) at ``max_bytes`` and bounds the whole fetch by a wall-clock deadline (``total_timeout_s``),
  which every socket operation (DNS, connect, TLS handshake, each read and write) is clamped to, so a
  server trickling bytes cannot hold a worker longer than that budget.

Decoding is restricted to common raster formats (never EPS, which would run Ghostscript) and refuses an
image whose width*height exceeds ``max_pixels`` before any pixel data is decompressed.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import ipaddress
import re
import typing
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from predictd.errors import ImageLoadError

if TYPE_CHECKING:
    import httpx
    from PIL import Image

    from .media_fetch import SafeNetworkBackend

__all__ = [
    "MediaLimits",
    "SafeNetworkBackend",
    "data_uri_size",
    "decode_data_uri",
    "fetch_image_bytes",
    "is_blocked_address",
    "load_image",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Formats Pillow may decode. Deliberately short: no EPS (runs Ghostscript), no exotic scientific formats.
SAFE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")

MAX_URL_LENGTH = 8192
_DATA_HEADER_MAX = 512  # the "data:image/png;base64," header is searched for a comma in this many chars
_USER_AGENT = "predictd-media/1"


@dataclass(frozen=True, slots=True)
class MediaLimits:
    """Limits and network policy for loading one input image.

    ``max_pixels`` is checked by predictd; Pillow's own decompression-bomb guard
    (``PIL.Image.MAX_IMAGE_PIXELS``, about 89 M pixels) is treated as an error too, so a ``max_pixels``
    above it is effectively capped there.
    """

    max_bytes: int = 20 * 1024 * 1024  # per image, downloaded or decoded
    max_pixels: int = 40_000_000  # decompression-bomb guard (width*height)
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0
    total_timeout_s: float = 30.0  # wall-clock budget for the whole fetch incl. redirects (slow-loris)
    max_redirects: int = 3
    allow_private: bool = False  # operator switch: allow every private/loopback/reserved address
    allowed_networks: tuple[str, ...] = ()  # CIDRs allowed even when private, e.g. ("127.0.0.1/32",)

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_pixels <= 0:
            raise ValueError("max_bytes and max_pixels must be positive")
        if min(self.connect_timeout_s, self.read_timeout_s, self.total_timeout_s) <= 0:
            raise ValueError("timeouts must be positive")
        if self.max_redirects < 0:
            raise ValueError("max_redirects must be >= 0")
        _parse_networks(self.allowed_networks)  # raises ValueError naming a bad CIDR


@functools.lru_cache(maxsize=64)
def _parse_networks(cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    networks: list[IPNetwork] = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError as exc:
            raise ValueError(f"allowed_networks: {cidr!r} is not a CIDR network") from exc
    return tuple(networks)


# ---------------------------------------------------------------------------------------------------------
# Address policy


def _v4(cidr: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(cidr)


def _v6(cidr: str) -> ipaddress.IPv6Network:
    return ipaddress.IPv6Network(cidr)


# Explicit tables (the stdlib's is_private / is_global changed between Python patch releases).
_V4_SPECIAL: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_v4("0.0.0.0/8"), "unspecified"),
    (_v4("10.0.0.0/8"), "private"),
    (_v4("100.64.0.0/10"), "private CGNAT"),
    (_v4("127.0.0.0/8"), "loopback"),
    (_v4("169.254.0.0/16"), "link-local"),
    (_v4("172.16.0.0/12"), "private"),
    (_v4("192.0.0.0/24"), "reserved"),
    (_v4("192.0.2.0/24"), "reserved"),
    (_v4("192.88.99.0/24"), "reserved"),
    (_v4("192.168.0.0/16"), "private"),
    (_v4("198.18.0.0/15"), "reserved"),
    (_v4("198.51.100.0/24"), "reserved"),
    (_v4("203.0.113.0/24"), "reserved"),
    (_v4("224.0.0.0/4"), "multicast"),
    (_v4("255.255.255.255/32"), "broadcast"),
    (_v4("240.0.0.0/4"), "reserved"),
)
_V6_UNSPECIFIED = ipaddress.IPv6Address("::")
_V6_LOOPBACK = ipaddress.IPv6Address("::1")
_V6_MAPPED = _v6("::ffff:0:0/96")  # IPv4-mapped: the socket talks IPv4 to the embedded address
_V6_COMPAT = _v6("::/96")  # deprecated IPv4-compatible
_V6_NAT64 = _v6("64:ff9b::/96")  # well-known NAT64 prefix: reaches the embedded IPv4 address
_V6_GLOBAL_UNICAST = _v6("2000::/3")
_V6_SPECIAL: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_v6("::ffff:0:0:0/96"), "reserved"),  # SIIT IPv4-translated
    (_v6("64:ff9b:1::/48"), "private"),  # local-use NAT64
    (_v6("100::/64"), "reserved"),  # discard-only
    (_v6("2001:2::/48"), "reserved"),  # benchmarking
    (_v6("2001:10::/28"), "reserved"),  # ORCHID (deprecated)
    (_v6("2001:db8::/32"), "reserved"),  # documentation
    (_v6("3fff::/20"), "reserved"),  # documentation
    (_v6("5f00::/16"), "reserved"),  # SRv6 SIDs
    (_v6("fc00::/7"), "unique-local"),
    (_v6("fe80::/10"), "link-local"),
    (_v6("fec0::/10"), "site-local"),
    (_v6("ff00::/8"), "multicast"),
)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo client)."""
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _V6_MAPPED or ip in _V6_COMPAT or ip in _V6_NAT64:
        return low32
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        server, client = ip.teredo
        # Judge by the worse of the two embedded addresses.
        return client if _address_kind(client) is not None else server
    return None


def _address_kind(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be fetched from by default ("loopback", "private", ...), or None if public."""
    if isinstance(ip, ipaddress.IPv4Address):
        for network4, kind4 in _V4_SPECIAL:
            if ip in network4:
                return kind4
        return None
    if ip == _V6_UNSPECIFIED:
        return "unspecified"
    if ip == _V6_LOOPBACK:
        return "loopback"
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        embedded_kind = _address_kind(embedded)
        if embedded_kind is not None:
            return embedded_kind
        if ip in _V6_MAPPED or ip in _V6_NAT64:
            return None  # the socket reaches exactly this public IPv4 address
    for network6, kind6 in _V6_SPECIAL:
        if ip in network6:
            return kind6
    if ip not in _V6_GLOBAL_UNICAST:
        return "reserved"
    return None


def _is_allowed_explicitly(ip: IPAddress, limits: MediaLimits) -> bool:
    networks = _parse_networks(limits.allowed_networks)
    candidates: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        candidates.append(ip.ipv4_mapped)
    return any(candidate in network for candidate in candidates for network in networks)


def is_blocked_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, limits: MediaLimits) -> bool:
    """True when predictd must not connect to ``ip`` under ``limits``."""
    if limits.allow_private or _is_allowed_explicitly(ip, limits):
        return False
    return _address_kind(ip) is not None


# ---------------------------------------------------------------------------------------------------------
# Fetching lives in predictd.media_fetch (httpx, ssl), imported on the first URL: a worker whose model
# takes no image URL never loads it (about 15 MiB per worker process).


class _Failure(Exception):
    """A fetch failure raised below httpx, with a ready message (without the field prefix).

    ``refusal`` marks a policy refusal, whose message stands alone; other failures get the URL prefixed.
    """

    def __init__(self, message: str, *, refusal: bool = False) -> None:
        super().__init__(message)
        self.refusal = refusal


def _clean(text: str, limit: int = 200) -> str:
    text = "".join(ch if ch.isprintable() else "?" for ch in text[: limit + 1])
    return text if len(text) <= limit else text[:limit] + "..."


def fetch_image_bytes(url: str, *, field: str, limits: MediaLimits) -> bytes:
    """The body of an image URL, fetched under the SSRF, size and time rules of the module docstring."""
    from . import media_fetch

    return media_fetch.fetch_image_bytes(url, field=field, limits=limits)


# ---------------------------------------------------------------------------------------------------------
# Data URIs


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


_PREFIX_HINT = "missing the data:image/<format>;base64, prefix"


def _decode_data_uri(value: str, field: str, limits: MediaLimits) -> bytes:
    parsed = _data_uri_header(value)
    if parsed is None:
        raise ImageLoadError(f"{field}: {_PREFIX_HINT}")
    header, comma = parsed
    parts = [part.strip().lower() for part in header.split(";")]
    mime = parts[0]
    if not mime.startswith("image/") or mime == "image/":
        raise ImageLoadError(f"{field}: data URI media type {_clean(mime, 60) or '(none)'} is not an image")
    if len(parts) < 2 or parts[-1] != "base64":
        raise ImageLoadError(f"{field}: data URI is not base64 ({_PREFIX_HINT})")
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


# ---------------------------------------------------------------------------------------------------------
# Decoding. Pillow is imported on the first image: the API process (which imports this module for
# MediaLimits) and a worker whose model takes no image never load it.


@functools.lru_cache(maxsize=1)
def _safe_formats() -> tuple[str, ...]:
    from PIL import Image

    Image.init()
    return tuple(name for name in SAFE_FORMATS if name in Image.OPEN)


_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def _decode_image(data: bytes, *, field: str, limits: MediaLimits, source: str) -> Image.Image:
    from PIL import Image

    formats = _safe_formats()
    undecodable = f"{field}: {source} cannot be decoded as an image (supported: {', '.join(formats)})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(formats))
            width, height = image.size
            if width * height > limits.max_pixels:
                raise ImageLoadError(
                    f"{field}: image is {width * height} pixels, over the {limits.max_pixels} limit "
                    f"({width}x{height})"
                )
            image.load()
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        match = _BOMB_PIXELS.search(str(exc))
        pixels = int(match.group(1)) if match else None
        if pixels is not None and pixels > limits.max_pixels:
            message = f"image is {pixels} pixels, over the {limits.max_pixels} limit"
        elif pixels is not None:
            message = f"image is {pixels} pixels, over Pillow's limit of {Image.MAX_IMAGE_PIXELS} pixels"
        else:
            message = f"image is over the {limits.max_pixels} pixel limit (decompression bomb)"
        raise ImageLoadError(f"{field}: {message}") from None
    except Exception:
        # UnidentifiedImageError, OSError (truncated), SyntaxError, ValueError, struct.error, EOFError...
        raise ImageLoadError(undecodable) from None
    return image


# ---------------------------------------------------------------------------------------------------------
# Entry point

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]{0,31}):")


def _load_image(value: str, field: str, limits: MediaLimits) -> Image.Image:
    if not isinstance(value, str):
        raise ImageLoadError(f"{field}: expected a URL or data URI string, got {type(value).__name__}")
    head = value[:16].lower()
    if head.startswith("data:"):
        data = decode_data_uri(value, field=field, limits=limits)
        return _decode_image(data, field=field, limits=limits, source="data URI")
    if head.startswith(("http://", "https://")):
        from . import media_fetch

        data = media_fetch.fetch_image_bytes(value, field=field, limits=limits)
        return _decode_image(data, field=field, limits=limits, source=media_fetch.display_url(value))
    scheme = _SCHEME.match(value[:40])
    if scheme is not None and "/" in value[:48]:
        raise ImageLoadError(
            f"{field}: only http(s) URLs and data URIs are accepted, not {_clean(scheme.group(1), 32)}"
        )
    raise ImageLoadError(f"{field}: neither an http(s) URL nor a data URI ({_PREFIX_HINT})")


def load_image(value: str, *, field: str, limits: MediaLimits) -> Image.Image:
    """A fully loaded Pillow image from an http(s) URL or a ``data:image/...;base64,`` URI.

    Every failure raises :class:`ImageLoadError` naming ``field`` and the reason.
    """
    try:
        return _load_image(value, field, limits)
    except ImageLoadError:
        raise
    except Exception as exc:
        raise ImageLoadError(f"{field}: could not load the image ({type(exc).__name__})") from None


# ---------------------------------------------------------------------------------------------------------
# Other outbound calls (webhooks) go through the same guard.

OutboundRefused = _Failure


def guarded_transport(limits: MediaLimits, deadline: float) -> httpx.HTTPTransport:
    """An httpx transport that resolves once, refuses blocked addresses, and connects to the address it
    checked, under a wall-clock ``deadline`` (time.monotonic()). Raises OutboundRefused on a refusal."""
    from . import media_fetch

    return media_fetch.guarded_transport(limits, deadline)


def __getattr__(name: str) -> typing.Any:
    """``SafeNetworkBackend`` and the other network parts, from predictd.media_fetch on first use."""
    if name in _FETCH_NAMES:
        from . import media_fetch

        return getattr(media_fetch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_FETCH_NAMES = frozenset({"SafeNetworkBackend"})
