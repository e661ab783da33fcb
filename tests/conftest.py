"""Shared test harness: real predictd servers in subprocesses on 127.0.0.1, keys minted in their stores.

Every test that talks to a server runs against both backends (the ``backend`` parameter):
- ``embedded``: one ``predictd serve`` (SQLite, in-process queue, worker subprocesses);
- ``scaled``: ``predictd serve --redis`` plus a ``predictd worker``, on a fresh PostgreSQL database and a
  Redis key prefix of their own.
A test that only makes sense on one of them says so with ``@pytest.mark.backends("embedded")``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import httpx
import psutil
import pytest

from predictd.config.settings import BUILTIN_MODELS
from predictd.core import keys
from predictd.store import Database, open_database

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
FIXTURE_MODELS = ROOT / "tests" / "fixtures" / "models.py"
# A model file that does not exist, named by its absolute path: its load error quotes this server's path.
ABSENT_MODEL_FILE = ROOT / "tests" / "fixtures" / "no-such-folder" / "absent_model.py"
BACKENDS = ("embedded", "scaled")
REDIS_URL = os.environ.get("PREDICTD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_BASE = "postgresql+asyncpg://postgres@127.0.0.1:5432"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "backends(*names): run only on these backends (embedded, scaled)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("backends")
        wanted = marker.args if marker else BACKENDS
        metafunc.parametrize("backend", wanted, scope="module")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test parametrised over databases runs its SQLite case on the embedded backend only: a scaled-out
    deployment keeps its state in PostgreSQL."""
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        scaled_sqlite = params.get("backend") == "scaled" and params.get("database") == "sqlite"
        (drop if scaled_sqlite else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    # Stable: each module keeps its own order (and its module-scoped deployments stay shared).
    items.sort(key=_slowest_first)


# The slowest modules, slowest first (seconds in one three-worker run on the 2-core machine: the order
# counts, not the figures): `bin/dev test` hands whole modules to three xdist workers in this order, and a
# long module taken last would leave one worker running it alone. Only an order: a module not listed runs
# after these, in the usual order.
SLOWEST_MODULES = (
    "integration/test_admin_cli.py",  # 106 s: a CLI process per step
    "integration/test_billing_and_policy.py",  # 92
    "integration/test_fashn_api.py",  # 90
    "integration/test_scaled_out.py",  # 87
    "integration/test_client_cli.py",  # 70
    "e2e/test_fashn_sdk.py",  # 69
    "integration/test_webhooks.py",  # 68
    "integration/test_faults.py",  # 63
    "integration/test_native_api.py",  # 62
    "integration/test_models.py",  # 61
    "e2e/test_console.py",  # 59
    "integration/test_bad_input.py",  # 52
    "integration/test_sdk.py",  # 44
    "integration/test_fuzz.py",  # 41
    "integration/test_recovery.py",  # 39
    "e2e/test_skytells_sdk.py",  # 37
)
_RANK = {module: rank for rank, module in enumerate(SLOWEST_MODULES)}


def _slowest_first(item: pytest.Item) -> int:
    module = item.path.relative_to(ROOT / "tests").as_posix()
    return _RANK.get(module, len(_RANK))


async def _pg_admin(statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(PG_ADMIN)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def create_pg_database() -> str:
    """A fresh PostgreSQL database (SQLAlchemy URL); dropped by drop_pg_database."""
    name = f"predictd_test_{uuid.uuid4().hex[:12]}"
    run_sync(_pg_admin(f'CREATE DATABASE "{name}"'))
    return f"{PG_BASE}/{name}"


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    run_sync(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _forget_redis_prefix(url: str, prefix: str) -> None:
    from redis.asyncio import Redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    redis = Redis.from_url(url)
    try:
        batch = [key async for key in redis.scan_iter(match=f"{prefix}:*", count=1000)]
        if batch:
            await redis.delete(*batch)
    except RedisConnectionError:
        pass  # a test's own Redis, stopped already: nothing left to forget
    finally:
        await redis.aclose()


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync or async test code alike (a fresh loop on a helper thread)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def revoke_key_of(db: Database, secret: str) -> None:
    """Revoke the key whose secret is given, as `predictd keys revoke` does by its id."""
    found = await db.accounts.find_key(keys.digest(secret))
    assert found is not None
    assert await db.accounts.revoke_key(found[0].id)


async def _mint_key(db: Database, account: str) -> str:
    owner = await db.accounts.get_account_by_name(account) or await db.accounts.create_account(account)
    new = keys.generate_key()
    await db.accounts.create_key(owner.id, new.digest, new.prefix, "test")
    return new.secret


def sleep_slots(config: str) -> str:
    """The built-in ``sleep`` model with two workers, as TOML to append to ``config``, when the config serves
    the built-in and does not configure ``sleep`` itself. Tests keep one sleep prediction running while
    another runs or queues (cancelling, interrupting, recovering), so they ask for two slots explicitly
    rather than relying on the built-in default (one worker)."""
    settings = tomllib.loads(config)
    builtin = settings.get("builtin_models", True)
    serves_sleep = builtin is True or (isinstance(builtin, list) and "sleep" in builtin)
    if not serves_sleep or any(m.get("slug") == "sleep" for m in settings.get("models", [])):
        return ""
    entry = {**next(m for m in BUILTIN_MODELS if m["slug"] == "sleep"), "workers": 2}
    return "\n[[models]]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in entry.items())


def exited_unreaped(proc: subprocess.Popen[bytes], timeout: float = 0.0) -> bool:
    """Whether the process has ended (waiting up to ``timeout``), found without reaping it: until it is
    reaped, its pid, which is also its session's and group's id, cannot be given to another process."""
    if proc.returncode is not None:
        return True
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
                return True
        except ChildProcessError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def end_session(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL what is left of a process's session (it was started in one of its own), then reap it. The
    group is signalled only while the process is not yet reaped: once it is, its number may be handed to
    another test's server, whose whole session the signal would then kill."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@dataclass
class Server:
    """A predictd deployment started the way an operator starts it: ``predictd --config F serve``, and for
    the scaled backend also ``predictd --config F worker`` (PostgreSQL + Redis)."""

    workdir: Path
    config: str = ""
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0  # 0: a free one, chosen here (and chosen again if another process takes it first)
    proc: subprocess.Popen[bytes] | None = None
    backend: str = "embedded"
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    metrics_ports: list[int] = field(default_factory=list)
    owned_database: str | None = None
    redis_prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:12]}")
    with_worker: bool = True  # scaled: start a `predictd worker` with the API process
    companions: list[Server] = field(default_factory=list)  # more API processes, destroyed with this one
    owns_prefix: bool = True  # a companion shares its deployment's Redis keys: the deployment drops them
    serve_args: tuple[str, ...] = ()  # flags after `serve`, e.g. ("--demo",)
    port_chosen_here: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.port_chosen_here = self.port == 0
        if self.port_chosen_here:
            self.port = free_port()
        if self.scaled:
            if "PREDICTD_DATABASE_URL" not in self.env:
                self.owned_database = create_pg_database()
                self.env["PREDICTD_DATABASE_URL"] = self.owned_database
            self.env.setdefault("PREDICTD_REDIS_URL", REDIS_URL)
            self.env.setdefault("PREDICTD_REDIS_PREFIX", self.redis_prefix)
            # Tests kill workers on purpose: hand their work over quickly.
            self.env.setdefault("PREDICTD_WORKER_LEASE_S", "3")
            self.env.setdefault("PREDICTD_SWEEP_INTERVAL_S", "1")

    @property
    def scaled(self) -> bool:
        return self.backend == "scaled"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        given = self.env.get("PREDICTD_DATA_DIR")
        return Path(given) if given else self.workdir / "data"

    @property
    def database_url(self) -> str:
        return (
            self.env.get("PREDICTD_DATABASE_URL")
            or f"sqlite+aiosqlite:///{self.data_dir / 'predictd.sqlite3'}"
        )

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    @property
    def worker_log_path(self) -> Path:
        return self.workdir / "worker.log"

    def _spawn(
        self, command: list[str], log_path: Path, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        config_path = self.workdir / "predictd.toml"
        # Tests load only the light built-ins unless they ask for others: the image models take seconds.
        light = "" if "builtin_models" in self.config else 'builtin_models = ["echo", "sleep"]\n'
        config_path.write_text(light + self.config + sleep_slots(light + self.config))
        env = {
            **os.environ,
            "PREDICTD_DATA_DIR": str(self.data_dir),
            "PREDICTD_PORT": str(self.port),
            **self.env,
            **(extra_env or {}),
        }
        with log_path.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "predictd", "--config", str(config_path), *command],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start(self, timeout: float = 60.0) -> Server:
        """Start the deployment and wait until it answers. A port chosen here can be taken by another
        process (another test's client or server) before the server binds it: it then starts again on
        another one. A port the test gave (a restart on a killed server's port) is kept."""
        for _ in range(3):
            log_size = self.log_path.stat().st_size if self.log_path.exists() else 0
            try:
                return self._start(timeout)
            except RuntimeError:
                taken = b"address already in use" in self.log_path.read_bytes()[log_size:]
                if not (taken and self.port_chosen_here):
                    raise
            self.stop()
            self.workers, self.metrics_ports = [], []
            self.port = free_port()
        raise RuntimeError(f"predictd found every port it was given taken:\n{self.log()}")

    def _start(self, timeout: float) -> Server:
        self.proc = self._spawn(["serve", *self.serve_args], self.log_path)
        if self.scaled and self.with_worker:
            self.start_worker()
        deadline = time.monotonic() + timeout
        # One client for the whole wait: each httpx.get() would build a TLS context (~25 ms of CPU).
        with httpx.Client(timeout=1) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"predictd exited with {self.proc.returncode}:\n{self.log()}")
                for worker in self.workers:
                    if worker.poll() is not None:
                        raise RuntimeError(f"predictd worker exited with {worker.returncode}:\n{self.log()}")
                with contextlib.suppress(httpx.HTTPError):
                    health = client.get(f"{self.base_url}/health")
                    ready = not self.scaled or not self.with_worker or health.json().get("workers", 0) >= 1
                    if health.status_code == 200 and ready and self._holds_port():
                        return self
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"predictd did not become healthy in {timeout} s:\n{self.log()}")

    def _holds_port(self) -> bool:
        """Whether the answer came from this server: started again on the port of one that was killed,
        it may find the port taken meanwhile by another test's server, whose health check answers too (it
        then exits on the bind, which the loop above reports)."""
        assert self.proc is not None
        with contextlib.suppress(psutil.Error):
            listening = psutil.Process(self.proc.pid).net_connections(kind="tcp")
            return any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port for c in listening)
        return False

    def start_worker(self, models: str | None = None) -> subprocess.Popen[bytes]:
        """Start (another) `predictd worker` of this deployment: ``models`` (comma-separated), or all."""
        port = free_port()
        command = ["worker", *(["--models", models] if models else [])]
        worker = self._spawn(command, self.worker_log_path, {"PREDICTD_WORKER_METRICS_PORT": str(port)})
        self.workers.append(worker)
        self.metrics_ports.append(port)
        return worker

    def metrics_text(self) -> str:
        """Prometheus metrics of the whole deployment: the API process's, then each worker's."""
        texts = [httpx.get(f"{self.base_url}/metrics", timeout=5).text]
        for port, worker in zip(self.metrics_ports, self.workers, strict=True):
            if worker.poll() is None:
                texts.append(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
        return "\n".join(texts)

    def processes(self) -> list[subprocess.Popen[bytes]]:
        """The deployment's top processes: the server, and its workers when scaled out."""
        return [p for p in (self.proc, *self.workers) if p is not None]

    def log(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        if self.worker_log_path.exists():
            text += self.worker_log_path.read_text(errors="replace")
        return text

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Signal the top processes, give them ``timeout`` to end, then end what is left of their sessions."""
        for proc in self.processes():
            if not exited_unreaped(proc):
                os.kill(proc.pid, sig)  # not send_signal: it would reap an ended process (see end_session)
        for proc in self.processes():
            exited_unreaped(proc, timeout)
            end_session(proc)

    def kill_all(self) -> None:
        """SIGKILL the server and every worker it started (their whole sessions)."""
        for proc in self.processes():
            end_session(proc)

    def cli_args(self) -> list[str]:
        """The root options an operator gives `predictd` to reach this deployment's store."""
        args = ["--data-dir", str(self.data_dir)]
        if "PREDICTD_DATABASE_URL" in self.env:
            args += ["--database-url", self.env["PREDICTD_DATABASE_URL"]]
        return args

    def database_bytes(self) -> bytes:
        """Everything the database holds at rest: SQLite's files (with its WAL), or a pg_dump."""
        url = self.env.get("PREDICTD_DATABASE_URL")
        if url is None:
            files = sorted(p for p in self.data_dir.iterdir() if p.name.startswith("predictd.sqlite3"))
            return b"".join(p.read_bytes() for p in files)
        plain = url.replace("+asyncpg", "")
        return subprocess.run(["pg_dump", plain], capture_output=True, check=True, timeout=60).stdout

    @contextlib.contextmanager
    def _database_session(self) -> Iterator[Callable[[str], list[Any]]]:
        """A connection of its own to the server's database, outside the server: run SQL, get rows."""
        url = self.env.get("PREDICTD_DATABASE_URL")
        if url is None:
            db = sqlite3.connect(self.data_dir / "predictd.sqlite3", timeout=5, isolation_level=None)
            try:
                yield lambda sql: db.execute(sql).fetchall()
            finally:
                db.close()
            return
        import asyncpg

        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()

        def call(coro: Coroutine[Any, Any, T]) -> T:
            return asyncio.run_coroutine_threadsafe(coro, loop).result(30)

        connection = call(asyncpg.connect(url.replace("+asyncpg", "")))
        try:
            yield lambda sql: list(call(connection.fetch(sql)))
        finally:
            call(connection.close())
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

    @contextlib.contextmanager
    def database_write_lock(self) -> Iterator[None]:
        """Hold the database's write lock from another connection, as a stuck backup or migration would:
        the server's writes wait for its lock timeout and fail; reads go on."""
        with self._database_session() as sql:
            if "PREDICTD_DATABASE_URL" not in self.env:
                sql("BEGIN IMMEDIATE")
            else:
                sql("BEGIN")
                tables = sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                names = ", ".join(f'"{t[0]}"' for t in tables if t[0] != "alembic_version")
                sql(f"LOCK TABLE {names} IN EXCLUSIVE MODE")  # SELECTs still run
            yield
            sql("ROLLBACK")

    @contextlib.contextmanager
    def table_renamed_away(self, table: str) -> Iterator[None]:
        """Rename a table away from under the server and back, as an operator's botched migration would:
        what touches it meanwhile fails for real (an internal error, not contention)."""
        with self._database_session() as sql:
            sql(f"ALTER TABLE {table} RENAME TO {table}_away")
            try:
                yield
            finally:
                sql(f"ALTER TABLE {table}_away RENAME TO {table}")

    def successor(self, **changes: Any) -> Server:
        """The same deployment to start anew: same data folder, database, Redis prefix and port."""
        following = Server(
            workdir=self.workdir,
            config=self.config,
            env=dict(self.env),
            port=self.port,
            backend=self.backend,
            redis_prefix=self.redis_prefix,
            serve_args=self.serve_args,
            **changes,
        )
        following.owned_database, self.owned_database = self.owned_database, None
        return following

    def another_api(self) -> Server:
        """A second API process of this scaled-out deployment (same database, Redis and data folder)."""
        assert self.scaled
        workdir = self.workdir / f"api-{uuid.uuid4().hex[:6]}"
        workdir.mkdir()
        env = {**self.env, "PREDICTD_DATA_DIR": str(self.data_dir)}
        companion = Server(
            workdir=workdir,
            config=self.config,
            env=env,
            backend=self.backend,
            redis_prefix=self.redis_prefix,
            with_worker=False,
            owns_prefix=False,
        )
        self.companions.append(companion)  # stopped by destroy(), even if the test fails first
        return companion.start()

    def destroy(self) -> None:
        """Stop everything and drop what the scaled backend made (its database and Redis keys)."""
        for companion in self.companions:
            companion.destroy()
        self.stop()
        self.kill_all()
        if self.owned_database is not None:
            drop_pg_database(self.owned_database)
            self.owned_database = None
        if self.scaled and self.owns_prefix:
            run_sync(_forget_redis_prefix(self.env["PREDICTD_REDIS_URL"], self.redis_prefix))

    def key(self, account: str | None = None) -> str:
        name = account or f"acct-{uuid.uuid4().hex[:8]}"
        return self.with_database(lambda db: _mint_key(db, name))

    def with_database(self, action: Callable[[Database], Coroutine[Any, Any, T]]) -> T:
        """Run ``action`` on this deployment's database (SQLite or PostgreSQL), opened beside the server's own
        connections and closed afterwards: for reading what the API does not show, or minting keys."""

        async def run() -> T:
            db = await open_database(self.database_url)
            try:
                return await action(db)
            finally:
                await db.close()

        return run_sync(run())

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"x-api-key": key} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30, **kwargs)


# One sleep slot that sends up to two queued predictions ahead to its busy worker (runtime/supervisor.py).
ONE_SLEEP_SLOT_SENDING_AHEAD = """builtin_models = ["sleep"]
max_attempts = 2

[[models]]
slug = "sleep"
ref = "predictd.models.sleep:Sleep"
workers = 1
prefetch = 2
"""

FIXTURE_MODELS_TOML = f"""
[[models]]
slug = "broken"
ref = "{FIXTURE_MODELS}:Broken"

[[models]]
slug = "absent"
ref = "{ABSENT_MODEL_FILE}:Absent"

[[models]]
slug = "crash"
ref = "{FIXTURE_MODELS}:Crash"

[[models]]
slug = "raises"
ref = "{FIXTURE_MODELS}:Raises"

[[models]]
slug = "slow"
ref = "{FIXTURE_MODELS}:Slow"
timeout_s = 1.0

[[models]]
slug = "thumbnail"
ref = "{FIXTURE_MODELS}:Thumbnail"
price = 2.5

[[models]]
slug = "upstream"
ref = "{FIXTURE_MODELS}:Upstream"

[[models]]
slug = "caption"
ref = "{FIXTURE_MODELS}:Caption"

[media]
allowed_networks = ["127.0.0.1/32"]

[moderation]
blocked_terms = ["forbiddenword"]
"""


@pytest.fixture
def make_server(tmp_path: Path, backend: str) -> Iterator[Any]:
    """Start deployments with a given TOML config; all are stopped (and their workers ended) afterwards."""
    started: list[Server] = []

    def factory(
        config: str = "", env: dict[str, str] | None = None, name: str = "server", start: bool = True
    ) -> Server:
        workdir = tmp_path / f"{name}-{len(started)}"
        workdir.mkdir()
        server = Server(workdir=workdir, config=config, env=dict(env or {}), backend=backend)
        started.append(server)
        return server.start() if start else server

    yield factory
    for server in started:
        _report_exit(server)
        server.destroy()


def _report_exit(server: Server) -> None:
    """Print (shown when the test failed) how a server that ended before its teardown ended: a test
    killing it meant to, but otherwise this is why its requests were refused."""
    if server.proc is not None and exited_unreaped(server.proc):
        tail = "\n".join(server.log().splitlines()[-60:])
        print(f"\n{server.workdir.name}: predictd had exited before teardown; its log ends:\n{tail}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Server]:
    """One deployment per test module and backend, serving the built-in and the misbehaving fixture models."""
    workdir = tmp_path_factory.mktemp("server")
    srv = Server(workdir=workdir, config=FIXTURE_MODELS_TOML, backend=backend).start()
    yield srv
    _report_exit(srv)
    srv.destroy()


class _Origin(BaseHTTPRequestHandler):
    """Routes of a small origin server: images, errors, and an upstream service."""

    routes: ClassVar[dict[str, tuple[int, str, bytes]]] = {}

    def do_GET(self) -> None:
        status, content_type, body = self.routes.get(self.path, (404, "text/plain", b"not found"))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def png_bytes(size: tuple[int, int] = (64, 48), colour: tuple[int, int, int] = (30, 120, 200)) -> bytes:
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class Origin:
    base_url: str

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"


@pytest.fixture(scope="session")
def origin() -> Iterator[Origin]:
    """A real HTTP server on 127.0.0.1 standing in for the internet's image hosts and upstream APIs."""
    _Origin.routes = {
        "/photo.png": (200, "image/png", png_bytes()),
        "/page.html": (200, "text/html", b"<html>not an image</html>"),
        "/garbage.png": (200, "image/png", b"\x89PNG but not really"),
        "/upstream/down": (503, "application/json", b'{"error": "overloaded"}'),
        "/upstream/ok": (200, "text/plain", b"upstream says hi"),
    }
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield Origin(f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database on 127.0.0.1 for one test (SQLAlchemy URL), dropped afterwards."""
    url = create_pg_database()
    yield url
    drop_pg_database(url)
