"""predictd.media, and the predictd.outbound guard under it, against real HTTP(S) servers on 127.0.0.1:
fetching, SSRF refusals, redirects, size and time limits, slow-loris servers, decompression bombs, and the
pinned-address connection."""

from __future__ import annotations

import base64
import contextlib
import gzip
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpcore
import pytest

from predictd.errors import ImageLoadError
from predictd.media import MediaLimits, fetch_image_bytes, load_image
from predictd.outbound import Deadline, OutboundLimits
from predictd.outbound.guard import SafeNetworkBackend

from ..unit.test_media_unit import bomb_png, jpeg_bytes, png_bytes

FIELD = "input.model_image"
LOOPBACK = MediaLimits(fetch=OutboundLimits(allowed_networks=("127.0.0.1/32",)))
# "localhost" may also resolve to ::1; every resolved address must be allowed.
LOCALHOST = MediaLimits(fetch=OutboundLimits(allowed_networks=("127.0.0.1/32", "::1/128")))
SMALL = MediaLimits(max_bytes=1000, fetch=OutboundLimits(allowed_networks=("127.0.0.1/32",)))

PNG = png_bytes((8, 6), "red")
BIG_BODY = b"\x89PNG" + b"x" * 4996  # 5000 bytes, over SMALL.max_bytes


class MediaServer(ThreadingHTTPServer):
    """A threaded HTTP server that counts accepted connections and requests per path."""

    daemon_threads = True

    def __init__(self, host: str, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__((host, 0), handler)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.connections = 0
        self.hits: Counter[str] = Counter()
        self.hosts: list[str] = []
        self.server_names: list[str | None] = []

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            self.connections += 1
        super().process_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-response is what several tests do on purpose

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str, host: str | None = None) -> str:
        return f"http://{host or self.server_address[0]}:{self.port}{path}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10
    server: MediaServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(
        self, status: int, body: bytes = b"", content_type: str | None = "image/png", **headers: str
    ) -> None:
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location: str, status: int = 302) -> None:
        self.reply(status, b"", None, Location=location)

    def trickle(self, data: bytes) -> None:
        """Write one byte per second until done, the client hangs up or the server stops."""
        for byte in data:
            if self.server.stop.wait(1):
                return
            try:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            except OSError:
                return
        self.close_connection = True

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        with self.server.lock:
            self.server.hits[path] += 1
            self.server.hosts.append(self.headers.get("Host", ""))
        route = ROUTES.get(path)
        if route is None and path.startswith("/chain/"):
            hops = int(path.rsplit("/", 1)[1])
            self.redirect("/ok.png" if hops == 0 else f"/chain/{hops - 1}")
        elif route is None:
            self.reply(404, b"not found", "text/plain")
        else:
            route(self, query)


def _stall(handler: Handler, seconds: float) -> None:
    handler.server.stop.wait(seconds)
    handler.close_connection = True


def _close_delimited(handler: Handler, body: bytes) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(body)
    handler.close_connection = True


def _chunked(handler: Handler, body: bytes) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    for start in range(0, len(body), 500):
        piece = body[start : start + 500]
        handler.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
    handler.wfile.write(b"0\r\n\r\n")


def _declared_huge(handler: Handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    handler.send_header("Content-Length", str(10**9))
    handler.end_headers()
    handler.wfile.write(b"\x89PNG")
    handler.wfile.flush()
    _stall(handler, 10)


def _slow_body(handler: Handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    handler.send_header("Content-Length", "100")
    handler.end_headers()
    handler.wfile.flush()
    handler.trickle(PNG[:100].ljust(100, b"\0"))


def _slow_headers(handler: Handler) -> None:
    handler.trickle(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 1\r\n\r\nx")


def _headers_then_silence(handler: Handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    handler.send_header("Content-Length", "100")
    handler.end_headers()
    handler.wfile.flush()
    _stall(handler, 5)


Route = Callable[[Handler, dict[str, list[str]]], None]
BOMB = bomb_png(8000, 8000)
ROUTES: dict[str, Route] = {
    "/ok.png": lambda h, q: h.reply(200, PNG),
    "/ok.jpg": lambda h, q: h.reply(200, jpeg_bytes((10, 7)), "image/jpeg"),
    "/params.png": lambda h, q: h.reply(200, PNG, "Image/PNG; charset=binary"),
    "/missing.png": lambda h, q: h.reply(404, b"no such image", "text/plain"),
    "/error.png": lambda h, q: h.reply(500, b"boom", "text/plain"),
    "/page.html": lambda h, q: h.reply(200, b"<html><body>hi</body></html>", "text/html; charset=utf-8"),
    "/no-type": lambda h, q: h.reply(200, PNG, None),
    "/octet": lambda h, q: h.reply(200, PNG, "application/octet-stream"),
    "/garbage.png": lambda h, q: h.reply(200, b"\x89PNG\r\n\x1a\n" + b"\xde\xad\xbe\xef" * 100),
    "/bomb.png": lambda h, q: h.reply(200, BOMB),
    "/gzip.png": lambda h, q: h.reply(200, gzip.compress(PNG), Content_Encoding="gzip"),
    "/gzip-bomb.png": lambda h, q: h.reply(200, gzip.compress(b"\0" * 10_000_000), Content_Encoding="gzip"),
    "/bad-gzip.png": lambda h, q: h.reply(200, b"not gzip at all", Content_Encoding="gzip"),
    "/brotli.png": lambda h, q: h.reply(200, PNG, Content_Encoding="br"),
    "/big.png": lambda h, q: h.reply(200, BIG_BODY),
    "/big-close.png": lambda h, q: _close_delimited(h, BIG_BODY),
    "/big-chunked.png": lambda h, q: _chunked(h, BIG_BODY),
    "/chunked.png": lambda h, q: _chunked(h, PNG),
    "/declared-huge.png": lambda h, q: _declared_huge(h),
    "/slow-body.png": lambda h, q: _slow_body(h),
    "/slow-headers.png": lambda h, q: _slow_headers(h),
    "/silent.png": lambda h, q: _headers_then_silence(h),
    "/redirect": lambda h, q: h.redirect(q["to"][0], int(q.get("status", ["302"])[0])),
    "/loop": lambda h, q: h.redirect("/loop"),
    "/no-location": lambda h, q: h.reply(302, b"", None),
}


@contextlib.contextmanager
def serve(
    host: str, handler: type[BaseHTTPRequestHandler] = Handler, tls: ssl.SSLContext | None = None
) -> Iterator[MediaServer]:
    server = MediaServer(host, handler)
    if tls is not None:
        tls.sni_callback = lambda _sock, name, _context: server.server_names.append(name)
        server.socket = tls.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def server() -> Iterator[MediaServer]:
    with serve("127.0.0.1") as running:
        yield running


@pytest.fixture(scope="module")
def other_server() -> Iterator[MediaServer]:
    """A second loopback address, outside LOOPBACK's allowed network."""
    with serve("127.0.0.2") as running:
        yield running


def fetch_error(url: str, limits: MediaLimits = LOOPBACK) -> str:
    with pytest.raises(ImageLoadError) as caught:
        load_image(url, field=FIELD, limits=limits)
    message = str(caught.value)
    assert message.startswith(f"{FIELD}: "), message
    assert "Traceback" not in message
    return message


# ---------------------------------------------------------------------------------------------------------
# Successful fetches


def test_png_url_loads(server: MediaServer) -> None:
    image = load_image(server.url("/ok.png"), field=FIELD, limits=LOOPBACK)
    assert image.size == (8, 6)
    assert image.format == "PNG"
    assert image.getpixel((7, 5)) == (255, 0, 0)


def test_jpeg_url_loads(server: MediaServer) -> None:
    image = load_image(server.url("/ok.jpg"), field=FIELD, limits=LOOPBACK)
    assert (image.size, image.format) == ((10, 7), "JPEG")


def test_content_type_parameters_and_case_are_accepted(server: MediaServer) -> None:
    assert load_image(server.url("/params.png"), field=FIELD, limits=LOOPBACK).size == (8, 6)


def test_chunked_and_gzip_bodies_load(server: MediaServer) -> None:
    assert fetch_image_bytes(server.url("/chunked.png"), field=FIELD, limits=LOOPBACK) == PNG
    assert fetch_image_bytes(server.url("/gzip.png"), field=FIELD, limits=LOOPBACK) == PNG


def test_host_header_keeps_the_name_while_connecting_to_the_validated_address(server: MediaServer) -> None:
    url = server.url("/ok.png?sig=abc", host="localhost")
    assert fetch_image_bytes(url, field=FIELD, limits=LOCALHOST) == PNG
    assert server.hosts[-1] == f"localhost:{server.port}"


# ---------------------------------------------------------------------------------------------------------
# SSRF: private addresses refused


def test_default_limits_refuse_loopback_literal(server: MediaServer) -> None:
    before = server.connections
    message = fetch_error(server.url("/ok.png"), MediaLimits())
    assert message == f"{FIELD}: refusing to fetch from 127.0.0.1 (loopback address)"
    assert server.connections == before


def test_default_limits_refuse_a_name_resolving_to_loopback(server: MediaServer) -> None:
    before = server.connections
    message = fetch_error(server.url("/ok.png", host="localhost"), MediaLimits())
    assert "refusing to fetch from localhost (it resolves to " in message
    assert "loopback address)" in message
    assert server.connections == before
    with pytest.raises(ImageLoadError, match="refusing to fetch from localhost"):
        fetch_image_bytes(server.url("/ok.png", host="localhost"), field=FIELD, limits=MediaLimits())


@pytest.mark.parametrize(
    ("host", "fragment"),
    [
        ("127.1", "refusing to fetch from 127.1 (it resolves to 127.0.0.1, a loopback address)"),
        ("0x7f.0.0.1", "refusing to fetch from 0x7f.0.0.1 (it resolves to 127.0.0.1, a loopback address)"),
        ("2130706433", "refusing to fetch from 2130706433 (it resolves to 127.0.0.1, a loopback address)"),
        ("LOCALHOST", "refusing to fetch from localhost (it resolves to"),
        ("[::ffff:127.0.0.1]", "refusing to fetch from ::ffff:7f00:1 (loopback address)"),
        ("[::ffff:7f00:1]", "refusing to fetch from ::ffff:7f00:1 (loopback address)"),
        ("[0:0:0:0:0:0:0:1]", "refusing to fetch from ::1 (loopback address)"),
        ("0177.0.0.1", "is not a valid URL"),  # httpx rejects octal spellings outright
        ("127.000.000.001", "is not a valid URL"),
    ],
)
def test_alternative_spellings_of_loopback_are_refused(server: MediaServer, host: str, fragment: str) -> None:
    before = server.connections
    assert fragment in fetch_error(server.url("/ok.png", host=host), MediaLimits())
    assert server.connections == before


def test_allowed_networks_is_exact(server: MediaServer, other_server: MediaServer) -> None:
    before = other_server.connections
    message = fetch_error(other_server.url("/ok.png"), LOOPBACK)
    assert message == f"{FIELD}: refusing to fetch from 127.0.0.2 (loopback address)"
    assert other_server.connections == before
    wider = MediaLimits(fetch=OutboundLimits(allowed_networks=("127.0.0.0/8",)))
    assert fetch_image_bytes(other_server.url("/ok.png"), field=FIELD, limits=wider) == PNG
    assert (
        fetch_image_bytes(
            other_server.url("/ok.png"),
            field=FIELD,
            limits=MediaLimits(fetch=OutboundLimits(allow_private=True)),
        )
        == PNG
    )


# ---------------------------------------------------------------------------------------------------------
# Redirects


def test_redirect_to_another_path_is_followed(server: MediaServer) -> None:
    assert fetch_image_bytes(server.url("/redirect?to=/ok.png"), field=FIELD, limits=LOOPBACK) == PNG
    absolute = server.url("/ok.png")
    url = server.url(f"/redirect?to={absolute}&status=308")
    assert load_image(url, field=FIELD, limits=LOOPBACK).size == (8, 6)


def test_redirect_chain_within_the_limit_is_followed(server: MediaServer) -> None:
    assert fetch_image_bytes(server.url("/chain/2"), field=FIELD, limits=LOOPBACK) == PNG  # 3 redirects


def test_redirect_chain_over_the_limit_is_refused(server: MediaServer) -> None:
    before = server.hits["/ok.png"]
    message = fetch_error(server.url("/chain/3"))  # 4 redirects
    assert message.endswith("more than 3 redirects")
    assert server.hits["/ok.png"] == before
    assert fetch_error(server.url("/loop")).endswith("more than 3 redirects")
    none_allowed = MediaLimits(fetch=OutboundLimits(max_redirects=0, allowed_networks=("127.0.0.1/32",)))
    assert fetch_error(server.url("/redirect?to=/ok.png"), none_allowed).endswith("more than 0 redirects")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("http://10.255.255.1/x.png", "refusing to fetch from 10.255.255.1 (private address)"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "refusing to fetch from 169.254.169.254 (link-local address)",
        ),
        ("http://[fd00::1]:8080/x.png", "refusing to fetch from fd00::1 (unique-local address)"),
        ("http://0.0.0.0:1/x.png", "refusing to fetch from 0.0.0.0 (unspecified address)"),
    ],
)
def test_redirect_to_a_private_address_is_refused_without_connecting(
    server: MediaServer, target: str, expected: str
) -> None:
    started = time.monotonic()
    message = fetch_error(server.url(f"/redirect?to={target}"))
    assert message == f"{FIELD}: {expected}"
    assert time.monotonic() - started < 2


def test_redirect_to_a_loopback_address_outside_the_allowed_network_is_refused(
    server: MediaServer, other_server: MediaServer
) -> None:
    before = other_server.connections
    message = fetch_error(server.url(f"/redirect?to={other_server.url('/ok.png')}"))
    assert message == f"{FIELD}: refusing to fetch from 127.0.0.2 (loopback address)"
    assert other_server.connections == before


def test_redirect_to_a_name_resolving_outside_the_allowed_networks_is_refused(
    server: MediaServer, other_server: MediaServer
) -> None:
    # The first hop (127.0.0.2) is allowed; the hop to localhost (127.0.0.1) is not.
    limits = MediaLimits(fetch=OutboundLimits(allowed_networks=("127.0.0.2/32",)))
    before = server.connections
    message = fetch_error(other_server.url(f"/redirect?to={server.url('/ok.png', host='localhost')}"), limits)
    assert "refusing to fetch from localhost" in message
    assert server.connections == before


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("file:///etc/passwd", "only http and https URLs can be fetched, not file"),
        ("ftp://example.com/x.png", "only http and https URLs can be fetched, not ftp"),
        ("http://user:pw@127.0.0.1/x.png", "refusing a URL with credentials"),
    ],
)
def test_redirect_to_a_forbidden_url_is_refused(server: MediaServer, target: str, fragment: str) -> None:
    assert fragment in fetch_error(server.url(f"/redirect?to={target}"))


def test_redirect_without_location_is_an_http_error(server: MediaServer) -> None:
    url = server.url("/no-location")
    assert fetch_error(url) == f"{FIELD}: could not fetch {url}: HTTP 302"


# ---------------------------------------------------------------------------------------------------------
# Status and Content-Type


def test_http_404_is_reported(server: MediaServer) -> None:
    url = server.url("/missing.png")
    assert fetch_error(url) == f"{FIELD}: could not fetch {url}: HTTP 404"
    assert fetch_error(server.url("/error.png")).endswith("HTTP 500")


def test_query_strings_stay_out_of_messages(server: MediaServer) -> None:
    message = fetch_error(server.url("/missing.png?X-Amz-Signature=topsecret"))
    assert "topsecret" not in message
    assert message.endswith("/missing.png: HTTP 404")


def test_html_is_not_an_image(server: MediaServer) -> None:
    url = server.url("/page.html")
    assert fetch_error(url) == f"{FIELD}: could not fetch {url}: Content-Type text/html is not an image"
    assert "Content-Type application/octet-stream is not an image" in fetch_error(server.url("/octet"))
    assert "no Content-Type" in fetch_error(server.url("/no-type"))


def test_garbage_labelled_png_cannot_be_decoded(server: MediaServer) -> None:
    url = server.url("/garbage.png")
    message = fetch_error(url)
    assert message.startswith(f"{FIELD}: {url} cannot be decoded as an image")


def test_connection_refused_is_reported(server: MediaServer) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    message = fetch_error(f"http://127.0.0.1:{port}/x.png")
    assert message.startswith(f"{FIELD}: could not fetch http://127.0.0.1:{port}/x.png: ")


def test_unresolvable_host_is_reported() -> None:
    message = fetch_error("http://does-not-exist.invalid/x.png", MediaLimits())
    assert message.startswith(
        f"{FIELD}: could not fetch http://does-not-exist.invalid/x.png: could not resolve"
    )


# ---------------------------------------------------------------------------------------------------------
# Size limits


def test_body_over_the_limit_with_content_length(server: MediaServer) -> None:
    url = server.url("/big.png")
    assert fetch_error(url, SMALL) == f"{FIELD}: {url} is larger than 1000 bytes"
    assert fetch_image_bytes(url, field=FIELD, limits=LOOPBACK) == BIG_BODY


def test_body_over_the_limit_without_content_length(server: MediaServer) -> None:
    for path in ("/big-close.png", "/big-chunked.png"):
        url = server.url(path)
        assert fetch_error(url, SMALL) == f"{FIELD}: {url} is larger than 1000 bytes"
        assert fetch_image_bytes(url, field=FIELD, limits=LOOPBACK) == BIG_BODY


def test_declared_content_length_over_the_limit_is_refused_before_reading(server: MediaServer) -> None:
    started = time.monotonic()
    assert "is larger than 20971520 bytes" in fetch_error(server.url("/declared-huge.png"))
    assert time.monotonic() - started < 2  # the server would stall for 10 s after 4 bytes


def test_gzip_bomb_is_capped_after_decoding(server: MediaServer) -> None:
    limits = MediaLimits(max_bytes=100_000, fetch=OutboundLimits(allowed_networks=("127.0.0.1/32",)))
    assert "is larger than 100000 bytes" in fetch_error(server.url("/gzip-bomb.png"), limits)


def test_bad_or_unsupported_content_encoding(server: MediaServer) -> None:
    assert "the body is not valid gzip" in fetch_error(server.url("/bad-gzip.png"))
    assert "unsupported Content-Encoding br" in fetch_error(server.url("/brotli.png"))


def test_decompression_bomb_url_is_refused(server: MediaServer) -> None:
    limits = MediaLimits(max_pixels=1_000_000, fetch=OutboundLimits(allowed_networks=("127.0.0.1/32",)))
    message = fetch_error(server.url("/bomb.png"), limits)
    assert message == f"{FIELD}: image is 64000000 pixels, over the 1000000 limit (8000x8000)"


# ---------------------------------------------------------------------------------------------------------
# Time limits


def test_slow_loris_body_fails_within_the_total_budget(server: MediaServer) -> None:
    limits = MediaLimits(fetch=OutboundLimits(total_timeout_s=2, allowed_networks=("127.0.0.1/32",)))
    started = time.monotonic()
    message = fetch_error(server.url("/slow-body.png"), limits)
    elapsed = time.monotonic() - started
    assert message.endswith("timed out after 2 s")
    assert 1.5 < elapsed < 5


def test_slow_loris_headers_fail_within_the_total_budget(server: MediaServer) -> None:
    limits = MediaLimits(fetch=OutboundLimits(total_timeout_s=2, allowed_networks=("127.0.0.1/32",)))
    started = time.monotonic()
    message = fetch_error(server.url("/slow-headers.png"), limits)
    elapsed = time.monotonic() - started
    assert message.endswith("timed out after 2 s")
    assert 1.5 < elapsed < 5


def test_read_timeout(server: MediaServer) -> None:
    limits = MediaLimits(fetch=OutboundLimits(read_timeout_s=0.5, allowed_networks=("127.0.0.1/32",)))
    started = time.monotonic()
    url = server.url("/silent.png")
    assert fetch_error(url, limits) == f"{FIELD}: could not fetch {url}: no data received for 0.5 s"
    assert time.monotonic() - started < 3


def test_a_callers_deadline_cuts_a_fetch_short(server: MediaServer) -> None:
    """A prediction gives its image URLs part of the model's timeout: a fetch ends by the caller's
    deadline when that comes before the [media] total_timeout_s."""
    url = server.url("/slow-body.png")
    started = time.monotonic()
    with pytest.raises(ImageLoadError) as caught:
        load_image(url, field=FIELD, limits=LOOPBACK, deadline=Deadline.after(1.5))
    assert str(caught.value) == f"{FIELD}: could not fetch {url}: timed out after 1.5 s"
    assert 1.2 < time.monotonic() - started < 3
    before = server.hits["/ok.png"]
    with pytest.raises(ImageLoadError) as caught:
        load_image(server.url("/ok.png"), field=FIELD, limits=LOOPBACK, deadline=Deadline.after(0))
    assert str(caught.value).endswith("/ok.png: no time was left to fetch it")
    assert server.hits["/ok.png"] == before
    # Data URIs take no fetching: an image given inline loads whatever the deadline.
    inline = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert load_image(inline, field=FIELD, limits=LOOPBACK, deadline=Deadline.after(-1)).size == (8, 6)


@contextlib.contextmanager
def unaccepting_listener() -> Iterator[int]:
    """A port whose accept queue is full, so a new connection attempt hangs (SYNs are dropped)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers: list[socket.socket] = []
    try:
        for _ in range(16):
            filler = socket.socket()
            filler.settimeout(0.2)
            fillers.append(filler)
            try:
                filler.connect(("127.0.0.1", port))
            except TimeoutError:
                break
        else:
            raise AssertionError("could not fill the accept queue")
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_connect_timeout_and_total_budget_cover_connecting() -> None:
    with unaccepting_listener() as port:
        url = f"http://127.0.0.1:{port}/x.png"
        limits = MediaLimits(fetch=OutboundLimits(connect_timeout_s=0.5, allowed_networks=("127.0.0.1/32",)))
        started = time.monotonic()
        assert fetch_error(url, limits) == f"{FIELD}: could not fetch {url}: connection timed out after 0.5 s"
        assert time.monotonic() - started < 3
        limits = MediaLimits(fetch=OutboundLimits(total_timeout_s=0.7, allowed_networks=("127.0.0.1/32",)))
        started = time.monotonic()
        assert fetch_error(url, limits) == f"{FIELD}: could not fetch {url}: timed out after 0.7 s"
        assert time.monotonic() - started < 3


# ---------------------------------------------------------------------------------------------------------
# The pinned connection (SafeNetworkBackend) and TLS


def test_backend_connects_to_the_address_it_validated(server: MediaServer) -> None:
    backend = SafeNetworkBackend(LOCALHOST.fetch, time.monotonic() + 10)
    validated = backend.resolve("localhost", server.port)
    stream = backend.connect_tcp("localhost", server.port, timeout=5)
    try:
        peer = stream.get_extra_info("server_addr")
        assert peer[0] in validated
        assert peer == ("127.0.0.1", server.port)
        stream.write(b"GET /ok.png HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", timeout=5)
        assert stream.read(65536, timeout=5).startswith(b"HTTP/1.1 200 OK")
    finally:
        stream.close()


def test_backend_refuses_before_opening_a_socket(server: MediaServer) -> None:
    backend = SafeNetworkBackend(OutboundLimits(), time.monotonic() + 10)
    before = server.connections
    with pytest.raises(Exception, match=r"refusing to fetch from localhost \(it resolves to"):
        backend.connect_tcp("localhost", server.port, timeout=5)
    with pytest.raises(Exception, match=r"refusing to fetch from 127\.0\.0\.1 \(loopback address\)"):
        backend.connect_tcp("127.0.0.1", server.port, timeout=5)
    assert server.connections == before


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for DNS:localhost made with the openssl command-line tool."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return cert, key


class TLSHandler(Handler):
    def handle(self) -> None:
        try:
            self.request.do_handshake()
        except (ssl.SSLError, OSError):
            return
        super().handle()


@pytest.fixture(scope="module")
def tls_server(certificate: tuple[Path, Path]) -> Iterator[MediaServer]:
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with serve("127.0.0.1", TLSHandler, context) as running:
        yield running


def test_https_sends_the_host_name_as_sni_and_verifies_the_certificate(tls_server: MediaServer) -> None:
    url = f"https://localhost:{tls_server.port}/ok.png"
    message = fetch_error(url, LOCALHOST)
    assert message.startswith(f"{FIELD}: could not fetch {url}: ")
    assert "CERTIFICATE_VERIFY_FAILED" in message  # self-signed: not trusted, so verification is on
    assert tls_server.server_names[-1] == "localhost"  # SNI is the name, not the pinned address


def test_pinned_tls_connection_verifies_the_original_host_name(
    tls_server: MediaServer, certificate: tuple[Path, Path]
) -> None:
    cert, _ = certificate
    trusting = ssl.create_default_context(cafile=str(cert))
    backend = SafeNetworkBackend(LOCALHOST.fetch, time.monotonic() + 10)
    stream = backend.connect_tcp("localhost", tls_server.port, timeout=5)
    tls = stream.start_tls(trusting, server_hostname="localhost", timeout=5)
    try:
        assert tls.get_extra_info("server_addr") == ("127.0.0.1", tls_server.port)
        tls.write(b"GET /ok.png HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", timeout=5)
        assert tls.read(65536, timeout=5).startswith(b"HTTP/1.1 200 OK")
    finally:
        tls.close()
    stream = backend.connect_tcp("localhost", tls_server.port, timeout=5)
    try:
        with pytest.raises(httpcore.ConnectError, match=r"Hostname mismatch|doesn.t match"):
            stream.start_tls(trusting, server_hostname="other.example", timeout=5)
    finally:
        stream.close()
