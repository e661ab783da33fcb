"""Pure parts of predictd.media and predictd.outbound: the address policy, data URIs, and decoding with its
pixel guards."""

from __future__ import annotations

import base64
import io
import ipaddress
import struct
import time
import zlib

import pytest
from PIL import Image

from predictd.errors import ImageLoadError, ModelError
from predictd.media import MediaLimits, data_uri_size, decode_data_uri, load_image
from predictd.outbound import OutboundLimits, is_blocked_address

FIELD = "input.image"
DEFAULT = MediaLimits()


def png_bytes(size: tuple[int, int] = (8, 6), color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg_bytes(size: tuple[int, int] = (10, 7)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "blue").save(buffer, "JPEG")
    return buffer.getvalue()


def bomb_png(width: int, height: int, rows: int | None = None) -> bytes:
    """A 1-bit black PNG of width x height built without allocating it; it compresses to almost nothing.

    With ``rows``, the file is cut off after that many rows of pixel data (the IDAT chunk claims more bytes
    than follow and there is no IEND): reading the size works, decoding the pixels fails as truncated.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    signature = b"\x89PNG\r\n\x1a\n"
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
    row = b"\0" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    parts: list[bytes] = []
    remaining = height if rows is None else rows
    while remaining > 0:
        batch = min(remaining, 1000)
        parts.append(compressor.compress(row * batch))
        remaining -= batch
    if rows is not None:
        parts.append(compressor.flush(zlib.Z_SYNC_FLUSH))
        pixels = b"".join(parts)
        return signature + header + struct.pack(">I", len(pixels) + 1000) + b"IDAT" + pixels
    parts.append(compressor.flush())
    return signature + header + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def load_error(value: str, limits: MediaLimits = DEFAULT) -> str:
    with pytest.raises(ImageLoadError) as caught:
        load_image(value, field=FIELD, limits=limits)
    message = str(caught.value)
    assert message.startswith(f"{FIELD}: "), message
    return message


# ---------------------------------------------------------------------------------------------------------
# is_blocked_address


BLOCKED = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.0.0.5", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "private CGNAT"),
    ("100.127.255.255", "private CGNAT"),
    ("169.254.169.254", "link-local"),
    ("169.254.0.1", "link-local"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("255.255.255.255", "broadcast"),
    ("240.0.0.1", "reserved"),
    ("192.0.2.10", "reserved"),
    ("198.18.0.1", "reserved"),
    ("203.0.113.7", "reserved"),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fe80::1", "link-local"),
    ("fe80::1%1", "link-local"),
    ("fc00::1", "unique-local"),
    ("fd12:3456:789a::1", "unique-local"),
    ("ff02::1", "multicast"),
    ("fec0::1", "site-local"),
    ("2001:db8::1", "reserved"),
    ("100::1", "reserved"),
    ("64:ff9b:1::a00:1", "private"),
    # IPv4 embedded in IPv6
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:10.1.2.3", "private"),
    ("::ffff:169.254.169.254", "link-local"),
    ("::ffff:0.0.0.0", "unspecified"),
    ("::127.0.0.1", "loopback"),  # IPv4-compatible (deprecated)
    ("::8.8.8.8", "reserved"),  # IPv4-compatible is never fetched from
    ("::ffff:0:8.8.8.8", "reserved"),  # SIIT IPv4-translated
    ("64:ff9b::10.0.0.1", "private"),  # NAT64 to a private address
    ("64:ff9b::169.254.169.254", "link-local"),
    ("2002:7f00:1::1", "loopback"),  # 6to4 embedding 127.0.0.1
    ("2002:c0a8:101::1", "private"),  # 6to4 embedding 192.168.1.1
    # Teredo (server 65.54.227.120, client 127.0.0.1 obfuscated as 0x80ff:fffe)
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),
]

ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above CGNAT
    "172.15.255.255",
    "172.32.0.0",
    "169.253.255.255",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8",  # IPv4-mapped public: the socket talks to 8.8.8.8
    "64:ff9b::8.8.8.8",  # NAT64 to a public address
    "2002:808:808::1",  # 6to4 embedding 8.8.8.8
]


@pytest.mark.parametrize(("address", "kind"), BLOCKED)
def test_special_addresses_are_blocked_by_default(address: str, kind: str) -> None:
    ip = ipaddress.ip_address(address)
    assert is_blocked_address(ip, DEFAULT.fetch)
    assert not is_blocked_address(ip, OutboundLimits(allow_private=True))
    host = address.split("%")[0]
    literal = f"[{host}]" if ":" in host else host
    message = load_error(f"http://{literal}:8080/x.png")
    assert "refusing to fetch from" in message
    assert f"({kind} address)" in message


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_not_blocked(address: str) -> None:
    assert not is_blocked_address(ipaddress.ip_address(address), DEFAULT.fetch)


def test_allowed_networks_open_only_their_range() -> None:
    limits = OutboundLimits(allowed_networks=("127.0.0.1/32", "10.1.0.0/16", "fd00::/8"))
    assert not is_blocked_address(ipaddress.ip_address("127.0.0.1"), limits)
    assert not is_blocked_address(ipaddress.ip_address("::ffff:127.0.0.1"), limits)
    assert not is_blocked_address(ipaddress.ip_address("10.1.200.3"), limits)
    assert not is_blocked_address(ipaddress.ip_address("fd00::5"), limits)
    assert is_blocked_address(ipaddress.ip_address("127.0.0.2"), limits)
    assert is_blocked_address(ipaddress.ip_address("10.2.0.1"), limits)
    assert is_blocked_address(ipaddress.ip_address("::1"), limits)
    assert is_blocked_address(ipaddress.ip_address("169.254.169.254"), limits)
    assert is_blocked_address(ipaddress.ip_address("fc00::1"), limits)


def test_limits_reject_bad_configuration() -> None:
    with pytest.raises(ValueError, match="not a CIDR"):
        OutboundLimits(allowed_networks=("localhost",))
    with pytest.raises(ValueError, match="positive"):
        MediaLimits(max_bytes=0)
    with pytest.raises(ValueError, match="positive"):
        OutboundLimits(total_timeout_s=0)
    with pytest.raises(ValueError, match="max_redirects"):
        OutboundLimits(max_redirects=-1)


def test_image_load_error_is_a_model_error() -> None:
    assert issubclass(ImageLoadError, ModelError)
    assert ImageLoadError.name == "ImageLoadError"


# ---------------------------------------------------------------------------------------------------------
# URL shapes refused before any network access


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("ftp://example.com/x.png", "only http(s) URLs and data URIs are accepted, not ftp"),
        ("file:///etc/passwd", "only http(s) URLs and data URIs are accepted, not file"),
        ("gopher://127.0.0.1:6379/_x", "not gopher"),
        ("http://user:secret@example.com/x.png", "refusing a URL with credentials"),
        ("https://user@example.com/x.png", "refusing a URL with credentials"),
        ("http:///x.png", "has no host"),
        ("http://" + "a" * 9000 + ".com/", "longer than 8192 characters"),
        ("iVBORw0KGgoAAAANSUhEUg==", "missing the data:image/<format>;base64, prefix"),
        ("/tmp/x.png", "missing the data:image/<format>;base64, prefix"),
        ("", "missing the data:image/<format>;base64, prefix"),
    ],
)
def test_unfetchable_values(value: str, fragment: str) -> None:
    message = load_error(value)
    assert fragment in message
    assert "secret" not in message


def test_non_string_value_is_an_image_load_error() -> None:
    with pytest.raises(ImageLoadError, match=r"input\.image: expected a URL or data URI string"):
        load_image(123, field=FIELD, limits=DEFAULT)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# Data URIs


def test_png_data_uri_loads() -> None:
    image = load_image(data_uri(png_bytes((8, 6))), field=FIELD, limits=DEFAULT)
    assert image.size == (8, 6)
    assert image.format == "PNG"
    assert image.getpixel((0, 0)) == (255, 0, 0)


def test_jpeg_data_uri_loads() -> None:
    image = load_image(data_uri(jpeg_bytes((10, 7)), "image/jpeg"), field=FIELD, limits=DEFAULT)
    assert image.size == (10, 7)
    assert image.format == "JPEG"


def test_data_uri_header_is_case_insensitive_and_may_carry_parameters() -> None:
    value = "DATA:Image/PNG;name=x.png;BASE64," + base64.b64encode(png_bytes()).decode()
    assert load_image(value, field=FIELD, limits=DEFAULT).size == (8, 6)


def test_decode_data_uri_returns_the_bytes() -> None:
    payload = png_bytes()
    assert decode_data_uri(data_uri(payload), field=FIELD, limits=DEFAULT) == payload


def test_decode_data_uri_refuses_a_bare_payload() -> None:
    with pytest.raises(
        ImageLoadError, match=r"^input\.image: missing the data:image/<format>;base64, prefix"
    ):
        decode_data_uri(base64.b64encode(png_bytes()).decode(), field=FIELD, limits=DEFAULT)


def test_data_uri_without_comma_is_missing_the_prefix() -> None:
    assert "missing the data:image/<format>;base64, prefix" in load_error("data:image/png;base64")


@pytest.mark.parametrize(
    "value",
    [
        "data:image/png;base64,not base64!!",
        "data:image/png;base64,iVBORw0KGgo=AAAA",
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg=\n=",
        "data:image/png;base64,abc",  # not a multiple of 4
        "data:image/png;base64,ÿÿÿÿ",
    ],
)
def test_bad_base64_is_refused(value: str) -> None:
    assert "data URI is not base64" in load_error(value)


def test_data_uri_that_is_not_base64_encoded() -> None:
    assert "data URI is not base64" in load_error("data:image/png,%89PNG")


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("data:text/plain;base64,aGVsbG8=", "data URI media type text/plain is not an image"),
        ("data:application/octet-stream;base64,aGVsbG8=", "media type application/octet-stream is not"),
        ("data:;base64,aGVsbG8=", "data URI media type (none) is not an image"),
        ("data:image/;base64,aGVsbG8=", "data URI media type image/ is not an image"),
    ],
)
def test_wrong_media_type_is_refused(value: str, fragment: str) -> None:
    assert fragment in load_error(value)


def test_non_image_payload_is_refused() -> None:
    message = load_error(data_uri(b"hello, this is not a picture at all"))
    assert "data URI cannot be decoded as an image" in message


def test_empty_payload_is_refused() -> None:
    assert "data URI payload is empty" in load_error("data:image/png;base64,")


def test_oversized_data_uri_is_refused_before_decoding() -> None:
    limits = MediaLimits(max_bytes=1000)
    # Invalid base64 throughout: only a size check that runs before decoding can answer "larger than".
    value = "data:image/png;base64," + "!" * 1500
    assert load_error(value, limits).endswith("data URI payload is larger than 1000 bytes")
    good = data_uri(b"\0" * 1001)
    assert "larger than 1000 bytes" in load_error(good, limits)
    with pytest.raises(ImageLoadError, match="larger than 1000 bytes"):
        decode_data_uri(good, field=FIELD, limits=limits)
    assert decode_data_uri(data_uri(b"\0" * 1000), field=FIELD, limits=limits) == b"\0" * 1000


def test_data_uri_size_estimates_without_decoding() -> None:
    for length in range(0, 40):
        payload = bytes(range(length))
        assert data_uri_size(data_uri(payload)) == length
    assert data_uri_size("https://example.com/x.png") == 0
    assert data_uri_size("plain text") == 0
    assert data_uri_size("data:image/png;base64") == 0
    assert data_uri_size("data:image/png,abcdef") == 6
    big = "data:image/png;base64," + "A" * 40_000_000
    started = time.monotonic()
    assert data_uri_size(big) == 30_000_000
    assert time.monotonic() - started < 0.5


# ---------------------------------------------------------------------------------------------------------
# Decoding guards


def test_garbage_labelled_as_png_cannot_be_decoded() -> None:
    message = load_error(data_uri(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50))
    assert "cannot be decoded as an image" in message


def test_truncated_png_cannot_be_decoded() -> None:
    whole = png_bytes((64, 64), "green")
    assert "cannot be decoded as an image" in load_error(data_uri(whole[: len(whole) // 2]))


def test_eps_is_not_a_supported_format() -> None:
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    message = load_error(data_uri(eps, "image/eps"))
    assert "cannot be decoded as an image (supported: PNG, JPEG" in message


def test_pixel_limit_is_checked_before_the_pixels_are_decoded() -> None:
    # The header claims 8000x8000 but only 10 rows of pixel data exist: load() would fail as truncated,
    # so answering with the pixel count proves the check ran before load().
    header_only = bomb_png(8000, 8000, rows=10)
    message = load_error(data_uri(header_only))
    assert message == f"{FIELD}: image is 64000000 pixels, over the 40000000 limit (8000x8000)"
    assert "cannot be decoded" in load_error(data_uri(header_only), MediaLimits(max_pixels=70_000_000))


def test_decompression_bomb_is_refused_by_the_configured_limit() -> None:
    bomb = bomb_png(3000, 3000)
    assert len(bomb) < 20_000
    message = load_error(data_uri(bomb), MediaLimits(max_pixels=1_000_000))
    assert "image is 9000000 pixels, over the 1000000 limit" in message
    assert load_image(data_uri(bomb), field=FIELD, limits=DEFAULT).size == (3000, 3000)


def test_pillow_decompression_bomb_error_is_an_image_load_error() -> None:
    bomb = bomb_png(20000, 20000)  # 400 M pixels: Pillow's own guard raises in Image.open()
    assert len(bomb) < 200_000
    message = load_error(data_uri(bomb))
    assert "image is 400000000 pixels, over the 40000000 limit" in message


def test_pillow_decompression_bomb_warning_is_treated_as_an_error() -> None:
    bomb = bomb_png(10000, 10000)  # 100 M pixels: over Pillow's warning threshold, under its error one
    message = load_error(data_uri(bomb), MediaLimits(max_pixels=150_000_000))
    assert f"image is 100000000 pixels, over Pillow's limit of {Image.MAX_IMAGE_PIXELS} pixels" in message
