"""One database, opened and closed as a whole: the store of each aggregate on one engine (and, for a SQLite
file, on embedded mode's own sqlite3 connection too)."""

from __future__ import annotations

from sqlalchemy.engine import make_url

from .accounts import SqlAccounts
from .deliveries import SqlDeliveries
from .engines import Engine, make_engine
from .migrate import migrate
from .predictions import SqlPredictions
from .sqlite_accounts import SqliteAccounts
from .sqlite_connection import FastConnection
from .sqlite_predictions import SqlitePredictions


class Database:
    """``accounts``, ``predictions`` and ``deliveries`` each implement their port (core/ports.py)."""

    def __init__(
        self,
        engine: Engine,
        accounts: SqlAccounts,
        predictions: SqlPredictions,
        deliveries: SqlDeliveries,
        fast: FastConnection | None = None,
    ) -> None:
        self.engine = engine
        self.accounts = accounts
        self.predictions = predictions
        self.deliveries = deliveries
        self._fast = fast

    def remembered_bytes(self) -> int:
        """What the rows this process keeps in memory weigh (embedded mode's SQLite; 0 otherwise)."""
        return 0 if self._fast is None else self._fast.remembered_bytes()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def migrate(self) -> None:
        await migrate(self.engine)

    async def close(self) -> None:
        if self._fast is not None:
            await self._fast.close()  # commits the writes still waiting first
        await self.engine.dispose()


async def open_database(
    url: str,
    *,
    sqlite_busy_timeout_ms: int = 5000,
    postgres_lock_timeout_ms: int = 5000,
    migrate: bool = True,
    remember_bytes: int = 32 << 20,
) -> Database:
    engine = make_engine(
        url, sqlite_busy_timeout_ms=sqlite_busy_timeout_ms, postgres_lock_timeout_ms=postgres_lock_timeout_ms
    )
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        fast = FastConnection(
            parsed.database, busy_timeout_ms=sqlite_busy_timeout_ms, remember_bytes=remember_bytes
        )
        database = Database(
            engine,
            SqliteAccounts(engine, fast),
            SqlitePredictions(engine, fast),
            SqlDeliveries(engine),
            fast,
        )
    else:
        database = Database(engine, SqlAccounts(engine), SqlPredictions(engine), SqlDeliveries(engine))
    if migrate:
        await database.migrate()
    return database
