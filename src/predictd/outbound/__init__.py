"""Requests predictd makes to addresses its users chose: image inputs given as URLs (fetched by workers)
and webhook receivers (called by the delivery loop).

Both are server-side request forgery risks, so both go through this one guard: http(s) only, no
credentials in URLs, every resolved address checked against the blocked ranges (loopback, private, CGNAT,
link-local and cloud metadata, unique-local, multicast, reserved, and IPv4 addresses embedded in IPv6)
unless the operator allows them, the connection pinned to the address checked (no second DNS lookup, so
DNS rebinding cannot swap one in), redirects checked hop by hop, one wall-clock deadline per request that
every socket operation is clamped to, and size caps on what is read.

Layout: ``policy`` (the limits type and the address rules) and ``failures`` are pure and imported freely;
``guard`` (the pinned connections) and ``http`` (GET and POST on it) import httpx, httpcore and ssl, and
are imported by a caller on its first request only: memory at rest is a measured target, and an API
process without webhooks or a worker without image URLs never needs them.
"""

from .failures import OutboundError, Refused, Unreachable, printable
from .policy import Deadline, IPAddress, IPNetwork, OutboundLimits, address_kind, is_blocked_address

__all__ = [
    "Deadline",
    "IPAddress",
    "IPNetwork",
    "OutboundError",
    "OutboundLimits",
    "Refused",
    "Unreachable",
    "address_kind",
    "is_blocked_address",
    "printable",
]
