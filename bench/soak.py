"""Soak: many predictions with mixed outcomes against a real ``predictd serve``; nothing lost, nothing
doubled, and the credits ledger of a prepaid account balances to the last micro-credit.

Starts ``python -m predictd serve`` (embedded mode, SQLite in a fresh temporary data folder, a free port on
127.0.0.1, its own process session) serving ``echo`` (successes), the test fixture ``raises`` (failures by
name, ``PoseError``) and ``sleep`` (10 s predictions, cancelled right after they are accepted). An operator
creates a prepaid plan and account through the admin API. Then ``--n`` jobs run at ``--concurrency``: each
submits with an ``Idempotency-Key`` (resent on a retry after a connection error or a 5xx, as the SDKs do),
then follows ``GET /v1/predictions/{id}/stream`` to the end (echo, raises) or cancels (sleep).

Afterwards it lists every prediction of the account and walks the whole ledger through the API, and prints:

* lost: accepted predictions missing from the server, not terminal, or not in the expected end state;
* duplicated: predictions the server holds beyond the accepted ones, or one id answered for two jobs;
* ledger: charges equal the succeeded predictions' ``credits_used``, no charge on a failure or a cancel,
  every reservation released, balance = grants - charges;
* p50 / p99 of submit (POST until its 201) and submit-to-complete (until the stream's ``done`` or the
  cancel's answer), throughput, and the server's CPU time and memory.

Bounded: ``--n`` jobs, per-request timeouts, and ``--time-limit`` seconds after which no new job starts
(jobs never started are reported). The server is stopped with SIGTERM, then its process group SIGKILLed.
Exit status 0 only when lost = 0, duplicated = 0, the ledger balances and every job ran.

Run from the repository root: ``.venv/bin/python bench/soak.py [--n 10000] [--concurrency 64] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package
from _server import (
    HOST,
    ROOT,
    clean_env,
    cpu_seconds,
    free_port,
    rss_mib,
    start_server,
    stop_server,
    tail,
    wait_healthy,
)
from noop_e2e import percentile

RAISES_REF = f"{ROOT / 'tests' / 'fixtures' / 'models.py'}:Raises"
REQUEST_TIMEOUT_S = 60.0
STREAM_TIMEOUT_S = 120.0
TRIES = 3  # per request, on connection errors and 5xx (submits resend their Idempotency-Key)
CANCEL_SLEEP_MS = 30_000
MICROS = 1_000_000
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
EXPECTED = {"echo": "succeeded", "raises": "failed", "cancel": "cancelled"}


def config_toml(admin_key: str) -> str:
    return f"""
admin_key = "{admin_key}"
builtin_models = ["echo", "sleep"]

[[models]]
slug = "echo"
ref = "predictd.models.echo:Echo"
workers = 2

[[models]]
slug = "raises"
ref = "{RAISES_REF}"
"""


# -- one job -----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    kind: str
    prediction_id: str | None = None
    status: str | None = None
    submit_s: float | None = None
    complete_s: float | None = None
    retries: list[str] = field(default_factory=list)  # why each retried request was retried
    late_cancel: bool = False  # the cancel found the prediction already ended (409)
    error: str | None = None


def kind_of(index: int, fail_pct: int, cancel_pct: int) -> str:
    slot = (index * 37) % 100  # spread the kinds evenly through the run
    if slot < cancel_pct:
        return "cancel"
    if slot < cancel_pct + fail_pct:
        return "raises"
    return "echo"


def request_body(kind: str, index: int) -> dict[str, Any]:
    if kind == "echo":
        return {"model": "echo", "input": {"text": f"soak {index}"}}
    if kind == "raises":
        return {"model": "raises", "input": {"kind": "pose"}}
    return {"model": "sleep", "input": {"ms": CANCEL_SLEEP_MS}}


async def submit(client: httpx.AsyncClient, body: dict[str, Any], outcome: Outcome) -> dict[str, Any] | None:
    """POST with one Idempotency-Key, resent on connection errors and 5xx; the 201's body, or None."""
    key = str(uuid.uuid4())
    for _ in range(TRIES):
        try:
            response = await client.post("/v1/predictions", json=body, headers={"Idempotency-Key": key})
        except httpx.TransportError as exc:
            outcome.error = f"submit {type(exc).__name__}"
            outcome.retries.append(outcome.error)
            continue
        if response.status_code >= 500:
            outcome.error = f"submit HTTP {response.status_code} {response.json().get('error_id', '')}"
            outcome.retries.append(outcome.error)
            continue
        if response.status_code not in (200, 201):
            outcome.error = f"submit HTTP {response.status_code} {response.json().get('error_id', '')}"
            return None
        outcome.error = None
        return dict(response.json())
    return None


async def follow(client: httpx.AsyncClient, prediction_id: str, outcome: Outcome) -> dict[str, Any] | None:
    """Read the prediction's event stream to its ``done`` event (reconnecting after a dropped connection,
    as an SSE client does); that event's prediction."""
    for _ in range(TRIES):
        try:
            async with client.stream(
                "GET", f"/v1/predictions/{prediction_id}/stream", timeout=STREAM_TIMEOUT_S
            ) as response:
                if response.status_code != 200:
                    outcome.error = f"stream HTTP {response.status_code}"
                    return None
                event = ""
                async for line in response.aiter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "done":
                        return dict(orjson.loads(line[6:]))
        except httpx.TransportError as exc:
            outcome.error = f"stream {type(exc).__name__}"
            outcome.retries.append(outcome.error)
            continue
        outcome.error = "stream ended without done"
        return None
    return None


async def cancel(client: httpx.AsyncClient, prediction_id: str, outcome: Outcome) -> dict[str, Any] | None:
    """Cancel; a 409 means the prediction ended before the cancel reached it: its final state then."""
    for _ in range(TRIES):
        try:
            response = await client.post(f"/v1/predictions/{prediction_id}/cancel")
            if response.status_code == 409:
                outcome.late_cancel = True
                response = await client.get(f"/v1/predictions/{prediction_id}")
        except httpx.TransportError as exc:
            outcome.error = f"cancel {type(exc).__name__}"
            outcome.retries.append(outcome.error)
            continue
        if response.status_code >= 500:
            outcome.error = f"cancel HTTP {response.status_code}"
            outcome.retries.append(outcome.error)
            continue
        if response.status_code != 200:
            outcome.error = f"cancel HTTP {response.status_code}"
            return None
        outcome.error = None
        return dict(response.json())
    return None


async def one_job(client: httpx.AsyncClient, index: int, kind: str) -> Outcome:
    outcome = Outcome(kind)
    start = time.perf_counter()
    created = await submit(client, request_body(kind, index), outcome)
    if created is None:
        return outcome
    outcome.submit_s = time.perf_counter() - start
    outcome.prediction_id = str(created["id"])
    if kind == "cancel":
        final = await cancel(client, outcome.prediction_id, outcome)
    else:
        final = await follow(client, outcome.prediction_id, outcome)
    if final is not None:
        outcome.status = str(final["status"])
        outcome.complete_s = time.perf_counter() - start
    return outcome


async def run_jobs(client: httpx.AsyncClient, args: argparse.Namespace) -> tuple[float, list[Outcome], int]:
    """Run the jobs in ``args.concurrency`` lanes; returns (wall seconds, outcomes, jobs never started)."""
    outcomes: list[Outcome] = []
    next_index = 0
    start = time.perf_counter()
    deadline = start + args.time_limit

    async def lane() -> None:
        nonlocal next_index
        while next_index < args.n and time.perf_counter() < deadline:
            index = next_index
            next_index += 1
            kind = kind_of(index, args.fail_pct, args.cancel_pct)
            try:
                outcomes.append(await one_job(client, index, kind))
            except Exception as exc:  # a bug here or a malformed answer: count it, keep going
                outcomes.append(Outcome(kind, error=f"client {type(exc).__name__}: {exc}"))

    await asyncio.gather(*(lane() for _ in range(min(args.concurrency, args.n))))
    return time.perf_counter() - start, outcomes, args.n - next_index


# -- what the server holds ---------------------------------------------------------------------------------


@dataclass
class Holdings:
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> body
    listed: int = 0  # rows seen while paging (a duplicate row would count twice)
    ledger: list[dict[str, Any]] = field(default_factory=list)
    credits: dict[str, float] = field(default_factory=dict)


async def read_holdings(client: httpx.AsyncClient) -> Holdings:
    held = Holdings()
    page = 1
    while True:
        response = await client.get("/v1/predictions", params={"page": page, "per_page": 50})
        response.raise_for_status()
        body = response.json()
        for prediction in body["data"]:
            held.predictions[prediction["id"]] = prediction
            held.listed += 1
        if page >= body["pagination"]["last_page"]:
            break
        page += 1
    before: int | None = None
    while True:
        params: dict[str, int] = {"limit": 500, **({"before": before} if before is not None else {})}
        response = await client.get("/v1/account/ledger", params=params)
        response.raise_for_status()
        entries = response.json()["data"]
        if not entries:
            break
        held.ledger += entries
        before = min(e["id"] for e in entries)
    held.credits = (await client.get("/v1/account")).json()["credits"]
    return held


def audit_ledger(held: Holdings) -> dict[str, Any]:
    per_prediction: dict[str, Counter[str]] = {}
    totals: Counter[str] = Counter()
    for entry in held.ledger:
        micros = round(entry["amount"] * MICROS)
        totals[entry["kind"]] += micros
        if entry["prediction_id"]:
            per_prediction.setdefault(entry["prediction_id"], Counter())[entry["kind"]] += micros
    succeeded_micros = 0
    charged_failures = wrong_charges = open_reservations = 0
    for prediction_id, prediction in held.predictions.items():
        entries = per_prediction.get(prediction_id, Counter())
        if entries["reserve"] != entries["release"]:
            open_reservations += 1
        if prediction["status"] == "succeeded":
            used = round(prediction["credits_used"] * MICROS)
            succeeded_micros += used
            wrong_charges += entries["charge"] != used
        elif entries["charge"]:
            charged_failures += 1
    granted = totals["grant"] + totals["adjust"]
    balance_ok = round(held.credits["balance"] * MICROS) == granted - totals["charge"]
    reserved_ok = held.credits["reserved"] == 0 and totals["reserve"] == totals["release"]
    return {
        "balanced": balance_ok
        and reserved_ok
        and totals["charge"] == succeeded_micros
        and not (charged_failures or wrong_charges or open_reservations),
        "entries": len(held.ledger),
        "granted": granted / MICROS,
        "charged": totals["charge"] / MICROS,
        "succeeded_credits_used": succeeded_micros / MICROS,
        "reserved": totals["reserve"] / MICROS,
        "released": totals["release"] / MICROS,
        "still_reserved": held.credits["reserved"],
        "balance": held.credits["balance"],
        "charged_failures": charged_failures,
        "wrong_charges": wrong_charges,
        "open_reservations": open_reservations,
    }


def _ms(values: list[float], q: float) -> float | None:
    value = percentile(values, q)
    return None if value is None else round(value * 1000.0, 1)


def summarize(
    args: argparse.Namespace, wall: float, outcomes: list[Outcome], not_started: int, held: Holdings
) -> dict[str, Any]:
    accepted = [o for o in outcomes if o.prediction_id is not None]
    ids = Counter(o.prediction_id for o in accepted)
    final = held.predictions
    lost = [
        o
        for o in accepted
        if o.prediction_id not in final or final[o.prediction_id]["status"] not in TERMINAL
    ]
    lost_ids = {o.prediction_id for o in lost}
    ended = [o for o in accepted if o.prediction_id not in lost_ids]
    # A cancel that reaches a prediction after it succeeded is refused (409): a correct answer, not a loss.
    late = [o for o in ended if o.late_cancel and final[o.prediction_id]["status"] == "succeeded"]
    late_ids = {o.prediction_id for o in late}
    wrong = [
        o
        for o in ended
        if final[o.prediction_id]["status"] != EXPECTED[o.kind] and o.prediction_id not in late_ids
    ]
    duplicated = (held.listed - len(final)) + sum(n - 1 for n in ids.values()) + len(set(final) - set(ids))
    submits = [o.submit_s for o in accepted if o.submit_s is not None]
    completes = [o.complete_s for o in accepted if o.complete_s is not None]
    per_kind: dict[str, Any] = {}
    for kind in ("echo", "raises", "cancel"):
        mine = [o.complete_s for o in accepted if o.kind == kind and o.complete_s is not None]
        per_kind[kind] = {
            "jobs": sum(1 for o in outcomes if o.kind == kind),
            "p50_ms": _ms(mine, 50),
            "p99_ms": _ms(mine, 99),
        }
    errors = Counter(o.error for o in outcomes if o.error is not None)
    return {
        "n": args.n,
        "concurrency": args.concurrency,
        "jobs_run": len(outcomes),
        "not_started": not_started,
        "accepted": len(accepted),
        "final_states": dict(Counter(p["status"] for p in final.values())),
        "lost": len(lost),
        "duplicated": duplicated,
        "wrong_outcome": len(wrong),
        "late_cancels": len(late),
        "retried_requests": dict(Counter(r for o in outcomes for r in o.retries).most_common()),
        "errors": dict(errors.most_common()),
        "ledger": audit_ledger(held),
        "wall_s": round(wall, 2),
        "throughput_per_s": round(len(completes) / wall, 1) if wall > 0 else None,
        "submit_p50_ms": _ms(submits, 50),
        "submit_p99_ms": _ms(submits, 99),
        "complete_p50_ms": _ms(completes, 50),
        "complete_p99_ms": _ms(completes, 99),
        "complete_by_kind": per_kind,
    }


# -- the server and the run --------------------------------------------------------------------------------


def admin(base_url: str, admin_key: str, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.request(
        method,
        f"{base_url}/admin/v1{path}",
        json=body,
        headers={"Authorization": f"Bearer {admin_key}"},
        timeout=REQUEST_TIMEOUT_S,
    )
    response.raise_for_status()
    return dict(response.json())


async def load_and_read(
    base_url: str, key: str, args: argparse.Namespace
) -> tuple[float, list[Outcome], int, Holdings]:
    limits = httpx.Limits(
        max_connections=args.concurrency * 2, max_keepalive_connections=args.concurrency * 2
    )
    async with httpx.AsyncClient(
        base_url=base_url,
        headers={"x-api-key": key},
        limits=limits,
        timeout=httpx.Timeout(REQUEST_TIMEOUT_S, pool=REQUEST_TIMEOUT_S),
    ) as client:
        wall, outcomes, not_started = await run_jobs(client, args)
        return wall, outcomes, not_started, await read_holdings(client)


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="predictd-soak-") as tmp:
        data_dir = Path(tmp) / "data"
        port = free_port()
        base_url = f"http://{HOST}:{port}"
        admin_key = "adm_" + secrets.token_urlsafe(32)
        config = Path(tmp) / "predictd.toml"
        config.write_text(config_toml(admin_key))
        env = {**clean_env(data_dir, port), "PREDICTD_CONFIG": str(config)}
        log_path = Path(tmp) / "server.log"
        proc = start_server(env, log_path)
        notes: list[str] = []
        try:
            wait_healthy(proc, base_url, log_path)
            admin(base_url, admin_key, "PUT", "/plans/prepaid", {"models": ["*"], "prepaid": True})
            admin(base_url, admin_key, "POST", "/accounts", {"name": "soak", "plan": "prepaid"})
            admin(
                base_url, admin_key, "POST", "/accounts/soak/credits", {"amount": args.n * 2, "note": "soak"}
            )
            key = str(admin(base_url, admin_key, "POST", "/accounts/soak/keys", {"label": "soak"})["key"])
            cpu_before = cpu_seconds(proc.pid)
            wall, outcomes, not_started, held = asyncio.run(load_and_read(base_url, key, args))
            server_cpu = cpu_seconds(proc.pid) - cpu_before
            rss_after = rss_mib(proc.pid)
        finally:
            notes += stop_server(proc)
        server_log = log_events(log_path)
        if notes and log_path.exists():
            notes.append("server log tail:\n" + tail(log_path))
    report = summarize(args, wall, outcomes, not_started, held)
    report.update(
        server_log=server_log,
        host=HOST,
        cpus=os.cpu_count(),
        server_cpu_s=round(server_cpu, 1),
        server_rss_after_mib=round(rss_after, 1),
        notes=notes,
    )
    return report


def log_events(path: Path) -> dict[str, int]:
    """The server's warnings and errors (it logs at level warning), counted by event."""
    events: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        match = re.match(r"^\S+ \[(warning|error|critical)\s*\] (.+?)(?:\s{2,}|$)", line)
        if match:
            events[f"{match[1]}: {match[2]}"] += 1
        elif line.startswith(("ERROR:", "WARNING:")):
            events[line[:100]] += 1
        elif re.match(r"^[A-Za-z_][\w.]*(Error|Exception)\b", line):  # a logged traceback's last line
            events[f"exception: {line[:140]}"] += 1
    return dict(events.most_common())


def render(report: dict[str, Any]) -> str:
    ledger = report["ledger"]
    kinds = report["complete_by_kind"]
    lines = [
        f"soak: {report['n']} predictions at concurrency {report['concurrency']} "
        f"({report['cpus']} CPUs, client and server on {report['host']})",
        f"jobs run: {report['jobs_run']}, not started (time limit): {report['not_started']}, "
        f"accepted: {report['accepted']}",
        f"final states: {report['final_states']} (cancels that arrived after the prediction had "
        f"succeeded: {report['late_cancels']}; other outcomes not as expected: {report['wrong_outcome']})",
        f"lost = {report['lost']}",
        f"duplicated = {report['duplicated']}",
        f"ledger balanced = {ledger['balanced']}: {ledger['entries']} entries, "
        f"granted {ledger['granted']:g}, "
        f"charged {ledger['charged']:g} = succeeded credits_used {ledger['succeeded_credits_used']:g}, "
        f"reserved {ledger['reserved']:g} / released {ledger['released']:g}, "
        f"still reserved {ledger['still_reserved']:g}, balance {ledger['balance']:g}, "
        f"charged failures/cancels {ledger['charged_failures']}, wrong charges {ledger['wrong_charges']}, "
        f"open reservations {ledger['open_reservations']}",
        f"submit p50 {report['submit_p50_ms']} ms, p99 {report['submit_p99_ms']} ms",
        f"submit-to-complete p50 {report['complete_p50_ms']} ms, p99 {report['complete_p99_ms']} ms "
        + "("
        + ", ".join(f"{k} p50 {v['p50_ms']} / p99 {v['p99_ms']} ms" for k, v in kinds.items())
        + ")",
        f"throughput {report['throughput_per_s']} predictions/s over {report['wall_s']} s",
        f"server CPU {report['server_cpu_s']} s, RSS after {report['server_rss_after_mib']} MiB",
    ]
    lines += [f"retried: {count} x {cause}" for cause, count in report["retried_requests"].items()]
    lines += [f"client error: {count} x {kind}" for kind, count in report["errors"].items()]
    lines += [f"server log: {count} x {event}" for event, count in report["server_log"].items()]
    lines += [f"note: {note}" for note in report["notes"]]
    return "\n".join(lines)


def ok(report: dict[str, Any]) -> bool:
    return (
        report["lost"] == 0
        and report["duplicated"] == 0
        and report["wrong_outcome"] == 0
        and report["ledger"]["balanced"]
        and report["not_started"] == 0
        and report["accepted"] == report["n"]
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="predictions (default 10000)")
    parser.add_argument("--concurrency", type=int, default=64, help="jobs in flight (default 64)")
    parser.add_argument("--fail-pct", type=int, default=20, help="%% of jobs that fail (default 20)")
    parser.add_argument("--cancel-pct", type=int, default=10, help="%% of jobs cancelled (default 10)")
    parser.add_argument(
        "--time-limit", type=float, default=900.0, help="seconds after which no new job starts (default 900)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args(argv)
    if args.n < 1 or args.concurrency < 1 or args.time_limit <= 0:
        parser.error("--n and --concurrency must be >= 1, --time-limit > 0")
    if min(args.fail_pct, args.cancel_pct) < 0 or args.fail_pct + args.cancel_pct > 100:
        parser.error("--fail-pct and --cancel-pct must be >= 0 and add up to at most 100")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    print(orjson.dumps(report).decode() if args.json else render(report), flush=True)
    return 0 if ok(report) else 1


if __name__ == "__main__":
    sys.exit(main())
