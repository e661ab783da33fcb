"""How a webhook is signed: the Standard Webhooks headers (``webhook-id``, ``webhook-timestamp``,
``webhook-signature``), with one signature per valid secret while a rotation is in progress, so a receiver
that knows either secret accepts it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from standardwebhooks import Webhook

USER_AGENT = "predictd-webhooks/1"


def signature_header(secrets_: Sequence[str], message_id: str, timestamp: datetime, body: bytes) -> str:
    """``v1,<sig>`` per valid secret, space-separated: receivers accept any one of them."""
    return " ".join(Webhook(s).sign(message_id, timestamp, body.decode()) for s in secrets_)


def signed_headers(
    secrets_: Sequence[str], message_id: str, event: str, timestamp: datetime, body: bytes
) -> dict[str, str]:
    """Every header of one attempt to deliver ``body`` (a JSON payload) as message ``message_id``."""
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature_header(secrets_, message_id, timestamp, body),
        "x-predictd-event": event,
    }
