"""Who is calling: the API key from either surface's header, checked by the access use case."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

from starlette.requests import Request

from ..core.domain import Principal
from .sessions import COOKIE_NAME, console_principal
from .state import deployment_of, usecases_of


def presented_key(request: Request) -> str | None:
    """Both surfaces' headers are accepted on every path: a client sending the other one is not wrong."""
    return key_in(request.scope["headers"])


def key_in(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The API key in raw ASGI headers (names arrive lower-cased), the first of each name as Starlette
    would: every request runs this, and a header mapping costs more than the scan."""
    api_key: bytes | None = None
    authorization: bytes | None = None
    name: bytes
    value: bytes
    for name, value in headers:
        if name == b"x-api-key" and api_key is None:
            api_key = value
        elif name == b"authorization" and authorization is None:
            authorization = value
    if api_key:
        return api_key.decode("latin-1").strip()
    if authorization:
        scheme, _, credentials = authorization.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    return None


RATE_HEADERS_STATE = "rate_headers"


def caller_region(request: Request) -> str | None:
    """The caller's region, read only from a header set by a proxy the operator trusts: the peer of the
    connection itself must be one (uvicorn is told not to rewrite the peer from X-Forwarded-For, so that a
    client's own forwarding header cannot move it out of, or into, the trusted set)."""
    legal = deployment_of(request).settings.legal
    trusted = _networks(tuple(legal.trusted_proxies))
    if not trusted or request.client is None or not _within(request.client.host, trusted):
        return None
    region = request.headers.get(legal.region_header, "").strip()
    return region or None


def client_address(request: Request) -> str | None:
    """The address of whoever sent the request: the connection's peer, or, when that peer is a proxy the
    operator trusts, the right-most address of ``X-Forwarded-For`` that is not a trusted proxy itself.
    Entries left of it were written by the client, and prove nothing."""
    if request.client is None:
        return None
    trusted = _networks(tuple(deployment_of(request).settings.legal.trusted_proxies))
    return forwarded_client(request.client.host, request.headers.getlist("x-forwarded-for"), trusted)


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def forwarded_client(peer: str, forwarded_for: list[str], trusted: tuple[IPNetwork, ...]) -> str:
    """The right-most untrusted hop of the chain ``forwarded_for`` (every header line, in order) then
    ``peer``; the left-most hop when every one is trusted."""
    hops = [hop.strip() for line in forwarded_for for hop in line.split(",") if hop.strip()]
    hops.append(peer)
    for hop in reversed(hops):
        if not _within(hop, trusted):
            return hop
    return hops[0]


@functools.lru_cache(maxsize=16)
def _networks(cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def _within(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # not an address (a name, garbage): never a trusted proxy
    return any(ip in network for network in networks)


# Methods that change nothing. Only these accept the web console's session cookie in place of a key, so a
# forged cross-site request can never create, cancel, delete or rotate anything with a browser's cookie
# (the cookie is SameSite=Strict as well, and no route answers CORS).
COOKIE_METHODS = frozenset({"GET", "HEAD"})


async def authenticated(request: Request) -> Principal:
    """The caller's principal, from the API key headers; or, on GET only and when no key header is sent at
    all, from the web console's session cookie (so the console's EventSource can follow a stream).

    A request that carries a key header is judged by that key alone, cookie or not.
    """
    access = usecases_of(request).access
    key = presented_key(request)
    principal: Principal | None = None
    if key is None and request.method in COOKIE_METHODS and COOKIE_NAME in request.cookies:
        found = await console_principal(request)
        principal = found[0] if found else None
    if principal is None:
        principal = await access.authenticate(key, lambda: client_address(request))
    await count_request(request, principal)
    return principal


async def count_request(request: Request, principal: Principal) -> None:
    """Count the request against the principal's rate limits (RATE_LIMIT_EXCEEDED beyond them); the answer
    then carries the RateLimit headers (RequestContext adds them to whatever answer the route gives)."""
    decision = await usecases_of(request).access.check_rate(principal)
    if decision is not None:
        request.scope.setdefault("state", {})[RATE_HEADERS_STATE] = decision.headers()
