"""Who is calling, and whether they may call now: API keys, the principals built from them, rate limits,
and the allowances that make guessing keys and flooding the console's sign-in cost.

A principal built from a key is kept in memory while the store keeps answering for that key with the very
same object (see ``AccountStore.remembered_key``): a polled status read then authenticates without I/O,
and a revoked key or a suspended account is refused on the very next request.

Failed key checks are counted per client address (``[access]`` allowances, through the same ``Limits`` as
the plans' rate limits: in memory embedded, in Redis scaled out). Only a key no account holds counts: a
valid key never pays for the count, and a revoked one is a stale client, not a guess.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import time
from collections.abc import Callable

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
# Throttled addresses whose refusals were logged lately (each is logged once a window, not per request).
MAX_QUIETED = 4096


def _invalid_key() -> ApiError:
    return ApiError(ErrorId.UNAUTHORIZED, "The API key is invalid or has been revoked.")


def _throttled(what: str, decision: RateDecision) -> ApiError:
    wait = max(1, math.ceil(decision.retry_after_s))
    return ApiError(
        ErrorId.RATE_LIMIT_EXCEEDED, f"{what}; retry in {wait} s.", retry_after=decision.retry_after_s
    )


def address_bucket(address: str) -> str:
    """What an allowance per client address is counted on: an IPv4 address (also when a dual-stack socket
    shows it IPv4-mapped), or an IPv6 address's /64 (what one subscriber usually holds: counted per
    address, one client would have billions of allowances)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]  # not an address (a name a proxy passed on): counted as it is, bounded
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class Access:
    def __init__(self, accounts: AccountStore, limits: Limits, policy: Policy) -> None:
        self._accounts = accounts
        self._limits = limits
        self._policy = policy
        self._principals: dict[str, tuple[tuple[ApiKey, Account], Principal]] = {}
        self._quiet_until: dict[str, float] = {}

    async def authenticate(
        self, secret: str | None, address: Callable[[], str | None] | None = None
    ) -> Principal:
        """The principal of the API key ``secret``. A key no account holds counts against the allowance of
        failed key checks of the caller's address, which ``address`` gives: asked for only then, so that a
        valid key pays nothing for it. Beyond the allowance: RATE_LIMIT_EXCEEDED with the time to wait."""
        if not secret:
            raise ApiError(
                ErrorId.UNAUTHORIZED,
                "No API key: send it as 'x-api-key: KEY' or 'Authorization: Bearer KEY'.",
            )
        principal = await self._principal(keys.digest(secret))
        if principal is None:
            if address is not None:
                await self._count_failed_key(secret, address())
            raise _invalid_key()
        return principal

    async def sign_in(self, secret: str, address: str | None) -> Principal:
        """A web console sign-in with the key ``secret`` from ``address``. Every attempt counts against the
        address's and the presented key's sign-in allowances, before the key is looked at: beyond them the
        answer (RATE_LIMIT_EXCEEDED) tells nothing about the key. Then the key is checked as
        ``authenticate`` checks it."""
        allow = self._policy.access
        limits = [(f"signin:key:{keys.digest(secret)[:32]}", allow.sign_ins_per_key, allow.window_s)]
        if address:
            limits.append(
                (f"signin:addr:{address_bucket(address)}", allow.sign_ins_per_address, allow.window_s)
            )
        refused = await self._refusal(limits)
        if refused is not None:
            name, decision = refused
            self._log_throttled("console sign-ins throttled", address, secret, decision)
            source = "with this key" if name.startswith("signin:key:") else "from your address"
            raise _throttled(f"Too many sign-in attempts {source}", decision)
        try:
            return await self.authenticate(secret)  # no address: the sign-in allowances counted this one
        except ApiError as exc:
            if exc.error_id is ErrorId.UNAUTHORIZED:
                log.warning(
                    "console sign-in refused", address=address, key_prefix=keys.loggable_prefix(secret)
                )
            raise

    async def authenticate_digest(self, key_hash: str) -> Principal:
        """Who holds the key with this SHA-256 digest (the web console keeps only the digest of its key)."""
        principal = await self._principal(key_hash)
        if principal is None:
            raise _invalid_key()
        return principal

    async def _principal(self, key_hash: str) -> Principal | None:
        """Who holds the key with this digest; None when no account does. A revoked key and a suspended
        account raise."""
        found = await self._accounts.find_key(key_hash)
        # The digest lookup is an exact index match; compare again in constant time so that no timing
        # difference depends on how much of a guessed key was right.
        if found is None or not hmac.compare_digest(key_hash, found[0].key_hash):
            return None
        if found[0].revoked_at is not None:
            raise _invalid_key()
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

    async def _count_failed_key(self, secret: str, address: str | None) -> None:
        """Count a key no account holds against ``address``'s allowance, and log it (the address and the
        key's loggable prefix, never the key); raise RATE_LIMIT_EXCEEDED beyond the allowance."""
        prefix = keys.loggable_prefix(secret)
        allow = self._policy.access
        refused = (
            await self._refusal(
                [(f"badkey:addr:{address_bucket(address)}", allow.failed_keys_per_address, allow.window_s)]
            )
            if address
            else None
        )
        if refused is None:
            log.warning("API key refused", address=address, key_prefix=prefix)
            return
        self._log_throttled("API key checks throttled", address, secret, refused[1])
        raise _throttled("Too many requests with an invalid API key from your address", refused[1])

    async def _refusal(self, limits: list[tuple[str, int, float]]) -> tuple[str, RateDecision] | None:
        """Count one attempt against ``limits``: None when all allow it, else the limit that refused it
        and its decision (the longest wait when several did)."""
        try:
            decisions = await self._limits.hit_all(limits)
        except LimitsUnavailable as exc:
            # As for rate limits: a Redis outage must not lock everyone out. Logged for operators.
            log.warning("allowances unavailable; attempt allowed", error=str(exc))
            return None
        refused = [(name, d) for (name, _, _), d in zip(limits, decisions, strict=True) if not d.allowed]
        return max(refused, key=lambda found: found[1].retry_after_s) if refused else None

    def _log_throttled(self, event: str, address: str | None, secret: str, decision: RateDecision) -> None:
        """Log a throttled attempt once per address and window: refusals come as fast as a client sends."""
        now = time.monotonic()
        quiet = f"{event}:{address_bucket(address) if address else ''}"
        if self._quiet_until.get(quiet, 0.0) > now:
            return
        put_bounded(self._quiet_until, quiet, now + decision.window_s, MAX_QUIETED)
        log.warning(
            event,
            address=address,
            key_prefix=keys.loggable_prefix(secret),
            retry_after_s=round(decision.retry_after_s, 1),
        )
