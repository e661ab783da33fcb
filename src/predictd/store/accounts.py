"""Accounts, their plans and API keys, the credits ledger and security events, on SQLAlchemy Core.

The ledger belongs here, but a prediction's reservation and settlement are written in the prediction's own
transaction (predictions.py), with ``read_credits`` and ``append_entries``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, text, update

from ..core.domain import Account, AccountStatus, ApiKey, Credits, LedgerEntry, Plan, new_id, utcnow
from . import rules
from .engines import Connection, Engine
from .rows import FIND_KEY, account_of, key_and_account, key_of, plan_of
from .schema import accounts, api_keys, ledger_entries, plans, security_events


async def read_credits(conn: Connection, account_id: str) -> Credits:
    row = (await conn.execute(text(rules.CREDITS_SQL), {"account_id": account_id})).first()
    return rules.credits_of(row)


async def append_entries(
    conn: Connection,
    account_id: str,
    entries: list[rules.Entry],
    *,
    prediction_id: str | None = None,
    note: str | None = None,
) -> None:
    """Append ledger entries and move the account's running sums with them, in the caller's transaction."""
    if not entries:
        return
    now = utcnow()
    await conn.execute(
        insert(ledger_entries),
        [
            {
                "account_id": account_id,
                "kind": kind,
                "amount_micros": amount,
                "prediction_id": prediction_id,
                "note": note,
                "created_at": now,
            }
            for kind, amount in entries
        ],
    )
    await conn.execute(text(rules.CHANGE_TOTALS_SQL), rules.totals_change(account_id, entries))


class SqlAccounts:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- accounts ------------------------------------------------------------------------------------------

    async def create_account(self, name: str, plan: str | None = None) -> Account:
        account = Account(
            id=new_id("acc_"), name=name, status=AccountStatus.ACTIVE, created_at=utcnow(), plan=plan
        )
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(accounts).values(
                    id=account.id,
                    name=account.name,
                    status=account.status,
                    created_at=account.created_at,
                    plan=plan,
                    disabled_models=[],
                )
            )
        return account

    async def update_account(self, account_id: str, **changes: Any) -> Account | None:
        """Change status / status_reason / plan / disabled_models."""
        allowed = {"status", "status_reason", "plan", "disabled_models"}
        if set(changes) - allowed:
            raise ValueError(f"cannot change {sorted(set(changes) - allowed)}")
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    update(accounts)
                    .where(accounts.c.id == account_id)
                    .values(**changes)
                    .returning(*accounts.columns)
                )
            ).first()
        return account_of(row) if row else None

    async def get_account_by_name(self, name: str) -> Account | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(accounts).where(accounts.c.name == name))).first()
        return account_of(row) if row else None

    async def list_accounts(self) -> list[Account]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(accounts).order_by(accounts.c.created_at))).all()
        return [account_of(r) for r in rows]

    # -- plans ---------------------------------------------------------------------------------------------

    async def put_plan(self, plan: Plan) -> Plan:
        values = {
            "models": list(plan.models),
            "rate_limit": plan.rate_limit,
            "rate_window_s": plan.rate_window_s,
            "key_rate_limit": plan.key_rate_limit,
            "concurrency_limit": plan.concurrency_limit,
            "prepaid": plan.prepaid,
            "security_screen": plan.security_screen,
        }
        async with self.engine.begin() as conn:
            done = await conn.execute(update(plans).where(plans.c.name == plan.name).values(**values))
            if not done.rowcount:
                await conn.execute(insert(plans).values(name=plan.name, created_at=utcnow(), **values))
        return plan

    async def get_plan(self, name: str) -> Plan | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(plans).where(plans.c.name == name))).first()
        return plan_of(row) if row else None

    async def list_plans(self) -> list[Plan]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(plans).order_by(plans.c.name))).all()
        return [plan_of(r) for r in rows]

    # -- credits ledger ------------------------------------------------------------------------------------

    async def add_ledger_entry(
        self, account_id: str, kind: str, amount_micros: int, note: str | None
    ) -> Credits:
        """An operator's grant or adjustment (positive or negative)."""
        if kind not in rules.HAND_ENTERED:
            raise ValueError("only grants and adjustments are entered by hand")
        async with self.engine.begin() as conn:
            await append_entries(conn, account_id, [(kind, amount_micros)], note=note)
            return await read_credits(conn, account_id)

    async def credits(self, account_id: str) -> Credits:
        async with self.engine.connect() as conn:
            return await read_credits(conn, account_id)

    async def ledger_sums(self, account_id: str) -> Credits:
        """The account's credits summed from its whole ledger: what ``credits`` must always equal."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(text(rules.LEDGER_SUMS_SQL), {"account_id": account_id})).one()
        return Credits(balance_micros=int(row[0]), reserved_micros=int(row[1]))

    async def ledger(
        self, account_id: str, limit: int = 100, before_id: int | None = None
    ) -> list[LedgerEntry]:
        query = select(ledger_entries).where(ledger_entries.c.account_id == account_id)
        if before_id is not None:
            query = query.where(ledger_entries.c.id < before_id)
        query = query.order_by(ledger_entries.c.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            LedgerEntry(r.id, r.kind, r.amount_micros, r.prediction_id, r.note, r.created_at) for r in rows
        ]

    # -- security events -----------------------------------------------------------------------------------

    async def record_security_event(self, account_id: str, rule_id: str, field: str, since: datetime) -> int:
        """Record a violation; return how many the account has had since ``since`` (this one included)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(security_events).values(
                    account_id=account_id, rule_id=rule_id, field=field[:200], created_at=utcnow()
                )
            )
            count = (
                await conn.execute(
                    select(func.count())
                    .select_from(security_events)
                    .where(security_events.c.account_id == account_id, security_events.c.created_at >= since)
                )
            ).scalar_one()
        return int(count)

    # -- keys ----------------------------------------------------------------------------------------------

    async def create_key(self, account_id: str, key_hash: str, prefix: str, label: str) -> ApiKey:
        key = ApiKey(
            id=new_id("key_"),
            account_id=account_id,
            prefix=prefix,
            label=label,
            created_at=utcnow(),
            revoked_at=None,
            key_hash=key_hash,
        )
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(api_keys).values(
                    id=key.id,
                    account_id=account_id,
                    prefix=prefix,
                    key_hash=key_hash,
                    label=label,
                    created_at=key.created_at,
                    revoked_at=None,
                )
            )
        return key

    def remembered_key(self, key_hash: str) -> tuple[ApiKey, Account] | None:
        return None  # every read goes to the database

    async def find_key(self, key_hash: str) -> tuple[ApiKey, Account] | None:
        """The key, its account and the account's plan (``Account.plan_details``), in one round trip."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(FIND_KEY, {"key_hash": key_hash})).first()
        return key_and_account(row) if row is not None else None

    async def list_keys(self, account_id: str) -> list[ApiKey]:
        query = select(api_keys).where(api_keys.c.account_id == account_id).order_by(api_keys.c.created_at)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [key_of(r) for r in rows]

    async def revoke_key(self, key_id: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        return bool(result.rowcount)

    async def revoke_keys_labelled(self, account_id: str, label: str) -> int:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(api_keys)
                .where(
                    api_keys.c.account_id == account_id,
                    api_keys.c.label == label,
                    api_keys.c.revoked_at.is_(None),
                )
                .values(revoked_at=utcnow())
            )
        return int(result.rowcount)
