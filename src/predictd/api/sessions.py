"""Web console sessions: a random id in an HttpOnly, SameSite=Strict cookie, mapped in memory to a key digest.

The raw API key is never kept: a session holds the SHA-256 digest of the key it was opened with (what the
store indexes), so every request re-checks that key through the service (revoked key or suspended account:
the session is over). The cookie holds only a random token; the server keeps the token's digest. Each
session has its own CSRF token, which every state-changing console request must echo (see console.py).

Embedded mode keeps sessions in the process's memory (a restart signs everyone out, the safe failure); a
scaled-out deployment keeps them in Redis, so a session opened through one API process is valid on all.
Both bound them the same way (``[console]`` settings): an account keeps at most ``sessions_per_account``
(opening one more ends its oldest), so that one account signing in over and over ends only its own
sessions; and the deployment at most ``max_sessions`` (one more ends the oldest of all).
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
    """Sessions in this process's memory. All live as long, so the oldest are also the first to expire."""

    def __init__(self, *, per_account: int, max_sessions: int, ttl_s: float = SESSION_TTL_S) -> None:
        self.ttl_s = ttl_s
        self.per_account = per_account
        self.max_sessions = max_sessions
        self._sessions: dict[str, ConsoleSession] = {}  # by token digest, oldest first
        self._of_account: dict[str, dict[str, None]] = {}  # account id -> its sessions' digests, oldest first

    async def open(self, principal: Principal, key_hash: str) -> tuple[str, ConsoleSession]:
        self._expire()
        own = self._of_account.get(principal.account.id, {})
        while len(own) >= self.per_account:
            self._end(next(iter(own)))
        while len(self._sessions) >= self.max_sessions:
            self._end(next(iter(self._sessions)))
        token, session = _new_session(principal, key_hash, self.ttl_s)
        digest = _token_digest(token)
        self._sessions[digest] = session
        self._of_account.setdefault(session.account_id, {})[digest] = None
        return token, session

    async def get(self, token: str | None) -> ConsoleSession | None:
        if not token:
            return None
        digest = _token_digest(token)
        session = self._sessions.get(digest)
        if session is None:
            return None
        if session.expires_at <= time.monotonic():
            self._end(digest)
            return None
        return session

    async def close(self, token: str | None) -> None:
        if token:
            self._end(_token_digest(token))

    async def close_key(self, key_id: str) -> int:
        ended = [d for d, s in self._sessions.items() if s.key_id == key_id]
        for digest in ended:
            self._end(digest)
        return len(ended)

    def _end(self, digest: str) -> None:
        session = self._sessions.pop(digest, None)
        if session is None:
            return
        own = self._of_account[session.account_id]
        del own[digest]
        if not own:
            del self._of_account[session.account_id]

    def _expire(self) -> None:
        now = time.monotonic()
        while self._sessions:
            oldest = next(iter(self._sessions))
            if self._sessions[oldest].expires_at > now:
                return
            self._end(oldest)

    def __len__(self) -> int:
        return len(self._sessions)


# KEYS: the new session, its account's sessions (sorted set), all sessions (sorted set), its API key's
# sessions (set). ARGV: the session's token digest, the session (JSON), its lifetime in ms, the sessions an
# account may keep, the sessions all may keep, the prefix of a session's key (for the digests of others).
# The sorted sets hold digests by when each session opened (Redis's clock, ms). Returns the sessions ended.
OPEN_SESSION = """
-- Scores are microseconds, and strictly increasing within a set: two sessions opened in the same tick
-- would otherwise tie, and a tie is ordered by digest, so "the oldest" could be the newest.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ttl = tonumber(ARGV[3])
local ttl_us = ttl * 1000
local function next_score(set)
  local top = redis.call('ZRANGE', set, -1, -1, 'WITHSCORES')
  if top[2] and tonumber(top[2]) >= now then return tonumber(top[2]) + 1 end
  return now
end
local prefix = ARGV[6]
local ended = 0
local function end_oldest(set, count)
  for _, digest in ipairs(redis.call('ZRANGE', set, 0, count - 1)) do
    ended = ended + redis.call('DEL', prefix .. digest)
    redis.call('ZREM', KEYS[2], digest)
    redis.call('ZREM', KEYS[3], digest)
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl_us)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - ttl_us)
-- The account's sessions that ended otherwise (the global bound, another process's close): not counted.
for _, digest in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if redis.call('EXISTS', prefix .. digest) == 0 then redis.call('ZREM', KEYS[2], digest) end
end
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4]) + 1
if over > 0 then end_oldest(KEYS[2], over) end
over = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[5]) + 1
if over > 0 then end_oldest(KEYS[3], over) end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
for _, set in ipairs({KEYS[2], KEYS[3]}) do
  redis.call('ZADD', set, next_score(set), ARGV[1])
  redis.call('PEXPIRE', set, ttl)
end
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('PEXPIRE', KEYS[4], ttl)
return ended
"""


class RedisConsoleSessions:
    """Sessions in Redis, shared by every API process; each lives as one key with the session's TTL. A set
    per API key lists its sessions so that revoking the key ends them all; a sorted set per account and
    one of all sessions keep the bounds (see ``OPEN_SESSION``)."""

    def __init__(
        self,
        redis: Redis,
        keys: RedisKeys,
        *,
        per_account: int,
        max_sessions: int,
        ttl_s: float = SESSION_TTL_S,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.ttl_s = ttl_s
        self.per_account = per_account
        self.max_sessions = max_sessions
        self._open = redis.register_script(OPEN_SESSION)

    async def open(self, principal: Principal, key_hash: str) -> tuple[str, ConsoleSession]:
        token, session = _new_session(principal, key_hash, self.ttl_s)
        digest = _token_digest(token)
        await self._open(
            keys=[
                self._keys.session(digest),
                self._keys.sessions_of_account(session.account_id),
                self._keys.all_sessions,
                self._keys.sessions_of_key(session.key_id),
            ],
            args=[
                digest,
                orjson.dumps(asdict(session)),
                int(self.ttl_s * 1000),
                self.per_account,
                self.max_sessions,
                self._keys.session(""),
            ],
        )
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
            digest = _token_digest(token)
            await self._end([(digest, await self._redis.get(self._keys.session(digest)))])

    async def close_key(self, key_id: str) -> int:
        digests = [str(d) for d in await self._redis.smembers(self._keys.sessions_of_key(key_id))]
        if not digests:
            return 0
        found = await self._redis.mget([self._keys.session(d) for d in digests])
        ended = await self._end(list(zip(digests, found, strict=True)))
        await self._redis.delete(self._keys.sessions_of_key(key_id))
        return ended

    async def _end(self, sessions: list[tuple[str, bytes | str | None]]) -> int:
        """End these sessions (digest, and the session as stored, None when it is gone already), and take
        them out of the sorted sets that keep the bounds."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(*(self._keys.session(digest) for digest, _ in sessions))
            for digest, raw in sessions:
                pipe.zrem(self._keys.all_sessions, digest)
                if raw is not None:
                    account_id = orjson.loads(raw)["account_id"]
                    pipe.zrem(self._keys.sessions_of_account(account_id), digest)
            results = await pipe.execute()
        return int(results[0])


def sessions_of(request: Request) -> SessionStore:
    state = request.app.state
    sessions: SessionStore | None = getattr(state, "console_sessions", None)
    if sessions is None:
        deployment = deployment_of(request)
        bounds = deployment.settings.console
        per_account, max_sessions = bounds.sessions_per_account, bounds.max_sessions
        sessions = (
            ConsoleSessions(per_account=per_account, max_sessions=max_sessions)
            if deployment.redis is None
            else RedisConsoleSessions(*deployment.redis, per_account=per_account, max_sessions=max_sessions)
        )
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
