"""The store on real SQLite and real PostgreSQL: migrations, the state machine guard under concurrency,
tenant isolation and listing."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import sqlite3
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select, text

from predictd.core.domain import (
    Credits,
    CreditsRefused,
    IdempotencyRecord,
    ModelInfo,
    NewDelivery,
    Plan,
    Prediction,
    Status,
    new_id,
    utcnow,
)
from predictd.core.ports import IdempotencyKeyTaken, ListQuery, Move
from predictd.dispatch.local import LocalNotifier
from predictd.runtime.outcomes import Failed, Succeeded, WorkerDied
from predictd.store import Database, open_database
from predictd.store.engines import make_engine
from predictd.store.migrate import _PG_MIGRATION_LOCK, alembic_config
from predictd.store.schema import FAILED_KEEPING_INPUT_SQL, UNFINISHED_SQL, metadata, predictions
from predictd.store.sqlite_connection import _CommitWatch
from predictd.usecases.runs import RunRecorder

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        opened = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite3'}")
        yield opened
        await opened.close()
        return
    name = f"predictd_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        opened = await open_database(f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}")
        yield opened
        await opened.close()
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


def queued(account_id: str, model: str = "echo", **overrides: object) -> Prediction:
    fields: dict[str, object] = {
        "id": new_id(),
        "account_id": account_id,
        "model": model,
        "status": Status.QUEUED,
        "input": {"text": "x"},
        "created_at": utcnow(),
    }
    fields.update(overrides)
    return Prediction(**fields)  # type: ignore[arg-type]


async def test_migrations_produce_exactly_the_schema_in_code(store: Database) -> None:
    async with store.engine.connect() as conn:
        diff = await conn.run_sync(lambda sync: compare_metadata(MigrationContext.configure(sync), metadata))
    assert diff == []
    await store.migrate()  # running again is a no-op


async def test_a_second_completion_is_refused(store: Database) -> None:
    account = await store.accounts.create_account("a")
    p = queued(account.id)
    await store.predictions.insert_prediction(p)
    assert await store.predictions.transition(p.id, Status.SUCCEEDED, output="too early") is None
    claimed = await store.predictions.transition(
        p.id, Status.PROCESSING, count_attempt=True, started_at=utcnow()
    )
    assert claimed is not None
    assert claimed.attempts == 1
    outcomes = await asyncio.gather(
        *(
            store.predictions.transition(p.id, target, completed_at=utcnow())
            for target in [Status.SUCCEEDED, Status.CANCELLED, Status.FAILED] * 5
        )
    )
    winners = [o for o in outcomes if o is not None]
    assert len(winners) == 1
    stored = await store.predictions.get_prediction(p.id)
    assert stored is not None
    assert stored.status == winners[0].status


async def test_concurrent_claims_hand_a_prediction_to_exactly_one_worker(store: Database) -> None:
    account = await store.accounts.create_account("a")
    p = queued(account.id)
    await store.predictions.insert_prediction(p)
    claims = await asyncio.gather(
        *(store.predictions.transition(p.id, Status.PROCESSING, count_attempt=True) for _ in range(10))
    )
    assert sum(c is not None for c in claims) == 1
    stored = await store.predictions.get_prediction(p.id)
    assert stored is not None
    assert stored.attempts == 1


async def test_moves_written_together_are_each_guarded_and_durable_all_or_none(store: Database) -> None:
    """What a worker slot writes when one prediction ends and the next ones start: one transaction."""
    account = await store.accounts.create_account("a")
    await store.accounts.add_ledger_entry(account.id, "grant", 10_000_000, "start")
    running, waiting, cancelled = (queued(account.id) for _ in range(3))
    for p in (running, waiting, cancelled):
        await store.predictions.insert_prediction(p, reserve_micros=2_000_000)
    await store.predictions.transition(running.id, Status.PROCESSING, count_attempt=True, started_at=utcnow())
    await store.predictions.transition(cancelled.id, Status.CANCELLED, completed_at=utcnow())
    now = utcnow()
    moved = await store.predictions.transitions(
        [
            Move(running.id, Status.SUCCEEDED, changes={"output": "x", "completed_at": now, "cost": 1.5}),
            Move(cancelled.id, Status.PROCESSING, count_attempt=True, changes={"started_at": now}),
            Move(waiting.id, Status.PROCESSING, count_attempt=True, changes={"started_at": now}),
        ]
    )
    ended, refused, started = moved
    assert refused is None
    assert ended is not None
    assert (ended.status, ended.output, ended.version) == (Status.SUCCEEDED, "x", 2)
    assert started is not None
    assert (started.status, started.attempts, started.started_at) == (Status.PROCESSING, 1, now)
    assert await store.predictions.get_prediction(running.id) == ended
    assert await store.predictions.get_prediction(waiting.id) == started
    assert await store.predictions.get_prediction(cancelled.id) is not None
    assert (await store.predictions.get_prediction(cancelled.id)).status is Status.CANCELLED  # type: ignore[union-attr]
    # Settled with the success: charged 1.5, its reservation and the cancelled one's released.
    assert await store.accounts.credits(account.id) == Credits(
        10_000_000 - 1_500_000, reserved_micros=2_000_000
    )

    later = queued(account.id)
    await store.predictions.insert_prediction(later)

    def planner_that_fails(prediction: Prediction) -> list[NewDelivery]:
        if prediction.id == later.id:
            raise RuntimeError("the outbox write failed")
        return []

    with pytest.raises(RuntimeError, match="outbox"):
        await store.predictions.transitions(
            [
                Move(waiting.id, Status.SUCCEEDED, changes={"output": "y", "completed_at": utcnow()}),
                Move(later.id, Status.PROCESSING, count_attempt=True),
            ],
            deliveries=planner_that_fails,
        )
    # Nothing of the failed transaction stayed: not the success written before the failure, nor its charge.
    assert await store.predictions.get_prediction(waiting.id) == started
    assert (await store.predictions.get_prediction(later.id)).status is Status.QUEUED  # type: ignore[union-attr]
    assert await store.accounts.credits(account.id) == Credits(
        10_000_000 - 1_500_000, reserved_micros=2_000_000
    )


async def test_unfinished_predictions_are_found_through_an_index_that_holds_only_them(
    store: Database,
) -> None:
    """Recovery and the sweeper look for unfinished predictions among every prediction ever made."""
    account = await store.accounts.create_account("a")
    waiting, running, done = (queued(account.id) for _ in range(3))
    for p in (waiting, running, done):
        await store.predictions.insert_prediction(p)
    for p in (running, done):
        await store.predictions.transition(p.id, Status.PROCESSING, count_attempt=True, started_at=utcnow())
    await store.predictions.transition(done.id, Status.SUCCEEDED, completed_at=utcnow(), output="x")
    assert {p.id for p in await store.predictions.list_unfinished()} == {waiting.id, running.id}
    query = select(predictions.c.id).where(UNFINISHED_SQL)
    compiled = str(query.compile(dialect=store.engine.dialect, compile_kwargs={"literal_binds": True}))
    sqlite = store.engine.dialect.name == "sqlite"
    definition = (
        "SELECT sql FROM sqlite_master WHERE name = 'ix_predictions_unfinished'"
        if sqlite
        else "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_predictions_unfinished'"
    )
    async with store.engine.connect() as conn:
        index = str((await conn.execute(text(definition))).scalar())
        if not sqlite:
            await conn.execute(text("SET enable_seqscan = off"))  # three rows: a scan would win otherwise
        explain = f"EXPLAIN QUERY PLAN {compiled}" if sqlite else f"EXPLAIN {compiled}"
        plan = " ".join(str(row) for row in (await conn.execute(text(explain))).all())
    assert "processing" in index  # made by the migrations with its condition: finished ones are not in it
    assert "queued" in index
    assert "succeeded" not in index
    assert "ix_predictions_unfinished" in plan


async def test_the_retention_sweep_removes_only_the_inputs_of_failures_older_than_the_cutoff(
    store: Database,
) -> None:
    account = await store.accounts.create_account("a")
    now = utcnow()
    old, recent = now - timedelta(hours=2), now - timedelta(minutes=1)
    endings = {
        "old_failed": (Status.FAILED, old),
        "old_timed_out": (Status.TIMED_OUT, old),
        "recent_failed": (Status.FAILED, recent),
        "old_succeeded": (Status.SUCCEEDED, old),
        "old_cancelled": (Status.CANCELLED, old),
    }
    ids = {}
    for name, (status, ended) in endings.items():
        p = queued(account.id, input={"text": name})
        ids[name] = p.id
        await store.predictions.insert_prediction(p)
        await store.predictions.transition(p.id, Status.PROCESSING, count_attempt=True, started_at=old)
        await store.predictions.transition(p.id, status, completed_at=ended)
        await store.predictions.get_prediction(p.id, account.id)  # remembered (SQLite): must not go stale

    assert await store.predictions.purge_failed_inputs(now - timedelta(hours=1)) == 2
    assert await store.predictions.purge_failed_inputs(now - timedelta(hours=1)) == 0
    for name, prediction_id in ids.items():
        found = await store.predictions.get_prediction(prediction_id, account.id)
        assert found is not None
        removed = name in ("old_failed", "old_timed_out")
        assert (found.input, found.data_removed) == ((None, True) if removed else ({"text": name}, False))
        assert found.status is endings[name][0]

    query = select(predictions.c.id).where(FAILED_KEEPING_INPUT_SQL, predictions.c.completed_at < now)
    compiled = str(query.compile(dialect=store.engine.dialect, compile_kwargs={"literal_binds": True}))
    sqlite = store.engine.dialect.name == "sqlite"
    async with store.engine.connect() as conn:
        if not sqlite:
            await conn.execute(text("SET enable_seqscan = off"))  # a few rows: a scan would win otherwise
        explain = f"EXPLAIN QUERY PLAN {compiled}" if sqlite else f"EXPLAIN {compiled}"
        plan = " ".join(str(row) for row in (await conn.execute(text(explain))).all())
    assert "ix_predictions_failed_inputs" in plan


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_plans_stored_before_the_screen_setting_keep_the_screen_on(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite+aiosqlite:///{tmp_path / 'old.sqlite3'}"
        if database == "sqlite"
        else request.getfixturevalue("pg_database")
    )
    old = make_engine(url)
    async with old.begin() as conn:
        await conn.run_sync(lambda sync: command.upgrade(alembic_config(sync), "0006"))
        await conn.execute(
            text(
                "INSERT INTO plans (name, models, rate_window_s, prepaid, created_at) "
                "VALUES ('old', '[\"*\"]', 60, false, '2026-01-01')"
            )
        )
    await old.dispose()
    store = await open_database(url)
    try:
        plan = await store.accounts.get_plan("old")
        assert plan is not None
        assert plan.security_screen is True
        await store.accounts.put_plan(dataclasses.replace(plan, security_screen=False))
        assert [(p.name, p.security_screen) for p in await store.accounts.list_plans()] == [("old", False)]
    finally:
        await store.close()


async def test_predictions_are_isolated_by_account(store: Database) -> None:
    alice = await store.accounts.create_account("alice")
    bob = await store.accounts.create_account("bob")
    p = queued(alice.id)
    await store.predictions.insert_prediction(p)
    assert await store.predictions.get_prediction(p.id, bob.id) is None
    assert await store.predictions.get_prediction(p.id, alice.id) is not None
    assert await store.predictions.remove_data(p.id, bob.id) is None
    page = await store.predictions.list_predictions(ListQuery(account_id=bob.id, page=1, per_page=10))
    assert page.total == 0


async def test_listing_filters_orders_and_pages(store: Database) -> None:
    account = await store.accounts.create_account("a")
    base = utcnow() - timedelta(hours=1)
    made = []
    for i in range(7):
        p = queued(
            account.id, model="sleep" if i % 3 == 0 else "echo", created_at=base + timedelta(minutes=i)
        )
        await store.predictions.insert_prediction(p)
        made.append(p)
    page = await store.predictions.list_predictions(ListQuery(account_id=account.id, page=2, per_page=3))
    assert page.total == 7
    assert [p.id for p in page.items] == [p.id for p in reversed(made)][3:6]
    sleeps = await store.predictions.list_predictions(
        ListQuery(account_id=account.id, page=1, per_page=50, model="sleep")
    )
    assert {p.id for p in sleeps.items} == {made[0].id, made[3].id, made[6].id}
    window = await store.predictions.list_predictions(
        ListQuery(
            account_id=account.id,
            page=1,
            per_page=50,
            since=base + timedelta(minutes=2),
            until=base + timedelta(minutes=4),
        )
    )
    assert [p.id for p in window.items] == [made[4].id, made[3].id, made[2].id]
    assert all(p.created_at.tzinfo is not None for p in window.items)


async def test_json_inputs_round_trip(store: Database) -> None:
    account = await store.accounts.create_account("a")
    value = {"text": "héllo ✓", "nested": {"list": [1, 2.5, None, True]}, "empty": {}}
    p = queued(account.id, input=value)
    await store.predictions.insert_prediction(p)
    stored = await store.predictions.get_prediction(p.id)
    assert stored is not None
    assert stored.input == value
    removed = await store.predictions.remove_data(p.id, account.id)
    assert removed is not None
    assert (removed.input, removed.output, removed.data_removed) == (None, None, True)


async def test_keys_are_found_by_digest_and_revoked(store: Database) -> None:
    account = await store.accounts.create_account("a")
    key = await store.accounts.create_key(account.id, "d" * 64, "pd_abcdefg", "ci")
    found = await store.accounts.find_key("d" * 64)
    assert found is not None
    assert found[0].id == key.id
    assert found[1].name == "a"
    assert await store.accounts.find_key("e" * 64) is None
    assert await store.accounts.revoke_key(key.id)
    assert not await store.accounts.revoke_key(key.id)
    found = await store.accounts.find_key("d" * 64)
    assert found is not None
    assert found[0].revoked_at is not None


async def test_a_key_lookup_reads_the_accounts_plan_in_the_same_statement(store: Database) -> None:
    await store.accounts.put_plan(
        Plan("pro", models=("echo",), rate_limit=7, concurrency_limit=2, prepaid=True)
    )
    with_plan = await store.accounts.create_account("a", plan="pro")
    missing_plan = await store.accounts.create_account("b", plan="gone")
    without = await store.accounts.create_account("c")
    for index, account in enumerate((with_plan, missing_plan, without)):
        await store.accounts.create_key(account.id, str(index) * 64, f"pd_{index}", "ci")
    found = await store.accounts.find_key("0" * 64)
    assert found is not None
    assert found[1].plan_details == await store.accounts.get_plan("pro")
    assert found[1].plan_details == Plan(
        "pro", models=("echo",), rate_limit=7, concurrency_limit=2, prepaid=True
    )
    for digit in ("1", "2"):
        found = await store.accounts.find_key(digit * 64)
        assert found is not None
        assert found[1].plan_details is None


async def test_credits_are_the_ledgers_sums_after_every_kind_of_entry(store: Database) -> None:
    account = await store.accounts.create_account("a")
    assert await store.accounts.credits(account.id) == Credits(0, 0)
    await store.accounts.add_ledger_entry(account.id, "grant", 10_000_000, "start")
    await store.accounts.add_ledger_entry(account.id, "adjust", -1_500_000, "chargeback")
    runs = [queued(account.id) for _ in range(4)]
    for p in runs:
        await store.predictions.insert_prediction(p, reserve_micros=2_000_000)
    with pytest.raises(CreditsRefused):
        await store.predictions.insert_prediction(queued(account.id), reserve_micros=2_000_000)
    for p, target in zip(runs, (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED), strict=False):
        await store.predictions.transition(p.id, Status.PROCESSING, count_attempt=True)
        await store.predictions.transition(p.id, target, cost=1.25, completed_at=utcnow())
    credits = await store.accounts.credits(account.id)
    assert credits == await store.accounts.ledger_sums(account.id)
    assert credits == Credits(balance_micros=10_000_000 - 1_500_000 - 1_250_000, reserved_micros=2_000_000)


async def test_outcomes_recorded_together_are_each_guarded_settled_and_published(store: Database) -> None:
    """A worker slot records every answer it has read in one write, with the claims of what it sends next:
    each outcome lands on its own prediction, a success alone is charged, a died worker's prediction is
    queued again, a prediction cancelled meanwhile keeps its cancel, and each change is published."""
    account = await store.accounts.create_account("a")
    await store.accounts.add_ledger_entry(account.id, "grant", 10_000_000, "start")
    notifier = LocalNotifier()
    published: list[tuple[str, Status]] = []
    notifier.add_listener(lambda p: published.append((p.id, p.status)))
    runs = RunRecorder(store.predictions, notifier, max_attempts=2)
    model = ModelInfo("m", "", True, None, None, price=1.5)
    ok, failed, died, cancelled, next_one = (queued(account.id) for _ in range(5))
    for prediction in (ok, failed, died, cancelled, next_one):
        await store.predictions.insert_prediction(prediction, reserve_micros=1_500_000)
    running = await runs.claim_many([ok.id, failed.id, died.id, cancelled.id])
    assert all(p is not None for p in running)
    await store.predictions.transition(
        cancelled.id, Status.CANCELLED, completed_at=utcnow()
    )  # a cancel meanwhile
    published.clear()
    ended = [
        (running[0], Succeeded("out", 0.01)),
        (running[1], Failed("PipelineError", "boom", 0.01)),
        (running[2], WorkerDied("killed")),
        (running[3], Succeeded("late", 0.01)),
    ]
    recorded, claimed = await runs.record_many_and_claim(ended, model, [next_one.id])  # type: ignore[arg-type]

    statuses = [(s.status if s else None, again) for s, again in recorded]
    assert statuses == [
        (Status.SUCCEEDED, False),
        (Status.FAILED, False),
        (Status.QUEUED, True),
        (None, False),
    ]
    assert [p.status if p else None for p in claimed] == [Status.PROCESSING]
    assert (await store.predictions.get_prediction(cancelled.id)).status is Status.CANCELLED  # type: ignore[union-attr]
    assert (await store.predictions.get_prediction(ok.id)).output == "out"  # type: ignore[union-attr]
    assert published == [
        (ok.id, Status.SUCCEEDED),
        (failed.id, Status.FAILED),
        (died.id, Status.QUEUED),
        (next_one.id, Status.PROCESSING),
    ]
    credits = await store.accounts.credits(account.id)
    assert credits == await store.accounts.ledger_sums(account.id)
    # charged: the success only; still held: the requeued one and the one just claimed
    assert credits == Credits(balance_micros=10_000_000 - 1_500_000, reserved_micros=2 * 1_500_000)


async def test_the_credits_migration_starts_each_account_from_its_ledger(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.sqlite3'}"
    old = make_engine(url)
    async with old.begin() as conn:
        await conn.run_sync(lambda sync: command.upgrade(alembic_config(sync), "0004"))
        await conn.execute(
            text(
                "INSERT INTO accounts (id, name, status, created_at) "
                "VALUES ('acc_1', 'a', 'active', '2026-01-01')"
            )
        )
        for kind, amount in (("grant", 9), ("charge", 2), ("reserve", 5), ("release", 3), ("adjust", -1)):
            await conn.execute(
                text(
                    "INSERT INTO ledger_entries (account_id, kind, amount_micros, created_at) "
                    "VALUES ('acc_1', :kind, :amount, '2026-01-01')"
                ),
                {"kind": kind, "amount": amount},
            )
    await old.dispose()
    store = await open_database(url)
    try:
        assert await store.accounts.credits("acc_1") == Credits(
            balance_micros=9 - 2 - 1, reserved_micros=5 - 3
        )
        assert await store.accounts.credits("acc_1") == await store.accounts.ledger_sums("acc_1")
    finally:
        await store.close()


async def test_concurrent_migrations_on_one_database_are_safe(store: Database) -> None:
    url = store.engine.url.render_as_string(hide_password=False)
    others = await asyncio.gather(*(open_database(url) for _ in range(3)))
    for other in others:
        await other.close()
    assert [a.name for a in await store.accounts.list_accounts()] == []


async def test_listing_by_status_and_usage_per_utc_day(store: Database) -> None:
    account = await store.accounts.create_account("a")
    other = await store.accounts.create_account("b")
    today = utcnow().replace(hour=12, minute=0, second=0, microsecond=0)
    yesterday_late = today.replace(hour=23, minute=59, second=59) - timedelta(days=1)
    rows = [
        queued(account.id, status=Status.SUCCEEDED, cost=2.5, created_at=today),
        queued(account.id, status=Status.SUCCEEDED, cost=None, created_at=today),
        queued(account.id, status=Status.FAILED, cost=9.0, created_at=today),
        queued(account.id, status=Status.TIMED_OUT, created_at=yesterday_late),
        queued(account.id, status=Status.SUCCEEDED, cost=1.0, created_at=yesterday_late),
        queued(account.id, status=Status.SUCCEEDED, cost=7.0, created_at=today - timedelta(days=20)),
        queued(other.id, status=Status.SUCCEEDED, cost=100.0, created_at=today),
    ]
    for p in rows:
        await store.predictions.insert_prediction(p)

    failed = await store.predictions.list_predictions(
        ListQuery(account.id, 1, 50, statuses=frozenset({Status.FAILED, Status.TIMED_OUT}))
    )
    assert {p.id for p in failed.items} == {rows[2].id, rows[3].id}
    assert failed.total == 2

    usage = await store.predictions.daily_usage(account.id, today - timedelta(days=13, hours=12))
    assert [(u.day, u.predictions, u.credits) for u in usage] == [
        (yesterday_late.date(), 2, 1.0),
        (today.date(), 3, 2.5),  # only succeeded predictions consume credits
    ]


async def test_first_reads_of_the_webhook_secret_at_once_never_invalidate_a_secret_handed_out(
    store: Database,
) -> None:
    # A webhook being signed while the account reads its secret: every secret either caller got must still
    # sign and verify afterwards (a receiver configured with it keeps accepting deliveries).
    account = await store.accounts.create_account("hooks")
    first_reads = await asyncio.gather(*(store.deliveries.webhook_secrets(account.id) for _ in range(8)))
    valid = set(await store.deliveries.webhook_secrets(account.id))
    assert valid
    assert {secret for secrets in first_reads for secret in secrets} <= valid


async def test_reads_served_from_memory_see_every_change(store: Database, tmp_path: Path) -> None:
    """The SQLite store answers repeated key and prediction reads from memory; a change made through
    it, through its SQLAlchemy side, or by another connection (another process) is seen by the next read."""
    alice = await store.accounts.create_account("alice")
    bob = await store.accounts.create_account("bob")
    await store.accounts.create_key(alice.id, "a" * 64, "pd_alice", "ci")
    p = queued(alice.id)
    await store.predictions.insert_prediction(p)
    for _ in range(2):  # the reads may come from memory (the SQLite store remembers what it inserted)
        first = await store.predictions.get_prediction(p.id, alice.id)
        assert first == p, "exactly the row as stored"
        assert first is not p, "never the caller's own object, which the caller may go on changing"
        assert await store.predictions.get_prediction(p.id, bob.id) is None
        found = await store.accounts.find_key("a" * 64)
        assert found is not None
        assert found[1].status.value == "active"

    claimed = await store.predictions.transition(
        p.id, Status.PROCESSING, count_attempt=True, started_at=utcnow()
    )
    assert claimed is not None
    now = await store.predictions.get_prediction(p.id, alice.id)
    assert now is not None
    assert (now.status, now.attempts) == (Status.PROCESSING, 1)

    if store.engine.dialect.name == "sqlite":

        def another_process() -> None:
            other = sqlite3.connect(tmp_path / "store.sqlite3", isolation_level=None)
            other.execute(
                "UPDATE predictions SET status = 'failed', version = version + 1 WHERE id = ?", (p.id,)
            )
            other.execute("UPDATE accounts SET status = 'suspended' WHERE id = ?", (alice.id,))
            other.close()

        await asyncio.to_thread(another_process)
    else:
        async with store.engine.begin() as conn:
            await conn.execute(text("UPDATE predictions SET status = 'failed' WHERE id = :id"), {"id": p.id})
            await conn.execute(
                text("UPDATE accounts SET status = 'suspended' WHERE id = :id"), {"id": alice.id}
            )
    changed = await store.predictions.get_prediction(p.id, alice.id)
    assert changed is not None
    assert changed.status is Status.FAILED
    found = await store.accounts.find_key("a" * 64)
    assert found is not None
    assert found[1].status.value == "suspended"

    removed = await store.predictions.remove_data(p.id, alice.id)  # through SQLAlchemy's connection
    assert removed is not None
    after = await store.predictions.get_prediction(p.id, alice.id)
    assert after is not None
    assert (after.input, after.data_removed) == (None, True)


async def test_a_read_from_memory_sees_another_connections_commit_at_once(tmp_path: Path) -> None:
    """Another connection's commit is seen by the very next read, with no await between them, however the
    WAL moves meanwhile: the store's own commits, checkpoints that empty the WAL so that it starts over, and
    commits by another connection, in a random order."""
    path = tmp_path / "store.sqlite3"
    store = await open_database(f"sqlite+aiosqlite:///{path}")
    other = sqlite3.connect(path, isolation_level=None)
    try:
        alice = await store.accounts.create_account("alice")
        await store.accounts.create_key(alice.id, "a" * 64, "pd_alice", "ci")
        watched = queued(alice.id)
        await store.predictions.insert_prediction(watched)
        message, account_status = None, "active"
        served_from_memory = 0
        rng = random.Random(7)
        for step in range(400):
            action = rng.choice(("message", "account", "own write", "checkpoint", "nothing"))
            if action == "message":
                message = f"changed at step {step}"
                other.execute(
                    "UPDATE predictions SET error_message = ?, version = version + 1 WHERE id = ?",
                    (message, watched.id),
                )
            elif action == "account":
                account_status = "suspended" if account_status == "active" else "active"
                other.execute("UPDATE accounts SET status = ? WHERE id = ?", (account_status, alice.id))
            elif action == "own write":
                await store.predictions.insert_prediction(queued(alice.id))
            elif action == "checkpoint":
                other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            remembered = store.predictions.remembered_prediction(watched.id, alice.id)
            assert remembered is None or remembered.error_message == message, f"step {step}: {action}"
            served_from_memory += remembered is not None
            read = await store.predictions.get_prediction(watched.id, alice.id)
            assert read is not None
            assert read.error_message == message, f"step {step}: {action}"
            key = store.accounts.remembered_key("a" * 64)
            assert key is None or key[1].status.value == account_status, f"step {step}: {action}"
            found = await store.accounts.find_key("a" * 64)
            assert found is not None
            assert found[1].status.value == account_status, f"step {step}: {action}"
        assert served_from_memory > 100, "reads after a step that changed nothing come from memory"
    finally:
        other.close()
        await store.close()


def test_without_a_wal_index_to_look_at_every_check_asks_sqlite(tmp_path: Path) -> None:
    """No ``-shm`` file, or an empty one (not in WAL mode, or not yet written): the watch never says that
    nothing was committed, so the store asks ``PRAGMA data_version`` on every check."""
    missing = _CommitWatch(str(tmp_path / "none.sqlite3"))
    (tmp_path / "empty.sqlite3-shm").write_bytes(b"")
    empty = _CommitWatch(str(tmp_path / "empty.sqlite3"))
    for watch in (missing, empty):
        for _ in range(3):
            assert not watch.quiet()
            watch.asked()
        watch.close()


async def test_concurrent_writes_are_each_durable_and_a_failing_one_fails_alone(
    store: Database, tmp_path: Path
) -> None:
    """Writes made together each land, and are seen by another connection as soon as they return; one that
    fails takes none of the others with it."""
    alice = await store.accounts.create_account("alice")
    first = queued(alice.id)
    await store.predictions.insert_prediction(
        first, IdempotencyRecord(alice.id, "once", "h", first.id, utcnow())
    )
    many = [queued(alice.id) for _ in range(20)]
    clash = queued(alice.id)
    outcomes = await asyncio.gather(
        *(store.predictions.insert_prediction(p) for p in many),
        store.predictions.insert_prediction(
            clash, IdempotencyRecord(alice.id, "once", "h", clash.id, utcnow())
        ),
        store.predictions.transition(first.id, Status.PROCESSING, count_attempt=True, started_at=utcnow()),
        return_exceptions=True,
    )
    assert outcomes[:20] == [None] * 20
    assert isinstance(outcomes[20], IdempotencyKeyTaken)
    assert isinstance(outcomes[21], Prediction)
    assert outcomes[21].status is Status.PROCESSING

    if store.engine.dialect.name == "sqlite":

        def committed() -> dict[str, str]:
            other = sqlite3.connect(tmp_path / "store.sqlite3")
            try:
                return dict(other.execute("SELECT id, status FROM predictions").fetchall())
            finally:
                other.close()

        seen = await asyncio.to_thread(committed)
    else:
        async with store.engine.connect() as conn:
            rows = (await conn.execute(text("SELECT id, status FROM predictions"))).all()
        seen = {row[0]: row[1] for row in rows}
    assert seen == {first.id: "processing", **{p.id: "queued" for p in many}}


async def test_embedded_writes_waiting_for_another_connections_lock_all_land_once_it_goes(
    tmp_path: Path,
) -> None:
    """Embedded writes share commits. Writes made while another process holds the write lock (``predictd
    keys revoke``) wait without blocking the event loop, and all land once it lets go; a caller cancelled
    meanwhile (a shutdown) has nothing written."""
    path = tmp_path / "store.sqlite3"
    store = await open_database(f"sqlite+aiosqlite:///{path}")
    try:
        alice = await store.accounts.create_account("alice")
        first = queued(alice.id)
        await store.predictions.insert_prediction(first)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        many = [queued(alice.id) for _ in range(10)]
        gone = queued(alice.id)
        inserts = [asyncio.create_task(store.predictions.insert_prediction(p)) for p in many]
        cancelled = asyncio.create_task(store.predictions.insert_prediction(gone))
        move = asyncio.create_task(
            store.predictions.transition(first.id, Status.PROCESSING, started_at=utcnow())
        )
        await asyncio.sleep(0.3)
        assert not any(t.done() for t in [*inserts, move]), "nothing is answered before it is committed"
        cancelled.cancel()
        holder.execute("COMMIT")
        holder.close()
        await asyncio.wait_for(asyncio.gather(*inserts), timeout=10)
        moved = await asyncio.wait_for(move, timeout=10)
        assert moved is not None
        assert moved.status is Status.PROCESSING

        def committed() -> dict[str, str]:
            other = sqlite3.connect(path)
            try:
                return dict(other.execute("SELECT id, status FROM predictions").fetchall())
            finally:
                other.close()

        assert await asyncio.to_thread(committed) == {
            first.id: "processing",
            **{p.id: "queued" for p in many},
        }
        assert await store.predictions.get_prediction(gone.id) is None
    finally:
        await store.close()


async def test_embedded_moves_and_reads_return_exactly_what_was_stored(tmp_path: Path) -> None:
    """What a move returns, what another connection reads and what SQLAlchemy reads are the same values of
    the same types (a float column, JSON, times, flags): also a bare number as output, which SQLite would
    store as a number (its column has NUMERIC affinity), and also after another connection changed the row
    this one remembers."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite3'}"
    store, reader = await open_database(url), await open_database(url)
    try:
        alice = await store.accounts.create_account("alice")

        async def moved_as_read(*moves: Move) -> list[Prediction | None]:
            results = await store.predictions.transitions(list(moves))
            for result in results:
                assert result is not None
                fresh = await reader.predictions.get_prediction(result.id)
                assert repr(result) == repr(fresh), "\n".join(
                    f"{a} {b!r} {c!r}"
                    for a in result.__dataclass_fields__
                    if (b := getattr(result, a)) != (c := getattr(fresh, a, None)) or repr(b) != repr(c)
                )
            return results

        def claim(prediction: Prediction) -> Move:
            return Move(
                prediction.id, Status.PROCESSING, count_attempt=True, changes={"started_at": utcnow()}
            )

        outputs: list[object] = ["x", 3, 2.5, 1.0, 12345678901234567890, None, {"a": [1, "é"]}, [1], True]
        expected: dict[str, object] = {}
        for output in outputs:
            prediction = queued(alice.id, extra={"webhook": {"url": "https://example.com/h"}})
            await store.predictions.insert_prediction(prediction)
            await moved_as_read(claim(prediction))
            changes = {"output": output, "completed_at": utcnow(), "predict_time": 1, "cost": 0}
            (done,) = await moved_as_read(Move(prediction.id, Status.SUCCEEDED, changes=changes))
            assert done is not None
            assert (done.output, done.version, done.attempts) == (output, 2, 1)
            expected[prediction.id] = output
        # SQLAlchemy reads them whole too
        async with store.engine.connect() as conn:
            rows = (await conn.execute(select(predictions.c.id, predictions.c.output))).all()
        assert {row[0]: row[1] for row in rows if row[0] in expected} == expected
        assert [type(row[1]) for row in rows if row[0] in expected] == [
            type(expected[row[0]]) for row in rows if row[0] in expected
        ]

        # requeued after its worker died, claimed again, then failed with its data removed
        again, cancelled = queued(alice.id), queued(alice.id)
        await store.predictions.insert_prediction(again)
        await store.predictions.insert_prediction(cancelled)
        await moved_as_read(claim(again), claim(cancelled))
        await moved_as_read(Move(again.id, Status.QUEUED))
        (second,) = await moved_as_read(claim(again))
        assert second is not None
        assert second.attempts == 2
        failure = {"error_name": "PipelineError", "error_message": "boom", "completed_at": utcnow()}
        failure |= {"predict_time": 0.25, "input": None, "output": None, "data_removed": True}
        await moved_as_read(Move(again.id, Status.FAILED, changes=failure))
        await moved_as_read(Move(cancelled.id, Status.CANCELLED, changes={"completed_at": utcnow()}))

        # another connection removes a remembered prediction's data: the move must not bring it back
        kept = queued(alice.id, input={"text": "private"})
        await store.predictions.insert_prediction(kept)
        await moved_as_read(claim(kept))
        await reader.predictions.remove_data(kept.id, alice.id)
        (ended,) = await moved_as_read(Move(kept.id, Status.SUCCEEDED, changes={"output": "o"}))
        assert ended is not None
        assert ended.input is None
        assert ended.data_removed
    finally:
        await reader.close()
        await store.close()


async def test_sqlite_calls_cancelled_while_the_database_is_locked_leave_the_store_whole(
    tmp_path: Path,
) -> None:
    """Embedded mode runs SQLAlchemy's calls in worker threads. Callers cancelled while their call waits for
    another process's lock (a shutdown, a timeout) must neither leak their connection nor share it between
    two threads, and more waiting callers than there are threads must all get through once the lock goes."""
    store = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite3'}")
    try:
        holder = sqlite3.connect(tmp_path / "store.sqlite3", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        cancelled = [asyncio.create_task(store.accounts.create_account(f"gone-{i}")) for i in range(20)]
        waiting = [asyncio.create_task(store.accounts.create_account(f"kept-{i}")) for i in range(40)]
        await asyncio.sleep(0.3)
        for task in cancelled:
            task.cancel()
        await asyncio.gather(*cancelled, return_exceptions=True)
        holder.execute("ROLLBACK")
        holder.close()
        kept = await asyncio.wait_for(asyncio.gather(*waiting), timeout=30)
        assert sorted(a.name for a in kept) == sorted(f"kept-{i}" for i in range(40))
        names = {a.name for a in await store.accounts.list_accounts()}
        assert {f"kept-{i}" for i in range(40)} <= names
        assert not any(n.startswith("gone-") for n in names), "a cancelled write is rolled back"
        assert store.engine.sync_engine.pool.checkedout() == 0, "every connection went back to the pool"
        for i in range(20):  # and the pool still serves
            await store.accounts.create_account(f"after-{i}")
    finally:
        await store.close()


async def test_a_process_starting_during_another_ones_migration_waits_for_it(tmp_path: Path) -> None:
    """An API process and its workers start together: the one that finds the migration lock taken waits
    for it, however short the requests' lock timeout (it used to fail to start)."""
    name = f"predictd_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    holder = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5432/{name}")
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", _PG_MIGRATION_LOCK)
        opening = asyncio.create_task(open_database(url, postgres_lock_timeout_ms=100))
        await asyncio.sleep(1.0)
        assert not opening.done(), "it waits for the lock"
        await holder.execute("SELECT pg_advisory_unlock($1)", _PG_MIGRATION_LOCK)
        store = await asyncio.wait_for(opening, 30)
        account = await store.accounts.create_account("after-the-wait")
        assert account.name == "after-the-wait"
        await store.close()
    finally:
        await holder.close()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def test_of_dispatchers_racing_for_a_due_webhook_only_one_claims_it(store: Database) -> None:
    """Scaled out, every API process and worker runs a webhook dispatcher: each reads the same due rows,
    and each row must be sent by exactly one of them."""
    account = await store.accounts.create_account("a")
    p = queued(account.id)
    await store.predictions.insert_prediction(p)

    def planner(prediction: Prediction) -> list[NewDelivery]:
        payload = {"id": prediction.id, "status": str(prediction.status)}
        return [NewDelivery(new_id("msg_"), prediction.id, account.id, "completed", "http://x/hook", payload)]

    await store.predictions.transition(p.id, Status.PROCESSING, count_attempt=True, started_at=utcnow())
    await store.predictions.transition(
        p.id, Status.SUCCEEDED, deliveries=planner, completed_at=utcnow(), output="x"
    )
    due = await store.deliveries.due_deliveries(utcnow() + timedelta(seconds=1), limit=10)
    assert len(due) == 1
    # Every dispatcher read the row while it was due; their claims then race.
    lease = utcnow() + timedelta(seconds=15)
    claims = await asyncio.gather(*(store.deliveries.claim_delivery(due[0], lease) for _ in range(8)))
    assert sum(claims) == 1
    assert await store.deliveries.due_deliveries(utcnow() + timedelta(seconds=1), limit=10) == []


async def test_due_webhooks_leave_out_exactly_the_busy_receivers(store: Database) -> None:
    """The dispatcher asks for due rows without those of receivers whose slots are all taken: a URL equal
    to a busy origin or going on from it with /, ? or #, never another host that merely starts alike."""
    account = await store.accounts.create_account("a")
    urls = [
        "http://slow.example/hook",
        "http://slow.example?p=1",
        "http://slow.example",
        "http://slow.example#x",
        "http://slow.example.org/hook",
        "http://slow.example:8080/hook",
        "http://100%_sure.example/hook",
        "http://100xysure.example/hook",
    ]
    p = queued(account.id)
    await store.predictions.insert_prediction(p)

    def planner(prediction: Prediction) -> list[NewDelivery]:
        return [NewDelivery(new_id("msg_"), prediction.id, account.id, "completed", url, {}) for url in urls]

    await store.predictions.transition(p.id, Status.PROCESSING, count_attempt=True, started_at=utcnow())
    await store.predictions.transition(
        p.id, Status.SUCCEEDED, deliveries=planner, completed_at=utcnow(), output="x"
    )
    later = utcnow() + timedelta(seconds=1)

    async def due_urls(skip: list[str]) -> set[str]:
        return {d.url for d in await store.deliveries.due_deliveries(later, limit=20, skip_origins=skip)}

    assert await due_urls([]) == set(urls)
    assert await due_urls(["http://slow.example"]) == set(urls[4:])
    # LIKE's wildcards in an origin are taken literally.
    assert await due_urls(["http://100%_sure.example"]) == set(urls) - {urls[6]}
    assert await store.deliveries.next_delivery_at(skip_origins=[]) is not None
    every_origin = ["http://slow.example", "http://slow.example.org", "http://slow.example:8080"]
    every_origin += ["http://100%_sure.example", "http://100xysure.example"]
    assert await due_urls(every_origin) == set()
    assert await store.deliveries.next_delivery_at(skip_origins=every_origin) is None
