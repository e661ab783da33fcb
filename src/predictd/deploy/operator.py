"""What the CLI's operator commands run on: the deployment's database, looked for without creating it,
opened (and migrated), and the operator use cases over it. Assembled here, so that the CLI never reaches the
store itself."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..config.settings import Settings
from ..store import open_database
from ..store.presence import Absence, missing_database, shown_url
from ..usecases.administration import Administration

T = TypeVar("T")

__all__ = ["Absence", "database_absence", "run_administration", "shown_url"]


async def database_absence(settings: Settings) -> Absence | None:
    """Why the settings name no predictd database (None when they do); creates nothing."""
    return await missing_database(settings.resolved_database_url)


async def run_administration(settings: Settings, action: Callable[[Administration], Awaitable[T]]) -> T:
    """``action`` on the operator use cases over the configured database (opening it migrates it first)."""
    database = await open_database(
        settings.resolved_database_url, sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms
    )
    try:
        return await action(Administration(database.accounts))
    finally:
        await database.close()
