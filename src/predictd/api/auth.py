"""Who is calling: the API key from either surface's header, checked by the access use case."""

from __future__ import annotations

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
    """The caller's region, read only from a header set by a proxy the operator trusts."""
    legal = deployment_of(request).settings.legal
    if not legal.trusted_proxies or request.client is None:
        return None
    try:
        peer = ipaddress.ip_address(request.client.host)
    except ValueError:
        return None
    if not any(peer in ipaddress.ip_network(cidr, strict=False) for cidr in legal.trusted_proxies):
        return None
    region = request.headers.get(legal.region_header, "").strip()
    return region or None


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
        principal = await access.authenticate(key)
    decision = await access.check_rate(principal)
    if decision is not None:
        # RequestContext adds these to whatever answer the route gives.
        request.scope.setdefault("state", {})[RATE_HEADERS_STATE] = decision.headers()
    return principal
