"""Web console sessions: a random id in an HttpOnly, SameSite=Strict cookie, mapped in memory to a key digest.

The raw API key is never kept: a session holds the SHA-256 digest of the key it was opened with (what the
store indexes), so every request re-checks that key through the service (revoked key or suspended account:
the session is over). The cookie holds only a random token; the server keeps the token's digest. Each
session has its own CSRF token, which every state-changing console request must echo (see console.py).

Sessions live in this process's memory: a restart signs everyone out, which is the safe failure.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from starlette.requests import Request

from ..domain import Principal
from ..errors import ApiError, ErrorId
from .state import service_of

COOKIE_NAME = "predictd_console"
SESSION_TTL_S = 12 * 3600.0
MAX_SESSIONS = 10_000


@dataclass(slots=True)
class ConsoleSession:
    key_hash: str
    key_id: str
    account_id: str
    csrf_token: str
    expires_at: float  # time.monotonic()


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class ConsoleSessions:
    def __init__(self, ttl_s: float = SESSION_TTL_S, max_sessions: int = MAX_SESSIONS) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._sessions: dict[str, ConsoleSession] = {}  # by token digest, oldest first

    def open(self, principal: Principal, key_hash: str) -> tuple[str, ConsoleSession]:
        """A new session for the key with this digest; returns the cookie token (shown to nobody else)."""
        self._expire()
        while len(self._sessions) >= self.max_sessions:
            del self._sessions[next(iter(self._sessions))]
        token = secrets.token_urlsafe(32)
        session = ConsoleSession(
            key_hash=key_hash,
            key_id=principal.key_id,
            account_id=principal.account.id,
            csrf_token=secrets.token_urlsafe(32),
            expires_at=time.monotonic() + self.ttl_s,
        )
        self._sessions[_token_digest(token)] = session
        return token, session

    def get(self, token: str | None) -> ConsoleSession | None:
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

    def close(self, token: str | None) -> None:
        if token:
            self._sessions.pop(_token_digest(token), None)

    def close_key(self, key_id: str) -> int:
        """End every session opened with this key (it was revoked)."""
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


def sessions_of(request: Request) -> ConsoleSessions:
    state = request.app.state
    sessions = getattr(state, "console_sessions", None)
    if sessions is None:
        sessions = ConsoleSessions()
        state.console_sessions = sessions
    assert isinstance(sessions, ConsoleSessions)
    return sessions


async def console_principal(request: Request) -> tuple[Principal, ConsoleSession] | None:
    """The principal of the request's console session, or None without a live one.

    The key behind the session is checked again on every call: once it is revoked the session ends; a
    suspended account answers ACCOUNT_SUSPENDED exactly as it would to the key itself.
    """
    sessions = sessions_of(request)
    token = request.cookies.get(COOKIE_NAME)
    session = sessions.get(token)
    if session is None:
        return None
    try:
        principal = await service_of(request).authenticate_digest(session.key_hash)
    except ApiError as exc:
        if exc.error_id is ErrorId.UNAUTHORIZED:
            sessions.close(token)
            return None
        raise
    return principal, session
