"""The peer benchmark's runs: start every server, drive each scenario with a fresh client process per
measured run (targets interleaved, so that drift in the machine's load touches all of them alike), sample
the servers' CPU and memory from outside, stop everything."""

from __future__ import annotations

import contextlib
import os
import platform
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from _server import HOST, cpu_seconds, rss_mib

from peerbench import targets, venvs
from peerbench.targets import NOOP_BODY, Server

CLIENT = Path(__file__).resolve().parent / "client.py"
SAMPLE_S = 0.25
STATUS_CONCURRENCY = 32
SLEEP_MS = 50
SLEEP_CONCURRENCY = 32


@dataclass(frozen=True)
class Plan:
    concurrencies: tuple[int, ...]
    warmup_s: float
    duration_s: float
    status_s: float
    sleep_s: float
    poll_s: float
    only: frozenset[str] | None  # target names to run; None: all
    rounds: int = 1  # every run is repeated this many times; each row shows its median round


QUICK = {"warmup_s": 0.5, "duration_s": 2.0, "status_s": 2.0, "sleep_s": 3.0, "rounds": 1}
# Three rounds: on a 2-core machine one 10 s run of a reference moved by up to 2x from run to run.
FULL = {"warmup_s": 2.0, "duration_s": 10.0, "status_s": 5.0, "sleep_s": 10.0, "rounds": 3}

# name -> (label, how to start it)
STARTERS: dict[str, tuple[str, Callable[[Path, str, str], Server]]] = {
    "predictd": (
        "predictd (embedded)",
        lambda tmp, n, label: targets.predictd(tmp, n, label, targets.PREDICTD_NOOP, ("echo", "sleep")),
    ),
    "predictd-sleep8": (
        "predictd, sleep x8 workers",
        lambda tmp, n, label: targets.predictd(tmp, n, label, targets.PREDICTD_SLEEP8, ("sleep",)),
    ),
    "celery": (
        "FastAPI+Celery+Redis",
        lambda tmp, n, label: targets.celery(tmp, n, label, os.cpu_count() or 2, "bench-echo", "echo"),
    ),
    "celery-sleep8": (
        "FastAPI+Celery+Redis, -c 8",
        lambda tmp, n, label: targets.celery(tmp, n, label, 8, "bench-sleep", "sleep"),
    ),
    "cog-python": (
        "Cog 0.16.12 (Python)",
        lambda tmp, n, label: targets.cog(tmp, n, label, venvs.COG_PYTHON),
    ),
    "cog-rust": (
        "Cog 0.23.1 (Rust coglet)",
        lambda tmp, n, label: targets.cog(tmp, n, label, venvs.COG_RUST),
    ),
    "floor": ("raw ASGI floor", targets.floor),
}


def log(message: str) -> None:
    sys.stderr.write(f"[peers {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


# -- one measured run --------------------------------------------------------------------------------------


def measure(server: Server, spec: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Run the client once against ``server``; its figures plus the server tree's CPU seconds over the
    measured phase and its RSS when the load stopped (and the peak, sampled every SAMPLE_S)."""
    full = {"host": HOST, "port": server.port, "headers": server.headers, **spec}
    # the client's own bound per phase is its length + the operation deadline (60 s) + 5 s
    hard_s = full.get("warmup_s", 1.0) + full.get("duration_s", 5.0) + 2 * 65.0 + 30.0
    err = tmp / "client.err"
    with err.open("wb") as err_file:
        proc = subprocess.Popen(
            [sys.executable, str(CLIENT), orjson.dumps(full).decode()],
            stdout=subprocess.PIPE,
            stderr=err_file,
            start_new_session=True,
        )
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + hard_s
    buffer, result = b"", None
    cpu_start = cpu_end = rss_load = 0.0
    measuring = False
    try:
        while time.monotonic() < deadline:
            ready = selector.select(SAMPLE_S)
            if measuring:
                server.rss_peak_mib = max(server.rss_peak_mib, rss_mib(*server.pids))
            if not ready:
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line == b"start":
                    cpu_start, measuring = cpu_seconds(*server.pids), True
                elif line == b"loaded":
                    rss_load = rss_mib(*server.pids)
                elif line == b"end":
                    cpu_end, measuring = cpu_seconds(*server.pids), False
                elif line.startswith(b"{"):
                    result = orjson.loads(line)
    finally:
        selector.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
    if result is None:
        raise RuntimeError(f"the client gave no result (exit {proc.returncode}): {err.read_text()[-500:]}")
    result.update(
        server_cpu_s=round(cpu_end - cpu_start, 2),
        rss_load_mib=round(rss_load or rss_mib(*server.pids), 1),
    )
    return dict(result)


# -- the scenarios -----------------------------------------------------------------------------------------


def noop_spec(server: Server, plan: Plan, concurrency: int, variant: str) -> dict[str, Any]:
    timing = {"concurrency": concurrency, "warmup_s": plan.warmup_s, "duration_s": plan.duration_s}
    if server.name.startswith("cog"):
        return {"op": "predict", "path": "/predictions", "body": {"input": {"text": "x"}}, **timing}
    body = {**NOOP_BODY, "await": True} if variant == "await" else NOOP_BODY
    return {
        "op": "predict",
        "path": server.predict_path,
        "body": body,
        "poll_path": server.poll_path,
        "poll_s": plan.poll_s,
        "expect_output": "x",
        **timing,
    }


def _row(
    scenario: str, server: Server, variant: str, concurrency: int, spec: dict[str, Any]
) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "target": server.name,
        "label": server.label,
        "variant": variant,
        "concurrency": concurrency,
        "path": spec.get("path"),
    }


Run = tuple[str, Server, str, dict[str, Any]]  # scenario, server, variant, client spec


def noop_runs(servers: dict[str, Server], plan: Plan) -> list[Run]:
    runs: list[Run] = []
    for concurrency in plan.concurrencies:
        for name in ("predictd", "celery", "cog-python", "cog-rust"):
            if name not in servers:
                continue
            variants = ("poll", "await") if name == "predictd" else ("sync",) if "cog" in name else ("poll",)
            for variant in variants:
                runs.append(
                    ("noop", servers[name], variant, noop_spec(servers[name], plan, concurrency, variant))
                )
    return runs


def status_runs(servers: dict[str, Server], plan: Plan) -> list[Run]:
    runs: list[Run] = []
    for name in ("predictd", "celery", "floor"):
        if name not in servers:
            continue
        server = servers[name]
        path = "/" if name == "floor" else server.poll_path.format(id=server.status_id)
        spec = {"op": "get", "path": path, "concurrency": STATUS_CONCURRENCY}
        spec.update(warmup_s=min(plan.warmup_s, 1.0), duration_s=plan.status_s)
        runs.append(("status", server, "GET", spec))
    return runs


def sleep_runs(servers: dict[str, Server], plan: Plan) -> list[Run]:
    runs: list[Run] = []
    for name in ("predictd-sleep8", "celery-sleep8"):
        if name not in servers:
            continue
        server = servers[name]
        spec = {
            "op": "predict",
            "path": server.predict_path,
            "body": {"model": "sleep", "input": {"ms": SLEEP_MS}},
            "poll_path": server.poll_path,
            "poll_s": plan.poll_s,
            "expect_output": f"slept {SLEEP_MS} ms",
            "concurrency": SLEEP_CONCURRENCY,
            "warmup_s": plan.warmup_s,
            "duration_s": plan.sleep_s,
        }
        runs.append(("sleep", server, "poll", spec))
    return runs


def run_scenarios(servers: dict[str, Server], plan: Plan, tmp: Path) -> list[dict[str, Any]]:
    """Every run, ``plan.rounds`` times over (each round runs all targets, interleaved, so that drift in
    the machine's load touches them alike)."""
    rows: list[dict[str, Any]] = []
    for round_number in range(1, plan.rounds + 1):
        for scenario, server, variant, spec in (
            noop_runs(servers, plan) + status_runs(servers, plan) + sleep_runs(servers, plan)
        ):
            row = _row(scenario, server, variant, spec["concurrency"], spec)
            row["round"] = round_number
            where = f"{scenario}: {server.label} {variant} c={spec['concurrency']}"
            log(f"round {round_number}/{plan.rounds} {where}")
            try:
                row.update(measure(server, spec, tmp))
            except Exception as exc:  # a run that could not be measured: shown in its row, the rest goes on
                row["unavailable"] = f"{type(exc).__name__}: {exc}"[:300]
            rows.append(row)
    return rows


def median_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run: the round with the median rate (a whole round's row, so that its latencies and
    CPU figures belong together), with every round's rate in ``round_rates``. A run none of whose rounds
    could be measured keeps its first round's row."""
    by_run: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        key = (row["scenario"], row["target"], row["variant"], row["concurrency"])
        by_run.setdefault(key, []).append(row)
    chosen = []
    for rounds in by_run.values():
        measured = sorted((r for r in rounds if "unavailable" not in r), key=lambda r: r["ok_per_s"])
        if not measured:
            chosen.append(rounds[0])
            continue
        median = dict(measured[(len(measured) - 1) // 2])
        median["round_rates"] = [r["ok_per_s"] for r in rounds if "unavailable" not in r]
        chosen.append(median)
    return chosen


# -- the whole run -----------------------------------------------------------------------------------------


def run(plan: Plan) -> dict[str, Any]:
    started = time.monotonic()
    load_before = os.getloadavg()
    servers: dict[str, Server] = {}
    unavailable: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="predictd-peers-") as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        stack.callback(_stop_all, servers)
        redis_ok = _try_flush_redis(unavailable)
        if redis_ok:
            stack.callback(_try_flush_redis, {})
        for name, (label, start) in STARTERS.items():
            if plan.only is not None and name not in plan.only:
                continue
            if name.startswith("celery") and not redis_ok:
                unavailable[name] = unavailable["redis"]
                continue
            log(f"starting {label}")
            try:
                servers[name] = start(tmp, name, label)
            except Exception as exc:  # shown as an unavailable row, with why
                unavailable[name] = f"{type(exc).__name__}: {exc}"[:600]
                log(f"{label} unavailable: {unavailable[name]}")
        time.sleep(2.0)  # let every server settle before reading its memory at rest
        for server in servers.values():
            server.measure_rest()
        all_rows = run_scenarios(servers, plan, tmp)
        rows = median_rows(all_rows)
        memory = {
            name: {
                "label": s.label,
                "processes": sum(1 for _ in _tree_pids(s)),
                "rss_rest_mib": s.rss_rest_mib,
                "rss_api_rest_mib": s.rss_api_rest_mib,
                "pss_rest_mib": s.pss_rest_mib,
                "rss_peak_mib": round(s.rss_peak_mib, 1),
                "rss_after_mib": round(rss_mib(*s.pids), 1),
            }
            for name, s in servers.items()
        }
        _stop_all(servers)
        notes = [f"{s.label}: {n}" for s in servers.values() for n in s.notes]
    unavailable.pop("redis", None)
    return {
        "host": HOST,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "plan": {k: (sorted(v) if isinstance(v, frozenset) else v) for k, v in plan.__dict__.items()},
        "labels": {name: label for name, (label, _) in STARTERS.items()},
        "rows": rows,
        "all_rows": all_rows,
        "memory": memory,
        "unavailable": unavailable,
        "notes": notes,
        "elapsed_s": round(time.monotonic() - started, 1),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def _tree_pids(server: Server) -> list[int]:
    import psutil

    pids: list[int] = []
    for pid in server.pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(pid)
            pids += [root.pid, *(c.pid for c in root.children(recursive=True))]
    return pids


def _stop_all(servers: dict[str, Server]) -> None:
    for server in servers.values():
        if any(p.poll() is None for p in server.procs):
            server.stop()


def _try_flush_redis(unavailable: dict[str, str]) -> bool:
    try:
        targets.flush_redis()
    except Exception as exc:  # Redis not running here: the Celery stack cannot be measured
        unavailable["redis"] = f"Redis at {targets.REDIS_URL}: {type(exc).__name__}: {exc}"
        return False
    return True
