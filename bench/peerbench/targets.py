"""The servers the peer benchmark measures: how each is started on 127.0.0.1, found ready, and stopped.

Every server runs in its own process session (``start_new_session``), so stopping one SIGTERMs it, then
SIGKILLs its process group: only processes this harness started are ever signalled. The reference apps are
copied from ``templates/`` into a temporary folder at run time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from _server import (
    HOST,
    MIB,
    clean_env,
    free_port,
    mint_key,
    pss_mib,
    rss_mib,
    start_process,
    start_server,
    stop_server,
    tail,
    wait_healthy,
    wait_http,
)

from peerbench import venvs

TEMPLATES = Path(__file__).resolve().parent / "templates"
REDIS_URL = "redis://127.0.0.1:6379/14"  # a database of its own, flushed before and after (only that one)
ROUNDTRIP_TIMEOUT_S = 60.0
NOOP_BODY = {"model": "echo", "input": {"text": "x"}}
PREDICTD_POLL = "/v1/predictions/{id}"
# The settings predictd's own `serve` gives uvicorn (predictd/cli/main.py), for the reference ASGI servers:
# the floor, in predictd's venv, runs predictd's own HTTP protocol too (a response's head and body in one
# write); the FastAPI + Celery stack, in a venv of its own, runs uvicorn's httptools protocol it is built on.
UVICORN_FLAGS = ("--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning")
FLOOR_HTTP = "predictd.api.connection.protocol:CoalescingHttpToolsProtocol"


@dataclass
class Server:
    """A started server: its process roots, how to talk to it, what it measured at rest."""

    name: str
    label: str
    port: int
    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]
    headers: dict[str, str] = field(default_factory=dict)
    predict_path: str = "/v1/predictions"
    poll_path: str = PREDICTD_POLL
    status_id: str | None = None  # a completed prediction, for the status GET run
    rss_rest_mib: float | None = None
    rss_api_rest_mib: float | None = None  # the first process alone (the HTTP server)
    pss_rest_mib: float | None = None
    rss_peak_mib: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def measure_rest(self) -> None:
        self.rss_rest_mib = round(rss_mib(*self.pids), 1)
        with contextlib.suppress(psutil.NoSuchProcess):
            self.rss_api_rest_mib = round(psutil.Process(self.pids[0]).memory_info().rss / MIB, 1)
        pss = pss_mib(*self.pids)
        self.pss_rest_mib = None if pss is None else round(pss, 1)

    def stop(self) -> None:
        for proc, log in zip(self.procs, self.logs, strict=True):
            notes = stop_server(proc, timeout_s=15.0)
            if notes:
                self.notes += [*notes, f"log tail: {tail(log, 5)}"]


def _base_env() -> dict[str, str]:
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("PREDICTD_", "COG_"))}


def roundtrip(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    """One prediction through the server's submit-then-poll API (also proves a worker is up); its final
    body. RuntimeError when it does not succeed within ROUNDTRIP_TIMEOUT_S."""
    deadline = time.monotonic() + ROUNDTRIP_TIMEOUT_S
    base = f"http://{HOST}:{server.port}"
    with httpx.Client(base_url=base, headers=server.headers, timeout=10.0) as client:
        doc: dict[str, Any] = client.post(server.predict_path, json=body).json()
        while doc.get("status") not in ("succeeded", "failed", "canceled", "cancelled"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"a first prediction did not end within {ROUNDTRIP_TIMEOUT_S:g} s: {doc}")
            time.sleep(0.05)
            if "id" not in doc:
                raise RuntimeError(f"submit answered {doc}")
            doc = client.get(server.poll_path.format(id=doc["id"])).json()
    if doc["status"] != "succeeded":
        raise RuntimeError(f"a first prediction ended {doc['status']}: {doc}")
    return doc


# -- predictd ----------------------------------------------------------------------------------------------


def predictd(tmp: Path, name: str, label: str, config: str, models: tuple[str, ...]) -> Server:
    """``python -m predictd serve`` in embedded mode with ``config`` (TOML) and a fresh data folder."""
    folder = tmp / name
    folder.mkdir()
    port = free_port()
    config_path = folder / "predictd.toml"
    config_path.write_text(config)
    env = {**clean_env(folder / "data", port), "PREDICTD_CONFIG": str(config_path)}
    key = mint_key(folder / "data", env)
    log = folder / "server.log"
    proc = start_server(env, log)
    server = Server(name, label, port, [proc], [log], headers={"x-api-key": key})
    try:
        wait_healthy(proc, f"http://{HOST}:{port}", log, models)
        server.status_id = str(roundtrip(server, _first_body(models[0]))["id"])
    except BaseException:
        server.stop()
        raise
    return server


def _first_body(model: str) -> dict[str, Any]:
    return NOOP_BODY if model == "echo" else {"model": model, "input": {"ms": 1}}


PREDICTD_NOOP = 'builtin_models = ["echo", "sleep"]\n'  # the small built-ins, each at its default workers
PREDICTD_SLEEP8 = """builtin_models = ["sleep"]

[[models]]
slug = "sleep"
ref = "predictd.models.sleep:Sleep"
workers = 8
"""


# -- the FastAPI + Celery + Redis stack --------------------------------------------------------------------


def flush_redis() -> None:
    import redis  # predictd's own dependency

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        client.flushdb()
    finally:
        client.close()


def celery(tmp: Path, name: str, label: str, worker_concurrency: int, queue: str, model: str) -> Server:
    """uvicorn serving the FastAPI app (same settings as predictd) and a Celery worker (prefork pool with
    ``worker_concurrency`` processes) on its own queue, both on Redis database 14."""
    python = venvs.ensure(venvs.CELERY, tmp / "pip-celery.log")
    folder = tmp / name
    folder.mkdir()
    shutil.copy(TEMPLATES / "celery_stack.py", folder / "celery_stack.py")
    port = free_port()
    env = {**_base_env(), "BENCH_REDIS_URL": REDIS_URL, "BENCH_QUEUE": queue}
    api_log, worker_log = folder / "api.log", folder / "worker.log"
    bin_dir = python.parent
    api_argv = [str(python), "-m", "uvicorn", "celery_stack:api", "--host", HOST, "--port", str(port)]
    worker_argv = [str(bin_dir / "celery"), "-A", "celery_stack", "worker", "--loglevel", "WARNING"]
    worker_argv += ["--pool", "prefork", "--concurrency", str(worker_concurrency), "--queues", queue]
    worker_argv += ["--hostname", f"{name}@%h"]
    procs = [start_process([*api_argv, *UVICORN_FLAGS], env, api_log, cwd=folder)]
    procs.append(start_process(worker_argv, env, worker_log, cwd=folder))
    server = Server(name, label, port, procs, [api_log, worker_log], predict_path="/predictions")
    server.poll_path = "/predictions/{id}"
    try:
        wait_http(procs[0], f"http://{HOST}:{port}/health", api_log)
        server.status_id = str(roundtrip(server, _first_body(model))["id"])
    except BaseException:
        server.stop()
        raise
    return server


# -- Cog ---------------------------------------------------------------------------------------------------


def _cog_ready(response: httpx.Response) -> bool:
    status = response.json().get("status")
    if status in ("SETUP_FAILED", "DEFUNCT"):
        raise RuntimeError(f"Cog health-check: {response.text[:300]}")
    return bool(status == "READY")


def cog(tmp: Path, name: str, label: str, ref: venvs.Reference) -> Server:
    """Cog's HTTP server (``python -m cog.server.http``) for a no-op predictor in a folder with a cog.yaml.
    cog 0.16 runs its Python (FastAPI / uvicorn) server; cog 0.23 with coglet runs the Rust server, which
    starts its worker as ``python`` from PATH and reads the predictor from COG_PREDICT_TYPE_STUB."""
    python = venvs.ensure(ref, tmp / f"pip-{ref.name}.log")
    folder = tmp / name
    folder.mkdir()
    rust = ref is venvs.COG_RUST
    template, entry = ("cog_predict_023.py", "Runner") if rust else ("cog_predict_016.py", "Predictor")
    shutil.copy(TEMPLATES / template, folder / "predict.py")
    (folder / "cog.yaml").write_text(f'predict: "predict.py:{entry}"\n')
    port = free_port()
    env = {**_base_env(), "PORT": str(port), "COG_LOG_LEVEL": "warning"}
    if rust:
        env.update(PATH=f"{python.parent}{os.pathsep}{env.get('PATH', '')}")
        env.update(COG_PREDICT_TYPE_STUB=f"predict.py:{entry}")
    log = folder / "server.log"
    proc = start_process([str(python), "-m", "cog.server.http", "--host", HOST], env, log, cwd=folder)
    server = Server(name, label, port, [proc], [log], predict_path="/predictions", poll_path="")
    try:
        wait_http(proc, f"http://{HOST}:{port}/health-check", log, _cog_ready)
        answer = httpx.post(f"http://{HOST}:{port}/predictions", json={"input": {"text": "x"}}, timeout=30)
        if answer.status_code != 200 or answer.json().get("output") != "x":
            raise RuntimeError(f"a first prediction answered {answer.status_code} {answer.text[:300]}")
    except BaseException:
        server.stop()
        raise
    return server


# -- the floor ---------------------------------------------------------------------------------------------


def floor(tmp: Path, name: str, label: str) -> Server:
    """A raw ASGI app answering a small JSON, under uvicorn with predictd's settings, in predictd's venv."""
    folder = tmp / name
    folder.mkdir()
    shutil.copy(TEMPLATES / "floor_app.py", folder / "floor_app.py")
    port = free_port()
    log = folder / "server.log"
    argv = [sys.executable, "-m", "uvicorn", "floor_app:app", "--host", HOST, "--port", str(port)]
    flags = [FLOOR_HTTP if flag == "httptools" else flag for flag in UVICORN_FLAGS]
    proc = start_process([*argv, *flags, "--lifespan", "on"], _base_env(), log, cwd=folder)
    server = Server(name, label, port, [proc], [log], predict_path="", poll_path="")
    try:
        wait_http(proc, f"http://{HOST}:{port}/", log)
    except BaseException:
        server.stop()
        raise
    return server
