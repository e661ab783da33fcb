"""How the admin commands print what they list: aligned columns that keep every value whole (ids are
copied from them, also when the output is piped), or with ``--json`` one JSON object a line, as
``predictd predictions list --json`` does."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import typer

from ..core.domain import Account, ApiKey, LedgerEntry, Plan, from_micros


def print_columns(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    lines = [list(headers), *(list(row) for row in rows)]
    widths = [max(len(line[column]) for line in lines) for column in range(len(headers))]
    for line in lines:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def print_json_lines(records: Iterable[dict[str, Any]]) -> None:
    for record in records:
        typer.echo(json.dumps(record, ensure_ascii=False))


def _when(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


def account_record(account: Account) -> dict[str, Any]:
    return {
        "id": account.id,
        "name": account.name,
        "status": account.status.value,
        "status_reason": account.status_reason,
        "plan": account.plan,
        "disabled_models": list(account.disabled_models),
        "created_at": _when(account.created_at),
    }


def key_record(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "account_id": key.account_id,
        "prefix": key.prefix,
        "label": key.label,
        "created_at": _when(key.created_at),
        "revoked_at": _when(key.revoked_at),
    }


def plan_record(plan: Plan) -> dict[str, Any]:
    return {
        "name": plan.name,
        "models": list(plan.models),
        "rate_limit": plan.rate_limit,
        "rate_window_s": plan.rate_window_s,
        "key_rate_limit": plan.key_rate_limit,
        "concurrency_limit": plan.concurrency_limit,
        "prepaid": plan.prepaid,
        "security_screen": plan.security_screen,
    }


def ledger_record(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "kind": entry.kind,
        "amount": from_micros(entry.amount_micros),
        "prediction_id": entry.prediction_id,
        "note": entry.note,
        "created_at": _when(entry.created_at),
    }
