"""A server restart keeps every stored prediction; what was queued or running is resumed or failed,
never left pending forever.

Embedded mode: the server and its workers restart together. The scaled-out counterparts (a worker, an API
process or Redis lost mid-load) are in test_scaled_out.py."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import Server
from .test_native_api import TERMINAL, submit, wait_for

pytestmark = pytest.mark.backends("embedded")


def statuses(server: Server) -> dict[str, str]:
    with sqlite3.connect(server.data_dir / "predictd.sqlite3") as db:
        return dict(db.execute("SELECT id, status FROM predictions").fetchall())


def restart(old: Server) -> Server:
    return Server(workdir=old.workdir, config=old.config, env=old.env, port=old.port).start()


def load_in_flight(client: httpx.Client) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    done = submit(client, "echo", {"text": "kept"}, wait=True)
    running = [submit(client, "sleep", {"ms": 3000}) for _ in range(2)]
    queued = [submit(client, "sleep", {"ms": 50}) for _ in range(3)]
    for prediction in running:
        wait_for(client, prediction["id"], {"processing"})
    return done, running + queued


def test_graceful_restart_resumes_queued_and_running_predictions(make_server: Any) -> None:
    first = make_server("shutdown_grace_s = 0\n")
    key = first.key()
    with first.client(key) as client:
        done, in_flight = load_in_flight(client)
    first.stop()
    before = statuses(first)
    assert before[done["id"]] == "succeeded"
    assert sorted(before[p["id"]] for p in in_flight) == ["processing"] * 2 + ["queued"] * 3

    second = restart(first)
    try:
        with second.client(key) as client:
            for prediction in in_flight:
                assert wait_for(client, prediction["id"], TERMINAL)["status"] == "succeeded"
            assert client.get(f"/v1/predictions/{done['id']}").json()["output"] == "kept"
            assert client.get("/v1/predictions").json()["pagination"]["total"] == 6
    finally:
        second.stop()


def test_restart_after_kill_9_loses_nothing(make_server: Any) -> None:
    first = make_server()
    key = first.key()
    with first.client(key) as client:
        done, in_flight = load_in_flight(client)
    first.kill_all()
    second = restart(first)
    try:
        with second.client(key) as client:
            finals = [wait_for(client, p["id"], TERMINAL)["status"] for p in in_flight]
            assert finals == ["succeeded"] * len(in_flight)
            assert client.get(f"/v1/predictions/{done['id']}").json()["status"] == "succeeded"
    finally:
        second.stop()


def test_a_prediction_out_of_attempts_fails_as_unavailable_after_restart(make_server: Any) -> None:
    first = make_server("max_attempts = 1\nshutdown_grace_s = 0\n")
    key = first.key()
    with first.client(key) as client:
        running = submit(client, "sleep", {"ms": 5000})
        wait_for(client, running["id"], {"processing"})
    first.kill_all()
    second = restart(first)
    try:
        with second.client(key) as client:
            body = client.get(f"/v1/predictions/{running['id']}").json()
            assert body["status"] == "failed"
            assert body["error_name"] == "UnavailableError"
            assert "server stopped while it ran" in body["error"]
            assert (body["input"], body["data_removed"]) == ({"ms": 5000}, False)  # kept, to run again
    finally:
        second.stop()


def test_a_prediction_of_a_model_no_longer_served_fails_after_restart(
    make_server: Any, tmp_path: Path
) -> None:
    first = make_server()
    key = first.key()
    with first.client(key) as client:
        blockers = [submit(client, "sleep", {"ms": 3000}) for _ in range(2)]
        orphan = submit(client, "sleep", {"ms": 10})
        for blocker in blockers:
            wait_for(client, blocker["id"], {"processing"})
    first.kill_all()
    second = Server(
        workdir=first.workdir,
        config='builtin_models = false\n[[models]]\nslug = "echo"\nref = "predictd.models.echo:Echo"\n',
        port=first.port,
    ).start()
    try:
        with second.client(key) as client:
            body = client.get(f"/v1/predictions/{orphan['id']}").json()
            assert body["status"] == "failed"
            assert "no longer served" in body["error"]
    finally:
        second.stop()
