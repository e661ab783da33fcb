"""A fleet of worker slots: for each model, N slots, each owning one warm worker subprocess. The API process
runs one in embedded mode (fed by the in-process queue); each `predictd worker` runs one fed by Redis.

A slot takes a prediction from its model's queue only while its worker is up, so a model whose workers
cannot start accepts nothing (MODEL_UNAVAILABLE) instead of piling up work no one will run. A worker that
fails to start is retried with exponential backoff; one that dies mid-prediction is replaced, and the
prediction is queued again until its attempts run out (then it fails with UnavailableError).

While more predictions are queued than a model has idle slots, a busy slot sends up to the model's
``prefetch`` next ones ahead to its worker (those the WorkSource can hand out at once): the worker starts each
the moment it finishes the one before, instead of idling while the API process records the outcome and
hands it the next, which under a flood of status reads can take several milliseconds. A prediction sent
ahead is PROCESSING from then on; its deadline counts from when the one before it ended; cancelled before
the worker gets to it, it is answered cancelled without running. If the worker dies, every prediction it held
counts that as an attempt and is queued again while attempts remain.

A slot's store writes are shared: the predictions it sends ahead together are claimed in one transaction,
and the outcome of the one that just ended is recorded in the transaction that claims those sent in its
place (under load, one commit per prediction instead of two).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import structlog

from ..config.settings import ModelConfig
from ..core.background import cancel_and_wait
from ..core.domain import ModelInfo, Prediction
from ..core.ports import Job, RunRecords, WorkSource
from ..errors import without_paths
from .outcomes import Outcome, WorkerDied, storable, unstorable_failure
from .pipeline import MODEL_TIMEOUT_ENV
from .process import WorkerProcess, WorkerStartError

log = structlog.get_logger("predictd.runtime")

RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
# Between tries of a store write that failed (disk full, database locked, connection lost).
STORE_RETRY_S = (0.1, 0.5, 1.0, 2.0, 5.0)

T = TypeVar("T")


@dataclass(slots=True)
class Slot:
    model: ModelConfig
    index: int
    worker: WorkerProcess | None = None
    failures: int = 0
    last_error: str = ""  # why its worker last failed to start, as clients may read it
    setup_failed: bool = False  # that failure was the model's own setup raising
    tried: asyncio.Event = field(default_factory=asyncio.Event)
    current: str | None = None
    ahead: set[str] = field(default_factory=set)  # predictions sent to the worker after ``current``
    ever_ready: bool = False
    starting: bool = False

    @property
    def up(self) -> bool:
        return self.worker is not None and self.worker.alive

    @property
    def serving(self) -> bool:
        """Up, or replacing a worker that died after a good start: work sent now waits a moment in the
        queue instead of being refused."""
        return self.up or (self.starting and self.ever_ready and self.failures == 0)


class Supervisor:
    """Runs predictions from a WorkSource on worker subprocesses; also a ModelCatalog of what it runs."""

    def __init__(
        self,
        models: Sequence[ModelConfig],
        source: WorkSource,
        runs: RunRecords[Outcome],
        *,
        start_timeout_s: float,
        cancel_grace_s: float,
        worker_env: dict[str, str] | None = None,
        unstorable: Callable[[BaseException], str | None] = lambda failure: None,
    ) -> None:
        self._worker_env = worker_env or {}
        # Why the store refused a value, when a write failed because of one (store/failures.py).
        self._unstorable = unstorable
        self._models = {m.slug: m for m in models}
        self._source = source
        self._runs = runs
        self._start_timeout_s = start_timeout_s
        self._cancel_grace_s = cancel_grace_s
        self._slots: dict[str, list[Slot]] = {m.slug: [Slot(m, i) for i in range(m.workers)] for m in models}
        self._schemas: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        self._infos: dict[str, tuple[tuple[bool, Any, str, bool], ModelInfo]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._waiting: dict[str, int] = dict.fromkeys(self._models, 0)  # idle slots, per model
        # What recording an outcome needs of a model (its price and deadline), built once, not per prediction.
        self._pricing = {m.slug: m.info(available=True, schemas=None) for m in models}
        self._closing = False
        self._idle = asyncio.Event()
        source.on_cancel(self._cancel)

    # -- ModelCatalog --------------------------------------------------------------------------------------

    def list(self) -> list[ModelInfo]:
        return [self._info(slug) for slug in self._models]

    def get(self, slug: str) -> ModelInfo | None:
        return self._info(slug) if slug in self._models else None

    def _info(self, slug: str) -> ModelInfo:
        config = self._models[slug]
        slots = self._slots[slug]
        available = any(s.serving for s in slots)
        schemas = self._schemas.get(slug)
        detail = (
            "" if available else next((s.last_error for s in slots if s.last_error), "no worker is running")
        )
        if not slots:
            detail = "no worker is configured for this model"
        setup_failed = bool(slots) and not available and all(s.setup_failed for s in slots)
        # Built again only when what it shows changes: every submit reads it.
        key = (available, schemas, detail, setup_failed)  # schemas by identity first: a restart replaces them
        cached = self._infos.get(slug)
        if cached is None or cached[0] != key:
            cached = self._infos[slug] = (
                key,
                config.info(
                    available=available, schemas=schemas, status_detail=detail, setup_failed=setup_failed
                ),
            )
        return cached[1]

    def timeout_for(self, slug: str) -> float:
        return self._models[slug].timeout_s

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every slot; return once each has tried to start its worker at least once."""
        for slots in self._slots.values():
            for slot in slots:
                self._tasks.append(asyncio.create_task(self._slot_loop(slot), name=f"slot-{slot.model.slug}"))
        waits = [slot.tried.wait() for slots in self._slots.values() for slot in slots]
        if waits:
            async with asyncio.timeout(self._start_timeout_s + 5.0):
                await asyncio.gather(*waits)

    async def close(self, grace_s: float) -> None:
        """Stop taking work, give running predictions ``grace_s`` to finish, then stop every worker.
        Predictions still running are left PROCESSING and resumed by the next start's recovery."""
        self._closing = True
        if self._busy():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace_s):
                    await self._wait_idle()
        await cancel_and_wait(self._tasks)
        await asyncio.gather(
            *(s.worker.stop() for slots in self._slots.values() for s in slots if s.worker is not None),
            return_exceptions=True,
        )

    def _busy(self) -> bool:
        return any(s.current or s.ahead for slots in self._slots.values() for s in slots)

    async def _wait_idle(self) -> None:
        while self._busy():
            self._idle.clear()
            await self._idle.wait()

    # -- the slot loop -------------------------------------------------------------------------------------

    async def _ensure_worker(self, slot: Slot) -> None:
        while not slot.up:
            slot.starting = True
            try:
                env = {**self._worker_env, MODEL_TIMEOUT_ENV: repr(slot.model.timeout_s)}
                slot.worker = await WorkerProcess.start(slot.model.ref, self._start_timeout_s, env)
                slot.ever_ready = True
                self._schemas[slot.model.slug] = (
                    slot.worker.ready.input_schema,
                    slot.worker.ready.output_schema,
                )
                slot.failures, slot.last_error, slot.setup_failed = 0, "", False
                log.info(
                    "worker ready",
                    model=slot.model.slug,
                    slot=slot.index,
                    pid=slot.worker.pid,
                    setup_time=round(slot.worker.ready.setup_time, 3),
                )
            except WorkerStartError as exc:
                slot.worker = None
                # Clients read this (a submit's MODEL_UNAVAILABLE, /v1/models): the reason without the
                # server's paths. The log below keeps the whole of it.
                slot.last_error = f"model {slot.model.slug!r} failed to start: {without_paths(str(exc))}"
                slot.setup_failed = exc.setup_failed
                delay = RESTART_BACKOFF_S[min(slot.failures, len(RESTART_BACKOFF_S) - 1)]
                slot.failures += 1
                log.warning(
                    "worker failed to start",
                    model=slot.model.slug,
                    slot=slot.index,
                    error=str(exc),
                    retry_in_s=delay,
                )
                slot.tried.set()
                await asyncio.sleep(delay)
            finally:
                slot.starting = False
                slot.tried.set()

    async def _slot_loop(self, slot: Slot) -> None:
        slug = slot.model.slug
        while not self._closing:
            await self._ensure_worker(slot)
            self._waiting[slug] += 1
            try:
                job = await self._source.take(slug)
            finally:
                self._waiting[slug] -= 1
            if self._closing:
                await self._source.retry(job)
                return
            await self._run_from(slot, job)

    async def _run_from(self, slot: Slot, first: Job) -> None:
        """Run ``first``, and then the predictions sent ahead behind it, until none is left.

        Store writes are shared: the predictions sent ahead together are claimed in one transaction, and
        the outcomes read from the worker so far are recorded together, in the transaction that claims the
        predictions sent in their place."""
        sent: deque[tuple[Job, Prediction]] = deque()
        await self._send(slot, [first, *self._ready_ahead(slot, 1)], sent)
        while sent:
            if len(sent) <= slot.model.prefetch:
                more = self._ready_ahead(slot, len(sent))
                if more:
                    await self._send(slot, more, sent)
            job, prediction = sent.popleft()
            slot.ahead.discard(job.prediction_id)
            ended = [(job, prediction, await self._answer(slot, job))]
            # Under load the worker runs ahead: the answers already read are recorded in the same write.
            while sent and slot.worker is not None and not isinstance(ended[-1][2], WorkerDied):
                answered = slot.worker.answered(sent[0][0].prediction_id)
                if answered is None:
                    break
                job, prediction = sent.popleft()
                slot.ahead.discard(job.prediction_id)
                ended.append((job, prediction, answered))
            more = self._ready_ahead(slot, len(sent))
            await self._record_and_send(slot, ended, more, sent)

    def _ready_ahead(self, slot: Slot, held: int) -> Sequence[Job]:
        """The jobs to send now behind the ``held`` ones the worker has: up to the model's prefetch, of the
        work no idle slot would take."""
        jobs: deque[Job] = deque()
        while held + len(jobs) <= slot.model.prefetch and self._may_send_ahead(slot):
            job = self._source.take_ready(slot.model.slug)
            if job is None:
                break
            jobs.append(job)
        return jobs

    def _may_send_ahead(self, slot: Slot) -> bool:
        """Only work no idle slot would take now: more is queued for the model than it has idle slots."""
        slug = slot.model.slug
        return slot.up and not self._closing and self._source.backlog(slug) > self._waiting[slug]

    async def _send(self, slot: Slot, jobs: Sequence[Job], sent: deque[tuple[Job, Prediction]]) -> None:
        """Claim ``jobs`` and hand them to the slot's worker (behind what it holds already)."""
        ids = [job.prediction_id for job in jobs if not job.orphaned]
        claimed = await self._store("claim", ids[0], partial(self._runs.claim_many, ids)) if ids else []
        await self._dispatch(slot, jobs, dict(zip(ids, claimed, strict=True)), sent)

    async def _dispatch(
        self,
        slot: Slot,
        jobs: Sequence[Job],
        claimed: dict[str, Prediction | None],
        sent: deque[tuple[Job, Prediction]],
    ) -> None:
        """Hand the worker, in order, each job that was claimed; an orphaned one is claimed here on its own
        (its lost run is recorded first). A job that could not be claimed goes back to the source."""
        for job in jobs:
            prediction_id = job.prediction_id
            if job.orphaned:
                claim = partial(self._runs.claim, prediction_id, orphaned=True)
                prediction = await self._store("claim", prediction_id, claim)
            else:
                prediction = claimed[prediction_id]
            if prediction is None or prediction.input is None:
                await self._hand_back(job, requeue=False)
                continue
            assert slot.worker is not None
            slot.worker.send(prediction_id, prediction.input)  # a dead worker is noticed by answer()
            if sent:
                slot.ahead.add(prediction_id)
            sent.append((job, prediction))

    async def _answer(self, slot: Slot, job: Job) -> Outcome:
        assert slot.worker is not None
        slot.current = job.prediction_id
        try:
            outcome = storable(await slot.worker.answer(job.prediction_id, slot.model.timeout_s))
        finally:
            slot.current = None
            self._idle.set()
        if isinstance(outcome, WorkerDied):
            log.warning(
                "worker died during a prediction",
                model=slot.model.slug,
                prediction=job.prediction_id,
                detail=outcome.detail,
            )
        return outcome

    async def _record_and_send(
        self,
        slot: Slot,
        ended: Sequence[tuple[Job, Prediction, Outcome]],
        more: Sequence[Job],
        sent: deque[tuple[Job, Prediction]],
    ) -> None:
        """Record how the ``ended`` jobs ended and claim ``more`` in one transaction; hand ``more`` to the
        worker."""
        ids = [j.prediction_id for j in more if not j.orphaned]
        pricing = self._pricing[slot.model.slug]
        outcomes = [(prediction, outcome) for _, prediction, outcome in ended]

        def write() -> Awaitable[tuple[list[tuple[Prediction | None, bool]], list[Prediction | None]]]:
            return self._runs.record_many_and_claim(outcomes, pricing, ids)

        def give_up(reason: str) -> None:
            nonlocal outcomes
            log.error(
                "outcome cannot be stored; failing its prediction",
                model=slot.model.slug,
                predictions=[p.id for p, _ in outcomes],
                reason=reason,
            )
            outcomes = [(prediction, unstorable_failure(outcome, reason)) for prediction, outcome in outcomes]

        recorded, claimed = await self._store("record", ended[0][0].prediction_id, write, give_up)
        for (job, _, _), (_, requeue) in zip(ended, recorded, strict=True):
            await self._hand_back(job, requeue)
        await self._dispatch(slot, more, dict(zip(ids, claimed, strict=True)), sent)

    async def _store(
        self,
        what: str,
        prediction_id: str,
        write: Callable[[], Awaitable[T]],
        give_up: Callable[[str], None] | None = None,
    ) -> T:
        """Retry a store write until it succeeds. A failure must neither end the slot's loop (its model
        would look available while no one takes its work) nor lose the outcome of a prediction that ran.
        One the database refuses for a value it holds can never succeed: ``give_up`` replaces the value
        (once), and the write is tried again at once."""
        failures = 0
        while True:
            try:
                return await write()
            except Exception as exc:
                refused = self._unstorable(exc)
                if refused is not None and give_up is not None:
                    give_up(refused)
                    give_up = None
                    continue
                delay = STORE_RETRY_S[min(failures, len(STORE_RETRY_S) - 1)]
                failures += 1
                log.error(
                    "store write failed; retrying",
                    action=what,
                    prediction=prediction_id,
                    error=str(getattr(exc, "orig", None) or type(exc).__name__),
                    failures=failures,
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)

    async def _hand_back(self, job: Job, requeue: bool) -> None:
        """Tell the source the job is done with. If that fails (Redis away), the outcome is stored already:
        the broker's lease or the sweeper brings the job back, and the store refuses a second run."""
        try:
            await (self._source.retry(job) if requeue else self._source.finish(job))
        except Exception as exc:
            log.warning("could not hand a job back", prediction=job.prediction_id, error=repr(exc))

    async def _cancel(self, prediction_id: str) -> None:
        for slots in self._slots.values():
            for slot in slots:
                if slot.worker is None:
                    continue
                if slot.current == prediction_id:
                    slot.worker.interrupt(prediction_id)
                    asyncio.get_running_loop().call_later(
                        self._cancel_grace_s, self._kill_if_still_running, slot, prediction_id
                    )
                elif prediction_id in slot.ahead:
                    slot.worker.interrupt(prediction_id)  # the worker answers it unrun when it gets there

    def _kill_if_still_running(self, slot: Slot, prediction_id: str) -> None:
        if slot.current == prediction_id and slot.worker is not None:
            log.warning("worker ignored cancel; killing it", model=slot.model.slug, prediction=prediction_id)
            task = asyncio.get_running_loop().create_task(slot.worker.kill())
            self._tasks.append(task)
