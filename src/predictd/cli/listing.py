"""How the admin commands print what they list: aligned columns that keep every value whole (ids are
copied from them, also when the output is piped), or with ``--json`` one JSON object a line, as
``predictd predictions list --json`` does."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import typer

from ..core.domain import ApiKey, iso_utc


def print_columns(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    lines = [list(headers), *(list(row) for row in rows)]
    widths = [max(len(line[column]) for line in lines) for column in range(len(headers))]
    for line in lines:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def print_json_lines(records: Iterable[dict[str, Any]]) -> None:
    for record in records:
        typer.echo(json.dumps(record, ensure_ascii=False))


def key_record(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "account_id": key.account_id,
        "prefix": key.prefix,
        "label": key.label,
        "created_at": iso_utc(key.created_at),
        "revoked_at": iso_utc(key.revoked_at),
    }
