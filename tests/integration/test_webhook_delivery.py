"""Webhook delivery against hostile and slow receivers on 127.0.0.1: an answer of hundreds of megabytes is
never read into the server's memory, a receiver trickling its answer holds an attempt at most
``[webhooks] attempt_timeout_s``, what a failed attempt's receiver said is quoted in its error, and a slow
receiver with a backlog takes only its own slots while another receiver's webhooks go out at once."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import psutil
import pytest

ATTEMPT_TIMEOUT_S = 3.0
CONFIG = f"""
[webhooks]
attempt_timeout_s = {ATTEMPT_TIMEOUT_S}
schedule_s = [60]
allowed_networks = ["127.0.0.1/32"]
"""
HUGE_BYTES = 400 * 1024 * 1024  # what a receiver answers: read whole, it would grow the server by as much
CHUNK = b"\0" * (1024 * 1024)
RSS_GROWTH_LIMIT_MB = 64
TRICKLE_PAUSE_S = 0.2
ERROR_PAGE = b"upstream exploded: the database is on fire\n"
SLOW_ANSWER_S = 6.0


class ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stopping = threading.Event()
        self.arrivals: list[tuple[str, float]] = []
        self.lock = threading.Lock()
        self.answering = 0  # requests being answered right now
        self.most_answering = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # predictd hanging up on an answer it stopped reading is what these tests want


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ReceiverServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = orjson.loads(self.rfile.read(int(self.headers["content-length"])))
        with self.server.lock:
            self.server.arrivals.append((str(body["id"]), time.monotonic()))
            self.server.answering += 1
            self.server.most_answering = max(self.server.most_answering, self.server.answering)
        try:
            ROUTES[self.path](self)
        finally:
            with self.server.lock:
                self.server.answering -= 1

    def head(self, status: int, length: int) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True

    def flood(self, status: int) -> None:
        """An answer of HUGE_BYTES, as fast as the client reads it (until it hangs up)."""
        self.head(status, HUGE_BYTES)
        sent = 0
        with contextlib.suppress(OSError):
            self.wfile.write(ERROR_PAGE)
            sent += len(ERROR_PAGE)
            while sent < HUGE_BYTES and not self.server.stopping.is_set():
                piece = CHUNK[: HUGE_BYTES - sent]
                self.wfile.write(piece)
                sent += len(piece)

    def trickle(self, data: bytes) -> None:
        """``data`` one byte at a time, a pause between each, until the client hangs up."""
        with contextlib.suppress(OSError):
            for byte in data:
                if self.server.stopping.wait(TRICKLE_PAUSE_S):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
        self.close_connection = True


ROUTES: dict[str, Callable[[_Handler], None]] = {
    "/ok": lambda h: h.head(204, 0),
    "/slow": lambda h: (h.server.stopping.wait(SLOW_ANSWER_S), h.head(204, 0)),
    "/huge": lambda h: h.flood(200),
    "/huge-error": lambda h: h.flood(500),
    "/trickled-body": lambda h: (h.head(200, 10_000), h.trickle(b"." * 10_000)),
    "/trickled-head": lambda h: h.trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
}


@contextlib.contextmanager
def serving() -> Iterator[ReceiverServer]:
    server = ReceiverServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def receiver() -> Iterator[ReceiverServer]:
    with serving() as server:
        yield server


@pytest.fixture
def other_receiver() -> Iterator[ReceiverServer]:
    """A second receiver: another port, so another receiver to the dispatcher."""
    with serving() as server:
        yield server


class PeakMemory:
    """Samples the resident memory of processes every few milliseconds, keeping each one's peak."""

    def __init__(self, pids: list[int]) -> None:
        self.processes = [psutil.Process(pid) for pid in pids]
        self.baseline = {p.pid: p.memory_info().rss for p in self.processes}
        self.peak = dict(self.baseline)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            for process in self.processes:
                with contextlib.suppress(psutil.Error):
                    rss = process.memory_info().rss
                    self.peak[process.pid] = max(self.peak[process.pid], rss)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def growth_mb(self) -> dict[int, float]:
        return {pid: (self.peak[pid] - self.baseline[pid]) / 2**20 for pid in self.peak}


def submit(client: httpx.Client, url: str, *, wait: bool = False) -> str:
    """An echo prediction whose webhook goes to ``url``; with ``wait``, answered once it has ended (and
    its webhook is due)."""
    body = {"model": "echo", "input": {"text": "x"}, "webhook": {"url": url}, "await": wait}
    answer = client.post("/v1/predictions", json=body)
    assert answer.status_code in (200, 201), answer.text
    assert not wait or answer.json()["status"] == "succeeded", answer.text
    return str(answer.json()["id"])


def first_attempt(client: httpx.Client, prediction_id: str, timeout: float) -> dict[str, Any]:
    """The prediction's only delivery once its first attempt is recorded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = client.get(f"/v1/predictions/{prediction_id}/webhooks").json()["data"]
        if found and found[0]["attempts"] >= 1:
            return dict(found[0])
        time.sleep(0.05)
    raise AssertionError(f"no attempt recorded within {timeout} s")


# How long, beyond the attempt itself, recording one may take on a busy machine (the dispatcher is woken
# by the state change, a thread runs the attempt, the store records it).
RECORDING_SLACK_S = 4.0


def test_a_huge_answer_is_not_read_and_memory_stays_flat(make_server: Any, receiver: ReceiverServer) -> None:
    server = make_server(CONFIG)
    with server.client(server.key()) as client:
        # The first webhook loads the HTTP client; the memory measured is what the answers cost.
        warm_up = submit(client, receiver.url("/ok"))
        assert first_attempt(client, warm_up, 30)["status"] == "delivered"
        with PeakMemory([p.pid for p in server.processes()]) as memory:
            started = time.monotonic()
            ok, failed = submit(client, receiver.url("/huge")), submit(client, receiver.url("/huge-error"))
            delivered = first_attempt(client, ok, ATTEMPT_TIMEOUT_S + RECORDING_SLACK_S)
            refused = first_attempt(client, failed, ATTEMPT_TIMEOUT_S + RECORDING_SLACK_S)
            elapsed = time.monotonic() - started
    assert delivered["status"] == "delivered", delivered
    assert delivered["history"][0]["status_code"] == 200
    # Not a byte of a 2xx answer's body is read: the attempt ends with the answer's head.
    assert delivered["history"][0]["duration_ms"] < 1000 * ATTEMPT_TIMEOUT_S / 2, delivered
    assert refused["status"] == "pending", refused
    assert refused["history"][0]["status_code"] == 500
    # What the receiver said is quoted, short: its first characters, never its whole answer.
    assert refused["last_error"].startswith("upstream exploded: the database is on fire ")
    assert len(refused["last_error"]) <= 203
    assert refused["history"][0]["duration_ms"] < 1000 * ATTEMPT_TIMEOUT_S / 2, refused
    assert elapsed < ATTEMPT_TIMEOUT_S + RECORDING_SLACK_S
    growth = memory.growth_mb()
    assert max(growth.values()) < RSS_GROWTH_LIMIT_MB, growth


def test_a_trickling_receiver_holds_an_attempt_at_most_attempt_timeout_s(
    make_server: Any, receiver: ReceiverServer
) -> None:
    server = make_server(CONFIG)
    with server.client(server.key()) as client:
        started = time.monotonic()
        body, head = (
            submit(client, receiver.url("/trickled-body")),
            submit(client, receiver.url("/trickled-head")),
        )
        # A 2xx head is the receiver's acceptance, whatever it then trickles.
        delivered = first_attempt(client, body, ATTEMPT_TIMEOUT_S + RECORDING_SLACK_S)
        assert delivered["status"] == "delivered", delivered
        assert delivered["history"][0]["duration_ms"] < 1000 * ATTEMPT_TIMEOUT_S / 2, delivered
        # A head that never ends is given up on at the attempt's deadline, and recorded then.
        timed_out = first_attempt(client, head, ATTEMPT_TIMEOUT_S + RECORDING_SLACK_S)
        elapsed = time.monotonic() - started
    assert timed_out["status"] == "pending", timed_out
    attempt = timed_out["history"][0]
    assert attempt["status_code"] is None
    assert attempt["error"] == f"timed out after {ATTEMPT_TIMEOUT_S:g} s"
    assert 1000 * ATTEMPT_TIMEOUT_S * 0.9 < attempt["duration_ms"] < 1000 * (ATTEMPT_TIMEOUT_S + 0.5)
    assert elapsed < ATTEMPT_TIMEOUT_S + RECORDING_SLACK_S


FAIR_CONFIG = """
[webhooks]
attempt_timeout_s = 10
concurrency = 4
receiver_concurrency = 2
schedule_s = [60]
allowed_networks = ["127.0.0.1/32"]
"""
SLOW_BACKLOG = 40  # more than the dispatcher reads at once
PROMPT_S = 3.0  # well under SLOW_ANSWER_S: a fast receiver's webhook never waits for a slow one's answer


def test_a_slow_receivers_backlog_never_delays_another_receivers_webhooks(
    make_server: Any, receiver: ReceiverServer, other_receiver: ReceiverServer
) -> None:
    slow, fast = receiver, other_receiver
    server = make_server(FAIR_CONFIG)
    with server.client(server.key()) as client:
        for _ in range(SLOW_BACKLOG):
            submit(client, slow.url("/slow"), wait=True)
        deadline = time.monotonic() + 30
        while len(slow.arrivals) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(slow.arrivals) >= 2, "the slow receiver's slots are taken"
        # Each measured from its prediction's end, when its webhook is due.
        sent = {submit(client, fast.url("/ok"), wait=True): time.monotonic() for _ in range(6)}
        deadline = time.monotonic() + SLOW_ANSWER_S
        while len(fast.arrivals) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.02)
        waits = [arrived - sent[prediction_id] for prediction_id, arrived in fast.arrivals]
    assert len(waits) == len(sent), f"{len(waits)} of {len(sent)} arrived while the slow receiver was busy"
    assert max(waits) < PROMPT_S, waits
    # The slow receiver got its own slots, and no more: two per dispatching process.
    assert slow.most_answering <= 2 * len(server.processes()), slow.most_answering
    assert len(slow.arrivals) < SLOW_BACKLOG
