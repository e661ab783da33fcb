"""Virtual environments for the reference servers, with pinned versions, cached under ``.bench/venvs``.

Each is created once with the harness's own Python (``python -m venv``) and ``pip install``ed from the
package index; a stamp file holds what was installed, so a later run reuses it and a changed pin rebuilds it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from _server import ROOT

VENVS = ROOT / ".bench" / "venvs"
INSTALL_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Reference:
    name: str
    requirements: tuple[str, ...]

    @property
    def path(self) -> Path:
        return VENVS / self.name

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


CELERY = Reference("celery-5.7.0", ("celery[redis]==5.7.0", "fastapi==0.165.0", "uvicorn[standard]==0.54.0"))
COG_PYTHON = Reference("cog-0.16.12", ("cog==0.16.12",))
COG_RUST = Reference("cog-0.23.1", ("cog==0.23.1", "coglet==0.23.1"))


def _stamp(ref: Reference) -> str:
    return "\n".join((sys.version.split()[0], *ref.requirements)) + "\n"


def ensure(ref: Reference, log: Path) -> Path:
    """The reference's interpreter, installing it first if needed; RuntimeError (with pip's last words)
    when it cannot be installed."""
    stamp = ref.path / ".bench-stamp"
    if stamp.exists() and stamp.read_text() == _stamp(ref) and ref.python.exists():
        return ref.python
    shutil.rmtree(ref.path, ignore_errors=True)
    VENVS.mkdir(parents=True, exist_ok=True)
    steps = (
        [sys.executable, "-m", "venv", str(ref.path)],
        [
            str(ref.python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *ref.requirements,
        ],
    )
    with log.open("ab") as out:
        for argv in steps:
            try:
                done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT_S)
            except subprocess.TimeoutExpired as exc:
                raise RuntimeError(f"{' '.join(argv[:4])}: no end within {INSTALL_TIMEOUT_S:g} s") from exc
            if done.returncode != 0:
                last = [
                    line
                    for line in log.read_text(errors="replace").splitlines()
                    if line.strip() and "is ignored" not in line
                ]
                raise RuntimeError(f"{' '.join(argv[2:5])} failed: {' | '.join(last[-3:])}")
    stamp.write_text(_stamp(ref))
    return ref.python
