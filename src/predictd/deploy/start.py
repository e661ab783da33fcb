"""Starting the deployment a server runs on, in the mode its settings ask for."""

from __future__ import annotations

from ..config.settings import Settings
from ..telemetry.metrics import Metrics
from ..webhooks import Renderer
from .embedded import Deployment, start_embedded


async def start_deployment(
    settings: Settings, metrics: Metrics, renderers: dict[str, Renderer]
) -> Deployment:
    """``renderers`` turn a prediction into each surface's webhook payload (given by the HTTP layer)."""
    if settings.scaled_out:
        from .scaled import start_api  # Redis and its clients load only in scaled-out processes

        return await start_api(settings, metrics, renderers)
    return await start_embedded(settings, metrics, renderers)
