"""Bounded load against a real server: 400 predictions at concurrency 32 with mixed outcomes (echo successes,
``raises`` failures, cancelled sleeps) on a prepaid account. Nothing is lost, nothing is doubled, and the
ledger read straight from the database balances. Then ``bench/soak.py`` (the 10,000-prediction soak) runs
small, so that the soak itself stays correct."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx

from ..conftest import ROOT, Server
from .test_faults import CONFIG, audit_of, prediction_ids_of, prepaid_account, settle_all

N = 400
CONCURRENCY = 32
EXPECTED = {"echo": "succeeded", "raises": "failed", "cancel": "cancelled"}


@dataclass
class Job:
    kind: str
    prediction_id: str | None = None
    submit_s: float = 0.0
    tries: int = 0
    error: str | None = None
    cancel_retries: int = 0


def kind_of(index: int) -> str:
    slot = index % 10
    return "cancel" if slot == 0 else "raises" if slot < 3 else "echo"


def body_of(kind: str, index: int) -> dict[str, Any]:
    if kind == "echo":
        return {"model": "echo", "input": {"text": f"load {index}"}}
    if kind == "raises":
        return {"model": "raises", "input": {"kind": "pose"}}
    return {"model": "sleep", "input": {"ms": 10_000}}


async def one(client: httpx.AsyncClient, index: int) -> Job:
    job = Job(kind_of(index))
    key = str(uuid.uuid4())  # resent on a retry: a retried submit must not make a second prediction
    start = time.perf_counter()
    for job.tries in range(1, 4):
        try:
            response = await client.post(
                "/v1/predictions", json=body_of(job.kind, index), headers={"Idempotency-Key": key}
            )
        except httpx.TransportError as exc:
            job.error = type(exc).__name__
            continue
        if response.status_code >= 500:
            job.error = f"HTTP {response.status_code}"
            continue
        job.error = None if response.status_code in (200, 201) else f"HTTP {response.status_code}"
        if job.error is None:
            job.prediction_id = str(response.json()["id"])
        break
    job.submit_s = time.perf_counter() - start
    if job.kind == "cancel" and job.prediction_id is not None:
        # INTERNAL_ERROR is retryable by contract (x-should-retry: true): a client resends, as for submits.
        for _ in range(3):
            cancelled = await client.post(f"/v1/predictions/{job.prediction_id}/cancel")
            if cancelled.status_code < 500:
                break
            job.cancel_retries += 1
        assert cancelled.status_code == 200, cancelled.text
    return job


async def drive(server: Server, key: str) -> tuple[list[Job], float]:
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=server.base_url, headers={"x-api-key": key}, limits=limits, timeout=60
    ) as client:
        pending = iter(range(N))
        jobs: list[Job] = []

        async def lane() -> None:
            for index in pending:
                jobs.append(await one(client, index))

        start = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(lane() for _ in range(CONCURRENCY))), 90)
        return jobs, time.perf_counter() - start


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * q / 100)) - 1]


def test_bounded_mixed_load_loses_nothing_doubles_nothing_and_balances(make_server: Any) -> None:
    server = make_server(CONFIG)
    key = prepaid_account(server, "load", credits=N * 2)
    jobs, submitted_in = asyncio.run(drive(server, key))
    accepted = [j.prediction_id for j in jobs if j.prediction_id is not None]
    finals = settle_all(server, key, accepted, timeout=90)
    stored = prediction_ids_of(server)
    lost = [
        j
        for j in jobs
        if j.prediction_id is None
        or j.prediction_id not in stored
        or finals[j.prediction_id]["status"] != EXPECTED[j.kind]
    ]
    duplicated = (len(accepted) - len(set(accepted))) + len(set(stored) - set(accepted))
    result = audit_of(server, "load")
    submits = [j.submit_s for j in jobs]
    print(
        f"\nload: {len(jobs)} jobs at concurrency {CONCURRENCY}, submitted in {submitted_in:.1f} s "
        f"({len(jobs) / submitted_in:.0f}/s), submit p50 {nearest_rank(submits, 50) * 1000:.0f} ms "
        f"p99 {nearest_rank(submits, 99) * 1000:.0f} ms, retried submits {sum(j.tries > 1 for j in jobs)}, "
        f"retried cancels {sum(j.cancel_retries for j in jobs)}"
    )
    print(f"lost = {len(lost)}, duplicated = {duplicated}, ledger balanced = {result.balanced}")
    print(f"ledger: {result.line()}")
    assert len(jobs) == N
    assert not lost, lost[:5]
    assert duplicated == 0
    assert len(stored) == N
    assert Counter(f["status"] for f in finals.values()) == {"succeeded": 280, "failed": 80, "cancelled": 40}
    assert result.balanced, result
    assert result.charged == 280


def test_the_soak_script_reports_a_clean_bounded_run() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "bench/soak.py",
            "--n",
            "200",
            "--concurrency",
            "16",
            "--time-limit",
            "60",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    print(
        f"\nsoak --n 200: lost = {report['lost']}, duplicated = {report['duplicated']}, "
        f"ledger balanced = {report['ledger']['balanced']}, {report['throughput_per_s']}/s"
    )
    assert report["accepted"] == 200
    assert report["lost"] == 0
    assert report["duplicated"] == 0
    assert report["ledger"]["balanced"] is True
    assert report["ledger"]["charged"] == report["ledger"]["succeeded_credits_used"] == 140
    assert report["final_states"] == {"succeeded": 140, "failed": 40, "cancelled": 20}
