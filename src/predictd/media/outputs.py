"""Stored prediction outputs: files behind unguessable names that expire, and how they appear on the wire.

A stored output is recorded as ``predictd-output:<name>`` and rendered as ``<base>/v1/outputs/<name>`` only
when answered, so the URL follows whatever host the client used.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core.json_values import strings_in

SCHEME = "predictd-output:"
ROUTE = "v1/outputs/"
_NAME = re.compile(r"^[A-Za-z0-9_-]{32}\.(png|jpeg)$")


def is_valid_name(name: str) -> bool:
    return bool(_NAME.match(name))


def to_public(output: Any, base_url: str) -> Any:
    """Replace stored references by absolute URLs (``base_url`` ends with '/')."""
    if isinstance(output, str):
        return f"{base_url}{ROUTE}{output[len(SCHEME) :]}" if output.startswith(SCHEME) else output
    if isinstance(output, list):
        return [to_public(item, base_url) for item in output]
    if isinstance(output, dict):
        return {key: to_public(value, base_url) for key, value in output.items()}
    return output


def references(output: Any) -> Iterator[str]:
    """The names of the stored outputs ``output`` refers to."""
    return (text[len(SCHEME) :] for text in strings_in(output) if text.startswith(SCHEME))


class LocalOutputs:
    """Outputs on the local disk (embedded mode)."""

    def __init__(self, directory: Path, ttl_s: float) -> None:
        self.directory = directory
        self.ttl_s = ttl_s

    def write(self, data: bytes, extension: str) -> str:
        """Store bytes; return the reference to record in the prediction's output."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{secrets.token_urlsafe(24)}.{extension}"
        temporary = self.directory / f".{name}.tmp"
        temporary.write_bytes(data)
        os.replace(temporary, self.directory / name)
        return SCHEME + name

    def path_if_live(self, name: str) -> Path | None:
        if not is_valid_name(name):
            return None
        path = self.directory / name
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return None
        return path if age <= self.ttl_s else None

    def delete(self, output: Any) -> int:
        removed = 0
        for name in references(output):
            if is_valid_name(name):
                with contextlib.suppress(FileNotFoundError):
                    (self.directory / name).unlink()
                    removed += 1
        return removed

    def sweep(self) -> int:
        """Remove expired files; returns how many."""
        if not self.directory.is_dir():
            return 0
        cutoff = time.time() - self.ttl_s
        removed = 0
        for path in self.directory.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed
