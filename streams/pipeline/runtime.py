"""The worker loop: start, the batch loop, and the periodic duties, in process.

A :class:`Runtime` is built from its seams: ``connect`` (what starting gives: the context, the
outlet the outbox is sent through, the HTTP server; :class:`~streams.pipeline.startup.
ServiceConnector` in a deployed worker), a :class:`~streams.pipeline.consumer.Consumer`, the
:class:`~streams.pipeline.timekeeping.Clock` and the :class:`RetryPolicy`. Its parts:

* :class:`~streams.pipeline.batches.BatchRunner`: batches, timers and backfill pages, one at a
  time under one lock, each followed by sending its outbox; infrastructure errors retried;
* :class:`~streams.pipeline.following.Follower`: rule, RFM and model changes;
* :class:`~streams.pipeline.backfill.Backfiller`: re-evaluating the held partitions' customers
  after a change.

Nothing here ends the process: an error that must end the worker is raised as a
:class:`~streams.pipeline.retry.WorkerExit`, which only the process entry
(:mod:`streams.pipeline.worker`) turns into an exit code.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from streams.engine import RuleSet
from streams.engine.rfm import RfmBoundaries
from streams.models.published import FittedModels
from streams.pipeline.backfill import Backfiller, refresh_customers
from streams.pipeline.batches import BatchRunner, Live, Work
from streams.pipeline.consumer import Consumer
from streams.pipeline.following import Follower
from streams.pipeline.processor import PipelineContext, Record
from streams.pipeline.retry import BatchLoopFailed, RetryPolicy, WorkerExit
from streams.pipeline.startup import Connection, Status
from streams.pipeline.timekeeping import Clock, WallClock
from streams.settings import Settings

log = logging.getLogger("segmenter.worker")

STALL_S = 30.0


class Connect(Protocol):
    """Connects a starting worker: called (and retried) until it returns."""

    def __call__(self, rules: RuleSet, clock: Clock, status: Status) -> Awaitable[Connection]: ...


@dataclass
class Parts:
    """A started worker's parts."""

    connection: Connection
    live: Live
    batches: BatchRunner
    follower: Follower
    backfiller: Backfiller


@dataclass
class Runtime:
    """One worker: its seams, and its parts once started (see the module doc)."""

    settings: Settings
    rules: RuleSet
    """The rules in force (before the start: the local rule directory's)."""
    connect: Connect
    clock: Clock = field(default_factory=WallClock)
    retry: RetryPolicy | None = None
    """How infrastructure errors are retried (None: from the settings)."""
    parts: Parts | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    created: float = 0.0

    def __post_init__(self) -> None:
        if self.retry is None:
            self.retry = RetryPolicy.from_settings(self.settings)
        self.created = self.clock.now()

    @property
    def started(self) -> bool:
        return self.parts is not None

    @property
    def assigned(self) -> frozenset[int]:
        """The input partitions held (as of the last tick)."""
        return self.parts.live.assigned if self.parts is not None else frozenset()

    async def ensure_started(self) -> Parts:
        """Start, retrying infrastructure errors (:class:`GaveUp` when they persist)."""
        assert self.retry is not None
        return await self.retry.run(self._start, "cannot start yet")

    async def _start(self) -> Parts:
        async with self.lock:
            if self.parts is None:
                self.parts = self._assemble(await self.connect(self.rules, self.clock, self))
                self.rules = self.parts.live.ctx.rules
            return self.parts

    def _assemble(self, connection: Connection) -> Parts:
        assert self.retry is not None
        live = Live(connection.ctx, self.lock)
        batches = BatchRunner(live, connection.outlet, self.retry, self.clock)

        async def run_page(ids: Sequence[str], emit: bool) -> None:
            await batches.guarded(refresh_customers, ids, emit)

        backfiller = Backfiller(lambda: live.ctx, run_page, self.clock, connection.emit_backfill)
        follower = Follower(self.settings, live, self.swap, self.clock, connection.dir_signature)
        return Parts(connection, live, batches, follower, backfiller)

    async def health(self) -> dict[str, Any]:
        """What ``/healthz`` reports: the store reachable and the stream making progress."""
        parts = self.parts
        store_ok = parts is not None and await parts.live.ctx.store.ping()
        last = parts.batches.last_progress if parts is not None else self.created
        age = self.clock.now() - last
        stalled = bool(self.assigned) and age > STALL_S
        return {
            "ok": bool(parts is not None and store_ok and not stalled),
            "redis": store_ok,
            "started": parts is not None,
            "stalled": stalled,
            "assigned_partitions": sorted(self.assigned),
            "last_progress_age_s": round(age, 3),
            "rule_version": self.rules.version,
        }

    async def guarded(self, work: Work, *args: Any) -> None:
        """Start if need be, then run ``work(ctx, *args)`` (see :class:`BatchRunner`)."""
        parts = self.parts or await self.ensure_started()
        await parts.batches.guarded(work, *args)

    async def handle(self, records: list[Record], partitions: Collection[int] = ()) -> None:
        """Apply one batch (and the timers due on ``partitions``), then send its outbox."""
        parts = self.parts or await self.ensure_started()
        await parts.batches.handle(records, partitions)

    async def run_batches(self, consumer: Consumer) -> None:
        """The batch loop: take, apply and send, then acknowledge; one batch in flight.

        A batch is acknowledged for the partitions still held once it is sent: a partition
        revoked meanwhile is read again by its next owner, which skips what the store says was
        applied. Returns when the consumer's input is closed (after a commit); raises
        :class:`WorkerExit` when the worker must end (unacknowledged)."""
        batch_size, within = self.settings.batch_size, self.settings.batch_within_s
        while True:
            records = await consumer.take(batch_size, within)
            if not records:
                await consumer.commit()
                return
            try:
                await self.handle(records)
            except WorkerExit:
                raise
            except Exception as exc:
                log.exception("the batch loop failed")
                raise BatchLoopFailed(f"the batch loop failed: {exc!r}") from exc
            held = consumer.assignment()
            consumer.ack([r for r in records if r.partition in held])

    async def tick(self, assigned: frozenset[int]) -> None:
        """The periodic duties: leftovers, timers, rule and RFM changes, backfills."""
        parts = self.parts
        if parts is None:
            return
        if assigned != parts.live.assigned:
            parts.backfiller.reassign(assigned)
            parts.batches.reassign(assigned)
        if assigned:
            await parts.batches.handle([], assigned)
        await parts.follower.follow()
        parts.backfiller.schedule(assigned)

    async def swap(
        self, rules: RuleSet, rfm: RfmBoundaries | None, emit: bool, models: FittedModels | None
    ) -> None:
        """Switch to new rules, boundaries or models and backfill every held partition."""
        parts = self.parts
        assert parts is not None
        live = parts.live
        async with live.lock:
            self.rules = rules
            live.ctx = live.ctx.with_rules(rules, rfm, models)
            if parts.connection.http is not None:
                parts.connection.http.rules = rules
        parts.backfiller.restart(emit)
        log.info(
            "now evaluating under %s; backfilling partitions %s",
            live.ctx.version,
            sorted(live.assigned),
        )

    @property
    def ctx(self) -> PipelineContext | None:
        """The context batches run under (None before the start)."""
        return self.parts.live.ctx if self.parts is not None else None


__all__ = ["Connect", "Parts", "Runtime"]
