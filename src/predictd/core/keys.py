"""Secrets predictd generates: API keys and webhook signing secrets.

API keys are generated with 256 bits of randomness, shown once, stored only as a SHA-256 digest. A fast
digest is the right tool here (as GitHub and Stripe do): keys are random, not passwords, so there is
nothing to brute-force, and lookups must be cheap on every request.

Webhook signing secrets are kept as they are (the signer needs them), in the Standard Webhooks form:
``whsec_`` and 32 random bytes in base64.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

KEY_PREFIX = "pd_"
DISPLAY_PREFIX_CHARS = 10


@dataclass(frozen=True, slots=True)
class NewKey:
    secret: str
    prefix: str
    digest: str


def generate_key() -> NewKey:
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    return NewKey(secret=secret, prefix=secret[:DISPLAY_PREFIX_CHARS], digest=digest(secret))


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def loggable_prefix(presented: str) -> str:
    """What of a presented key, right or wrong, may be written to a log: as much as the key list shows of a
    real key, never more than a quarter of what was sent (a short or mistyped secret is never logged whole),
    and only printable ASCII (a header value must not forge log lines)."""
    shown = presented[: min(DISPLAY_PREFIX_CHARS, len(presented) // 4)]
    return "".join(c if c.isascii() and c.isprintable() else "?" for c in shown)


def matches(secret: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(secret), stored_digest)


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
