"""Who is calling: the API key from either surface's header, checked by the service."""

from __future__ import annotations

import ipaddress

from starlette.requests import Request

from ..domain import Principal
from .state import deployment_of, service_of


def presented_key(request: Request) -> str | None:
    """Both surfaces' headers are accepted on every path: a client sending the other one is not wrong."""
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    authorization = request.headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
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


async def authenticated(request: Request) -> Principal:
    service = service_of(request)
    principal = await service.authenticate(presented_key(request))
    decision = service.check_rate(principal)
    if decision is not None:
        # RequestContext adds these to whatever answer the route gives.
        request.scope.setdefault("state", {})[RATE_HEADERS_STATE] = decision.headers()
    return principal
