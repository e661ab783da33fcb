"""The HTTP connection's own limits (``[http]`` settings), attacked for real over raw sockets: oversized
request lines and headers, half-sent heads, trickled bodies, idle connections, and more connections from one
address than it may open; while clients that behave, on slow links and long answers too, are served.

The limits live in the HTTP protocol, below every route and before any backend is involved: the module runs
on the embedded backend only. Its server has small limits so that each timeout passes in about a second.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest

from predictd.errors import ErrorId

from ..conftest import Server
from .test_fashn_api import assert_fashn_error
from .test_native_api import assert_error

pytestmark = pytest.mark.backends("embedded")

MAX_REQUEST_LINE = 1024
MAX_HEADER = 1024
MAX_HEADERS = 20
MAX_HEAD = 4096
TIMEOUT_S = 1.0  # the header timeout, the body's rate window and the keep-alive alike
MIN_BODY_RATE = 1000
MAX_BODY = 1024 * 1024
PER_CLIENT = 8
MAX_CONNECTIONS = 40
PROXY = "127.0.0.9"  # a reverse proxy the operator trusts: its connections are many clients'
# A deadline is checked every quarter of the shortest timeout: it is met within that much more, and more
# again on a loaded machine.
LATE_S = 2.0

LIMITS_TOML = f"""
max_body_bytes = {MAX_BODY}

[http]
max_request_line_bytes = {MAX_REQUEST_LINE}
max_header_bytes = {MAX_HEADER}
max_headers = {MAX_HEADERS}
max_head_bytes = {MAX_HEAD}
header_timeout_s = {TIMEOUT_S}
min_body_rate = {MIN_BODY_RATE}
body_rate_window_s = {TIMEOUT_S}
keep_alive_s = {TIMEOUT_S}
max_connections = {MAX_CONNECTIONS}
max_connections_per_client = {PER_CLIENT}

[legal]
trusted_proxies = ["{PROXY}/32"]
"""


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Server]:
    srv = Server(workdir=tmp_path_factory.mktemp("limited"), config=LIMITS_TOML, backend=backend).start()
    yield srv
    srv.destroy()


@pytest.fixture(scope="module")
def key(limited: Server) -> str:
    return limited.key()


# -- raw HTTP ------------------------------------------------------------------------------------------------


def connect(server: Server, source: str = "127.0.0.1", timeout: float = 10.0) -> socket.socket:
    """A connection to the server from ``source`` (any 127/8 address is this host's loopback)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", server.port))
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset after an answer included);
    ``socket.timeout`` if it keeps the connection open past the socket's timeout."""
    data = b""
    while True:
        try:
            received = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not received:
            return data
        data += received


def as_response(raw: bytes) -> httpx.Response:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]
    return httpx.Response(int(lines[0].split(" ")[1]), headers=headers, content=body)


def send_while_reading(sock: socket.socket, head: bytes, filler: bytes, total: int) -> tuple[bytes, int]:
    """Send ``head`` then up to ``total`` bytes of ``filler`` from a thread while reading the answer, as an
    attacker does: the server may answer and close long before. Returns the answer and the bytes sent."""
    sent = 0

    def write() -> None:
        nonlocal sent
        with contextlib.suppress(OSError):
            sock.sendall(head)
            while sent < total:
                sock.sendall(filler)
                sent += len(filler)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        return read_until_closed(sock), sent
    finally:
        sock.close()
        writer.join(timeout=10)


def rss(server: Server) -> int:
    assert server.proc is not None
    return int(psutil.Process(server.proc.pid).memory_info().rss)


def assert_health(server: Server, source: str) -> None:
    with connect(server, source) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = as_response(read_until_closed(sock))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ok"


# -- the head: sizes and count -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/predictions", "/v1/run"])
def test_a_header_over_the_limit_is_refused_before_it_is_read(limited: Server, path: str) -> None:
    """A 64 MiB header once answered 200 after the process read all of it (300 MB took it from 88 to
    696 MB): now 431 once the header passes its limit, and the rest is never read."""
    attack = 64 * 1024 * 1024
    before = rss(limited)
    answer, sent = send_while_reading(
        connect(limited),
        f"POST {path} HTTP/1.1\r\nHost: x\r\nX-Padding: ".encode(),
        b"a" * (1024 * 1024),
        attack,
    )
    response = as_response(answer)
    check = assert_fashn_error if path == "/v1/run" else assert_error
    check(response, ErrorId.REQUEST_HEADERS_TOO_LARGE, "'x-padding'", f"{MAX_HEADER} byte limit")
    assert response.headers["connection"] == "close"
    assert sent < attack // 2, "the server read the header on after refusing it"
    assert rss(limited) - before < 16 * 1024 * 1024
    assert_health(limited, "127.0.0.1")


def test_more_headers_than_the_limit_are_refused(limited: Server) -> None:
    headers = "".join(f"X-Header-{i}: {i}\r\n" for i in range(MAX_HEADERS + 1))
    with connect(limited) as sock:
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
        response = as_response(read_until_closed(sock))
    assert_error(response, ErrorId.REQUEST_HEADERS_TOO_LARGE, f"limit of {MAX_HEADERS} headers")


def test_as_many_headers_as_the_limit_are_served(limited: Server) -> None:
    headers = "".join(f"X-Header-{i}: {i}\r\n" for i in range(MAX_HEADERS - 2))  # with Host, Connection
    with connect(limited) as sock:
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n".encode())
        assert as_response(read_until_closed(sock)).status_code == 200


def test_a_body_sent_with_its_head_is_not_measured_as_headers(limited: Server, key: str) -> None:
    """Head and body in one write: the body's many lines, one longer than a header may be, are no headers."""
    text = "z" * (2 * MAX_HEADER)
    body = json.dumps({"model": "echo", "input": {"text": text}, "await": True}, indent=1).encode()
    body = body.replace(b"{", b"{" + b"\n" * (2 * MAX_HEADERS))
    head = (
        f"POST /v1/predictions HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with connect(limited) as sock:
        sock.sendall(head + body)
        response = as_response(read_until_closed(sock))
    assert response.status_code == 201, response.text
    assert response.json()["output"] == text


def test_headers_over_the_total_are_refused(limited: Server) -> None:
    """Each header within its own limit, all of them together over the head's."""
    value = "v" * (MAX_HEADER - 40)
    headers = "".join(f"X-Header-{i}: {value}\r\n" for i in range(MAX_HEAD // MAX_HEADER + 2))
    with connect(limited) as sock:
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
        response = as_response(read_until_closed(sock))
    assert_error(response, ErrorId.REQUEST_HEADERS_TOO_LARGE, f"{MAX_HEAD} byte limit")


@pytest.mark.parametrize("path", ["/v1/predictions/", "/v1/status/"])
def test_a_request_line_over_the_limit_is_414(limited: Server, path: str) -> None:
    with connect(limited) as sock:
        sock.sendall(f"GET {path}{'p' * MAX_REQUEST_LINE} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        response = as_response(read_until_closed(sock))
    check = assert_fashn_error if path == "/v1/status/" else assert_error
    check(response, ErrorId.URI_TOO_LONG, f"{MAX_REQUEST_LINE} byte limit")


# -- slow heads, bodies and idle connections -----------------------------------------------------------------


def test_a_half_sent_head_is_answered_408_and_closed(limited: Server) -> None:
    with connect(limited) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        for _ in range(3):  # a byte now and then does not keep it open
            time.sleep(TIMEOUT_S / 4)
            with contextlib.suppress(OSError):
                sock.sendall(b"a")
        response = as_response(read_until_closed(sock))
        waited = time.monotonic() - started
    assert_error(response, ErrorId.REQUEST_TIMEOUT, "headers did not arrive within 1 s")
    assert TIMEOUT_S * 0.7 <= waited < TIMEOUT_S + LATE_S


def test_a_trickled_body_is_cut_with_408(limited: Server, key: str) -> None:
    """Cut while the app waits for the body: the app is told the client left, which is no error of its own."""
    errors_before = limited.log().count("unhandled error")
    body = json.dumps({"model": "echo", "input": {"text": "x" * 5000}}).encode()
    with connect(limited) as sock:
        sock.sendall(
            f"POST /v1/predictions HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        started = time.monotonic()
        answer = b""
        for offset in range(0, len(body), 20):  # 20 bytes every 0.1 s: 200 bytes/s
            try:
                sock.sendall(body[offset : offset + 20])
            except OSError:
                break
            sock.settimeout(0.1)
            with contextlib.suppress(TimeoutError):
                answer += sock.recv(65536)
                if answer:
                    break
        sock.settimeout(10)
        response = as_response(answer + read_until_closed(sock))
        waited = time.monotonic() - started
    assert_error(response, ErrorId.REQUEST_TIMEOUT, f"slower than {MIN_BODY_RATE} bytes/s")
    assert waited < 2 * TIMEOUT_S + LATE_S
    time.sleep(0.5)  # the app's side of the cut is logged just after
    assert limited.log().count("unhandled error") == errors_before, limited.log()[-3000:]


def test_a_body_on_a_slow_link_above_the_rate_is_served(limited: Server, key: str) -> None:
    """No deadline for a whole body: one that keeps coming above the rate takes as long as it takes."""
    body = json.dumps({"model": "echo", "input": {"text": "y" * 9000}, "await": True}).encode()
    with connect(limited) as sock:
        sock.sendall(
            f"POST /v1/predictions HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        started = time.monotonic()
        for offset in range(0, len(body), 500):  # 500 bytes every 0.2 s: 2500 bytes/s, over 3.5 s
            sock.sendall(body[offset : offset + 500])
            time.sleep(0.2)
        response = as_response(read_until_closed(sock))
    assert time.monotonic() - started > 3 * TIMEOUT_S
    assert response.status_code == 201, response.text
    assert response.json()["output"] == "y" * 9000


def test_an_endless_body_is_not_read_on_long_after_its_answer(limited: Server, key: str) -> None:
    """A chunked body that never ends, sent fast: refused at max_body_bytes as before, and the connection
    closed at twice that instead of being read for as long as the sender goes on."""
    attack = 32 * MAX_BODY
    piece = b"x" * 65536
    answer, sent = send_while_reading(
        connect(limited),
        f"POST /v1/predictions HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\nContent-Type: application/json\r\n"
        f"Transfer-Encoding: chunked\r\n\r\n".encode(),
        f"{len(piece):x}\r\n".encode() + piece + b"\r\n",
        attack,
    )
    assert_error(as_response(answer), ErrorId.INFRASTRUCTURE_ERROR, f"{MAX_BODY} byte limit")
    assert sent < attack // 2, "the server read the body on long after answering it"


def test_a_connection_that_sends_nothing_is_closed(limited: Server) -> None:
    with connect(limited) as sock:
        started = time.monotonic()
        assert read_until_closed(sock) == b""
        assert time.monotonic() - started < TIMEOUT_S + LATE_S


def test_an_idle_keep_alive_connection_is_closed(limited: Server) -> None:
    with connect(limited) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while b'"status"' not in answer:
            answer += sock.recv(65536)
        started = time.monotonic()
        assert read_until_closed(sock) == b""
        assert time.monotonic() - started < TIMEOUT_S + LATE_S


def test_long_answers_are_not_idle_connections(limited: Server, key: str) -> None:
    """An await and a stream that outlast every timeout of the connection are not cut."""
    with limited.client(key) as client:
        awaited = client.post(
            "/v1/predictions", json={"model": "sleep", "input": {"ms": 2500}, "await": True}
        )
        assert awaited.json()["status"] == "succeeded", awaited.text
        prediction = client.post("/v1/predictions", json={"model": "sleep", "input": {"ms": 2500}}).json()
        with client.stream("GET", f"/v1/predictions/{prediction['id']}/stream") as stream:
            events = [line for line in stream.iter_lines() if line.startswith("event: ")]
    assert events[-1] == "event: done"


# -- connection caps -----------------------------------------------------------------------------------------


def test_connections_over_the_per_client_cap_are_refused_while_others_are_served(limited: Server) -> None:
    """A flood of half-open requests from one address (here 127.0.0.3) cannot take /health from another."""
    flood = [connect(limited, "127.0.0.3") for _ in range(PER_CLIENT)]
    try:
        for sock in flood:
            sock.sendall(b"POST /v1/predictions HTTP/1.1\r\nHost: x\r\n")
        refused: list[httpx.Response] = []
        started = time.monotonic()
        for _ in range(4):
            with connect(limited, "127.0.0.3") as extra:
                refused.append(as_response(read_until_closed(extra)))
        assert time.monotonic() - started < 2.0
        assert_health(limited, "127.0.0.4")
    finally:
        for sock in flood:
            sock.close()
    for response in refused:
        assert_error(response, ErrorId.TOO_MANY_CONNECTIONS, f"{PER_CLIENT} connections open")
        assert response.headers["retry-after"] == "1"


def test_a_trusted_proxy_may_open_more_than_one_clients_share(limited: Server) -> None:
    held = [connect(limited, PROXY) for _ in range(PER_CLIENT + 4)]
    try:
        for sock in held:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        for sock in held:
            answer = b""
            while b'"status"' not in answer:
                received = sock.recv(65536)
                assert received, "the server closed a trusted proxy's connection"
                answer += received
            assert as_response(answer).status_code == 200
    finally:
        for sock in held:
            sock.close()


def test_connections_over_the_total_cap_are_refused(limited: Server) -> None:
    sources = [f"127.0.1.{n}" for n in range(1, MAX_CONNECTIONS // PER_CLIENT + 1)]
    held = [connect(limited, source) for source in sources for _ in range(PER_CLIENT)]
    try:
        with connect(limited, "127.0.2.1") as extra:
            response = as_response(read_until_closed(extra))
    finally:
        for sock in held:
            sock.close()
    assert_error(response, ErrorId.TOO_MANY_CONNECTIONS, f"{MAX_CONNECTIONS} connections open")
    deadline = time.monotonic() + 5
    while True:  # the held ones are released as the server sees them close
        try:
            assert_health(limited, "127.0.2.1")
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
