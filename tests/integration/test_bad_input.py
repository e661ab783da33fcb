"""Hostile and malformed input against live servers on 127.0.0.1: every case is answered with its documented
error, quickly, the server stays up (a following prediction works) and its memory stays bounded.

API level (both surfaces): bodies over ``max_body_bytes`` with and without Content-Length (chunked), deeply
nested JSON, huge strings, non-UTF-8 bodies, a wrong type for every top-level field, numbers too large for
the database. Runtime (the ``thumbnail`` fixture model, observed as ``ImageLoadError`` via
``GET /v1/status/{id}``): image URLs redirecting to other loopback addresses, DNS names and literals that
resolve to loopback under the default (strict) media settings, a slow-loris image server (bounded by the
media ``total_timeout_s``), a decompression-bomb PNG, base64 garbage.

Every request loop is bounded in count and bytes; the hostile origin server below stops each slow answer by
itself after ``SLOW_ANSWER_LIMIT_S``.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import quote, unquote

import httpx
import psutil
import pytest

from predictd.api.parsing import MAX_JSON_DEPTH, MAX_QUERY_INT
from predictd.errors import MAX_MESSAGE_CHARS, ErrorId

from ..conftest import FIXTURE_MODELS, Server, png_bytes
from .test_fashn_api import assert_fashn_error
from .test_native_api import assert_error

QUICK_S = 5.0  # an API-level refusal, however large or odd the request
MEDIA_TOTAL_TIMEOUT_S = 2.0
MAX_BODY_BYTES = 4 * 1024 * 1024
RSS_GROWTH_LIMIT_MB = 150
SLOW_ANSWER_LIMIT_S = 15.0

THUMBNAIL_TOML = f"""
[[models]]
slug = "thumbnail"
ref = "{FIXTURE_MODELS}:Thumbnail"
security_screen = true
security_fields = ["image"]         # a URL or data URI is skipped; a file: or javascript: one is not
"""
LENIENT_TOML = f"""
max_body_bytes = {MAX_BODY_BYTES}
{THUMBNAIL_TOML}
[media]
allowed_networks = ["127.0.0.1/32"]
total_timeout_s = {MEDIA_TOTAL_TIMEOUT_S}
"""


# -- a hostile image origin ----------------------------------------------------------------------------------


def bomb_png(side: int = 30_000) -> bytes:
    """A real decompression bomb: a side x side 1-bit PNG of zeros, ~110 KB for 900 M pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


class _Hostile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    images: ClassVar[dict[str, bytes]] = {}
    hits: ClassVar[Counter[str]] = Counter()

    def do_GET(self) -> None:
        self.hits[self.path.split("?", 1)[0]] += 1
        if self.path.startswith("/redirect/"):  # /redirect/<quoted target URL>
            self.send_response(302)
            self.send_header("Location", unquote(self.path.removeprefix("/redirect/")))
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path.startswith("/hops/"):  # /hops/N redirects N times, then to the photo
            left = int(self.path.removeprefix("/hops/"))
            self.send_response(302)
            self.send_header("Location", f"/hops/{left - 1}" if left > 1 else "/photo.png")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/slow.png":
            self._trickle()
        elif self.path in self.images:
            body = self.images[self.path]
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def _trickle(self) -> None:
        """Headers at once, then one byte every 0.2 s: each read is quick, the whole never ends in time."""
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.close_connection = True
        deadline = time.monotonic() + SLOW_ANSWER_LIMIT_S
        with contextlib.suppress(OSError):
            while time.monotonic() < deadline:
                self.wfile.write(b"\x89")
                self.wfile.flush()
                time.sleep(0.2)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Hostile:
    port: int

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture(scope="module")
def hostile() -> Iterator[Hostile]:
    _Hostile.images = {"/photo.png": png_bytes(), "/bomb.png": bomb_png()}
    _Hostile.hits.clear()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield Hostile(httpd.server_address[1])
    httpd.shutdown()
    httpd.server_close()


# -- servers, and what every test checks after its bad requests ----------------------------------------------


@dataclass
class Target:
    server: Server
    key: str

    def client(self) -> httpx.Client:
        return self.server.client(self.key)

    def rss_mb(self) -> float:
        """The deployment's processes (API, workers and their model subprocesses) together."""
        tops = [psutil.Process(p.pid) for p in self.server.processes()]
        family = [proc for top in tops for proc in (top, *top.children(recursive=True))]
        total = 0
        for proc in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += proc.memory_info().rss
        return total / 2**20


def _start(
    tmp_path_factory: pytest.TempPathFactory, name: str, config: str, backend: str
) -> Iterator[Target]:
    server = Server(workdir=tmp_path_factory.mktemp(name), config=config, backend=backend).start()
    yield Target(server, server.key(name))
    server.destroy()


@pytest.fixture(scope="module")
def lenient(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Target]:
    """A server that may fetch from 127.0.0.1 (the hostile origin) and nowhere else private."""
    yield from _start(tmp_path_factory, "lenient", LENIENT_TOML, backend)


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Target]:
    """The default media settings: no private or loopback address at all."""
    yield from _start(tmp_path_factory, "strict", THUMBNAIL_TOML, backend)


@contextlib.contextmanager
def survives(target: Target) -> Iterator[None]:
    """The server answers what follows, and its memory grew by less than RSS_GROWTH_LIMIT_MB."""
    before = target.rss_mb()
    yield
    with target.client() as client:
        assert client.get("/health").status_code == 200
        response = client.post(
            "/v1/predictions", json={"model": "echo", "input": {"text": "still here"}, "await": True}
        )
    assert response.status_code == 201, response.text
    assert response.json()["output"] == "still here"
    grown = target.rss_mb() - before
    assert grown < RSS_GROWTH_LIMIT_MB, f"RSS grew by {grown:.0f} MB"


@contextlib.contextmanager
def quickly(limit: float = QUICK_S) -> Iterator[None]:
    started = time.monotonic()
    yield
    elapsed = time.monotonic() - started
    assert elapsed < limit, f"took {elapsed:.2f} s"


def native_post(client: httpx.Client, body: bytes, path: str = "/v1/predictions", **headers: str) -> Any:
    with quickly():
        return client.post(path, content=body, headers={"content-type": "application/json", **headers})


# -- raw HTTP, for bodies httpx would not send the way an attacker does --------------------------------------


def raw_request(port: int, head: bytes, chunks: Iterable[bytes]) -> tuple[int, dict[str, str], bytes]:
    """Send ``head`` then ``chunks`` on one connection while reading the answer: the server may answer (and
    stop reading) long before the body ends. Bounded by the socket timeout and the chunks given."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)

    def write() -> None:
        with contextlib.suppress(OSError):
            sock.sendall(head)
            for chunk in chunks:
                sock.sendall(chunk)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            received = sock.recv(65536)
            if not received:
                break
            data += received
        header_block, _, body = data.partition(b"\r\n\r\n")
        lines = header_block.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            received = sock.recv(65536)
            if not received:
                break
            body += received
        return status, headers, body
    finally:
        sock.close()
        writer.join(timeout=10)


def as_response(status: int, headers: dict[str, str], body: bytes) -> httpx.Response:
    return httpx.Response(status, headers=headers, content=body)


# -- bodies over max_body_bytes ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/predictions", "/v1/run"])
def test_a_body_over_the_limit_with_content_length_is_refused_quickly(lenient: Target, path: str) -> None:
    body = b'{"model": "echo", "input": {"text": "' + b"x" * (MAX_BODY_BYTES + 1024) + b'"}}'
    with survives(lenient), quickly():
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: {lenient.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
        response = as_response(*raw_request(lenient.server.port, head, chunks))
    check = assert_fashn_error if path == "/v1/run" else assert_error
    check(response, ErrorId.INFRASTRUCTURE_ERROR, f"{MAX_BODY_BYTES} byte limit")


@pytest.mark.parametrize("path", ["/v1/predictions", "/v1/run"])
def test_a_chunked_body_without_content_length_is_cut_off_at_the_limit(lenient: Target, path: str) -> None:
    """An endless-looking chunked upload: answered once the limit is passed, long before it would end."""
    piece = b"x" * 65536
    sent_limit = 4 * MAX_BODY_BYTES  # the writer stops here at the latest

    def chunks() -> Iterator[bytes]:
        start = b'{"model": "echo", "input": {"text": "'
        yield f"{len(start):x}\r\n".encode() + start + b"\r\n"
        for _ in range(sent_limit // len(piece)):
            yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        yield b"0\r\n\r\n"

    with survives(lenient), quickly():
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: {lenient.key}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
        response = as_response(*raw_request(lenient.server.port, head, chunks()))
    check = assert_fashn_error if path == "/v1/run" else assert_error
    check(response, ErrorId.INFRASTRUCTURE_ERROR, f"{MAX_BODY_BYTES} byte limit")


# -- nesting, size, encoding ---------------------------------------------------------------------------------


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 990, 100_000])
def test_deeply_nested_json_is_refused_on_both_surfaces(lenient: Target, depth: int) -> None:
    """orjson parses up to 1024 levels; beyond 254 the server once answered 500 (a RecursionError in the
    validation message, an encode error in the idempotency fingerprint). Now: a 400 naming the cause."""
    native_body = b'{"model": "echo", "input": {"text": ' + nested(depth - 2) + b"}}"
    fashn_body = b'{"model_name": "echo", "inputs": {"text": ' + nested(depth - 2) + b"}}"
    with survives(lenient), lenient.client() as client:
        native = native_post(client, native_body)
        fashn = native_post(client, fashn_body, "/v1/run")
    if depth <= MAX_JSON_DEPTH:  # parsed, then refused by the model's schema
        assert_error(native, ErrorId.INVALID_INPUT, "input.text", "is not of type 'string'")
        assert_fashn_error(fashn, ErrorId.INVALID_INPUT, "input.text")
    elif depth < 1024:
        assert_error(native, ErrorId.INVALID_INPUT, "nested too deeply", str(MAX_JSON_DEPTH))
        assert_fashn_error(fashn, ErrorId.INVALID_INPUT, "nested too deeply")
    else:
        assert_error(native, ErrorId.INVALID_INPUT, "not valid JSON", "depth limit exceeded")
        assert_fashn_error(fashn, ErrorId.INVALID_INPUT, "not valid JSON")


def test_a_deep_body_replaying_an_idempotency_key_is_refused_not_a_500(lenient: Target) -> None:
    with survives(lenient), lenient.client() as client:
        key = {"Idempotency-Key": f"deep-{time.monotonic_ns()}"}
        first = client.post("/v1/predictions", json={"model": "echo", "input": {"text": "a"}}, headers=key)
        assert first.status_code == 201, first.text
        body = b'{"model": "echo", "input": {"text": ' + nested(300) + b"}}"
        assert_error(native_post(client, body, **key), ErrorId.INVALID_INPUT, "nested too deeply")


def test_huge_strings_are_refused_with_a_short_message(lenient: Target) -> None:
    """Messages quote what was sent; a 2 MB string comes back clipped, not twice over in the body."""
    huge = "x" * 2_000_000
    with survives(lenient), lenient.client() as client:
        cases = [
            (b'{"model": "' + huge.encode() + b'", "input": {}}', "/v1/predictions", ErrorId.MODEL_NOT_FOUND),
            (b'{"model_name": "' + huge.encode() + b'", "inputs": {}}', "/v1/run", ErrorId.MODEL_NOT_FOUND),
            (
                b'{"model": "echo", "input": {"text": "a"}, "use_case": "' + huge.encode() + b'"}',
                "/v1/predictions",
                ErrorId.USE_CASE_NOT_SUPPORTED,
            ),
            (
                b'{"model": "echo", "input": {"text": "' + huge.encode() + b'"}}',
                "/v1/predictions",
                ErrorId.INVALID_INPUT,
            ),
            (b'{"model": "echo", "input": {"' + huge.encode() + b'": 1}}', "/v1/run", ErrorId.INVALID_INPUT),
        ]
        for body, path, error_id in cases:
            response = native_post(client, body, path)
            check = assert_fashn_error if path == "/v1/run" else assert_error
            check(response, error_id)
            assert len(response.json()["message"]) <= MAX_MESSAGE_CHARS
            assert len(response.content) < 4 * MAX_MESSAGE_CHARS, len(response.content)
        too_long = native_post(client, b'{"model": "echo", "input": {"text": "' + huge.encode() + b'"}}')
        assert too_long.json()["message"].endswith("is too long")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"model": "echo", "input": {"text": "\xff\xfe\xfd"}}', "application/json"),
        (b'{"model": "echo", "input": {"text": "\xed\xa0\x80"}}', "application/json"),  # a lone surrogate
        ('{"model": "echo", "input": {"text": "é"}}'.encode("utf-16"), "application/json"),
        ('{"model": "echo", "input": {"text": "é"}}'.encode("latin-1"), "application/json; charset=latin-1"),
        (b"\x00" * 1000, "application/json"),
    ],
)
def test_non_utf8_bodies_are_invalid_input(lenient: Target, body: bytes, content_type: str) -> None:
    fashn_body = body.replace(b'"model"', b'"model_name"').replace(b'"input"', b'"inputs"')
    with survives(lenient), lenient.client() as client:
        native = native_post(client, body, **{"content-type": content_type})
        fashn = native_post(client, fashn_body, "/v1/run", **{"content-type": content_type})
    assert_error(native, ErrorId.INVALID_INPUT, "not valid JSON")
    assert_fashn_error(fashn, ErrorId.INVALID_INPUT, "not valid JSON")


# -- a wrong type for every top-level field ------------------------------------------------------------------

WRONG_VALUES: list[Any] = [True, 0, -1, 1.5, 10**30, "text", [], ["a"], {}, {"a": 1}]
NATIVE_FIELDS = {  # field -> (a valid value, what its type is)
    "model": ("echo", str),
    "input": ({"text": "a"}, dict),
    "await": (False, bool),
    "stream": (False, bool),
    "webhook": ({"url": "http://127.0.0.1:9/hook"}, dict),
    "use_case": (None, str),
}
FASHN_FIELDS = {"model_name": ("echo", str), "inputs": ({"text": "a"}, dict), "use_case": (None, str)}


def _wrong(kind: type) -> list[Any]:
    def fits(value: Any) -> bool:
        return isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))

    return [value for value in WRONG_VALUES if not fits(value)]


@pytest.mark.parametrize("field", sorted(NATIVE_FIELDS))
def test_a_wrong_type_for_each_native_field_is_refused(lenient: Target, field: str) -> None:
    valid = {name: value for name, (value, _) in NATIVE_FIELDS.items() if value is not None}
    with survives(lenient), lenient.client() as client:
        for wrong in _wrong(NATIVE_FIELDS[field][1]):
            with quickly():
                response = client.post("/v1/predictions", json={**valid, field: wrong})
            if field == "webhook" and isinstance(wrong, dict):  # an object, but not {url, events}
                assert_error(response, ErrorId.INVALID_INPUT, "webhook")
            elif field == "input" and isinstance(wrong, dict):
                assert_error(response, ErrorId.INVALID_INPUT, "input")
            else:
                assert_error(response, ErrorId.INVALID_INPUT, f"'{field}'")
        for required in ("model", "input"):
            if field == required:
                response = client.post("/v1/predictions", json={**valid, field: None})
                assert_error(response, ErrorId.MISSING_REQUIRED_FIELD, f"'{field}'")


@pytest.mark.parametrize("field", sorted(FASHN_FIELDS))
def test_a_wrong_type_for_each_fashn_field_is_refused(lenient: Target, field: str) -> None:
    valid = {name: value for name, (value, _) in FASHN_FIELDS.items() if value is not None}
    with survives(lenient), lenient.client() as client:
        for wrong in _wrong(FASHN_FIELDS[field][1]):
            with quickly():
                response = client.post("/v1/run", json={**valid, field: wrong})
            assert_fashn_error(response, ErrorId.INVALID_INPUT, f"'{field}'")
        if field in ("model_name", "inputs"):
            response = client.post("/v1/run", json={**valid, field: None})
            assert_fashn_error(response, ErrorId.MISSING_REQUIRED_FIELD, f"'{field}'")
        for url in ("not a url", "ftp://127.0.0.1/x", "http://user:pw@127.0.0.1/x", "http://" + "h" * 3000):
            response = client.post("/v1/run", params={"webhook_url": url}, json=valid)
            assert_fashn_error(response, ErrorId.INVALID_INPUT, "webhook_url")


def test_bodies_that_are_not_objects_are_refused(lenient: Target) -> None:
    with survives(lenient), lenient.client() as client:
        for body in (b"[]", b'"text"', b"1", b"null", b"true", b"", b"   ", b"{", b'{"model": }'):
            assert_error(native_post(client, body), ErrorId.INVALID_INPUT)
            assert_fashn_error(native_post(client, body, "/v1/run"), ErrorId.INVALID_INPUT)


def test_numbers_too_large_for_the_database_are_invalid_parameters(lenient: Target) -> None:
    """A page or an id beyond a 64-bit integer was a 500 (OverflowError in the SQLite driver)."""
    with survives(lenient), lenient.client() as client:
        for big in (str(MAX_QUERY_INT + 1), "9223372036854775808", "1" * 5000):
            with quickly():
                page = client.get("/v1/predictions", params={"page": big})
                before = client.get("/v1/account/ledger", params={"before": big})
            assert_error(page, ErrorId.INVALID_PARAMETER, "'page'")
            assert_error(before, ErrorId.INVALID_PARAMETER, "'before'")
        last = client.get("/v1/predictions", params={"page": str(MAX_QUERY_INT), "per_page": "50"})
        assert last.status_code == 200, last.text
        assert last.json()["data"] == []


# -- image inputs: each a failed prediction named ImageLoadError ---------------------------------------------


def fails_to_load(target: Target, image: str, *fragments: str, limit: float = QUICK_S) -> str:
    """Submit on the FASHN surface, follow GET /v1/status/{id}: failed, ImageLoadError, within ``limit``."""
    with target.client() as client:
        started = time.monotonic()
        submitted = client.post("/v1/run", json={"model_name": "thumbnail", "inputs": {"image": image}})
        assert submitted.status_code == 200, submitted.text
        prediction_id = submitted.json()["id"]
        while time.monotonic() - started < limit + 5:
            status = client.get(f"/v1/status/{prediction_id}")
            assert status.status_code == 200, status.text
            body = status.json()
            if body["status"] not in {"starting", "in_queue", "processing"}:
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - started
    assert body["status"] == "failed", body
    assert body["output"] is None
    assert body["error"]["name"] == "ImageLoadError", body
    assert body["error"]["message"].startswith("input.image:"), body
    for fragment in fragments:
        assert fragment in body["error"]["message"], body["error"]["message"]
    assert status.headers["x-fashn-credits-used"] == "0"
    assert elapsed < limit, f"took {elapsed:.2f} s"
    return str(body["error"]["message"])


def test_a_good_image_loads(lenient: Target, hostile: Hostile) -> None:
    """The control case: the same origin, path and model succeed, so each refusal below is the guard's."""
    with lenient.client() as client:
        response = client.post(
            "/v1/predictions",
            json={"model": "thumbnail", "input": {"image": hostile.url("/photo.png")}, "await": True},
        )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "succeeded", response.json()


@pytest.mark.parametrize(
    "redirect_to",
    [
        "http://127.0.0.2:{port}/photo.png",  # loopback, outside the allowed 127.0.0.1/32
        "http://[::1]:{port}/photo.png",
        "http://[::ffff:127.0.0.2]:{port}/photo.png",  # IPv4-mapped IPv6
        "http://2130706434:{port}/photo.png",  # 127.0.0.2 written as one decimal number
    ],
)
def test_a_redirect_to_a_private_address_is_refused(
    lenient: Target, hostile: Hostile, redirect_to: str
) -> None:
    target = redirect_to.format(port=hostile.port)
    with survives(lenient):
        fails_to_load(lenient, hostile.url(f"/redirect/{quote(target, safe='')}"), "refusing to fetch")


def test_more_than_three_redirects_are_refused(lenient: Target, hostile: Hostile) -> None:
    with survives(lenient):
        fails_to_load(lenient, hostile.url("/hops/4"), "more than 3 redirects")


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("localhost", "refusing to fetch from localhost (it resolves to"),
        ("127.0.0.1", "refusing to fetch from 127.0.0.1 (loopback address)"),
        ("[::ffff:127.0.0.1]", "refusing to fetch from ::ffff:"),  # IPv4-mapped IPv6
        ("2130706433", "refusing to fetch from 2130706433 (it resolves to 127.0.0.1, a loopback address)"),
        ("127.1", "refusing to fetch from 127.1 (it resolves to 127.0.0.1, a loopback address)"),
    ],
)
def test_loopback_names_and_literals_are_refused_by_default(
    strict: Target, hostile: Hostile, host: str, why: str
) -> None:
    """Under the default media settings no connection is even opened: the origin sees no request."""
    before = _Hostile.hits["/photo.png"]
    with survives(strict):
        message = fails_to_load(strict, hostile.url("/photo.png", host=host), why)
    assert "loopback" in message
    assert _Hostile.hits["/photo.png"] == before


def test_a_slow_loris_image_server_is_cut_off_at_the_total_timeout(lenient: Target, hostile: Hostile) -> None:
    with survives(lenient):
        fails_to_load(
            lenient,
            hostile.url("/slow.png"),
            f"timed out after {MEDIA_TOTAL_TIMEOUT_S:g} s",
            limit=MEDIA_TOTAL_TIMEOUT_S + QUICK_S,
        )


def test_a_decompression_bomb_is_refused_before_it_is_decompressed(lenient: Target, hostile: Hostile) -> None:
    bomb = bomb_png()
    assert len(bomb) < 200_000  # ~110 KB that would decode to 900 M pixels
    with survives(lenient):
        fails_to_load(lenient, hostile.url("/bomb.png"), "900000000 pixels, over the 40000000 limit")
        data_uri = f"data:image/png;base64,{base64.b64encode(bomb).decode()}"
        fails_to_load(lenient, data_uri, "900000000 pixels")


@pytest.mark.parametrize(
    ("image", "why"),
    [
        ("data:image/png;base64,!!!not*base64###", "invalid base64 payload"),
        ("data:image/png;base64,QUJD=QUJD", "invalid base64 payload"),
        (
            "data:image/png;base64," + base64.b64encode(b"\x00not an image" * 100).decode(),
            "cannot be decoded",
        ),
        ("data:image/png;base64," + base64.b64encode(png_bytes()[:60]).decode(), "cannot be decoded"),
        ("data:image/png;base64,", "payload is empty"),
        ("data:text/html;base64,PGh0bWw+", "is not an image"),
        ("data:image/png,rawbytes", "not base64"),
        ("data:image/png;base64" + "A" * 600, "missing the data:image/<format>;base64, prefix"),
        ("just some text", "neither an http(s) URL nor a data URI"),
        ("ftp://127.0.0.1/photo.png", "only http(s) URLs and data URIs are accepted, not ftp"),
        ("gopher://127.0.0.1:70/x", "only http(s) URLs and data URIs are accepted, not gopher"),
    ],
)
def test_base64_garbage_and_odd_schemes_fail_as_image_load_errors(
    lenient: Target, image: str, why: str
) -> None:
    with survives(lenient):
        fails_to_load(lenient, image, why)


def test_image_strings_that_look_like_attacks_are_refused_before_queueing(lenient: Target) -> None:
    """These never reach a worker: the security screen refuses them first (an API-level error)."""
    key = lenient.server.key()  # a fresh account: violations count towards its suspension
    with survives(lenient), lenient.server.client(key) as client:
        for image in ("file:///etc/passwd", "javascript:alert(1)"):
            with quickly():
                fashn = client.post("/v1/run", json={"model_name": "thumbnail", "inputs": {"image": image}})
            assert_fashn_error(fashn, ErrorId.SECURITY_VIOLATION, "input.image")
