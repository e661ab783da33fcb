"""Outbound request benchmark: the CPU one webhook delivery and one image fetch cost the process making it.

Both go through predictd's SSRF-guarded transport (the address pinned after the private-address check, TLS
verified against the host name). Deliveries run on the API process's threads, so CPU spent per delivery is
CPU taken from answering requests. A loopback HTTP server (a thread of this process, counted in the CPU
figure) answers 204 to each webhook and a 1 KiB PNG to each fetch.

Run from the repository root: ``.venv/bin/python bench/outbound.py [--n 200] [--json]``. Prints, per kind,
the CPU ms and wall ms per call (mean over ``--n`` sequential calls, after one warm-up).
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson

from predictd.media import MediaLimits, fetch_image_bytes
from predictd.outbound import OutboundLimits
from predictd.usecases.deliveries import post

NETWORK = OutboundLimits(allowed_networks=("127.0.0.1/32",))
LOOPBACK = MediaLimits(fetch=NETWORK)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(1016)


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(204)
        self.end_headers()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "image/png")
        self.send_header("content-length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def per_call(n: int, call: Callable[[], object]) -> dict[str, float]:
    call()  # warm-up: imports, the first connection
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        call()
    return {
        "cpu_ms": round((time.process_time() - cpu) * 1e3 / n, 3),
        "wall_ms": round((time.perf_counter() - wall) * 1e3 / n, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="sequential calls per kind")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()

    body, headers = b'{"id": "bench", "status": "succeeded"}', {"content-type": "application/json"}
    with receiver() as base:

        def deliver() -> None:
            status, error = post(f"{base}/hook", body, headers, NETWORK)
            if status != 204:
                raise RuntimeError(f"webhook delivery failed: {status} {error}")

        def fetch() -> None:
            if fetch_image_bytes(f"{base}/photo.png", field="input.image", limits=LOOPBACK) != PNG:
                raise RuntimeError("the fetched image differs from the one served")

        rows = {"webhook delivery": per_call(args.n, deliver), "image fetch": per_call(args.n, fetch)}
    if args.json:
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    print(f"outbound requests to a loopback receiver, {args.n} sequential calls each")
    print(f"{'kind':18} {'cpu ms':>8} {'wall ms':>8}")
    for kind, row in rows.items():
        print(f"{kind:18} {row['cpu_ms']:>8.2f} {row['wall_ms']:>8.2f}")


if __name__ == "__main__":
    main()
