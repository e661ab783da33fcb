"""Faults in embedded mode (scaled-out ones: test_scaled_out.py), each real: a worker process SIGKILLed
mid-load, the server SIGKILLed mid-load then restarted, and the data folder's filesystem full (a tmpfs
mounted on it) or read-only. Every accepted prediction reaches a terminal state, nothing is charged for a
failure, and the ledger balances (charges equal the credits used by succeeded predictions, no reservation
left open).

The filesystem tests mount a small tmpfs on the server's data folder, so they need root (CAP_SYS_ADMIN), as
the test machine has. A read-only remount cannot be done under a running server: Linux refuses
``mount -o remount,ro`` with EBUSY while a file on it is open for writing, and SQLite keeps its database open
read-write. The read-only case is therefore the one an operator meets for real: the server is (re)started
on a data folder that is read-only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from predictd.errors import ErrorId

from ..conftest import FIXTURE_MODELS, ONE_SLEEP_SLOT_SENDING_AHEAD, Server, run_sync
from .test_billing_and_policy import ADMIN_KEY, Operator
from .test_native_api import assert_error

CONFIG = f"""
admin_key = "{ADMIN_KEY}"
builtin_models = ["echo", "sleep"]
max_attempts = 2
shutdown_grace_s = 0

[[models]]
slug = "raises"
ref = "{FIXTURE_MODELS}:Raises"
"""

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "timed_out"})
MICROS = 1_000_000

pytestmark = pytest.mark.backends("embedded")


# -- the ledger audit (read straight from the database) ------------------------------------------------------


@dataclass
class Audit:
    """What the store holds for one account, and every way it could fail to balance."""

    statuses: Counter[str] = field(default_factory=Counter)
    unfinished: list[str] = field(default_factory=list)
    charged_without_success: list[str] = field(default_factory=list)
    wrong_charge: list[str] = field(default_factory=list)
    open_reservations: list[str] = field(default_factory=list)
    granted: float = 0.0
    charged: float = 0.0
    succeeded_credits: float = 0.0
    reserved: float = 0.0
    balance: float = 0.0

    @property
    def balanced(self) -> bool:
        return (
            not self.unfinished
            and not self.charged_without_success
            and not self.wrong_charge
            and not self.open_reservations
            and self.reserved == 0
            and self.charged == pytest.approx(self.succeeded_credits)
            and self.balance == pytest.approx(self.granted - self.charged)
        )

    def line(self) -> str:
        return (
            f"predictions={sum(self.statuses.values())} {dict(sorted(self.statuses.items()))} "
            f"unfinished={len(self.unfinished)} charged={self.charged:g} "
            f"succeeded_credits={self.succeeded_credits:g} "
            f"charged_failures={len(self.charged_without_success)} "
            f"open_reservations={len(self.open_reservations)} reserved={self.reserved:g} "
            f"balance={self.balance:g} (granted {self.granted:g})"
        )


AUDIT_PREDICTIONS = "SELECT id, status, cost FROM predictions WHERE account_id = ?"
AUDIT_LEDGER = (
    "SELECT prediction_id, kind, SUM(amount_micros) FROM ledger_entries WHERE account_id = ? "
    "GROUP BY prediction_id, kind"
)


def audit(database: Path, account_name: str) -> Audit:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)) as db:
        (account_id,) = db.execute("SELECT id FROM accounts WHERE name = ?", (account_name,)).fetchone()
        rows = db.execute(AUDIT_PREDICTIONS, (account_id,)).fetchall()
        ledger = db.execute(AUDIT_LEDGER, (account_id,)).fetchall()
    return audit_rows(rows, ledger)


def audit_of(server: Server, account_name: str) -> Audit:
    """The audit of the server's store, SQLite or PostgreSQL."""
    url = server.env.get("PREDICTD_DATABASE_URL")
    if url is None:
        return audit(database_of(server), account_name)

    async def read() -> tuple[list[Any], list[Any]]:
        import asyncpg

        db = await asyncpg.connect(url.replace("+asyncpg", ""))
        try:
            account_id = await db.fetchval("SELECT id FROM accounts WHERE name = $1", account_name)
            rows = await db.fetch(AUDIT_PREDICTIONS.replace("?", "$1"), account_id)
            ledger = await db.fetch(AUDIT_LEDGER.replace("?", "$1"), account_id)
            return [tuple(r) for r in rows], [tuple(r) for r in ledger]
        finally:
            await db.close()

    return audit_rows(*run_sync(read()))


def prediction_ids_of(server: Server) -> list[str]:
    url = server.env.get("PREDICTD_DATABASE_URL")
    if url is None:
        return all_prediction_ids(database_of(server))

    async def read() -> list[str]:
        import asyncpg

        db = await asyncpg.connect(url.replace("+asyncpg", ""))
        try:
            return [str(r[0]) for r in await db.fetch("SELECT id FROM predictions")]
        finally:
            await db.close()

    return run_sync(read())


def audit_rows(rows: list[Any], ledger: list[Any]) -> Audit:
    per_prediction: dict[str | None, dict[str, int]] = {}
    for prediction_id, kind, amount in ledger:
        per_prediction.setdefault(prediction_id, {})[kind] = int(amount)
    result = Audit()
    for prediction_id, status, cost in rows:
        result.statuses[status] += 1
        entries = per_prediction.get(prediction_id, {})
        if status not in TERMINAL:
            result.unfinished.append(prediction_id)
        if entries.get("reserve", 0) != entries.get("release", 0):
            result.open_reservations.append(prediction_id)
        charge = entries.get("charge", 0)
        if status == "succeeded":
            result.succeeded_credits += cost or 0.0
            if charge != round((cost or 0.0) * MICROS):
                result.wrong_charge.append(prediction_id)
        elif charge:
            result.charged_without_success.append(prediction_id)
    totals = Counter[str]()
    for entries in per_prediction.values():
        totals.update(entries)
    result.granted = (totals["grant"] + totals["adjust"]) / MICROS
    result.charged = totals["charge"] / MICROS
    result.reserved = (totals["reserve"] - totals["release"]) / MICROS
    result.balance = (totals["grant"] + totals["adjust"] - totals["charge"]) / MICROS
    return result


def integrity(database: Path, read_only_media: bool = False) -> str:
    # On a read-only filesystem SQLite cannot create the WAL index; immutable=1 is how it reads such media.
    mode = "immutable=1" if read_only_media else "mode=ro"
    with contextlib.closing(sqlite3.connect(f"file:{database}?{mode}", uri=True, timeout=30)) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


def all_prediction_ids(database: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)) as db:
        return [row[0] for row in db.execute("SELECT id FROM predictions")]


def attempts(database: Path, ids: list[str]) -> list[int]:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)) as db:
        return [db.execute("SELECT attempts FROM predictions WHERE id = ?", (i,)).fetchone()[0] for i in ids]


def database_of(server: Server) -> Path:
    return server.data_dir / "predictd.sqlite3"


# -- load --------------------------------------------------------------------------------------------------


def prepaid_account(server: Server, name: str, credits: float) -> str:
    operator = Operator(server)
    operator.call("PUT", "/plans/prepaid", {"models": ["*"], "prepaid": True})
    return operator.account(name, plan="prepaid", credits=credits)


def job(index: int) -> tuple[str, dict[str, Any], bool]:
    """(model, input, cancel after submit): successes, failures by name, and cancels, interleaved."""
    kind = index % 10
    if kind < 5:
        return "echo", {"text": f"job {index}"}, False
    if kind < 7:
        return "sleep", {"ms": 150}, False
    if kind < 9:
        return "raises", {"kind": "pose"}, False
    return "sleep", {"ms": 5000}, True


@dataclass
class Load:
    """Submits jobs from threads until they run out or the server is gone; keeps the id of every prediction
    the server accepted."""

    server: Server
    key: str
    accepted: list[str] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, jobs: range, threads: int) -> None:
        pending = iter(jobs)

        def lane() -> None:
            with httpx.Client(
                base_url=self.server.base_url, headers={"x-api-key": self.key}, timeout=30
            ) as client:
                while True:
                    with self.lock:
                        index = next(pending, None)
                    if index is None:
                        return
                    model, inputs, cancel = job(index)
                    try:
                        response = client.post("/v1/predictions", json={"model": model, "input": inputs})
                    except httpx.HTTPError as exc:
                        with self.lock:
                            self.refused[type(exc).__name__] += 1
                        return  # the server is gone: this lane stops
                    if response.status_code != 201:
                        with self.lock:
                            self.refused[f"HTTP {response.status_code}"] += 1
                        continue
                    prediction_id = str(response.json()["id"])
                    with self.lock:
                        self.accepted.append(prediction_id)
                    if cancel:
                        with contextlib.suppress(httpx.HTTPError):
                            client.post(f"/v1/predictions/{prediction_id}/cancel")

        with ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(lane) for _ in range(threads)]:
                future.result()


def settle_all(server: Server, key: str, ids: list[str], timeout: float = 60) -> dict[str, dict[str, Any]]:
    """The terminal state of every prediction in ``ids``; fails the test if one is not terminal in time."""
    finals: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    with server.client(key) as client:
        for prediction_id in ids:
            while True:
                body = client.get(f"/v1/predictions/{prediction_id}").json()
                if body["status"] in TERMINAL:
                    finals[prediction_id] = body
                    break
                assert time.monotonic() < deadline, f"{prediction_id} is still {body['status']}"
                time.sleep(0.05)
    return finals


def workers_of(server: Server, model_ref: str) -> list[psutil.Process]:
    assert server.proc is not None
    return [
        child
        for child in psutil.Process(server.proc.pid).children()
        if model_ref in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE
    ]


def wait_processing(client: httpx.Client, ids: list[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while any(client.get(f"/v1/predictions/{i}").json()["status"] != "processing" for i in ids):
        assert time.monotonic() < deadline, "the long predictions never all ran at once"
        time.sleep(0.02)


# -- kill -9 of a worker -------------------------------------------------------------------------------------


def test_kill_9_of_a_worker_mid_load_loses_nothing_and_charges_no_failure(make_server: Any) -> None:
    server = make_server(CONFIG)
    key = prepaid_account(server, "worker-kill", credits=10_000)
    sleep_ref = "predictd.models.sleep:Sleep"
    with server.client(key) as client:
        # Both sleep workers hold a 2 s prediction, so the worker killed below is certainly mid-prediction.
        long = [
            str(client.post("/v1/predictions", json={"model": "sleep", "input": {"ms": 2000}}).json()["id"])
            for _ in range(2)
        ]
        wait_processing(client, long)
    before = workers_of(server, sleep_ref)
    assert len(before) == 2
    load = Load(server, key)
    loader = threading.Thread(target=load.run, args=(range(200), 8))
    loader.start()
    victim = before[0]
    os.kill(victim.pid, signal.SIGKILL)  # a worker process our server started
    loader.join(timeout=90)
    assert not loader.is_alive()

    ids = long + load.accepted
    finals = settle_all(server, key, ids)
    replacement = workers_of(server, sleep_ref)
    assert len(replacement) == 2
    assert victim.pid not in {w.pid for w in replacement}
    assert [finals[i]["status"] for i in long] == ["succeeded", "succeeded"]
    # The killed worker's prediction was run again, on its replacement.
    assert sorted(attempts(database_of(server), long)) == [1, 2]
    assert "worker died during a prediction" in server.log()
    result = audit(database_of(server), "worker-kill")
    print(f"\nworker kill -9 (pid {victim.pid}): accepted={len(ids)} refused={dict(load.refused)}")
    print(f"ledger: {result.line()}")
    assert not load.refused
    assert sorted(all_prediction_ids(database_of(server))) == sorted(ids)
    assert result.statuses["succeeded"] > 0
    assert result.statuses["failed"] > 0
    assert result.statuses["cancelled"] > 0
    assert result.balanced, result
    assert integrity(database_of(server)) == "ok"


def test_kill_9_of_a_worker_holding_predictions_sent_ahead_runs_them_all_again(make_server: Any) -> None:
    """The killed worker held one prediction running and two sent ahead behind it (a backlog): all three
    are queued again and succeed on its replacement, each having used one attempt on the dead worker."""
    server = make_server(ONE_SLEEP_SLOT_SENDING_AHEAD)
    key = server.key()
    with server.client(key) as client:

        def submit(ms: int) -> str:
            body = client.post("/v1/predictions", json={"model": "sleep", "input": {"ms": ms}}).json()
            return str(body["id"])

        first = submit(300)
        held = [submit(3000), submit(50), submit(50)]  # queued while ``first`` runs: sent ahead after it
        settle_all(server, key, [first])
        wait_processing(client, held)  # all three claimed by the one slot: one running, two sent ahead
        [victim] = workers_of(server, "predictd.models.sleep:Sleep")
        os.kill(victim.pid, signal.SIGKILL)  # a worker process our server started
        finals = settle_all(server, key, held)
    assert [finals[i]["status"] for i in held] == ["succeeded"] * 3
    assert [finals[i]["output"] for i in held] == ["slept 3000 ms", "slept 50 ms", "slept 50 ms"]
    assert attempts(database_of(server), held) == [2, 2, 2]
    [replacement] = workers_of(server, "predictd.models.sleep:Sleep")
    assert replacement.pid != victim.pid


# -- kill -9 of the server -----------------------------------------------------------------------------------


def test_kill_9_of_the_server_mid_load_then_restart_loses_nothing(make_server: Any) -> None:
    first = make_server(CONFIG)
    key = prepaid_account(first, "server-kill", credits=10_000)
    load = Load(first, key)
    loader = threading.Thread(target=load.run, args=(range(100_000), 8))
    loader.start()
    deadline = time.monotonic() + 60
    while len(load.accepted) < 150:
        assert time.monotonic() < deadline, load.refused
        assert loader.is_alive(), load.refused
        time.sleep(0.01)
    with first.client(key) as client:
        in_flight = client.get("/v1/account").json()["in_flight"]
    first.kill_all()  # SIGKILL the server and its workers, mid-load
    loader.join(timeout=60)
    assert not loader.is_alive()
    accepted_before_kill = len(load.accepted)
    assert set(load.refused) <= {"ConnectError", "ReadError", "RemoteProtocolError"}, load.refused

    second = Server(workdir=first.workdir, config=first.config, port=first.port).start()
    try:
        # Every prediction the store holds: the accepted ones and any whose answer the kill cut off.
        stored = all_prediction_ids(database_of(second))
        assert set(load.accepted) <= set(stored)
        finals = settle_all(second, key, stored)
        result = audit(database_of(second), "server-kill")
        print(
            f"\nserver kill -9 with {in_flight} in flight: accepted={accepted_before_kill} "
            f"stored={len(stored)} refused={dict(load.refused)}"
        )
        recovered = [line for line in second.log().splitlines() if "recovered unfinished" in line]
        print(f"restart: {recovered[-1].split(']', 1)[-1].strip() if recovered else 'nothing to recover'}")
        print(f"ledger: {result.line()}")
        assert len(finals) == len(stored)
        assert len(stored) - accepted_before_kill <= 8  # at most one cut-off answer per client thread
        assert result.balanced, result
        # The restarted server takes new work and bills it.
        with second.client(key) as client:
            body = client.post(
                "/v1/predictions", json={"model": "echo", "input": {"text": "after"}, "await": True}
            ).json()
            assert body["status"] == "succeeded"
            assert body["credits_used"] == 1
        assert audit(database_of(second), "server-kill").balanced
        assert integrity(database_of(second)) == "ok"
    finally:
        second.stop()
        second.kill_all()


# -- the database refusing writes for a while ----------------------------------------------------------------


def test_an_outcome_the_store_refuses_is_written_once_it_can_be_and_the_worker_slot_lives_on(
    make_server: Any,
) -> None:
    """Under load SQLite's write lock can be busy longer than busy_timeout; a worker slot whose write of an
    outcome failed used to end for good, leaving its prediction processing and its model unserved."""
    server = make_server("sqlite_busy_timeout_ms = 100\n" + CONFIG)
    key = prepaid_account(server, "locked", credits=100)
    with server.client(key) as client:
        running = [
            str(client.post("/v1/predictions", json={"model": "sleep", "input": {"ms": 500}}).json()["id"])
            for _ in range(2)
        ]
        wait_processing(client, running)
        holder = sqlite3.connect(database_of(server), isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # as a long backup or a burst of writers would
            time.sleep(2.0)  # both predictions end meanwhile; their outcomes cannot be written
            assert [client.get(f"/v1/predictions/{i}").json()["status"] for i in running] == [
                "processing"
            ] * 2
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        finals = settle_all(server, key, running, timeout=20)
        assert [finals[i]["status"] for i in running] == ["succeeded", "succeeded"]
        # Both sleep slots still take work.
        later = [
            str(client.post("/v1/predictions", json={"model": "sleep", "input": {"ms": 300}}).json()["id"])
            for _ in range(4)
        ]
        assert {p["status"] for p in settle_all(server, key, later, timeout=20).values()} == {"succeeded"}
    retries = server.log().count("store write failed; retrying")
    print(f"\nlocked database: {retries} outcome writes refused then retried; all written once unlocked")
    assert retries >= 2
    assert audit(database_of(server), "locked").balanced


# -- the data folder's filesystem: full, then read-only ------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Any:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem refuses with ENOSPC; return it."""
    filler = directory / "filler.bin"
    chunk = os.urandom(64 * 1024)

    def write_forever() -> None:
        with filler.open("wb", buffering=0) as out:
            while True:
                out.write(chunk)

    with pytest.raises(OSError, match="No space left on device"):
        write_forever()
    return filler


def stop(server: Server) -> None:
    server.stop()
    server.kill_all()


def test_disk_full_answers_internal_error_and_recovers_without_corruption(tmp_path: Path) -> None:
    workdir = tmp_path / "disk-full"
    with tmpfs(workdir / "data", "24m"):
        server = Server(workdir=workdir, config=CONFIG).start()
        try:
            key = prepaid_account(server, "disk-full", credits=10_000)
            accepted: list[str] = []
            refused: list[httpx.Response] = []
            with server.client(key) as client:
                ok = client.post(
                    "/v1/predictions", json={"model": "echo", "input": {"text": "x"}, "await": True}
                )
                assert ok.json()["status"] == "succeeded"
                accepted.append(str(ok.json()["id"]))
                # Two predictions run, two wait in the queue, while the disk fills: their workers finish
                # and the server must record the outcomes on a full disk.
                for _ in range(4):
                    response = client.post("/v1/predictions", json={"model": "sleep", "input": {"ms": 1500}})
                    accepted.append(str(response.json()["id"]))
                wait_processing(client, accepted[1:3])
                filler = fill(server.data_dir)
                big = os.urandom(48 * 1024).hex()  # ~96 KB of input per prediction
                for _ in range(300):
                    response = client.post("/v1/predictions", json={"model": "echo", "input": {"text": big}})
                    if response.status_code == 201:
                        accepted.append(str(response.json()["id"]))
                    else:
                        refused.append(response)
                        if len(refused) >= 5:
                            break
                assert refused, "a full disk never refused a write"
                for response in refused:
                    body = assert_error(response, ErrorId.INTERNAL_ERROR, "quote request id")
                    assert "database or disk is full" not in response.text
                    assert body["request_id"] in server.log()
                # Reads keep working on a full disk.
                assert client.get(f"/v1/predictions/{accepted[0]}").json()["status"] == "succeeded"
                time.sleep(2.0)  # the running predictions end while the disk is still full

                filler.unlink()  # the operator frees space: no restart
                after = client.post(
                    "/v1/predictions", json={"model": "echo", "input": {"text": "after"}, "await": True}
                ).json()
                assert after["status"] == "succeeded"
                accepted.append(str(after["id"]))
            finals = settle_all(server, key, accepted)
            result = audit(database_of(server), "disk-full")
            print(
                f"\ndisk full: accepted={len(accepted)} refused_with_INTERNAL_ERROR={len(refused)} "
                f"final={dict(Counter(p['status'] for p in finals.values()))}"
            )
            print(f"ledger: {result.line()}")
            assert sorted(all_prediction_ids(database_of(server))) == sorted(accepted)
            assert result.balanced, result
            # The outcomes that came back while the disk was full were written once it had room again.
            assert "store write failed; retrying" in server.log()
            assert "Exception in ASGI application" not in server.log()  # each error logged once, with its id
            assert integrity(database_of(server)) == "ok"
        finally:
            stop(server)
        assert integrity(database_of(server)) == "ok"


def test_read_only_data_folder_refuses_to_start_and_loses_nothing(tmp_path: Path) -> None:
    workdir = tmp_path / "read-only"
    with tmpfs(workdir / "data", "16m") as data:
        first = Server(workdir=workdir, config=CONFIG).start()
        try:
            key = prepaid_account(first, "read-only", credits=100)
            with first.client(key) as client:
                done = client.post(
                    "/v1/predictions", json={"model": "echo", "input": {"text": "kept"}, "await": True}
                ).json()
        finally:
            stop(first)
        subprocess.run(["mount", "-o", "remount,ro", str(data)], check=True)
        try:
            with pytest.raises(RuntimeError, match="Read-only file system"):
                Server(workdir=workdir, config=CONFIG, port=first.port).start(timeout=30)
            assert integrity(database_of(first), read_only_media=True) == "ok"
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(data)], check=True)
        second = Server(workdir=workdir, config=CONFIG, port=first.port).start()
        try:
            with second.client(key) as client:
                assert client.get(f"/v1/predictions/{done['id']}").json()["output"] == "kept"
                again = client.post(
                    "/v1/predictions", json={"model": "echo", "input": {"text": "again"}, "await": True}
                ).json()
                assert again["status"] == "succeeded"
            assert audit(database_of(second), "read-only").balanced
        finally:
            stop(second)
        assert integrity(database_of(second)) == "ok"
