"""Property tests of the store's two guarded invariants, with Hypothesis' stateful testing against the real
store (``predictd.store.open_database``): SQLite in a temp file, and PostgreSQL on 127.0.0.1.

* The prediction state machine: random sequences of transitions, one at a time and two racing on the same
  prediction. An illegal move never succeeds, a terminal state is final, a successful move bumps the version
  by one, ``attempts`` and ``version`` never go back, and racing moves leave the state some serial order of
  them would have left.
* The credits ledger: random interleavings of grants, adjustments (negative too), reservations (through
  ``insert_prediction(reserve_micros=...)``, alone and several at once) and settlements (terminal
  transitions, with and without a cost). The balance and the reservations are always the sums of the
  entries, no reservation is ever negative, none is left once every prediction is terminal, and a
  reservation is accepted exactly when the balance is not negative and ``balance - reserved >= amount``.

Each test opens one store and runs the machines against it, each machine with its own account. Bounded:
example and step counts below; each test takes well under 40 s.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from predictd.core.domain import (
    TERMINAL,
    CreditsRefused,
    Prediction,
    Status,
    can_transition,
    new_id,
    to_micros,
    utcnow,
)
from predictd.store import Database, open_database

T = TypeVar("T")
STATUSES = list(Status)
TERMINALS = sorted(TERMINAL)


@dataclass
class Backend:
    """One event loop and one store on it, shared by every machine of a test."""

    loop: asyncio.AbstractEventLoop
    store: Database

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)


def _backend(url: str) -> Iterator[Backend]:
    loop = asyncio.new_event_loop()
    store = loop.run_until_complete(open_database(url))
    try:
        yield Backend(loop, store)
    finally:
        loop.run_until_complete(store.close())
        loop.close()


@pytest.fixture
def sqlite_backend(tmp_path: Path) -> Iterator[Backend]:
    yield from _backend(f"sqlite+aiosqlite:///{tmp_path / 'properties.sqlite3'}")


@pytest.fixture
def postgres_backend(pg_database: str) -> Iterator[Backend]:
    yield from _backend(pg_database)


def queued(account_id: str) -> Prediction:
    return Prediction(
        id=new_id(), account_id=account_id, model="echo", status=Status.QUEUED, input={}, created_at=utcnow()
    )


def serial_outcomes(start: Status, moves: tuple[Status, ...]) -> set[tuple[tuple[bool, ...], Status]]:
    """What each serial order of ``moves`` from ``start`` leaves: (which succeeded, in move order; final)."""
    outcomes = set()
    for order in itertools.permutations(range(len(moves))):
        state, succeeded = start, [False] * len(moves)
        for index in order:
            if can_transition(state, moves[index]):
                state, succeeded[index] = moves[index], True
        outcomes.add((tuple(succeeded), state))
    return outcomes


# -- the prediction state machine ----------------------------------------------------------------------------


@dataclass
class Tracked:
    status: Status
    version: int
    attempts: int


def prediction_machine(backend: Backend) -> type[RuleBasedStateMachine]:
    class PredictionLifecycle(RuleBasedStateMachine):
        predictions = Bundle("predictions")

        def __init__(self) -> None:
            super().__init__()
            self.model: dict[str, Tracked] = {}

        @initialize()
        def open_account(self) -> None:
            self.account = backend.run(
                backend.store.accounts.create_account(f"sm-{uuid.uuid4().hex[:10]}")
            ).id

        @rule(target=predictions)
        def create(self) -> str:
            prediction = queued(self.account)
            backend.run(backend.store.predictions.insert_prediction(prediction))
            self.model[prediction.id] = Tracked(Status.QUEUED, 0, 0)
            return prediction.id

        @rule(prediction_id=predictions, to=st.sampled_from(STATUSES), count_attempt=st.booleans())
        def move(self, prediction_id: str, to: Status, count_attempt: bool) -> None:
            before = self.model[prediction_id]
            moved = backend.run(
                backend.store.predictions.transition(prediction_id, to, count_attempt=count_attempt)
            )
            if not can_transition(before.status, to):
                assert moved is None, f"{before.status} -> {to} must be refused"
                return
            assert moved is not None, f"{before.status} -> {to} must succeed"
            assert moved.status is to
            assert moved.version == before.version + 1
            assert moved.attempts == before.attempts + int(count_attempt)
            self.model[prediction_id] = Tracked(to, moved.version, moved.attempts)

        @rule(
            prediction_id=predictions,
            moves=st.tuples(st.sampled_from(STATUSES), st.sampled_from(STATUSES)),
        )
        def race(self, prediction_id: str, moves: tuple[Status, Status]) -> None:
            """Two moves of one prediction at once: the result is what one of their serial orders gives."""
            before = self.model[prediction_id]

            async def both() -> list[Prediction | None]:
                return list(
                    await asyncio.gather(
                        *(backend.store.predictions.transition(prediction_id, m) for m in moves)
                    )
                )

            results = backend.run(both())
            after = backend.run(backend.store.predictions.get_prediction(prediction_id))
            assert after is not None
            observed = (tuple(r is not None for r in results), after.status)
            assert observed in serial_outcomes(before.status, moves), (before.status, moves, observed)
            assert after.version == before.version + sum(observed[0])
            assert after.attempts == before.attempts
            self.model[prediction_id] = Tracked(after.status, after.version, after.attempts)

        @rule(prediction_id=consumes(predictions))
        def finish(self, prediction_id: str) -> None:
            """Drive it to a terminal state, then check nothing moves it out of there."""
            tracked = self.model[prediction_id]
            if tracked.status not in TERMINAL:
                if tracked.status is Status.QUEUED:
                    started = backend.run(
                        backend.store.predictions.transition(prediction_id, Status.PROCESSING)
                    )
                    assert started is not None
                ended = backend.run(backend.store.predictions.transition(prediction_id, Status.SUCCEEDED))
                assert ended is not None
                tracked = Tracked(Status.SUCCEEDED, *self._version_attempts(prediction_id))
                self.model[prediction_id] = tracked
            for target in STATUSES:
                assert backend.run(backend.store.predictions.transition(prediction_id, target)) is None
            self.model.pop(prediction_id)

        def _version_attempts(self, prediction_id: str) -> tuple[int, int]:
            current = backend.run(backend.store.predictions.get_prediction(prediction_id))
            assert current is not None
            return current.version, current.attempts

        @invariant()
        def store_agrees_with_the_model(self) -> None:
            for prediction_id, tracked in self.model.items():
                current = backend.run(backend.store.predictions.get_prediction(prediction_id))
                assert current is not None
                assert (current.status, current.version, current.attempts) == (
                    tracked.status,
                    tracked.version,
                    tracked.attempts,
                )

    return PredictionLifecycle


PREDICTION_SETTINGS = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def test_state_machine_on_sqlite(sqlite_backend: Backend) -> None:
    run_state_machine_as_test(prediction_machine(sqlite_backend), settings=PREDICTION_SETTINGS)


@pytest.mark.postgres
def test_state_machine_on_postgresql(postgres_backend: Backend) -> None:
    run_state_machine_as_test(
        prediction_machine(postgres_backend), settings=settings(PREDICTION_SETTINGS, max_examples=12)
    )


# -- the credits ledger --------------------------------------------------------------------------------------

AMOUNTS = st.integers(min_value=0, max_value=5_000_000)  # micros: up to 5 credits
COSTS = st.one_of(st.none(), st.floats(min_value=0, max_value=6, allow_nan=False).map(lambda c: round(c, 3)))


@dataclass
class Held:
    status: Status
    micros: int  # reserved for it and not yet released


def ledger_machine(backend: Backend) -> type[RuleBasedStateMachine]:
    class CreditsLedger(RuleBasedStateMachine):
        open_predictions = Bundle("open_predictions")

        def __init__(self) -> None:
            super().__init__()
            self.balance = 0
            self.reserved = 0
            self.held: dict[str, Held] = {}

        @initialize()
        def open_account(self) -> None:
            self.account = backend.run(
                backend.store.accounts.create_account(f"ledger-{uuid.uuid4().hex[:10]}")
            ).id

        @rule(amount=st.integers(min_value=1, max_value=10_000_000))
        def grant(self, amount: int) -> None:
            credits = backend.run(
                backend.store.accounts.add_ledger_entry(self.account, "grant", amount, "grant")
            )
            self.balance += amount
            assert credits.balance_micros == self.balance

        @rule(amount=st.integers(min_value=-8_000_000, max_value=3_000_000))
        def adjust(self, amount: int) -> None:
            credits = backend.run(
                backend.store.accounts.add_ledger_entry(self.account, "adjust", amount, "adjust")
            )
            self.balance += amount
            assert credits.balance_micros == self.balance

        def _accepts(self, amount: int, reserved: int) -> bool:
            return self.balance >= 0 and self.balance - reserved >= amount

        @rule(target=open_predictions, amount=AMOUNTS)
        def reserve(self, amount: int) -> Any:
            prediction = queued(self.account)
            should_accept = self._accepts(amount, self.reserved)
            refused: CreditsRefused | None = None
            try:
                backend.run(backend.store.predictions.insert_prediction(prediction, reserve_micros=amount))
            except CreditsRefused as exc:
                refused = exc
            if refused is not None:
                assert not should_accept, f"refused {amount} with {self.balance} - {self.reserved}"
                assert refused.credits.balance_micros == self.balance
                assert refused.credits.reserved_micros == self.reserved
                assert backend.run(backend.store.predictions.get_prediction(prediction.id)) is None
                return multiple()
            assert should_accept, f"accepted {amount} with {self.balance} - {self.reserved}"
            self.reserved += amount
            self.held[prediction.id] = Held(Status.QUEUED, amount)
            return prediction.id

        @rule(target=open_predictions)
        def submit_without_reservation(self) -> str:
            prediction = queued(self.account)
            backend.run(backend.store.predictions.insert_prediction(prediction))
            self.held[prediction.id] = Held(Status.QUEUED, 0)
            return prediction.id

        @rule(target=open_predictions, amounts=st.lists(AMOUNTS, min_size=2, max_size=4))
        def reserve_concurrently(self, amounts: list[int]) -> Any:
            """Submits racing for the same credits: what they take together never exceeds what was free."""
            predictions = [queued(self.account) for _ in amounts]

            async def all_at_once() -> list[BaseException | None]:
                return list(
                    await asyncio.gather(
                        *(
                            backend.store.predictions.insert_prediction(p, reserve_micros=a)
                            for p, a in zip(predictions, amounts, strict=True)
                        ),
                        return_exceptions=True,
                    )
                )

            outcomes = backend.run(all_at_once())
            for outcome in outcomes:
                assert outcome is None or isinstance(outcome, CreditsRefused), repr(outcome)
            accepted = [(p, a) for p, a, o in zip(predictions, amounts, outcomes, strict=True) if o is None]
            taken = sum(a for _, a in accepted)
            if accepted:
                assert self.balance >= 0
                assert taken <= self.balance - self.reserved
            for amount, outcome in zip(amounts, outcomes, strict=True):
                if outcome is not None:  # it did not fit even with only the others' reservations taken
                    assert not self._accepts(amount, self.reserved + taken)
            self.reserved += taken
            for prediction, amount in accepted:
                self.held[prediction.id] = Held(Status.QUEUED, amount)
            return multiple(*(p.id for p, _ in accepted))

        def _settled_already(self, prediction_id: str) -> bool:
            """settle_everything ends predictions still drawn from the bundle: nothing moves them now."""
            if prediction_id in self.held:
                return False
            for target in STATUSES:
                assert (
                    backend.run(backend.store.predictions.transition(prediction_id, target, cost=1.0)) is None
                )
            return True

        @rule(prediction_id=open_predictions)
        def start(self, prediction_id: str) -> None:
            if self._settled_already(prediction_id):
                return
            held = self.held[prediction_id]
            moved = backend.run(backend.store.predictions.transition(prediction_id, Status.PROCESSING))
            assert (moved is not None) == (held.status is Status.QUEUED)
            held.status = Status.PROCESSING
            credits = backend.run(backend.store.accounts.credits(self.account))
            assert credits.reserved_micros == self.reserved  # starting neither releases nor charges

        @rule(prediction_id=consumes(open_predictions), to=st.sampled_from(TERMINALS), cost=COSTS)
        def settle(self, prediction_id: str, to: Status, cost: float | None) -> None:
            if self._settled_already(prediction_id):
                return
            held = self.held.pop(prediction_id)
            if to is Status.SUCCEEDED and held.status is Status.QUEUED:
                started = backend.run(backend.store.predictions.transition(prediction_id, Status.PROCESSING))
                assert started is not None
            moved = backend.run(backend.store.predictions.transition(prediction_id, to, cost=cost))
            assert moved is not None
            charged = min(to_micros(cost), held.micros) if to is Status.SUCCEEDED and cost else 0
            self.reserved -= held.micros
            self.balance -= charged
            entries = backend.run(backend.store.accounts.ledger(self.account, limit=10))
            mine = [
                (e.kind, e.amount_micros)
                for e in entries
                if e.prediction_id == prediction_id and e.kind in ("release", "charge")
            ]
            if held.micros == 0:
                assert mine == []  # nothing was reserved, so nothing is released or charged
            else:
                assert ("release", held.micros) in mine
                assert (("charge", charged) in mine) == (charged > 0)

        @precondition(lambda self: bool(self.held))
        @rule()
        def settle_everything(self) -> None:
            for prediction_id in list(self.held):
                self.settle(prediction_id, Status.CANCELLED, None)
            assert backend.run(backend.store.accounts.credits(self.account)).reserved_micros == 0

        @invariant()
        def balance_and_reservations_are_the_sums_of_the_entries(self) -> None:
            credits = backend.run(backend.store.accounts.credits(self.account))
            entries = backend.run(backend.store.accounts.ledger(self.account, limit=100_000))
            sign = {"grant": 1, "adjust": 1, "charge": -1}
            assert credits.balance_micros == sum(sign.get(e.kind, 0) * e.amount_micros for e in entries)
            per_prediction: dict[str | None, int] = {}
            for e in entries:
                if e.kind in ("reserve", "release"):
                    delta = e.amount_micros if e.kind == "reserve" else -e.amount_micros
                    per_prediction[e.prediction_id] = per_prediction.get(e.prediction_id, 0) + delta
            assert credits.reserved_micros == sum(per_prediction.values())
            assert all(held >= 0 for held in per_prediction.values()), per_prediction
            assert credits.reserved_micros >= 0
            assert (credits.balance_micros, credits.reserved_micros) == (self.balance, self.reserved)
            if not self.held:  # every prediction is terminal
                assert credits.reserved_micros == 0

        def teardown(self) -> None:
            if not hasattr(self, "account"):
                return
            for prediction_id in list(self.held):
                self.settle(prediction_id, Status.FAILED, None)
            assert backend.run(backend.store.accounts.credits(self.account)).reserved_micros == 0

    return CreditsLedger


LEDGER_SETTINGS = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def test_credits_ledger_on_sqlite(sqlite_backend: Backend) -> None:
    run_state_machine_as_test(ledger_machine(sqlite_backend), settings=LEDGER_SETTINGS)


@pytest.mark.postgres
def test_credits_ledger_on_postgresql(postgres_backend: Backend) -> None:
    run_state_machine_as_test(
        ledger_machine(postgres_backend), settings=settings(LEDGER_SETTINGS, max_examples=12)
    )
