"""Starting, watching and stopping servers for the benchmarks in bench/ (not a benchmark itself).

A real ``python -m predictd serve`` in embedded mode: SQLite in a data folder the caller owns, a free port on
127.0.0.1, no inherited ``PREDICTD_*`` setting, its own process session (so that the whole tree can be
killed by process group, and only it). The same start / stop / measure helpers serve any other server a
benchmark starts (bench/peerbench starts its reference servers with them).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
HEALTH_TIMEOUT_S = 60.0
KEY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def clean_env(data_dir: Path, port: int) -> dict[str, str]:
    """The caller's environment without any PREDICTD_* setting (a stray config file or database URL
    would change what is measured), plus the benchmark's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDICTD_")}
    env.update(
        PREDICTD_DATA_DIR=str(data_dir),
        PREDICTD_HOST=HOST,
        PREDICTD_PORT=str(port),
        PREDICTD_LOG_LEVEL="warning",
    )
    return env


def mint_key(data_dir: Path, env: dict[str, str], account: str = "bench") -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "predictd",
            "--data-dir",
            str(data_dir),
            "--create-database",  # a fresh data folder: the server has not made its database yet
            "keys",
            "create",
            "--account",
            account,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=KEY_TIMEOUT_S,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"keys create failed ({done.returncode}): {done.stderr.strip()}")
    return lines[-1].strip()


def start_process(
    argv: Sequence[str], env: dict[str, str], log_path: Path, cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session (its own process group), output to ``log_path``."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def start_server(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    return start_process([sys.executable, "-m", "predictd", "serve"], env, log_path)


def wait_healthy(
    proc: subprocess.Popen[bytes], base_url: str, log_path: Path, models: Iterable[str] = ("echo",)
) -> None:
    """Wait until ``GET /health`` answers 200 with every model of ``models`` available."""
    wanted = tuple(models)

    def check(response: httpx.Response) -> bool:
        available = response.json().get("models", {})
        missing = {m: available.get(m) for m in wanted if available.get(m) != "available"}
        if missing:
            raise RuntimeError(f"model(s) not available: {missing} (all: {available})")
        return True

    wait_http(proc, f"{base_url}/health", log_path, check)


def wait_http(
    proc: subprocess.Popen[bytes],
    url: str,
    log_path: Path,
    check: Callable[[httpx.Response], bool] | None = None,
    timeout_s: float = HEALTH_TIMEOUT_S,
) -> None:
    """Poll ``url`` until it answers 200 (and ``check`` of the answer is true); raise with the log's tail
    when the process exits or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with code {proc.returncode}:\n{tail(log_path)}")
            try:
                response = client.get(url)
                if response.status_code == 200 and (check is None or check(response)):
                    return
                last = f"HTTP {response.status_code} {response.text[:200]}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.1)
    raise RuntimeError(f"GET {url} not ready within {timeout_s:g} s ({last}):\n{tail(log_path)}")


def stop_server(proc: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> list[str]:
    """SIGTERM, wait, then SIGKILL the whole process group. Returns notes on anything unexpected."""
    notes: list[str] = []
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            notes.append(f"server did not stop within {timeout_s:g} s of SIGTERM")
    # uvicorn re-raises the captured SIGTERM once its graceful shutdown is done, so -SIGTERM is normal.
    if proc.returncode not in (0, -signal.SIGTERM, None):
        notes.append(f"server exited with code {proc.returncode}")
    leftover = [c.pid for c in children if _alive(c)]
    if leftover and proc.returncode is not None:
        notes.append(f"worker processes alive after the server exited: {leftover}")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return notes


def _alive(process: psutil.Process) -> bool:
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def rss_mib(*pids: int) -> float:
    """Resident memory of processes and all their descendants, in MiB (shared pages count once per
    process, as ``ps`` shows them)."""
    total = 0
    for pid in pids:
        for process in _tree(pid):
            with contextlib.suppress(psutil.NoSuchProcess):
                total += process.memory_info().rss
    return total / MIB


def pss_mib(*pids: int) -> float | None:
    """Proportional set size of processes and their descendants, in MiB: pages shared between them (a
    forked worker's copy of its parent) are split among them, so this adds up to the memory really used.
    None where the kernel does not expose it."""
    total = 0
    for pid in pids:
        for process in _tree(pid):
            try:
                total += process.memory_full_info().pss
            except psutil.NoSuchProcess:
                continue
            except (psutil.AccessDenied, AttributeError):
                return None
    return total / MIB


def cpu_seconds(*pids: int) -> float:
    """User + system CPU time of processes and their live descendants."""
    total = 0.0
    for pid in pids:
        for process in _tree(pid):
            with contextlib.suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                total += times.user + times.system
    return total


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
