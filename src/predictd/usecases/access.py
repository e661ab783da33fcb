"""Who is calling, and whether they may call now: API keys, the principals built from them, rate limits.

A principal built from a key is kept in memory while the store keeps answering for that key with the very
same object (see ``AccountStore.remembered_key``): a polled status read then authenticates without I/O,
and a revoked key or a suspended account is refused on the very next request.
"""

from __future__ import annotations

import hmac

import structlog

from ..core import keys
from ..core.bounded import put_bounded
from ..core.domain import Account, AccountStatus, ApiKey, Plan, Principal
from ..core.ports import AccountStore, Limits, LimitsUnavailable, RateDecision
from ..errors import ApiError, ErrorId
from .policy import Policy

log = structlog.get_logger("predictd.access")

# Principals kept by key digest (only valid keys get here: guessing cannot fill memory).
MAX_REMEMBERED_PRINCIPALS = 4096


class Access:
    def __init__(self, accounts: AccountStore, limits: Limits, policy: Policy) -> None:
        self._accounts = accounts
        self._limits = limits
        self._policy = policy
        self._principals: dict[str, tuple[tuple[ApiKey, Account], Principal]] = {}

    async def authenticate(self, secret: str | None) -> Principal:
        if not secret:
            raise ApiError(
                ErrorId.UNAUTHORIZED,
                "No API key: send it as 'x-api-key: KEY' or 'Authorization: Bearer KEY'.",
            )
        return await self.authenticate_digest(keys.digest(secret))

    async def authenticate_digest(self, key_hash: str) -> Principal:
        """Who holds the key with this SHA-256 digest (the web console keeps only the digest of its key)."""
        found = await self._accounts.find_key(key_hash)
        # The digest lookup is an exact index match; compare again in constant time so that no timing
        # difference depends on how much of a guessed key was right.
        if (
            found is None
            or not hmac.compare_digest(key_hash, found[0].key_hash)
            or found[0].revoked_at is not None
        ):
            raise ApiError(ErrorId.UNAUTHORIZED, "The API key is invalid or has been revoked.")
        known = self._principals.get(key_hash)
        if known is not None and known[0] is found:
            return known[1]
        api_key, account = found
        if account.status is AccountStatus.SUSPENDED:
            reason = f" ({account.status_reason})" if account.status_reason else ""
            raise ApiError(ErrorId.ACCOUNT_SUSPENDED, f"Account {account.name!r} is suspended{reason}.")
        plan = await self.plan_of(account)
        principal = Principal(account=account, key_id=api_key.id, plan=plan, key_hash=key_hash)
        if (plan is account.plan_details or plan is self._policy.plan) and (
            self._accounts.remembered_key(key_hash) is found  # a store that reads every time: nothing to keep
        ):
            self._remember(key_hash, found, principal)
        return principal

    async def recheck(self, principal: Principal) -> Principal:
        """``principal`` as its key stands now: raises as ``authenticate`` would once the key is revoked or
        its account suspended (for what outlives one request: a stream, a console session)."""
        return await self.authenticate_digest(principal.key_hash)

    def principal_now(self, secret: str) -> Principal | None:
        """The principal ``authenticate(secret)`` gave before, when nothing it was built from can have
        changed and its plan has no rate limit to count: answered without I/O. None means "take the
        asynchronous path", which also gives every refusal (unknown, revoked, suspended, rate-limited)."""
        if not self._principals:
            return None  # nothing remembered (a store that reads every time): not even the digest to take
        key_hash = keys.digest(secret)
        found = self._accounts.remembered_key(key_hash)
        if found is None:
            return None
        known = self._principals.get(key_hash)
        # Remembered only after every check of authenticate_digest passed on this very (immutable) object.
        if known is None or known[0] is not found:
            return None
        plan = known[1].plan
        if plan.rate_limit is not None or plan.key_rate_limit is not None:
            return None
        return known[1]

    def _remember(self, key_hash: str, found: tuple[ApiKey, Account], principal: Principal) -> None:
        """Keep the principal built from the store's answer ``found``, for as long as the store keeps
        answering with that very object (compared with ``is``). A store that remembers rows (SQLite's) hands
        out a new object once the key, its account or the plan read with it may have changed, so a revoked
        key or a suspended account is never served from here; a store that reads every time keeps nothing.
        Only a plan read with the key (or the deployment's own) counts: another plan row has no such guard.
        """
        put_bounded(self._principals, key_hash, (found, principal), MAX_REMEMBERED_PRINCIPALS)

    async def plan_of(self, account: Account) -> Plan:
        name = account.plan or self._policy.default_plan_name
        if name:
            # An account read with its key carries its plan's row, read in the same statement.
            plan = account.plan_details
            if plan is None or plan.name != name:
                plan = await self._accounts.get_plan(name)
            if plan is not None:
                return plan
            log.warning("plan not found; using the deployment's limits", account=account.id, plan=name)
        return self._policy.plan

    async def check_rate(self, principal: Principal) -> RateDecision | None:
        """Count one request against the key's and the account's rate limits; the tighter one answers."""
        plan = principal.plan
        limits = []
        if plan.key_rate_limit is not None:
            limits.append((f"key:{principal.key_id}", plan.key_rate_limit, plan.rate_window_s))
        if plan.rate_limit is not None:
            limits.append((f"acct:{principal.account.id}", plan.rate_limit, plan.rate_window_s))
        try:
            decisions = await self._limits.hit_all(limits) if limits else []
        except LimitsUnavailable as exc:
            # Availability over strictness: a Redis outage must not stop the API. Logged for operators.
            log.warning("rate limits unavailable; request allowed", error=str(exc))
            return None
        if not decisions:
            return None
        refused = [d for d in decisions if not d.allowed]
        if refused:
            worst = max(refused, key=lambda d: d.retry_after_s)
            raise ApiError(
                ErrorId.RATE_LIMIT_EXCEEDED,
                f"More than {worst.limit} requests in {worst.window_s:g} s; "
                f"retry in {worst.retry_after_s:.1f} s.",
                retry_after=worst.retry_after_s,
                headers=worst.headers(),
            )
        return min(decisions, key=lambda d: d.remaining)
