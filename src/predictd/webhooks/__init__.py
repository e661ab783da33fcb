"""Webhooks: where a prediction's webhooks go (``targets``), which ones each state change sends
(``planning``) and how each is signed (``signing``).

Sending them is the delivery loop's (:mod:`predictd.usecases.deliveries`): it reads the outbox this
package plans, and its connections go through the same SSRF guard as image fetches
(:mod:`predictd.outbound`).
"""

from .planning import Planner, Renderer, events_for
from .signing import signature_header, signed_headers
from .targets import DEFAULT_EVENTS, EVENTS, WebhookTarget, fashn_target, native_target, refusal

__all__ = [
    "DEFAULT_EVENTS",
    "EVENTS",
    "Planner",
    "Renderer",
    "WebhookTarget",
    "events_for",
    "fashn_target",
    "native_target",
    "refusal",
    "signature_header",
    "signed_headers",
]
