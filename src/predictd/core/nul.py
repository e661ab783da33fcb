"""Finding a NUL character in a JSON-like value. PostgreSQL stores none in text or jsonb, SQLite would: both
the HTTP edge (refusing one in a request) and the runtime (an output holding one) ask here, so that both
backends accept and refuse the same values."""

from __future__ import annotations

from typing import Any

NUL = "\x00"


def nul_path(value: Any, path: str = "") -> str | None:
    """Where in ``value`` a NUL character is (in a string or an object's key), as a path such as
    ``input.items[2]`` under ``path``; None when there is none. The path itself may hold the NUL of a key."""
    if isinstance(value, str):
        return path if NUL in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            found = inner if NUL in str(key) else nul_path(item, inner)
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = nul_path(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def escape_nul(text: str) -> str:
    """``text`` with each NUL written as the six characters ``\\u0000``: storable, and still visible."""
    return text.replace(NUL, "\\u0000")
