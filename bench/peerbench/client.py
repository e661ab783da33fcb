"""The load generator of the peer benchmark: one process per measured run, so that every target is driven
the same way and the orchestrator's own work never competes with it.

asyncio on uvloop, one keep-alive HTTP/1.1 connection per lane (``concurrency`` lanes), requests written as
pre-built bytes and answers parsed by httptools (the C parser uvicorn uses): much cheaper per request than
an httpx client, so that on a 2-core machine the client is less of a bottleneck than the servers it drives.

Usage (by the orchestrator): ``python client.py '<spec as JSON>'``. It prints ``start`` when the measured
phase begins, ``loaded`` when it stops starting operations, ``end`` when the last one has finished, then
one line of JSON with the results. Operations:

* ``predict``: POST the body; a 409 is counted as rejected (Cog's answer when busy); an answer whose
  ``status`` is not terminal is then polled with ``GET poll_path`` every ``poll_s`` until it is.
* ``get``: GET one path.

Bounded: ``duration_s`` (no new operation after it), ``max_ops``, a per-request timeout and a per-operation
deadline; operations still running at the hard deadline are cancelled and counted as errors.
"""

from __future__ import annotations

import asyncio
import math
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

import httptools
import orjson
import uvloop

TERMINAL = frozenset({"succeeded", "failed", "canceled", "cancelled"})


@dataclass(frozen=True, slots=True)
class Spec:
    host: str
    port: int
    op: str  # "predict" or "get"
    path: str
    body: Any = None  # JSON body of a predict
    poll_path: str = ""  # with {id}
    poll_s: float = 0.002
    headers: dict[str, str] = field(default_factory=dict)
    expect_output: Any = None  # a succeeded prediction must have this output (None: not checked)
    concurrency: int = 1
    warmup_s: float = 1.0
    duration_s: float = 5.0
    max_ops: int = 200_000
    request_timeout_s: float = 75.0
    op_deadline_s: float = 60.0


@dataclass(slots=True)
class Op:
    outcome: str  # "ok", "rejected", or an error label
    submit_s: float | None = None
    complete_s: float | None = None
    requests: int = 0


class HttpError(Exception):
    pass


class _Protocol(asyncio.Protocol):
    """One connection: feeds bytes to httptools and resolves the waiting request's future."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.chunks: list[bytes] = []
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"bad answer: {exc}"))

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        body, self.chunks = b"".join(self.chunks), []
        self.keep_alive = self.parser.should_keep_alive()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.parser.get_status_code(), body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(exc or HttpError("connection closed"))

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()


class Connection:
    """A keep-alive connection that reconnects when the server closes it."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.protocol: _Protocol | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        if self.protocol is None or self.protocol.transport is None:
            _, self.protocol = await loop.create_connection(_Protocol, self.spec.host, self.spec.port)
        protocol = self.protocol
        assert protocol.transport is not None
        protocol.waiter = loop.create_future()
        protocol.transport.write(raw)
        try:
            async with asyncio.timeout(self.spec.request_timeout_s):
                answer = await protocol.waiter
        except BaseException:
            self.close()
            raise
        if not protocol.keep_alive:
            self.close()
        return answer

    def close(self) -> None:
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.close()
        self.protocol = None


class Requests:
    """The raw bytes of every request an operation sends."""

    def __init__(self, spec: Spec) -> None:
        head = f"Host: {spec.host}:{spec.port}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in spec.headers.items()
        )
        self.head = head
        if spec.op == "predict":
            body = orjson.dumps(spec.body)
            self.first = (
                f"POST {spec.path} HTTP/1.1\r\n{head}content-type: application/json\r\n"
                f"content-length: {len(body)}\r\n\r\n"
            ).encode() + body
        else:
            self.first = f"GET {spec.path} HTTP/1.1\r\n{head}\r\n".encode()
        self.poll_path = spec.poll_path

    def poll(self, prediction_id: str) -> bytes:
        return f"GET {self.poll_path.format(id=prediction_id)} HTTP/1.1\r\n{self.head}\r\n".encode()


def _json(body: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HttpError("answer is not JSON") from exc
    if not isinstance(doc, dict):
        raise HttpError("answer is not a JSON object")
    return doc


async def predict(conn: Connection, spec: Spec, requests: Requests) -> Op:
    start = time.perf_counter()
    op = Op("ok", requests=1)
    status, body = await conn.request(requests.first)
    op.submit_s = time.perf_counter() - start
    if status == 409:
        op.outcome = "rejected"
        return op
    if status not in (200, 201, 202):
        op.outcome = f"submit HTTP {status}"
        return op
    doc = _json(body)
    while doc.get("status") not in TERMINAL:
        if time.perf_counter() - start > spec.op_deadline_s:
            op.outcome = f"not terminal after {spec.op_deadline_s:g} s"
            return op
        if spec.poll_s > 0:
            await asyncio.sleep(spec.poll_s)
        status, body = await conn.request(requests.poll(str(doc["id"])))
        op.requests += 1
        if status != 200:
            op.outcome = f"poll HTTP {status}"
            return op
        doc = _json(body)
    op.complete_s = time.perf_counter() - start
    if doc["status"] != "succeeded":
        op.outcome = f"status {doc['status']}"
    elif spec.expect_output is not None and doc.get("output") != spec.expect_output:
        op.outcome = "wrong output"
    return op


async def get(conn: Connection, spec: Spec, requests: Requests) -> Op:
    start = time.perf_counter()
    status, _ = await conn.request(requests.first)
    elapsed = time.perf_counter() - start
    return Op("ok" if status == 200 else f"HTTP {status}", elapsed, elapsed, 1)


async def phase(
    conns: list[Connection], spec: Spec, requests: Requests, seconds: float, limit: int
) -> tuple[float, list[Op]]:
    """Every lane runs operations back to back until ``seconds`` have passed or ``limit`` were started;
    returns (wall seconds until the last one ended, operations)."""
    one = predict if spec.op == "predict" else get
    ops: list[Op] = []
    started = 0
    start = time.perf_counter()
    stop_at = start + seconds

    async def lane(conn: Connection) -> None:
        nonlocal started
        while time.perf_counter() < stop_at and started < limit:
            started += 1
            try:
                ops.append(await one(conn, spec, requests))
            except (OSError, HttpError, TimeoutError) as exc:
                ops.append(Op(f"{type(exc).__name__}: {exc}"[:120]))
                conn.close()

    tasks = [asyncio.ensure_future(lane(conn)) for conn in conns]
    done, pending = await asyncio.wait(tasks, timeout=seconds + spec.op_deadline_s + 5.0)
    for task in pending:
        task.cancel()
        ops.append(Op("unfinished at the hard deadline"))
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            ops.append(Op(f"client bug: {task.exception()!r}"[:120]))
    return time.perf_counter() - start, ops


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100.0 * len(ordered))) - 1]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000.0, 2)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def say(word: str) -> None:
    sys.stdout.write(word + "\n")
    sys.stdout.flush()


async def main_async(spec: Spec) -> dict[str, Any]:
    conns = [Connection(spec) for _ in range(spec.concurrency)]
    requests = Requests(spec)
    warm_ops: list[Op] = []
    if spec.warmup_s > 0:
        _, warm_ops = await phase(conns, spec, requests, spec.warmup_s, spec.max_ops)
    say("start")
    cpu = _cpu()
    loaded = asyncio.get_running_loop().call_later(spec.duration_s, say, "loaded")
    wall, ops = await phase(conns, spec, requests, spec.duration_s, spec.max_ops)
    loaded.cancel()
    client_cpu = _cpu() - cpu
    say("end")
    for conn in conns:
        conn.close()
    ok = [o for o in ops if o.outcome == "ok"]
    submits = [o.submit_s for o in ok if o.submit_s is not None]
    completes = [o.complete_s for o in ok if o.complete_s is not None]
    errors = Counter(o.outcome for o in ops if o.outcome not in ("ok", "rejected"))
    return {
        "ops": len(ops),
        "ok": len(ok),
        "rejected": sum(1 for o in ops if o.outcome == "rejected"),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors.most_common(5)),
        "requests": sum(o.requests for o in ops),
        "wall_s": round(wall, 3),
        "ok_per_s": round(len(ok) / wall, 1) if wall > 0 else None,
        "requests_per_s": round(sum(o.requests for o in ops) / wall, 1) if wall > 0 else None,
        "submit_p50_ms": _ms(percentile(submits, 50)),
        "submit_p99_ms": _ms(percentile(submits, 99)),
        "complete_p50_ms": _ms(percentile(completes, 50)),
        "complete_p99_ms": _ms(percentile(completes, 99)),
        "client_cpu_s": round(client_cpu, 2),
        "warmup_ops": len(warm_ops),
        "warmup_errors": sum(1 for o in warm_ops if o.outcome not in ("ok", "rejected")),
    }


def main(argv: list[str]) -> int:
    spec = Spec(**orjson.loads(argv[1]))
    result = uvloop.run(main_async(spec))
    say(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
