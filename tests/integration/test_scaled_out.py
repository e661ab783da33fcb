"""The scaled-out deployment under faults, on real PostgreSQL and Redis: several API processes and several
`predictd worker`s share one database and one Redis. A worker SIGKILLed mid-prediction hands its work to
another; an API process SIGKILLed mid-load loses nothing it accepted; Redis killed and restarted empty
mid-load loses nothing either (the sweeper queues again from PostgreSQL what Redis forgot). Each time every
accepted prediction reaches a terminal state once and the ledger balances: charges are exactly the credits
of succeeded predictions, every reservation is released.

Limits, cancels and state changes cross processes too: rate and concurrency limits hold across two API
processes, a cancel sent to one API process stops the prediction on whichever worker runs it, and `await`
on one API process wakes when a worker finishes a prediction submitted to the other.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from predictd.errors import ErrorId
from predictd.store import Database

from ..conftest import FIXTURE_MODELS, Server, end_session, free_port, run_sync
from .test_billing_and_policy import ADMIN_KEY, Operator, _ledger_totals
from .test_faults import settle_all
from .test_native_api import assert_error

pytestmark = pytest.mark.backends("scaled")

TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}

CONFIG = f"""
admin_key = "{ADMIN_KEY}"
builtin_models = ["echo", "sleep"]

[[models]]
slug = "raises"
ref = "{FIXTURE_MODELS}:Raises"
"""

# (model, input): successes, failures and predictions long enough to be mid-run when something dies.
JOBS: list[tuple[str, dict[str, Any]]] = [
    ("echo", {"text": "ok"}),
    ("echo", {"text": "ok"}),
    ("raises", {"kind": "bug"}),
    ("sleep", {"ms": 300}),
]


@dataclass
class Load:
    """Clients submitting a mix of jobs round-robin to the given API processes until stopped."""

    urls: list[str]
    key: str
    accepted: list[str] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, worker: int, limit: int) -> None:
        sent = 0
        while not self.stop.is_set() and sent < limit:
            model, inputs = JOBS[(sent + worker) % len(JOBS)]
            url = self.urls[(sent + worker) % len(self.urls)]
            sent += 1
            try:
                response = httpx.post(
                    f"{url}/v1/predictions",
                    json={"model": model, "input": inputs},
                    headers={"x-api-key": self.key},
                    timeout=30,
                )
            except httpx.HTTPError as exc:
                self.refused[type(exc).__name__] += 1
                time.sleep(0.05)
                continue
            if response.status_code == 201:
                self.accepted.append(str(response.json()["id"]))
            else:
                self.refused[str(response.status_code)] += 1
                time.sleep(0.05)

    def start(self, clients: int = 4, limit: int = 10_000) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.run, args=(i, limit), daemon=True) for i in range(clients)]
        for thread in threads:
            thread.start()
        return threads

    def until_accepted(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.accepted) < count:
            assert time.monotonic() < deadline, f"only {len(self.accepted)} accepted; refused {self.refused}"
            time.sleep(0.02)

    def finish(self, threads: list[threading.Thread]) -> None:
        self.stop.set()
        for thread in threads:
            thread.join(timeout=60)
            assert not thread.is_alive()


def stored_predictions(server: Server, account: str) -> dict[str, Any]:
    """Every prediction of the account in PostgreSQL, by id (the store, not the API)."""
    from predictd.core.ports import ListQuery

    async def read(db: Database) -> dict[str, Any]:
        found = await db.accounts.get_account_by_name(account)
        assert found is not None
        page = await db.predictions.list_predictions(ListQuery(found.id, page=1, per_page=100_000))
        return {p.id: p for p in page.items}

    return server.with_database(read)


def assert_balanced(server: Server, account: str, finals: dict[str, dict[str, Any]]) -> dict[str, float]:
    succeeded = [p for p in finals.values() if p["status"] == "succeeded"]
    totals = _ledger_totals(server, account)
    assert totals.get("charge", 0.0) == pytest.approx(sum(p["credits_used"] for p in succeeded))
    assert totals.get("charge", 0.0) == pytest.approx(len(succeeded))  # every model costs 1 here
    assert totals.get("reserve", 0.0) == pytest.approx(totals.get("release", 0.0))
    assert totals["reserved"] == 0
    return totals


def prepaid(server: Server, name: str) -> str:
    op = Operator(server)
    op.call("PUT", "/plans/prepaid", {"models": ["*"], "prepaid": True})
    return op.account(name, plan="prepaid", credits=100_000)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    end_session(proc)


def redis_value(server: Server, key: str) -> str | None:
    from redis.asyncio import Redis

    async def read() -> str | None:
        redis = Redis.from_url(server.env["PREDICTD_REDIS_URL"], decode_responses=True)
        try:
            value = await redis.get(f"{server.redis_prefix}:{key}")
            return None if value is None else str(value)
        finally:
            await redis.aclose()

    return run_sync(read())


# -- a worker killed mid-prediction --------------------------------------------------------------------------


def test_two_apis_two_workers_and_a_worker_killed_mid_prediction(make_server: Any) -> None:
    first = make_server(CONFIG)
    first.start_worker()
    other_api = first.another_api()
    wait_for_workers(first, 2)
    key = prepaid(first, "worker-kill")
    with first.client(key) as client:
        long = client.post("/v1/predictions", json={"model": "sleep", "input": {"ms": 8000}}).json()["id"]
        deadline = time.monotonic() + 20
        while (holder := redis_value(first, f"running:{long}")) is None:
            assert time.monotonic() < deadline, "no worker took the long prediction"
            time.sleep(0.02)
    load = Load([first.base_url, other_api.base_url], key)
    threads = load.start()
    load.until_accepted(20)
    victim = next(w for w in first.workers if f"-{w.pid}-" in holder)
    survivor = next(w for w in first.workers if w is not victim)
    with first.client(key) as client:
        assert client.get(f"/v1/predictions/{long}").json()["status"] == "processing"
    kill_group(victim)  # the worker and its model processes, mid-prediction
    load.until_accepted(120)
    load.finish(threads)
    ids = [long, *load.accepted]
    finals = settle_all(other_api, key, ids)
    other_api.destroy()

    assert not load.refused, load.refused
    # The killed worker's prediction ran again on the other worker and completed there, once.
    assert finals[long]["status"] == "succeeded"
    stored = stored_predictions(first, "worker-kill")
    assert stored[long].attempts == 2
    assert survivor.poll() is None
    assert sorted(stored) == sorted(ids)  # nothing lost, nothing duplicated
    statuses = Counter(p["status"] for p in finals.values())
    assert statuses["succeeded"] > 0
    assert statuses["failed"] > 0
    totals = assert_balanced(first, "worker-kill", finals)
    print(f"\nworker kill -9: accepted={len(ids)} {dict(statuses)} ledger={totals}")


def wait_for_workers(server: Server, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client() as client:
        while client.get(f"{server.base_url}/health").json().get("workers", 0) < count:
            assert time.monotonic() < deadline, f"fewer than {count} workers announced themselves"
            time.sleep(0.1)


# -- an API process killed mid-load --------------------------------------------------------------------------


def test_an_api_process_killed_mid_load_loses_nothing(make_server: Any) -> None:
    first = make_server(CONFIG)
    other_api = first.another_api()
    key = prepaid(first, "api-kill")
    load = Load([first.base_url], key)
    threads = load.start()
    load.until_accepted(60)
    assert first.proc is not None
    kill_group(first.proc)  # SIGKILL the API process the clients talk to
    load.finish(threads)
    stored = stored_predictions(first, "api-kill")
    # Accepted means stored; a submit whose answer the kill cut off may be stored too, and must finish.
    assert set(load.accepted) <= set(stored)
    finals = settle_all(other_api, key, list(stored))
    other_api.destroy()
    assert len(finals) == len(stored)
    totals = assert_balanced(first, "api-kill", finals)
    print(f"\nAPI kill -9: accepted={len(load.accepted)} stored={len(stored)} ledger={totals}")


# -- Redis killed and restarted empty mid-load ---------------------------------------------------------------


@dataclass
class PrivateRedis:
    """A redis-server of our own on 127.0.0.1, without persistence, that a test may kill and restart."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self.workdir)]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True).returncode:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None:
            kill_group(self.proc)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    redis = PrivateRedis(tmp_path)
    redis.start()
    yield redis
    redis.kill()


def test_redis_restarted_empty_mid_load_loses_nothing(make_server: Any, private_redis: PrivateRedis) -> None:
    first = make_server(CONFIG, env={"PREDICTD_REDIS_URL": private_redis.url})
    key = prepaid(first, "redis-flush")
    load = Load([first.base_url], key)
    threads = load.start()
    load.until_accepted(60)
    private_redis.kill()  # every stream, lease, marker and counter is gone
    time.sleep(1.0)
    private_redis.start()
    accepted_at_restart = len(load.accepted)
    load.until_accepted(accepted_at_restart + 60)
    load.finish(threads)
    stored = stored_predictions(first, "redis-flush")
    assert set(load.accepted) <= set(stored)
    finals = settle_all(first, key, list(stored))
    assert len(finals) == len(stored)
    totals = assert_balanced(first, "redis-flush", finals)
    swept = [line for line in first.log().splitlines() if "queued a prediction Redis had lost" in line]
    print(
        f"\nRedis restart: accepted={len(load.accepted)} stored={len(stored)} "
        f"re-queued by the sweeper={len(swept)} refused={dict(load.refused)} ledger={totals}"
    )
    # Redis was down for about a second; the API kept accepting or answered cleanly, never a 500.
    assert "500" not in load.refused


# -- limits, cancels and wake-ups across processes -----------------------------------------------------------


def test_rate_and_concurrency_limits_hold_across_api_processes(make_server: Any) -> None:
    first = make_server(CONFIG)
    other_api = first.another_api()
    op = Operator(first)
    op.call("PUT", "/plans/tight", {"models": ["*"], "rate_limit": 4, "rate_window_s": 60})
    rated = op.account("rated", plan="tight")
    codes = []
    for i in range(6):
        url = (first.base_url, other_api.base_url)[i % 2]
        codes.append(httpx.get(f"{url}/v1/models", headers={"x-api-key": rated}).status_code)
    assert codes == [200] * 4 + [429] * 2

    op.call("PUT", "/plans/narrow", {"models": ["*"], "concurrency_limit": 2})
    narrow = op.account("narrow", plan="narrow")
    with first.client(narrow) as a, other_api.client(narrow) as b:
        held = [c.post("/v1/predictions", json={"model": "sleep", "input": {"ms": 2000}}) for c in (a, b)]
        assert [r.status_code for r in held] == [201, 201]
        assert_error(
            b.post("/v1/predictions", json={"model": "echo", "input": {"text": "x"}}),
            ErrorId.CONCURRENCY_LIMIT_EXCEEDED,
            "in flight",
        )
        settle_all(first, narrow, [r.json()["id"] for r in held])
        # Released by the worker that finished them: room again, on either API process.
        deadline = time.monotonic() + 10
        while a.get("/v1/account").json()["in_flight"] != 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert b.post("/v1/predictions", json={"model": "echo", "input": {"text": "x"}}).status_code == 201
    other_api.destroy()


def test_cancel_and_await_cross_processes(make_server: Any) -> None:
    first = make_server(CONFIG)
    other_api = first.another_api()
    key = first.key("crossing")
    with first.client(key) as a, other_api.client(key) as b:
        running = a.post("/v1/predictions", json={"model": "sleep", "input": {"ms": 60_000}}).json()["id"]
        deadline = time.monotonic() + 20
        while a.get(f"/v1/predictions/{running}").json()["status"] != "processing":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # Cancelled through the other API process: the worker running it is interrupted at once.
        assert b.post(f"/v1/predictions/{running}/cancel").json()["status"] == "cancelled"
        started = time.monotonic()
        quick = a.post("/v1/predictions", json={"model": "sleep", "input": {"ms": 50}}).json()["id"]
        assert settle_all(first, key, [quick])[quick]["status"] == "succeeded"
        assert time.monotonic() - started < 10  # the sleep slot was freed, not held for 60 s

        # A prediction submitted on one process, awaited on the other, wakes on the worker's completion.
        submitted = a.post("/v1/predictions", json={"model": "sleep", "input": {"ms": 500}}).json()["id"]
        with b.stream("GET", f"/v1/predictions/{submitted}/stream", timeout=30) as stream:
            events = [line for line in stream.iter_lines() if line.startswith("event:")]
        assert events[-1] == "event: done"
        assert b.get(f"/v1/predictions/{submitted}").json()["status"] == "succeeded"
    other_api.destroy()


def test_a_model_without_a_live_worker_is_unavailable(make_server: Any) -> None:
    server = make_server(CONFIG)
    key = server.key()
    with server.client(key) as client:
        assert client.get("/v1/models/echo").json()["status"] == "available"
        for worker in list(server.workers):
            worker.send_signal(signal.SIGTERM)
            if worker.wait(30) != 0:
                # It gave up a stop that hung (stop_within): stopped all the same; show where it hung.
                warnings.warn(
                    f"worker exited with {worker.returncode}:\n{server.log()[-6000:]}", stacklevel=1
                )
        # A worker that stops cleanly withdraws at once; the catalog sees it within a second.
        deadline = time.monotonic() + 10
        while client.get("/health").json()["models"]["echo"] != "unavailable":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        response = client.post("/v1/predictions", json={"model": "echo", "input": {"text": "x"}})
        assert_error(response, ErrorId.MODEL_UNAVAILABLE, "no live worker")
        assert response.headers["retry-after"]
        # A worker serving only some models makes only those available.
        server.start_worker("echo")
        deadline = time.monotonic() + 30
        while client.get("/health").json()["models"]["echo"] != "available":
            assert time.monotonic() < deadline, server.log()[-3000:]
            time.sleep(0.1)
        assert client.get("/health").json()["models"]["sleep"] == "unavailable"
        echoed = client.post("/v1/predict", json={"model": "echo", "input": {"text": "back"}, "await": True})
        assert echoed.json()["output"] == "back"


def test_a_console_session_is_valid_on_every_api_process(make_server: Any) -> None:
    from .test_console import COOKIE, csrf_of, sign_in

    first = make_server(CONFIG)
    other_api = first.another_api()
    key = first.key("console")
    on_first = sign_in(first, key)
    try:
        cookie = on_first.cookies[COOKIE]
        with httpx.Client(base_url=other_api.base_url, follow_redirects=False, timeout=30) as on_other:
            on_other.cookies.set(COOKIE, cookie)
            assert on_other.get("/console/predictions").status_code == 200
            csrf = csrf_of(on_other)
            # Signing out on one process ends the session on all of them.
            signed_out = on_other.post(
                "/console/logout", data={"csrf": csrf}, headers={"origin": other_api.base_url}
            )
            assert signed_out.status_code == 303
        gone = on_first.get("/console/predictions")
        assert gone.status_code == 303
        assert gone.headers["location"].startswith("/console/login")
    finally:
        on_first.close()
    other_api.destroy()
