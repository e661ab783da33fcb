"""Which webhooks a state change sends: the outbox rows written in the same transaction as the change, so
that a crash can delay a webhook but never lose it. Each row is rendered once, by the surface the
prediction was submitted on, and keeps its id (the ``webhook-id``) across all its attempts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.domain import NewDelivery, Prediction, Status, new_id
from .targets import WebhookTarget

Renderer = Callable[[Prediction, str, str], dict[str, Any]]  # (prediction, base_url, event) -> payload


def events_for(target: Status, prediction: Prediction) -> list[str]:
    if target is Status.PROCESSING:
        return ["start"]
    if target is Status.SUCCEEDED:
        return ["output", "completed"]
    if prediction.terminal:
        return ["completed"]
    return []


class Planner:
    """Turns a state change into outbox rows, rendered by the surface the prediction was submitted on."""

    def __init__(self, renderers: dict[str, Renderer]) -> None:
        self._renderers = renderers

    def __call__(self, prediction: Prediction) -> list[NewDelivery]:
        target = WebhookTarget.from_extra(prediction.extra)
        if target is None:
            return []
        render = self._renderers[target.surface]
        return [
            NewDelivery(
                id=new_id("msg_"),
                prediction_id=prediction.id,
                account_id=prediction.account_id,
                event=event,
                url=target.url,
                payload=render(prediction, target.base_url, event),
            )
            for event in events_for(prediction.status, prediction)
            if event in target.events
        ]
