"""Starting a worker against real services: Redis, the Kafka topics and producer, HTTP.

:class:`ServiceConnector` is the :class:`~streams.pipeline.runtime.Runtime`'s ``connect`` in a
deployed worker: it creates the topics it needs, checks the Redis layout, adopts the published
rules (or publishes the local directory when it is newer), the fitted models and the live RFM
boundaries, and starts the producer and the HTTP server. The runtime retries it until it
succeeds (:class:`~streams.pipeline.retry.GaveUp` when it does not). The unit tests connect the
runtime to an in-memory store instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.api.http import HttpServer
from streams.deliver.metrics import read_delivery_metrics
from streams.engine import RuleSet
from streams.models.published import ModelReader
from streams.pipeline import rulepack
from streams.pipeline.processor import PipelineContext
from streams.pipeline.retry import ConfigMismatch
from streams.pipeline.rfm_live import live_boundaries
from streams.pipeline.sender import KafkaOutlet, Outlet
from streams.pipeline.state_cache import StateCache
from streams.pipeline.timekeeping import Clock
from streams.settings import Settings
from streams.stack.kafka_security import client_kwargs
from streams.stack.topics import ensure_segmenter_topics
from streams.store.base import Store
from streams.store.redis_store import LayoutError, RedisStore

log = logging.getLogger("segmenter.worker")


class Status(Protocol):
    """What the HTTP server reports of a running worker."""

    @property
    def assigned(self) -> frozenset[int]:
        """The input partitions the worker holds."""
        ...

    async def health(self) -> dict[str, Any]:
        """What ``/healthz`` answers."""
        ...


@dataclass
class Connection:
    """What a started worker runs with."""

    ctx: PipelineContext
    outlet: Outlet
    emit_backfill: bool = True
    """Whether backfills emit migrations (the published pack's ``emit``)."""
    dir_signature: tuple[tuple[str, int, int], ...] = ()
    """The rule directory as the start saw it (the follower publishes it when it changes)."""
    http: HttpServer | None = None


@dataclass
class ServiceConnector:
    """Connects a worker to Redis, Kafka and HTTP (see the module doc)."""

    settings: Settings
    bootstrap: str
    models: ModelReader = field(default_factory=ModelReader)
    probe: AIOKafkaConsumer | None = None

    async def __call__(self, rules: RuleSet, clock: Clock, status: Status) -> Connection:
        settings = self.settings
        assert settings.redis_url is not None
        partitions = await ensure_segmenter_topics(
            self.bootstrap, settings, client_kwargs(settings)
        )
        store = RedisStore.from_settings(settings)
        await check_layout(store, settings, partitions)
        signature = rulepack.directory_signature(settings.rules)
        rules, emit = await startup_rules(store, settings, rules, clock)
        models = await self.models.current(store)
        cache = settings.state_cache_customers
        ctx = PipelineContext.create(
            settings,
            rules,
            store,
            partitions,
            clock=clock,
            models=models,
            state_cache=StateCache(cache) if cache else None,
        )
        if rules.rfm is not None and rules.rfm.live:
            ctx = ctx.with_rules(rules, await live_boundaries(store))
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", linger_ms=0, **client_kwargs(settings)
        )
        await producer.start()
        http = HttpServer(
            settings,
            rules,
            store,
            ctx.metrics,
            status.health,
            lag=partial(self.lag, store, status),
            delivery=partial(read_delivery_metrics, store.client, store.keys.ns),
        )
        await http.start()
        log.info(
            "worker started: %d input partitions, rules %s, http %s",
            partitions,
            rules.version,
            http.url,
        )
        return Connection(ctx, KafkaOutlet(producer), emit, signature, http)

    async def lag(self, store: Store, status: Status) -> dict[int, int]:
        """Records behind the end of each held input partition."""
        assigned = status.assigned
        if not assigned:
            return {}
        if self.probe is None:
            self.probe = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, **client_kwargs(self.settings)
            )
            await self.probe.start()
        topic = self.settings.input_topic
        ends = await self.probe.end_offsets([TopicPartition(topic, p) for p in assigned])
        applied = (await store.load([], sorted(assigned))).offsets
        return {
            tp.partition: max(0, end - applied.get(tp.partition, -1) - 1)
            for tp, end in ends.items()
        }


async def startup_rules(
    store: Store, settings: Settings, local: RuleSet, clock: Clock
) -> tuple[RuleSet, bool]:
    """The published pack and its ``emit``, unless the local rule directory is newer than it
    (then that is published, and its rules are ``local``)."""
    directory = settings.rules
    pack = await rulepack.published(store)
    newer = pack is None or rulepack.newest_change(directory) > pack.published_at
    if newer and (pack is None or pack.rules.version != local.version):
        await rulepack.publish(store, rulepack.read_directory(directory), True, clock.now())
        log.info("published the rule directory %s as %s", directory, local.version)
        return local, True
    assert pack is not None
    return pack.rules, pack.emit


async def check_layout(store: RedisStore, settings: Settings, partitions: int) -> None:
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


__all__ = ["Connection", "ServiceConnector", "Status", "check_layout", "startup_rules"]
