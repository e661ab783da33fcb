"""A prediction's image URLs are fetched within half its model's ``timeout_s``, all together: a trickling
image server fails the prediction as ``ImageLoadError`` naming the input, with the model's deadline still
far off, instead of holding the worker until it (each fetch is also bounded by ``[media]`` limits)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ..conftest import FIXTURE_MODELS

MODEL_TIMEOUT_S = 8.0
FETCH_BUDGET_S = MODEL_TIMEOUT_S / 2
CONFIG = f"""
[[models]]
slug = "thumbnail"
ref = "{FIXTURE_MODELS}:Thumbnail"
timeout_s = {MODEL_TIMEOUT_S}

[media]
allowed_networks = ["127.0.0.1/32"]
"""


class _Trickling(BaseHTTPRequestHandler):
    """An image whose head comes at once and whose body one byte every 0.2 s: each read is quick, the
    whole never arrives (the [media] read and total timeouts never fire before the budget)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.close_connection = True
        stop = time.monotonic() + 3 * MODEL_TIMEOUT_S
        with contextlib.suppress(OSError):
            while time.monotonic() < stop:
                self.wfile.write(b"\x89")
                self.wfile.flush()
                time.sleep(0.2)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def trickling() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Trickling)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/photo.png"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_slow_image_url_fails_the_prediction_within_half_the_models_timeout(
    make_server: Any, trickling: str
) -> None:
    server = make_server(CONFIG)
    with server.client(server.key()) as client:
        started = time.monotonic()
        submitted = client.post("/v1/run", json={"model_name": "thumbnail", "inputs": {"image": trickling}})
        assert submitted.status_code == 200, submitted.text
        prediction_id = submitted.json()["id"]
        while time.monotonic() - started < 2 * MODEL_TIMEOUT_S:
            body = client.get(f"/v1/status/{prediction_id}").json()
            if body["status"] not in {"starting", "in_queue", "processing"}:
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - started
    assert body["status"] == "failed", body
    assert body["error"]["name"] == "ImageLoadError", body
    message = body["error"]["message"]
    assert message == f"input.image: could not fetch {trickling}: timed out after {FETCH_BUDGET_S:g} s"
    assert FETCH_BUDGET_S - 0.5 < elapsed < MODEL_TIMEOUT_S - 1, f"took {elapsed:.2f} s"
