"""Scaled-out throughput: no-op predictions through one API process and 1, 2, 4 `predictd worker` processes.

For each worker count: a fresh PostgreSQL database and Redis key prefix, a real ``predictd serve --redis``
on 127.0.0.1 and N ``predictd worker --models echo`` processes (one ``echo`` slot each, so the worker count
is the parallelism), then ``--n`` no-op predictions at ``--concurrency`` after a warm-up, in ``await`` mode
(one request; the API process is woken by the worker's state change over Redis) or ``poll`` mode. Prints one
row per worker count, side by side: predictions/s, submit and submit-to-complete p50 / p99, errors, and the
CPU seconds used by the API process and by the workers (with their model subprocesses).

Run from the repository root: ``.venv/bin/python bench/scaled_out.py [--workers 1,2,4] [--n 1000]``.
Needs PostgreSQL and Redis on 127.0.0.1 (``--pg``, ``--redis``). Bounded like noop_e2e.py; everything it
starts runs in its own process session and is killed by process group at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package
from _server import HOST, clean_env, cpu_seconds, free_port, mint_key, start_process, stop_server, wait_http
from noop_e2e import run_load, summarize

CONFIG = 'builtin_models = ["echo"]\n'


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--workers", default="1,2,4", help="worker process counts (default 1,2,4)")
    parser.add_argument("--n", type=int, default=1000, help="measured predictions per count (default 1000)")
    parser.add_argument("--concurrency", type=int, default=32, help="predictions in flight (default 32)")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--mode", choices=("await", "poll"), default="await")
    parser.add_argument("--poll-ms", type=float, default=2.0)
    parser.add_argument("--time-limit", type=float, default=240.0, help="seconds per run, then stop starting")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432", help="PostgreSQL server URL")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    args.counts = [int(c) for c in args.workers.split(",") if c.strip()]
    if not args.counts or min(args.counts) < 1 or args.n < 1 or args.concurrency < 1:
        parser.error("--workers must list counts >= 1; --n and --concurrency >= 1")
    return args


async def _pg(admin_url: str, statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(f"{admin_url}/postgres")
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _forget(redis_url: str, prefix: str) -> None:
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    try:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


def run_one(count: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    name = f"predictd_bench_{uuid.uuid4().hex[:10]}"
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    workdir = tmp / f"workers-{count}"
    workdir.mkdir()
    config = workdir / "predictd.toml"
    config.write_text(CONFIG)
    port = free_port()
    env = clean_env(workdir / "data", port)
    env.update(
        PREDICTD_CONFIG=str(config),
        PREDICTD_DATABASE_URL=f"{args.pg.replace('postgresql://', 'postgresql+asyncpg://')}/{name}",
        PREDICTD_REDIS_URL=args.redis,
        PREDICTD_REDIS_PREFIX=prefix,
    )
    asyncio.run(_pg(args.pg, f'CREATE DATABASE "{name}"'))
    base_url = f"http://{HOST}:{port}"
    procs = []
    try:
        api = start_process([sys.executable, "-m", "predictd", "serve"], env, workdir / "api.log")
        procs.append(api)
        wait_http(api, f"{base_url}/health", workdir / "api.log")
        key = mint_key(workdir / "data", env)
        workers = [
            start_process(
                [sys.executable, "-m", "predictd", "worker", "--models", "echo"], env, workdir / f"w{i}.log"
            )
            for i in range(count)
        ]
        procs += workers
        wait_http(
            api,
            f"{base_url}/health",
            workdir / "api.log",
            lambda r: r.json().get("workers") == count and r.json()["models"]["echo"] == "available",
        )
        api_cpu, workers_cpu = cpu_seconds(api.pid), cpu_seconds(*(w.pid for w in workers))
        (result,) = asyncio.run(run_load(base_url, key, args, api.pid))
        figures = summarize(result)
        figures.update(
            workers=count,
            api_cpu_s=round(cpu_seconds(api.pid) - api_cpu, 1),
            workers_cpu_s=round(cpu_seconds(*(w.pid for w in workers)) - workers_cpu, 1),
        )
        return figures
    finally:
        for proc in reversed(procs):
            stop_server(proc)
        asyncio.run(_forget(args.redis, prefix))
        asyncio.run(_pg(args.pg, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


COLUMNS = (
    ("workers", "workers"),
    ("predictions_per_s", "pred/s"),
    ("submit_p50_ms", "submit p50 ms"),
    ("submit_p99_ms", "submit p99 ms"),
    ("complete_p50_ms", "s2c p50 ms"),
    ("complete_p99_ms", "s2c p99 ms"),
    ("errors", "errors"),
    ("api_cpu_s", "API CPU s"),
    ("workers_cpu_s", "workers CPU s"),
)


def render(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    head = (
        f"scaled out: 1 API process, N `predictd worker` (1 echo slot each), PostgreSQL + Redis on {HOST}; "
        f"{args.n} no-op predictions, concurrency {args.concurrency}, mode {args.mode}"
    )
    table = [[label for _, label in COLUMNS]]
    table += [["-" if r.get(k) is None else str(r.get(k)) for k, _ in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in table]
    return "\n".join([head, *lines])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="predictd-scaled-") as tmp:
        rows = [run_one(count, args, Path(tmp)) for count in args.counts]
    if args.json:
        sys.stdout.write(orjson.dumps(rows).decode() + "\n")
    else:
        print(render(rows, args))
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
