"""The webhook outbox (deliveries and their attempts) and each account's signing secrets, on SQLAlchemy
Core. Deliveries are written by the state changes they report (predictions.py, rows.pending_delivery), in
the same transaction; everything after that is here."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Row, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from ..core.domain import WebhookAttempt, WebhookDelivery, new_id, utcnow
from ..core.keys import new_webhook_secret
from .engines import Engine
from .schema import UTCDateTime, accounts, webhook_attempts, webhook_deliveries, webhook_secrets

_UTC_DATETIME = UTCDateTime()

# The newest secret and the one before it: each live secret adds a signature to every webhook's header, so
# they are capped (3,000 uncapped rotations made a 150 KB `webhook-signature` header).
LIVE_WEBHOOK_SECRETS = 2


def _not_to(origins: Sequence[str]) -> list[ColumnElement[bool]]:
    """Conditions leaving out the deliveries to ``origins``: URLs equal to one, or going on from it with
    "/", "?" or "#" (so "http://a.example" never covers "http://a.example.org/")."""
    url = webhook_deliveries.c.url
    return [
        ~or_(url == origin, *(url.startswith(origin + mark, autoescape=True) for mark in "/?#"))
        for origin in origins
    ]


def _delivery(row: Row[Any], history: tuple[WebhookAttempt, ...] = ()) -> WebhookDelivery:
    return WebhookDelivery(
        id=row.id,
        prediction_id=row.prediction_id,
        account_id=row.account_id,
        event=row.event,
        url=row.url,
        payload=row.payload,
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        created_at=row.created_at,
        delivered_at=row.delivered_at,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        history=history,
    )


class SqlDeliveries:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def webhook_secrets(self, account_id: str) -> list[str]:
        """The account's valid signing secrets, newest first, at most LIVE_WEBHOOK_SECRETS; the first read
        creates one."""
        now = utcnow()
        query = (
            select(webhook_secrets.c.secret)
            .where(
                webhook_secrets.c.account_id == account_id,
                or_(webhook_secrets.c.expires_at.is_(None), webhook_secrets.c.expires_at > now),
            )
            .order_by(webhook_secrets.c.created_at.desc(), webhook_secrets.c.id.desc())
            .limit(LIVE_WEBHOOK_SECRETS)
        )
        async with self.engine.connect() as conn:
            found = [r.secret for r in (await conn.execute(query)).all()]
        if found:
            return found
        # The first secret is added, never rotated in, under an id of its own per account: of two first
        # reads at once (a webhook being signed while the account asks for its secret) one adds it and the
        # other, refused by the key, reads it, so both hand out the same secret. (A rotation always leaves
        # a live secret, so an account comes here once.)
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    insert(webhook_secrets).values(
                        id=f"whs_{account_id}",
                        account_id=account_id,
                        secret=new_webhook_secret(),
                        created_at=now,
                        expires_at=None,
                    )
                )
        except IntegrityError:
            pass  # another first read added it
        async with self.engine.connect() as conn:
            return [r.secret for r in (await conn.execute(query)).all()]

    async def rotate_webhook_secret(self, account_id: str, grace_s: float) -> str:
        """A new secret; the newest current one stays valid for ``grace_s`` more seconds, and every other
        one is removed, so that at most two secrets sign."""
        now = utcnow()
        secret = new_webhook_secret()
        async with self.engine.begin() as conn:
            # Rotations of one account take turns (PostgreSQL; SQLite writes one at a time anyway), so that
            # each sees the secret the one before it added and keeps that one as the previous.
            await conn.execute(select(accounts.c.id).where(accounts.c.id == account_id).with_for_update())
            newest = (
                await conn.execute(
                    select(webhook_secrets.c.id)
                    .where(
                        webhook_secrets.c.account_id == account_id,
                        or_(webhook_secrets.c.expires_at.is_(None), webhook_secrets.c.expires_at > now),
                    )
                    .order_by(webhook_secrets.c.created_at.desc(), webhook_secrets.c.id.desc())
                    .limit(1)
                )
            ).scalar()
            await conn.execute(
                delete(webhook_secrets).where(
                    webhook_secrets.c.account_id == account_id, webhook_secrets.c.id != newest
                )
                if newest is not None
                else delete(webhook_secrets).where(webhook_secrets.c.account_id == account_id)
            )
            await conn.execute(
                update(webhook_secrets)
                .where(
                    webhook_secrets.c.account_id == account_id,
                    or_(
                        webhook_secrets.c.expires_at.is_(None),
                        webhook_secrets.c.expires_at > now + timedelta(seconds=grace_s),
                    ),
                )
                .values(expires_at=now + timedelta(seconds=grace_s))
            )
            await conn.execute(
                insert(webhook_secrets).values(
                    id=new_id("whs_"), account_id=account_id, secret=secret, created_at=now, expires_at=None
                )
            )
        return secret

    async def due_deliveries(
        self, now: datetime, limit: int, skip_origins: Sequence[str] = ()
    ) -> list[WebhookDelivery]:
        query = (
            select(webhook_deliveries)
            .where(
                webhook_deliveries.c.status == "pending",
                webhook_deliveries.c.next_attempt_at <= now,
                *_not_to(skip_origins),
            )
            .order_by(webhook_deliveries.c.next_attempt_at)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_delivery(r) for r in rows]

    async def next_delivery_at(self, skip_origins: Sequence[str] = ()) -> datetime | None:
        query = select(func.min(webhook_deliveries.c.next_attempt_at)).where(
            webhook_deliveries.c.status == "pending", *_not_to(skip_origins)
        )
        async with self.engine.connect() as conn:
            value = (await conn.execute(query)).scalar_one_or_none()
        return _UTC_DATETIME.process_result_value(value, self.engine.dialect) if value is not None else None

    async def claim_delivery(self, delivery: WebhookDelivery, lease_until: datetime) -> bool:
        """Take a due delivery for one attempt; false when another process took it first.

        Still due is part of the condition: a claim moves ``next_attempt_at`` to the lease's end, so of
        several dispatchers that read the same due row (an API process and a worker, scaled out) only the
        first claims it. Matching the attempt count alone let a second one send it again."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(webhook_deliveries)
                .where(
                    webhook_deliveries.c.id == delivery.id,
                    webhook_deliveries.c.status == "pending",
                    webhook_deliveries.c.attempts == delivery.attempts,
                    webhook_deliveries.c.next_attempt_at <= utcnow(),
                )
                .values(next_attempt_at=lease_until)
            )
        return bool(result.rowcount)

    async def record_attempt(
        self, delivery_id: str, attempt: WebhookAttempt, status: str, next_attempt_at: datetime | None
    ) -> None:
        values: dict[str, Any] = {
            "attempts": attempt.attempt,
            "status": status,
            "next_attempt_at": next_attempt_at,
            "last_status_code": attempt.status_code,
            "last_error": attempt.error,
        }
        if status == "delivered":
            values["delivered_at"] = attempt.at
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(webhook_attempts).values(
                    delivery_id=delivery_id,
                    attempt=attempt.attempt,
                    at=attempt.at,
                    status_code=attempt.status_code,
                    error=attempt.error,
                    duration_ms=attempt.duration_ms,
                )
            )
            await conn.execute(
                update(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id).values(**values)
            )

    async def disable_deliveries(self, prediction_id: str, url: str) -> int:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(webhook_deliveries)
                .where(
                    webhook_deliveries.c.prediction_id == prediction_id,
                    webhook_deliveries.c.url == url,
                    webhook_deliveries.c.status == "pending",
                )
                .values(status="disabled", next_attempt_at=None)
            )
        return int(result.rowcount)

    async def url_disabled(self, prediction_id: str, url: str) -> bool:
        query = (
            select(func.count())
            .select_from(webhook_deliveries)
            .where(
                webhook_deliveries.c.prediction_id == prediction_id,
                webhook_deliveries.c.url == url,
                webhook_deliveries.c.status == "disabled",
            )
        )
        async with self.engine.connect() as conn:
            return bool((await conn.execute(query)).scalar_one())

    async def list_deliveries(self, prediction_id: str) -> list[WebhookDelivery]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(webhook_deliveries)
                    .where(webhook_deliveries.c.prediction_id == prediction_id)
                    .order_by(webhook_deliveries.c.created_at, webhook_deliveries.c.id)
                )
            ).all()
            ids = [r.id for r in rows]
            attempts = (
                (
                    await conn.execute(
                        select(webhook_attempts)
                        .where(webhook_attempts.c.delivery_id.in_(ids))
                        .order_by(webhook_attempts.c.id)
                    )
                ).all()
                if ids
                else []
            )
        history: dict[str, list[WebhookAttempt]] = {}
        for a in attempts:
            history.setdefault(a.delivery_id, []).append(
                WebhookAttempt(a.attempt, a.at, a.status_code, a.error, a.duration_ms)
            )
        return [_delivery(r, tuple(history.get(r.id, ()))) for r in rows]
