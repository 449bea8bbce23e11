"""The worker's live resources and duties, started once inside the faust event loop.

Duties besides applying batches (all under one lock, so they interleave with event batches
without ever running concurrently with one):

* timers: fire what is due on the assigned partitions (every ``SEGMENTER_TIMER_INTERVAL_S``);
* rules: publish the rule directory when its files change, follow the published pack, and
  backfill the customers of the assigned partitions after a change;
* RFM: follow the live boundaries (and recompute them on schedule when this worker owns
  partition 0), backfilling when they move.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Collection, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.api.http import HttpServer
from streams.deliver.metrics import read_delivery_metrics
from streams.engine import RuleLoadError, RuleSet, parse_rules
from streams.models.published import FittedModels, ModelReader
from streams.pipeline import rulepack
from streams.pipeline.backfill import backfill, refresh_customers
from streams.pipeline.processor import PipelineContext, Record, process_batch
from streams.pipeline.retry import RETRIABLE, ConfigMismatch, RetryPolicy, WorkerExit
from streams.pipeline.rfm_live import (
    compute_boundaries,
    computed_at,
    live_boundaries,
    publish_boundaries,
)
from streams.pipeline.sender import flush_outbox, send_committed
from streams.pipeline.state_cache import StateCache
from streams.settings import Settings
from streams.stack.kafka_security import client_kwargs
from streams.stack.topics import ensure_segmenter_topics
from streams.store.base import ConflictError
from streams.store.redis_store import LayoutError, RedisStore

log = logging.getLogger("segmenter.worker")

RULES_CHECK_S = 2.0
STALL_S = 30.0


@dataclass
class Runtime:
    """Everything a running worker holds; built by :func:`streams.pipeline.worker.create_app`."""

    settings: Settings
    rules: RuleSet
    bootstrap: str
    ctx: PipelineContext | None = None
    producer: AIOKafkaProducer | None = None
    http: HttpServer | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    started: bool = False
    last_progress: float = field(default_factory=time.monotonic)
    assigned: frozenset[int] = frozenset()
    backfilled: set[int] = field(default_factory=set)
    backfill_task: asyncio.Task[None] | None = None
    dir_signature: tuple[tuple[str, int, int], ...] = ()
    last_rules_check: float = 0.0
    models: ModelReader = field(default_factory=ModelReader)
    emit_backfill: bool = True
    probe: AIOKafkaConsumer | None = None
    flush_all: bool = True
    """Send every assigned partition's outbox before the next batch (at start, after errors)."""

    @property
    def retry(self) -> RetryPolicy:
        """How infrastructure errors are retried (:class:`GaveUp` when they persist)."""
        return RetryPolicy.from_settings(self.settings)

    async def ensure_started(self) -> PipelineContext:
        """Start, retrying infrastructure errors (:class:`GaveUp` when they persist)."""
        return await self.retry.run(self._start, "cannot start yet")

    async def _start(self) -> PipelineContext:
        """Connect to Redis and Kafka, adopt the published rules, start HTTP (idempotent)."""
        async with self.lock:
            if self.ctx is None:
                settings = self.settings
                assert settings.redis_url is not None
                partitions = await ensure_segmenter_topics(
                    self.bootstrap, settings, client_kwargs(settings)
                )
                store = RedisStore.from_settings(settings)
                await _check_layout(store, settings, partitions)
                self.rules = await self._startup_rules(store)
                models = await self.models.current(store)
                cache = settings.state_cache_customers
                self.ctx = PipelineContext.create(
                    settings,
                    self.rules,
                    store,
                    partitions,
                    models=models,
                    state_cache=StateCache(cache) if cache else None,
                )
                await self._adopt_rfm()
                self.producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap,
                    acks="all",
                    linger_ms=0,
                    **client_kwargs(settings),
                )
                await self.producer.start()
                self.http = HttpServer(
                    settings,
                    self.rules,
                    store,
                    self.ctx.metrics,
                    self.health,
                    lag=self.lag,
                    delivery=partial(read_delivery_metrics, store.client, store.keys.ns),
                )
                await self.http.start()
                self.started = True
                log.info(
                    "worker started: %d input partitions, rules %s, http %s",
                    partitions,
                    self.rules.version,
                    self.http.url,
                )
            return self.ctx

    async def _startup_rules(self, store: RedisStore) -> RuleSet:
        """The published pack, unless the local rule directory is newer than it."""
        directory = self.settings.rules
        self.dir_signature = rulepack.directory_signature(directory)
        pack = await rulepack.published(store)
        newer = pack is None or rulepack.newest_change(directory) > pack.published_at
        if newer and (pack is None or pack.rules.version != self.rules.version):
            await rulepack.publish(store, rulepack.read_directory(directory), emit=True)
            log.info("published the rule directory %s as %s", directory, self.rules.version)
            return self.rules
        assert pack is not None
        self.emit_backfill = pack.emit
        return pack.rules

    async def health(self) -> dict[str, Any]:
        """What ``/healthz`` reports: Redis reachable and the stream making progress."""
        store_ok = self.ctx is not None and await self.ctx.store.ping()
        age = time.monotonic() - self.last_progress
        stalled = bool(self.assigned) and age > STALL_S
        return {
            "ok": bool(self.started and store_ok and not stalled),
            "redis": store_ok,
            "started": self.started,
            "stalled": stalled,
            "assigned_partitions": sorted(self.assigned),
            "last_progress_age_s": round(age, 3),
            "rule_version": self.rules.version,
        }

    async def lag(self) -> dict[int, int]:
        """Records behind the end of each assigned input partition."""
        if self.ctx is None or not self.assigned:
            return {}
        if self.probe is None:
            self.probe = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, **client_kwargs(self.settings)
            )
            await self.probe.start()
        topic = self.settings.input_topic
        ends = await self.probe.end_offsets([TopicPartition(topic, p) for p in self.assigned])
        applied = (await self.ctx.store.load([], sorted(self.assigned))).offsets
        return {
            tp.partition: max(0, end - applied.get(tp.partition, -1) - 1)
            for tp, end in ends.items()
        }

    async def guarded(self, work: Any, *args: Any) -> None:
        """Run ``work(ctx, *args)`` under the lock, then send the outbox; retry infra errors."""
        await self.ensure_started()
        assert self.producer is not None

        async def attempt() -> None:
            assert self.ctx is not None and self.producer is not None
            async with self.lock:
                ctx = self.ctx
                if self.flush_all and self.assigned:
                    for partition in sorted(self.assigned):
                        await flush_outbox(ctx.store, self.producer, partition)
                    self.flush_all = False
                commit = await work(ctx, *args)
                await send_committed(ctx.store, self.producer, commit)
            self.last_progress = time.monotonic()

        def resend_everything(_exc: BaseException) -> None:
            # partitions committed before the error have messages to send, and what the
            # error interrupted is read again from Redis (another writer, a restarted server)
            self.flush_all = True
            if self.ctx is not None and self.ctx.state_cache is not None:
                self.ctx.state_cache.forget()

        await self.retry.run(
            attempt,
            "infrastructure error",
            again_at_once=(ConflictError,),
            on_error=resend_everything,
            again_log="state of %s changed under this batch; applying it again",
        )

    async def handle(self, records: list[Record], partitions: Collection[int] = ()) -> None:
        """Apply one batch (and the timers due on ``partitions``), then send its outbox."""
        involved = sorted({r.partition for r in records} | set(partitions))
        await self.guarded(_batch, records, involved)

    async def tick(self, assigned: frozenset[int]) -> None:
        """The periodic duties: leftovers, timers, rule and RFM changes, backfills."""
        if self.ctx is None:
            return
        if assigned != self.assigned:
            self.backfilled &= assigned
            self.flush_all = True
            self.assigned = assigned
            self._forget_unowned(assigned)
        if assigned:
            await self.handle([], assigned)
        if time.monotonic() - self.last_rules_check >= RULES_CHECK_S:
            self.last_rules_check = time.monotonic()
            await self._duty("following rule changes", self._follow_rules())
            await self._duty("following RFM boundaries", self._follow_rfm())
            await self._duty("following the fitted models", self._follow_models())
        pending = assigned - self.backfilled
        self._raise_if_backfill_gave_up()
        if pending and (self.backfill_task is None or self.backfill_task.done()):
            self.backfill_task = asyncio.create_task(self._backfill(frozenset(pending)))

    def _forget_unowned(self, assigned: frozenset[int]) -> None:
        """Drop the cached states of customers whose partitions this worker no longer owns."""
        ctx = self.ctx
        if ctx is not None and ctx.state_cache is not None:
            home = ctx.home_partition
            dropped = ctx.state_cache.retain(lambda cid: home(cid) in assigned)
            if dropped:
                log.info("state cache: %d customers of revoked partitions dropped", dropped)

    def _raise_if_backfill_gave_up(self) -> None:
        """A backfill whose retries ran out ends the worker like a batch whose retries did."""
        task = self.backfill_task
        if task is not None and task.done() and not task.cancelled():
            failed = task.exception()
            if isinstance(failed, WorkerExit):
                self.backfill_task = None
                raise failed

    async def _duty(self, what: str, work: Awaitable[None]) -> None:
        """Run a periodic duty; an infrastructure error skips it until the next tick."""
        try:
            await work
        except RETRIABLE as exc:
            log.warning("%s failed, will retry: %r", what, exc)

    async def _follow_rules(self) -> None:
        """Publish a changed rule directory; adopt a newly published pack."""
        assert self.ctx is not None
        store = self.ctx.store
        signature = rulepack.directory_signature(self.settings.rules)
        if signature != self.dir_signature:
            self.dir_signature = signature
            try:
                files = rulepack.read_directory(self.settings.rules)
                rules = parse_rules(files)
            except (RuleLoadError, OSError) as exc:
                problems = getattr(exc, "problems", [exc])
                log.error(
                    "rule files changed but are invalid; keeping %s: %s",
                    self.rules.version,
                    "; ".join(str(p) for p in problems),
                )
            else:
                if rules.version != await rulepack.published_version(store):
                    await rulepack.publish(store, files, emit=True)
                    log.info("rule directory changed: published %s", rules.version)
        if await rulepack.published_version(store) != self.rules.version:
            pack = await rulepack.published(store)
            if pack is not None:
                await self._swap(pack.rules, self.ctx.rfm, pack.emit)

    async def _adopt_rfm(self) -> None:
        """Take the live RFM boundaries into the context (no backfill: used at start)."""
        assert self.ctx is not None
        if self.rules.rfm is not None and self.rules.rfm.live:
            boundaries = await live_boundaries(self.ctx.store)
            self.ctx = self.ctx.with_rules(self.rules, boundaries)

    async def _follow_rfm(self) -> None:
        """Recompute live boundaries when due (owner of partition 0), adopt new ones."""
        assert self.ctx is not None
        config = self.rules.rfm
        if config is None or not config.live:
            return
        store = self.ctx.store
        if 0 in self.assigned:
            last = await computed_at(store)
            if last is None or time.time() - last >= self.settings.rfm_refresh_s:
                boundaries = await compute_boundaries(store)
                if boundaries is not None:
                    await publish_boundaries(store, boundaries)
                    log.info("RFM boundaries recomputed: %s", boundaries.to_dict())
        boundaries = await live_boundaries(store)
        current = self.ctx.rfm
        if boundaries is not None and (current is None or current.digest() != boundaries.digest()):
            await self._swap(self.rules, boundaries, emit=True)

    async def _follow_models(self) -> None:
        """Adopt a newly published model fit when the rules predict (then backfill)."""
        assert self.ctx is not None
        if not self.rules.predictive:
            return
        models = await self.models.current(self.ctx.store)
        current = self.ctx.models
        if models is not None and (current is None or current.version != models.version):
            await self._swap(self.rules, self.ctx.rfm, emit=True, models=models)

    async def _swap(
        self, rules: RuleSet, rfm: Any, emit: bool, models: FittedModels | None = None
    ) -> None:
        """Switch to new rules, boundaries or models and backfill every assigned partition."""
        async with self.lock:
            assert self.ctx is not None
            self.rules = rules
            self.ctx = self.ctx.with_rules(rules, rfm, models)
            if self.http is not None:
                self.http.rules = rules
        self.emit_backfill = emit
        self.backfilled.clear()
        log.info(
            "now evaluating under %s; backfilling partitions %s",
            self.ctx.version,
            sorted(self.assigned),
        )

    async def _backfill(self, partitions: frozenset[int]) -> None:
        """Re-evaluate the stored customers of ``partitions`` a page at a time."""
        assert self.ctx is not None
        version = self.ctx.version
        started = time.monotonic()

        async def run_page(ids: Sequence[str], emit: bool) -> None:
            await self.guarded(refresh_customers, ids, emit)

        async def progress(count: int) -> None:
            assert self.ctx is not None
            await self.ctx.store.progress_add(f"backfill:{version}", count)

        try:
            done = await backfill(
                lambda: self.ctx,  # type: ignore[arg-type,return-value]
                partitions,
                self.emit_backfill,
                run_page,
                progress,
            )
        except RETRIABLE as exc:
            log.warning("backfill interrupted (%r); it will resume", exc)
            return
        if self.ctx.version == version:
            self.backfilled |= partitions
        if done:
            log.info(
                "backfilled %d customers of partitions %s under %s in %.1fs",
                done,
                sorted(partitions),
                version,
                time.monotonic() - started,
            )


async def _check_layout(store: RedisStore, settings: Settings, partitions: int) -> None:
    """:class:`ConfigMismatch` (exit 78) when the Redis layout does not fit the namespace or
    the input topic; then finish hand-overs a crash cut short (partitioned layout)."""
    problem = None
    if settings.redis_layout == "partitioned" and partitions != settings.input_partitions:
        problem = (
            "the partitioned Redis layout needs SEGMENTER_INPUT_PARTITIONS"
            f" ({settings.input_partitions}) to equal the input topic's partition count"
            f" ({partitions})"
        )
    else:
        try:
            await store.check_layout()
        except LayoutError as exc:
            problem = str(exc)
    if problem is not None:
        raise ConfigMismatch(problem)
    finished = await store.recover()
    if finished:
        log.warning("finished %d identity hand-overs that a stop had cut short", finished)


async def _batch(ctx: PipelineContext, records: list[Record], involved: list[int]) -> Any:
    return await process_batch(ctx, records, involved)
