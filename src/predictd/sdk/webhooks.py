"""Verifying webhook deliveries (Standard Webhooks: ``webhook-id``, ``webhook-timestamp``,
``webhook-signature`` headers, HMAC-SHA256) in a receiver::

    from predictd.sdk.webhooks import verify, WebhookVerificationError

    try:
        event = verify(request_body_bytes, request.headers, ["whsec_new...", "whsec_old..."])
    except WebhookVerificationError:
        return 400

Pass every secret currently valid (the new one and, while rotating, the old one): a delivery signed with
any of them verifies. Deliveries older or newer than 5 minutes are refused, against replays.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import standardwebhooks
from standardwebhooks.webhooks import EmptyWebhookSecretError

from .errors import WebhookVerificationError

__all__ = ["WebhookVerificationError", "verify"]


def verify(payload: bytes, headers: Mapping[str, str], secrets: Sequence[str] | str) -> dict[str, Any]:
    """The delivery's JSON object when its signature matches one of ``secrets``; raises
    WebhookVerificationError (never returns) when it does not, or when it is stale or malformed."""
    candidates = [secrets] if isinstance(secrets, str) else list(secrets)
    if not candidates:
        raise WebhookVerificationError("no webhook secret given to verify against")
    plain_headers = {str(name): str(value) for name, value in headers.items()}
    reasons: list[str] = []
    for position, secret in enumerate(candidates, 1):
        try:
            webhook = standardwebhooks.Webhook(secret)
        except (EmptyWebhookSecretError, binascii.Error, ValueError) as exc:
            raise WebhookVerificationError(
                f"webhook secret #{position} is not a valid secret: {exc}"
            ) from None
        try:
            webhook.verify(payload, plain_headers, json_parse=False)
        except standardwebhooks.WebhookVerificationError as exc:
            reasons.append(str(exc))
            continue
        except (UnicodeDecodeError, ValueError) as exc:
            raise WebhookVerificationError(f"malformed webhook delivery: {exc}") from None
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise WebhookVerificationError(f"the signed payload is not JSON: {exc}") from None
        if not isinstance(event, dict):
            raise WebhookVerificationError("the signed payload is not a JSON object")
        return event
    why = "; ".join(dict.fromkeys(reasons))
    raise WebhookVerificationError(
        f"webhook signature did not verify with any of the {len(candidates)} secret(s): {why}"
    )
