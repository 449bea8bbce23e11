"""The stream-processing worker: a faust app built by a factory, never at import.

One agent (concurrency 1) reads the input topic in batches (``take_events``); each batch is
applied with one Lua call and its outbox sent before faust acknowledges the batch. Only
infrastructure errors escape the per-event handling: they are retried with backoff, and when
retries run out the process exits without acknowledging, for its supervisor to restart it.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streams.api.http import HttpServer
from streams.engine import RuleSet, load_rules
from streams.pipeline.processor import PipelineContext, Record, process_batch
from streams.pipeline.sender import flush_outbox
from streams.settings import Settings
from streams.stack.topics import ensure_topics, partition_count, topic_configs, topic_layout
from streams.store.base import ConflictError
from streams.store.redis_store import RedisStore

log = logging.getLogger("segmenter.worker")

RETRIABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    KafkaError,
    OSError,
    asyncio.TimeoutError,
)
ATTEMPTS = 8
EXIT_INFRASTRUCTURE = 75


@dataclass
class Runtime:
    """The worker's live resources, started once inside the faust event loop."""

    settings: Settings
    rules: RuleSet
    bootstrap: str
    ctx: PipelineContext | None = None
    producer: AIOKafkaProducer | None = None
    http: HttpServer | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    started: bool = False
    ready: bool = False
    last_progress: float = field(default_factory=time.monotonic)

    async def ensure_started(self) -> PipelineContext:
        """Connect to Redis and Kafka, start the HTTP server (idempotent)."""
        async with self.lock:
            if self.ctx is None:
                settings = self.settings
                assert settings.redis_url is not None
                await ensure_topics(
                    self.bootstrap, topic_layout(settings), configs=topic_configs(settings)
                )
                partitions = await partition_count(self.bootstrap, settings.input_topic)
                store = RedisStore.from_url(settings.redis_url, settings.namespace)
                self.ctx = PipelineContext.create(settings, self.rules, store, partitions)
                self.producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap, acks="all", linger_ms=2
                )
                await self.producer.start()
                self.http = HttpServer(settings, self.rules, store, self.ctx.metrics, self.health)
                await self.http.start()
                self.started = True
                log.info(
                    "worker started: %d input partitions, rules %s, http %s",
                    partitions,
                    self.rules.version,
                    self.http.url,
                )
            return self.ctx

    async def health(self) -> dict[str, Any]:
        """What ``/healthz`` reports."""
        store_ok = self.ctx is not None and await self.ctx.store.ping()
        return {"ok": bool(self.started and store_ok), "redis": store_ok, "started": self.started}

    async def handle(self, records: list[Record], partitions: frozenset[int] = frozenset()) -> None:
        """Apply one batch (and the timers due on ``partitions``), then send its outbox.

        Infrastructure errors are retried with backoff; when retries run out the process exits
        without acknowledging the batch.
        """
        ctx = await self.ensure_started()
        assert self.producer is not None
        delay = 0.2
        involved = sorted({r.partition for r in records} | partitions)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with self.lock:
                    await process_batch(ctx, records, involved)
                    for partition in involved:
                        await flush_outbox(ctx.store, self.producer, partition)
                self.last_progress = time.monotonic()
                return
            except ConflictError as exc:
                log.warning("state of %s changed under this batch; applying it again", exc)
            except RETRIABLE as exc:
                log.warning("infrastructure error (attempt %d/%d): %r", attempt, ATTEMPTS, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        log.critical("giving up after %d attempts; exiting for the supervisor to restart", ATTEMPTS)
        logging.shutdown()
        os._exit(EXIT_INFRASTRUCTURE)


def _faust_broker(bootstrap: str) -> str:
    return "kafka://" + ";".join(part.strip() for part in bootstrap.split(",") if part.strip())


def create_app(settings: Settings, rules: RuleSet) -> tuple[faust.App, Runtime]:
    """Build the faust app and its runtime. Nothing connects until the app runs."""
    if not settings.kafka_bootstrap or not settings.redis_url:
        raise SystemExit(
            "segmenter worker: set SEGMENTER_KAFKA_BOOTSTRAP and SEGMENTER_REDIS_URL "
            "(or use `segmenter up`, which starts both)"
        )
    runtime = Runtime(settings=settings, rules=rules, bootstrap=settings.kafka_bootstrap)
    datadir = tempfile.mkdtemp(prefix="segmenter-faust-")
    atexit.register(shutil.rmtree, datadir, True)
    app = faust.App(
        settings.group_id,
        broker=_faust_broker(settings.kafka_bootstrap),
        web_enabled=False,
        datadir=datadir,
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_rebalance_timeout=1.0,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        producer_acks=-1,
    )
    topic = app.topic(settings.input_topic, key_serializer="raw", value_serializer="raw")

    async def segment(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_size, within=settings.batch_within_s):
            records = [
                Record(
                    topic=e.message.topic,
                    partition=e.message.partition,
                    offset=e.message.offset,
                    key=e.message.key,
                    value=e.message.value,
                    headers=tuple((k, v) for k, v in (e.message.headers or ())),
                )
                for e in events
            ]
            await runtime.handle(records)

    app.agent(topic, name="segment", concurrency=1)(segment)

    async def start_runtime() -> None:
        await runtime.ensure_started()
        runtime.ready = True

    app.task(start_runtime)

    async def tick() -> None:
        """Fire due timers and send leftover outbox messages of the assigned partitions."""
        if runtime.ctx is None:
            return
        assigned = frozenset(
            tp.partition for tp in app.consumer.assignment() if tp.topic == settings.input_topic
        )
        if assigned:
            await runtime.handle([], assigned)

    app.timer(settings.timer_interval_s)(tick)
    return app, runtime


def run_worker(settings: Settings) -> int:
    """``segmenter worker``: run until SIGINT/SIGTERM."""
    from streams.engine import RuleLoadError

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        rules = load_rules(settings.rules)
    except RuleLoadError as exc:
        for problem in exc.problems:
            print(f"{problem.file}:{problem.line}: {problem.message}")
        return 1
    app, _runtime = create_app(settings, rules)
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True)
    worker.execute_from_commandline()
    return 0
