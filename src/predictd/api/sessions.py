"""Web console sessions: a random id in an HttpOnly, SameSite=Strict cookie, mapped in memory to a key digest.

The raw API key is never kept: a session holds the SHA-256 digest of the key it was opened with (what the
store indexes), so every request re-checks that key through the service (revoked key or suspended account:
the session is over). The cookie holds only a random token; the server keeps the token's digest. Each
session has its own CSRF token, which every state-changing console request must echo (see console.py).

Embedded mode keeps sessions in the process's memory (a restart signs everyone out, the safe failure); a
scaled-out deployment keeps them in Redis, so a session opened through one API process is valid on all.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol

import orjson
from starlette.requests import Request

from ..core.domain import Principal
from ..errors import ApiError, ErrorId
from .state import deployment_of, usecases_of

if TYPE_CHECKING:  # only scaled-out deployments keep sessions in Redis
    from redis.asyncio import Redis

    from ..core.redis_keys import RedisKeys

COOKIE_NAME = "predictd_console"
SESSION_TTL_S = 12 * 3600.0
MAX_SESSIONS = 10_000


@dataclass(slots=True)
class ConsoleSession:
    key_hash: str
    key_id: str
    account_id: str
    csrf_token: str
    expires_at: float  # time.monotonic() in this process; Redis keeps the lifetime as the key's TTL


class SessionStore(Protocol):
    async def open(self, principal: Principal, key_hash: str) -> tuple[str, ConsoleSession]:
        """A new session for the key with this digest; returns the cookie token (shown to nobody else)."""
        ...

    async def get(self, token: str | None) -> ConsoleSession | None: ...
    async def close(self, token: str | None) -> None: ...
    async def close_key(self, key_id: str) -> int:
        """End every session opened with this key (it was revoked)."""
        ...


def _new_session(principal: Principal, key_hash: str, ttl_s: float) -> tuple[str, ConsoleSession]:
    token = secrets.token_urlsafe(32)
    session = ConsoleSession(
        key_hash=key_hash,
        key_id=principal.key_id,
        account_id=principal.account.id,
        csrf_token=secrets.token_urlsafe(32),
        expires_at=time.monotonic() + ttl_s,
    )
    return token, session


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class ConsoleSessions:
    """Sessions in this process's memory, oldest dropped first beyond ``max_sessions``."""

    def __init__(self, ttl_s: float = SESSION_TTL_S, max_sessions: int = MAX_SESSIONS) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._sessions: dict[str, ConsoleSession] = {}  # by token digest, oldest first

    async def open(self, principal: Principal, key_hash: str) -> tuple[str, ConsoleSession]:
        self._expire()
        while len(self._sessions) >= self.max_sessions:
            del self._sessions[next(iter(self._sessions))]
        token, session = _new_session(principal, key_hash, self.ttl_s)
        self._sessions[_token_digest(token)] = session
        return token, session

    async def get(self, token: str | None) -> ConsoleSession | None:
        if not token:
            return None
        digest = _token_digest(token)
        session = self._sessions.get(digest)
        if session is None:
            return None
        if session.expires_at <= time.monotonic():
            del self._sessions[digest]
            return None
        return session

    async def close(self, token: str | None) -> None:
        if token:
            self._sessions.pop(_token_digest(token), None)

    async def close_key(self, key_id: str) -> int:
        ended = [d for d, s in self._sessions.items() if s.key_id == key_id]
        for digest in ended:
            del self._sessions[digest]
        return len(ended)

    def _expire(self) -> None:
        now = time.monotonic()
        for digest in [d for d, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[digest]

    def __len__(self) -> int:
        return len(self._sessions)


class RedisConsoleSessions:
    """Sessions in Redis, shared by every API process; each lives as one key with the session's TTL, and a
    set per API key lists its sessions so that revoking the key ends them all."""

    def __init__(self, redis: Redis, keys: RedisKeys, ttl_s: float = SESSION_TTL_S) -> None:
        self._redis = redis
        self._keys = keys
        self.ttl_s = ttl_s

    def _of_key(self, key_id: str) -> str:
        return self._keys.session(f"key:{key_id}")

    async def open(self, principal: Principal, key_hash: str) -> tuple[str, ConsoleSession]:
        token, session = _new_session(principal, key_hash, self.ttl_s)
        digest = _token_digest(token)
        ttl_ms = int(self.ttl_s * 1000)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._keys.session(digest), orjson.dumps(asdict(session)), px=ttl_ms)
            pipe.sadd(self._of_key(session.key_id), digest)
            pipe.pexpire(self._of_key(session.key_id), ttl_ms)
            await pipe.execute()
        return token, session

    async def get(self, token: str | None) -> ConsoleSession | None:
        if not token:
            return None
        raw = await self._redis.get(self._keys.session(_token_digest(token)))
        if raw is None:
            return None
        return ConsoleSession(**orjson.loads(raw))

    async def close(self, token: str | None) -> None:
        if token:
            await self._redis.delete(self._keys.session(_token_digest(token)))

    async def close_key(self, key_id: str) -> int:
        digests = [str(d) for d in await self._redis.smembers(self._of_key(key_id))]
        if not digests:
            return 0
        ended = int(await self._redis.delete(*(self._keys.session(d) for d in digests)))
        await self._redis.delete(self._of_key(key_id))
        return ended


def sessions_of(request: Request) -> SessionStore:
    state = request.app.state
    sessions: SessionStore | None = getattr(state, "console_sessions", None)
    if sessions is None:
        shared = deployment_of(request).redis
        sessions = ConsoleSessions() if shared is None else RedisConsoleSessions(*shared)
        state.console_sessions = sessions
    return sessions


async def console_principal(request: Request) -> tuple[Principal, ConsoleSession] | None:
    """The principal of the request's console session, or None without a live one.

    The key behind the session is checked again on every call: once it is revoked the session ends; a
    suspended account answers ACCOUNT_SUSPENDED exactly as it would to the key itself.
    """
    sessions = sessions_of(request)
    token = request.cookies.get(COOKIE_NAME)
    session = await sessions.get(token)
    if session is None:
        return None
    try:
        principal = await usecases_of(request).access.authenticate_digest(session.key_hash)
    except ApiError as exc:
        if exc.error_id is ErrorId.UNAUTHORIZED:
            await sessions.close(token)
            return None
        raise
    return principal, session
