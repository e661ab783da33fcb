"""The demo key of a data folder. The store holds only a key's digest, so that ``serve --demo`` can print
the same key at every start (and clients keep working across restarts) the key itself is kept in a file
beside the database, readable by its owner only."""

from __future__ import annotations

import os
from pathlib import Path

from ..config.settings import DEMO_KEY_FILE


def demo_key_path(data_dir: Path) -> Path:
    return data_dir / DEMO_KEY_FILE


def kept_demo_key(data_dir: Path) -> str | None:
    """The demo key printed last time, if its file is there."""
    try:
        kept = demo_key_path(data_dir).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return kept or None


def keep_demo_key(data_dir: Path, secret: str) -> Path:
    """Write the key (mode 0600, whatever the umask or an earlier file's mode), replacing the file whole."""
    path = demo_key_path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)  # a scaled-out server's database is not in it
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(secret + "\n")
    os.replace(partial, path)
    return path
