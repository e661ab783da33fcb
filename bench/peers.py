"""Peer comparison: predictd (embedded mode) against what people run instead, in the same run on this machine.

* FastAPI + Celery + Redis: POST enqueues a task, GET polls its result (its own virtual environment);
* Replicate's Cog HTTP server with a no-op predictor: cog 0.16.12 (Python server) and cog 0.23.1 + coglet
  0.23.1 (Rust server), each in its own virtual environment;
* the floor: a raw ASGI app answering a small JSON under the same uvicorn settings as predictd.

Scenarios: the no-op model end to end (submit, then complete) at concurrency 1, 8 and 32; status GET of one
completed prediction at concurrency 32; a 50 ms sleep model with 8 worker slots and 32 in flight; the
memory of each server's process tree at rest and under load. Prints a table per scenario, the ratios, and
PASS / MISS for each of the issue's targets.

The reference environments are installed once into ``.bench/venvs/`` (gitignored) from the package index.
Every server binds 127.0.0.1, runs in its own process group and is stopped (SIGTERM, then SIGKILL of that
group) at the end; every run is bounded in time. Redis database 14 on 127.0.0.1:6379 is flushed before and
after (only that database).

Run from the repository root: ``.venv/bin/python bench/peers.py [--quick] [--json]`` (or ``bin/dev bench``).
Exit status 1 when a predictd run could not be measured or a predictd prediction did not complete.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package
from peerbench import report as reporting
from peerbench.run import FULL, QUICK, STARTERS, Plan, run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test, under 3 minutes)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("--duration", type=float, help="seconds per no-op run (default 10, quick 2)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds before each run (default 2, quick 0.5)")
    parser.add_argument("--poll-ms", type=float, default=2.0, help="GET interval while polling (default 2)")
    parser.add_argument(
        "--concurrency", default="1,8,32", help="no-op run concurrencies, comma-separated (default 1,8,32)"
    )
    parser.add_argument(
        "--rounds", type=int, help="times every run is repeated; rows show the median (default 3, quick 1)"
    )
    parser.add_argument("--targets", help=f"comma-separated subset of: {', '.join(STARTERS)} (default: all)")
    args = parser.parse_args(argv)
    try:
        args.concurrencies = tuple(int(c) for c in args.concurrency.split(","))
    except ValueError:
        parser.error("--concurrency takes integers separated by commas")
    if min(args.concurrencies) < 1 or args.poll_ms < 0 or (args.rounds is not None and args.rounds < 1):
        parser.error("concurrencies and --rounds must be >= 1 and --poll-ms >= 0")
    args.only = None if args.targets is None else frozenset(args.targets.split(","))
    if args.only is not None and not args.only <= set(STARTERS):
        parser.error(f"unknown target(s): {sorted(args.only - set(STARTERS))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    timing = dict(QUICK if args.quick else FULL)
    if args.duration is not None:
        timing.update(duration_s=args.duration)
    if args.warmup is not None:
        timing.update(warmup_s=args.warmup)
    if args.rounds is not None:
        timing.update(rounds=args.rounds)
    plan = Plan(concurrencies=args.concurrencies, poll_s=args.poll_ms / 1000.0, only=args.only, **timing)
    report = run(plan)
    report["checks"] = reporting.checks(report)
    print(orjson.dumps(report).decode() if args.json else reporting.render(report), flush=True)
    predictd_rows = [r for r in report["all_rows"] if r["target"].startswith("predictd")]
    broken = [r for r in predictd_rows if "unavailable" in r or r.get("errors") or r.get("rejected")]
    return 1 if broken or any(n.startswith("predictd") for n in report["unavailable"]) else 0


if __name__ == "__main__":
    sys.exit(main())
