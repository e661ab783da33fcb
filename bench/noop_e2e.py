"""End-to-end no-op benchmark: a real ``predictd serve`` (embedded mode) on 127.0.0.1, the ``echo`` model.

Measures two ways a client waits for a prediction, each reported separately:

* ``await``: ``POST /v1/predictions`` with ``"await": true``; submit-to-complete is that one request.
* ``poll``:  ``POST /v1/predictions``, then ``GET /v1/predictions/{id}`` every ``--poll-ms`` until the
  status is terminal; submit-to-complete runs from before the POST to the terminal GET.

Run from the repository root: ``.venv/bin/python bench/noop_e2e.py [--n 2000] [--concurrency 32] [--json]``.
Bounded: ``--n`` predictions per mode, a per-request timeout, a per-prediction deadline, and a time limit
per run after which no new prediction is started (the ones not started are counted as errors).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package
from _server import (
    HOST,
    clean_env,
    cpu_seconds,
    free_port,
    mint_key,
    rss_mib,
    start_server,
    stop_server,
    tail,
    wait_healthy,
)

MODEL = "echo"
TEXT = "x"
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
REQUEST_TIMEOUT_S = 75.0  # above the server's default await_timeout_s (60 s)
PREDICTION_DEADLINE_S = 60.0  # poll mode: give up on one prediction after this long


# -- results -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One prediction: latencies in seconds (None when not reached) and an error label (None when fine)."""

    submit_s: float | None
    complete_s: float | None
    error: str | None = None


@dataclass
class RunResult:
    mode: str
    n: int
    concurrency: int
    wall_s: float
    samples: list[Sample]
    warmup_errors: Counter[str] = field(default_factory=Counter)
    rss_after_mib: float = 0.0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0

    @property
    def errors(self) -> Counter[str]:
        return Counter(s.error for s in self.samples if s.error is not None)

    @property
    def succeeded(self) -> int:
        return sum(1 for s in self.samples if s.error is None)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000.0, 2)


def summarize(result: RunResult) -> dict[str, Any]:
    ok = [s for s in result.samples if s.error is None]
    submits = [s.submit_s for s in ok if s.submit_s is not None]
    completes = [s.complete_s for s in ok if s.complete_s is not None]
    errors = result.errors
    return {
        "mode": result.mode,
        "n": result.n,
        "concurrency": result.concurrency,
        "wall_s": round(result.wall_s, 3),
        "predictions_per_s": round(result.succeeded / result.wall_s, 1) if result.wall_s > 0 else None,
        "succeeded": result.succeeded,
        "submit_p50_ms": _ms(percentile(submits, 50)) if result.mode == "poll" else None,
        "submit_p99_ms": _ms(percentile(submits, 99)) if result.mode == "poll" else None,
        "complete_p50_ms": _ms(percentile(completes, 50)),
        "complete_p99_ms": _ms(percentile(completes, 99)),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors.most_common()),
        "warmup_errors": dict(result.warmup_errors.most_common()),
        "server_rss_after_mib": round(result.rss_after_mib, 1),
        "server_cpu_s": round(result.server_cpu_s, 2),
        "client_cpu_s": round(result.client_cpu_s, 2),
    }


# -- one prediction ----------------------------------------------------------------------------------------


def _body_error(response: httpx.Response) -> tuple[dict[str, Any] | None, str | None]:
    """The JSON body of a 2xx answer, or an error label."""
    if not response.is_success:
        try:
            error_id = orjson.loads(response.content).get("error_id", "")
        except (orjson.JSONDecodeError, AttributeError):
            error_id = ""
        return None, f"HTTP {response.status_code} {error_id}".strip()
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None, "invalid JSON body"
    if not isinstance(body, dict):
        return None, "body is not a JSON object"
    return body, None


def _outcome_error(body: dict[str, Any]) -> str | None:
    status = body.get("status")
    if status != "succeeded":
        return f"status {status} {body.get('error_name') or ''}".strip()
    if body.get("output") != TEXT:
        return "wrong output"
    return None


async def predict_await(client: httpx.AsyncClient) -> Sample:
    payload = {"model": MODEL, "input": {"text": TEXT}, "await": True}
    start = time.perf_counter()
    try:
        response = await client.post("/v1/predictions", json=payload)
    except httpx.HTTPError as exc:
        return Sample(None, None, type(exc).__name__)
    elapsed = time.perf_counter() - start
    body, error = _body_error(response)
    if body is None:
        return Sample(elapsed, None, error)
    return Sample(elapsed, elapsed, _outcome_error(body))


async def predict_poll(client: httpx.AsyncClient, poll_s: float) -> Sample:
    payload = {"model": MODEL, "input": {"text": TEXT}}
    start = time.perf_counter()
    try:
        response = await client.post("/v1/predictions", json=payload)
    except httpx.HTTPError as exc:
        return Sample(None, None, f"submit {type(exc).__name__}")
    submitted = time.perf_counter() - start
    body, error = _body_error(response)
    if body is None:
        return Sample(submitted, None, f"submit {error}")
    if not isinstance(body.get("id"), str):
        return Sample(submitted, None, "submit answer has no id")
    url = f"/v1/predictions/{body['id']}"
    while body.get("status") not in TERMINAL:
        if time.perf_counter() - start > PREDICTION_DEADLINE_S:
            return Sample(submitted, None, f"not terminal after {PREDICTION_DEADLINE_S:g} s")
        await asyncio.sleep(poll_s)
        try:
            response = await client.get(url)
        except httpx.HTTPError as exc:
            return Sample(submitted, None, f"poll {type(exc).__name__}")
        body, error = _body_error(response)
        if body is None:
            return Sample(submitted, None, f"poll {error}")
    return Sample(submitted, time.perf_counter() - start, _outcome_error(body))


# -- a run -------------------------------------------------------------------------------------------------


async def run_many(
    one: Callable[[], Awaitable[Sample]], n: int, concurrency: int, time_limit_s: float
) -> tuple[float, list[Sample]]:
    """Run ``n`` predictions with ``concurrency`` in flight; stop starting new ones after ``time_limit_s``.
    Returns (wall seconds, samples); predictions never started are error samples."""
    samples: list[Sample] = []
    remaining = n
    start = time.perf_counter()
    deadline = start + time_limit_s

    async def lane() -> None:
        nonlocal remaining
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            try:
                samples.append(await one())
            except Exception as exc:  # a bug in this script or a malformed answer: count it, keep going
                samples.append(Sample(None, None, f"client {type(exc).__name__}: {exc}"))

    await asyncio.gather(*(lane() for _ in range(min(concurrency, n))))
    wall = time.perf_counter() - start
    samples.extend(Sample(None, None, "not started (time limit)") for _ in range(remaining))
    return wall, samples


async def bench_mode(
    mode: str, client: httpx.AsyncClient, args: argparse.Namespace, server_pid: int
) -> RunResult:
    poll_s = args.poll_ms / 1000.0

    async def one() -> Sample:
        return await (predict_await(client) if mode == "await" else predict_poll(client, poll_s))

    warmup_errors: Counter[str] = Counter()
    if args.warmup > 0:
        _, warm = await run_many(one, args.warmup, args.concurrency, args.time_limit)
        warmup_errors.update(s.error for s in warm if s.error is not None)
    server_cpu, client_cpu = cpu_seconds(server_pid), time.process_time()
    wall, samples = await run_many(one, args.n, args.concurrency, args.time_limit)
    return RunResult(
        mode,
        args.n,
        args.concurrency,
        wall,
        samples,
        warmup_errors,
        rss_after_mib=rss_mib(server_pid),
        server_cpu_s=cpu_seconds(server_pid) - server_cpu,
        client_cpu_s=time.process_time() - client_cpu,
    )


# -- reporting ---------------------------------------------------------------------------------------------

COLUMNS = (
    ("mode", "mode"),
    ("n", "n"),
    ("concurrency", "conc"),
    ("wall_s", "wall s"),
    ("predictions_per_s", "pred/s"),
    ("submit_p50_ms", "submit p50 ms"),
    ("submit_p99_ms", "submit p99 ms"),
    ("complete_p50_ms", "s2c p50 ms"),
    ("complete_p99_ms", "s2c p99 ms"),
    ("errors", "errors"),
    ("server_rss_after_mib", "RSS after MiB"),
    ("server_cpu_s", "server CPU s"),
    ("client_cpu_s", "client CPU s"),
)


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def render_table(report: dict[str, Any]) -> str:
    rows = [[label for _, label in COLUMNS]]
    rows += [[_cell(run[key]) for key, _ in COLUMNS] for run in report["runs"]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(f"server RSS (process + children) at rest before load: {report['rss_rest_mib']} MiB")
    lines.append(f"server RSS (process + children) after load:          {report['rss_after_mib']} MiB")
    for run in report["runs"]:
        for kind, count in run["error_kinds"].items():
            lines.append(f"{run['mode']} error: {count} x {kind}")
        for kind, count in run["warmup_errors"].items():
            lines.append(f"{run['mode']} warm-up error: {count} x {kind}")
    lines += [f"note: {note}" for note in report["notes"]]
    return "\n".join(lines)


# -- main --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="measured predictions per mode (default 2000)")
    parser.add_argument("--concurrency", type=int, default=32, help="predictions in flight (default 32)")
    parser.add_argument("--warmup", type=int, default=50, help="warm-up predictions per mode (default 50)")
    parser.add_argument("--poll-ms", type=float, default=2.0, help="poll mode: GET interval (default 2)")
    parser.add_argument(
        "--time-limit", type=float, default=300.0, help="seconds per run before no new prediction starts"
    )
    parser.add_argument("--mode", choices=("both", "await", "poll"), default="both")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args(argv)
    if args.n < 1 or args.concurrency < 1 or args.warmup < 0 or args.poll_ms < 0 or args.time_limit <= 0:
        parser.error("--n and --concurrency must be >= 1, --warmup and --poll-ms >= 0, --time-limit > 0")
    return args


async def run_load(base_url: str, key: str, args: argparse.Namespace, server_pid: int) -> list[RunResult]:
    modes = ("await", "poll") if args.mode == "both" else (args.mode,)
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(
        base_url=base_url,
        headers={"x-api-key": key},
        limits=limits,
        timeout=httpx.Timeout(REQUEST_TIMEOUT_S, pool=REQUEST_TIMEOUT_S),
    ) as client:
        return [await bench_mode(mode, client, args, server_pid) for mode in modes]


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="predictd-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        port = free_port()
        env = clean_env(data_dir, port)
        base_url = f"http://{HOST}:{port}"
        key = mint_key(data_dir, env)
        log_path = Path(tmp) / "server.log"
        proc = start_server(env, log_path)
        notes: list[str] = []
        try:
            wait_healthy(proc, base_url, log_path, (MODEL,))
            rss_rest = rss_mib(proc.pid)
            results = asyncio.run(run_load(base_url, key, args, proc.pid))
            rss_after = rss_mib(proc.pid)
        finally:
            notes += stop_server(proc)
        if notes and log_path.exists():
            notes.append("server log tail:\n" + tail(log_path))
    return {
        "host": HOST,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "warmup": args.warmup,
        "poll_ms": args.poll_ms,
        "rss_rest_mib": round(rss_rest, 1),
        "rss_after_mib": round(rss_after, 1),
        "runs": [summarize(r) for r in results],
        "notes": notes,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    if args.json:
        sys.stdout.write(orjson.dumps(report).decode() + "\n")
    else:
        print(render_table(report))
    return 1 if any(r["errors"] for r in report["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
