"""Shared test harness: real predictd servers in subprocesses on 127.0.0.1, keys minted in their stores."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import httpx
import pytest

from predictd import keys
from predictd.store import open_store

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
FIXTURE_MODELS = ROOT / "tests" / "fixtures" / "models.py"


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync or async test code alike (a fresh loop on a helper thread)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _mint_key(database_url: str, account: str) -> str:
    store = await open_store(database_url)
    try:
        owner = await store.get_account_by_name(account) or await store.create_account(account)
        new = keys.generate_key()
        await store.create_key(owner.id, new.digest, new.prefix, "test")
        return new.secret
    finally:
        await store.close()


@dataclass
class Server:
    """A predictd process started the way an operator starts it: ``predictd --config F serve``."""

    workdir: Path
    config: str = ""
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def database_url(self) -> str:
        return (
            self.env.get("PREDICTD_DATABASE_URL")
            or f"sqlite+aiosqlite:///{self.data_dir / 'predictd.sqlite3'}"
        )

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def start(self, timeout: float = 60.0) -> Server:
        config_path = self.workdir / "predictd.toml"
        # Tests load only the light built-ins unless they ask for others: the image models take seconds.
        light = "" if "builtin_models" in self.config else 'builtin_models = ["echo", "sleep"]\n'
        config_path.write_text(light + self.config)
        env = {
            **os.environ,
            "PREDICTD_DATA_DIR": str(self.data_dir),
            "PREDICTD_PORT": str(self.port),
            **self.env,
        }
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "predictd", "--config", str(config_path), "serve"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"predictd exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/health", timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"predictd did not become healthy in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill_all(self) -> None:
        """SIGKILL the server and every worker it started (its whole session)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def key(self, account: str | None = None) -> str:
        return run_sync(_mint_key(self.database_url, account or f"acct-{uuid.uuid4().hex[:8]}"))

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"x-api-key": key} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30, **kwargs)


FIXTURE_MODELS_TOML = f"""
[[models]]
slug = "broken"
ref = "{FIXTURE_MODELS}:Broken"

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
def make_server(tmp_path: Path) -> Iterator[Any]:
    """Start servers with a given TOML config; all are stopped (and their workers ended) afterwards."""
    started: list[Server] = []

    def factory(config: str = "", env: dict[str, str] | None = None, name: str = "server") -> Server:
        workdir = tmp_path / f"{name}-{len(started)}"
        workdir.mkdir()
        server = Server(workdir=workdir, config=config, env=env or {})
        started.append(server)
        return server.start()

    yield factory
    for server in started:
        server.stop()
        server.kill_all()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per test module, serving the built-in and the misbehaving fixture models."""
    workdir = tmp_path_factory.mktemp("server")
    srv = Server(workdir=workdir, config=FIXTURE_MODELS_TOML).start()
    yield srv
    srv.stop()
    srv.kill_all()


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


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database on 127.0.0.1 for one test (SQLAlchemy URL), dropped afterwards."""
    import asyncpg

    name = f"predictd_test_{uuid.uuid4().hex[:12]}"

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(PG_ADMIN)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    run_sync(admin(f'CREATE DATABASE "{name}"'))
    yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    run_sync(admin(f'DROP DATABASE "{name}" WITH (FORCE)'))
