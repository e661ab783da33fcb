"""The caller's own account: its credits and ledger, usage, API keys, webhook signing secrets and the
webhook deliveries of its predictions. Every call is scoped to the principal's account; another account's
key or prediction is reported exactly like a missing one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..core import keys
from ..core.domain import ApiKey, Credits, DailyUsage, LedgerEntry, Principal, WebhookDelivery
from ..core.ports import AccountStore, DeliveryStore
from ..errors import ApiError, ErrorId
from .predictions import Predictions


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: ApiKey
    secret: str  # shown once, to its creator; only its digest is stored


@dataclass(frozen=True, slots=True)
class WebhookSecrets:
    valid: list[str]  # newest first: receivers accept a signature by any of them
    previous_valid_for_s: float


class OwnAccount:
    def __init__(
        self,
        accounts: AccountStore,
        deliveries: DeliveryStore,
        predictions: Predictions,
        *,
        rotation_grace_s: float,
    ) -> None:
        self._accounts = accounts
        self._deliveries = deliveries
        self._predictions = predictions
        self._rotation_grace_s = rotation_grace_s

    # -- credits and usage ---------------------------------------------------------------------------------

    async def credits(self, principal: Principal) -> Credits:
        return await self._accounts.credits(principal.account.id)

    async def ledger(
        self, principal: Principal, limit: int = 100, before_id: int | None = None
    ) -> list[LedgerEntry]:
        return await self._accounts.ledger(principal.account.id, limit, before_id)

    async def daily_usage(self, principal: Principal, since: datetime) -> list[DailyUsage]:
        return await self._predictions.daily_usage(principal, since)

    async def in_flight(self, principal: Principal) -> int | None:
        return await self._predictions.in_flight(principal.account.id)

    # -- API keys ------------------------------------------------------------------------------------------

    async def keys(self, principal: Principal) -> list[ApiKey]:
        return await self._accounts.list_keys(principal.account.id)

    async def create_key(self, principal: Principal, label: str) -> CreatedKey:
        new = keys.generate_key()
        stored = await self._accounts.create_key(principal.account.id, new.digest, new.prefix, label)
        return CreatedKey(stored, new.secret)

    async def revoke_key(self, principal: Principal, key_id: str) -> ApiKey:
        owned = {k.id: k for k in await self._accounts.list_keys(principal.account.id)}
        key = owned.get(key_id)
        if key is None:  # another account's key is reported exactly like a missing one
            raise ApiError(ErrorId.NOT_FOUND, f"No key with id {key_id!r}.")
        await self._accounts.revoke_key(key.id)
        return key

    # -- webhooks ------------------------------------------------------------------------------------------

    async def webhook_secrets(self, principal: Principal) -> WebhookSecrets:
        valid = await self._deliveries.webhook_secrets(principal.account.id)
        return WebhookSecrets(valid, self._rotation_grace_s)

    async def rotate_webhook_secret(self, principal: Principal) -> WebhookSecrets:
        await self._deliveries.rotate_webhook_secret(principal.account.id, self._rotation_grace_s)
        return await self.webhook_secrets(principal)

    async def deliveries(self, principal: Principal, prediction_id: str) -> list[WebhookDelivery]:
        """Every webhook delivery of one of the caller's predictions, with each attempt."""
        await self._predictions.get(principal, prediction_id)
        return await self._deliveries.list_deliveries(prediction_id)
