"""Operator use cases: accounts, keys, plans, credits. The CLI and the admin HTTP API both call these."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..core import keys
from ..core.domain import Account, AccountStatus, ApiKey, Credits, LedgerEntry, Plan, to_micros
from ..core.ports import AccountStore
from ..errors import ApiError, ErrorId

# Bounds of what an operator may write (beyond them, values overflow the database's integer columns or the
# rate limiter's clock arithmetic: every later request of the account would fail, not this one).
MAX_CREDITS_PER_ENTRY = 1e9
MAX_PLAN_LIMIT = 2**31 - 1
MAX_RATE_WINDOW_S = 365 * 86400.0


@dataclass(frozen=True, slots=True)
class IssuedKey:
    account: Account
    key_id: str
    secret: str


@dataclass(frozen=True, slots=True)
class AccountCredits:
    account: Account
    credits: Credits
    ledger: list[LedgerEntry]  # newest first


class Administration:
    def __init__(self, store: AccountStore) -> None:
        self.store = store

    async def account(self, name: str) -> Account:
        found = await self.store.get_account_by_name(name)
        if found is None:
            raise ApiError(ErrorId.NOT_FOUND, f"No account named {name!r}.")
        return found

    async def list_accounts(self) -> list[Account]:
        """Every account, oldest first."""
        return await self.store.list_accounts()

    async def list_keys(self, account_name: str) -> list[ApiKey]:
        """The account's keys, revoked ones included, oldest first (prefixes only: keys are not stored)."""
        return await self.store.list_keys((await self.account(account_name)).id)

    async def revoke_key(self, key_id: str) -> None:
        """Refuse the key from the next request on."""
        if not await self.store.revoke_key(key_id):
            raise ApiError(ErrorId.NOT_FOUND, f"No active key with id {key_id!r}.")

    async def list_plans(self) -> list[Plan]:
        """Every plan, by name."""
        return await self.store.list_plans()

    async def credits(self, account_name: str, entries: int = 0) -> AccountCredits:
        """The account's credits and its ``entries`` newest ledger entries."""
        if entries < 0:
            raise ApiError(ErrorId.INVALID_PARAMETER, "The number of ledger entries must not be negative.")
        account = await self.account(account_name)
        credits = await self.store.credits(account.id)
        ledger = await self.store.ledger(account.id, entries) if entries else []
        return AccountCredits(account, credits, ledger)

    async def create_account(self, name: str, plan: str | None = None) -> Account:
        if not name.strip() or len(name) > 200:
            raise ApiError(ErrorId.INVALID_INPUT, "Account name must be 1 to 200 characters.")
        if await self.store.get_account_by_name(name) is not None:
            raise ApiError(ErrorId.UNPROCESSABLE_ENTITY, f"An account named {name!r} already exists.")
        if plan is not None:
            await self._plan(plan)
        return await self.store.create_account(name, plan)

    async def issue_key(self, account_name: str, label: str = "cli", create: bool = False) -> IssuedKey:
        found = await self.store.get_account_by_name(account_name)
        account = found or (
            await self.create_account(account_name) if create else await self.account(account_name)
        )
        return await self._issue(account, label)

    async def startup_key(
        self, account_name: str, label: str, *, demo: bool, kept: str | None = None
    ) -> str | None:
        """The key a starting server prints, or None. A store without accounts gets ``account_name`` and a
        first key. With ``demo`` the account's demo key is printed at every start: ``kept`` (the one printed
        last time) while it is still a live key of that account with that label, so that clients keep
        working across restarts; else a new one, and any earlier one with that label is revoked."""
        account = await self.store.get_account_by_name(account_name)
        if account is None:
            if await self.store.list_accounts():
                return None  # an operator set up accounts already: leave them alone
            account = await self.store.create_account(account_name)
        elif not demo:
            return None
        elif kept is not None and await self._is_live_key(kept, account, label):
            return kept
        await self.store.revoke_keys_labelled(account.id, label)
        return (await self._issue(account, label)).secret

    async def _issue(self, account: Account, label: str) -> IssuedKey:
        new = keys.generate_key()
        stored = await self.store.create_key(account.id, new.digest, new.prefix, label)
        return IssuedKey(account, stored.id, new.secret)

    async def _is_live_key(self, secret: str, account: Account, label: str) -> bool:
        found = await self.store.find_key(keys.digest(secret))
        if found is None:
            return False
        key, owner = found
        return key.revoked_at is None and owner.id == account.id and key.label == label

    async def set_status(self, name: str, suspended: bool, reason: str | None = None) -> Account:
        account = await self.account(name)
        status = AccountStatus.SUSPENDED if suspended else AccountStatus.ACTIVE
        updated = await self.store.update_account(
            account.id,
            status=status,
            status_reason=(reason or "suspended by an operator") if suspended else None,
        )
        assert updated is not None
        return updated

    async def set_plan(self, name: str, plan: str | None) -> Account:
        account = await self.account(name)
        if plan is not None:
            await self._plan(plan)
        updated = await self.store.update_account(account.id, plan=plan)
        assert updated is not None
        return updated

    async def set_model_enabled(self, name: str, model: str, enabled: bool) -> Account:
        account = await self.account(name)
        disabled = set(account.disabled_models)
        if enabled:
            disabled.discard(model)
        else:
            disabled.add(model)
        updated = await self.store.update_account(account.id, disabled_models=sorted(disabled))
        assert updated is not None
        return updated

    async def add_credits(
        self, name: str, amount: float, kind: str = "grant", note: str | None = None
    ) -> Credits:
        if not math.isfinite(amount) or abs(amount) > MAX_CREDITS_PER_ENTRY:
            raise ApiError(
                ErrorId.INVALID_INPUT,
                f"amount must be a finite number of at most {MAX_CREDITS_PER_ENTRY:.0e} credits either way "
                f"(got {amount!r}).",
            )
        account = await self.account(name)
        if kind == "grant" and amount <= 0:
            raise ApiError(
                ErrorId.INVALID_INPUT, "A grant must be positive; use an adjustment to take credits."
            )
        if kind not in ("grant", "adjust"):
            raise ApiError(ErrorId.INVALID_INPUT, "kind must be 'grant' or 'adjust'.")
        return await self.store.add_ledger_entry(account.id, kind, to_micros(amount), note)

    async def put_plan(self, plan: Plan) -> Plan:
        if not plan.name or len(plan.name) > 100:
            raise ApiError(ErrorId.INVALID_INPUT, "Plan name must be 1 to 100 characters.")
        for value, label in (
            (plan.rate_limit, "rate_limit"),
            (plan.key_rate_limit, "key_rate_limit"),
            (plan.concurrency_limit, "concurrency_limit"),
        ):
            if value is not None and not 1 <= value <= MAX_PLAN_LIMIT:
                raise ApiError(
                    ErrorId.INVALID_INPUT,
                    f"{label} must be 1 to {MAX_PLAN_LIMIT} (or absent for no limit), got {value!r}.",
                )
        window = plan.rate_window_s
        if not (math.isfinite(window) and 0 < window <= MAX_RATE_WINDOW_S):
            raise ApiError(
                ErrorId.INVALID_INPUT,
                f"rate_window_s must be more than 0 and at most {MAX_RATE_WINDOW_S:g} s (a year), "
                f"got {window!r}.",
            )
        return await self.store.put_plan(plan)

    async def _plan(self, name: str) -> Plan:
        plan = await self.store.get_plan(name)
        if plan is None:
            raise ApiError(ErrorId.NOT_FOUND, f"No plan named {name!r}.")
        return plan
