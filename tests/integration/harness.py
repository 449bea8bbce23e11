"""Helpers for tests that run real workers against the real broker and Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from streams.stack.children import Child, settings_env
from streams.stack.topics import ensure_topics
from tests.events import event as event
from tests.events import order as order
from tests.fixtures import TEST_RULES

TEST_SESSION_TIMEOUT_S = 8.0
"""A loaded machine (CI may share it) can miss heartbeats for seconds: 4 s made rebalances fire
when nothing had died. Tests that kill a worker wait this long for its partitions to move."""


@dataclass
class Deployment:
    """Topics, namespace and group of one test's pipeline."""

    kafka: str
    redis: str
    prefix: str
    rules: Path
    partitions: int = 8
    idle_settle_s: float = 1.0
    """Event time: a quiet partition's latest instant is published after this long (tests that
    compare with an in-process run of the same input use 0: publish only as event time moves)."""

    @property
    def input(self) -> str:
        return f"{self.prefix}.events"

    @property
    def migrations(self) -> str:
        return f"{self.prefix}.migrations"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}.dlq"

    @property
    def memberships(self) -> str:
        return f"{self.prefix}.memberships"

    def env(self, **extra: object) -> dict[str, str]:
        """The deployment's settings; ``extra`` adds to them or overrides them."""
        values: dict[str, object] = {
            "kafka_bootstrap": self.kafka,
            "redis_url": self.redis,
            "rules": self.rules,
            "input_topic": self.input,
            "migrations_topic": self.migrations,
            "dlq_topic": self.dlq,
            "memberships_topic": self.memberships,
            "input_partitions": self.partitions,
            "namespace": self.prefix,
            "group_id": f"{self.prefix}-group",
            "clock": "event",
            "idle_settle_s": self.idle_settle_s,
            "http_port": 0,
            "log_level": "warning",
            # a SIGKILLed worker's partitions move after 4 s instead of 10 (shorter suite)
            "session_timeout_s": TEST_SESSION_TIMEOUT_S,
        }
        return settings_env(**{**values, **extra})

    async def create_topics(self) -> None:
        await ensure_topics(
            self.kafka,
            {self.input: self.partitions, self.migrations: 4, self.dlq: 1, self.memberships: 4},
            configs={self.memberships: {"cleanup.policy": "compact"}},
        )

    def worker(self, **extra: object) -> Child:
        return Child(["worker"], self.env(**extra)).start()


def write_rules(directory: Path, files: dict[str, str] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in (files or TEST_RULES).items():
        (directory / name).write_text(text)
    return directory


def identify_canadian(mid: str, user: str, ts: str = "2026-01-01T09:00:00Z") -> dict[str, object]:
    """An ``identify`` that puts ``user`` in Canada (the test pack's ``canadians``)."""
    return event("identify", mid, user, ts, traits={"address": {"country": "CA"}})


async def produce(
    kafka: str, topic: str, items: list[tuple[bytes | None, bytes]], partition: int | None = None
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=value, key=key, partition=partition)
            for key, value in items
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def keyed(docs: list[dict[str, object]]) -> list[tuple[bytes | None, bytes]]:
    return [(str(d["userId"]).encode(), orjson.dumps(d)) for d in docs]


async def consume_until(
    kafka: str,
    topic: str,
    done: Callable[[list[ConsumerRecord]], bool],
    timeout: float = 60.0,
    worker: Child | None = None,
    settle: float = 0.0,
) -> list[ConsumerRecord]:
    """Read ``topic`` from the beginning until ``done(records)`` (then ``settle`` s more)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    seen: list[ConsumerRecord] = []
    try:
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                seen.extend(records)
            if settle_until is None and done(seen):
                settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() >= settle_until:
                return seen
            if worker is not None and not worker.alive():
                raise AssertionError(f"worker died:\n{worker.log_tail()}")
        tail = worker.log_tail() if worker else ""
        raise AssertionError(f"timed out with {len(seen)} records on {topic}\n{tail}")
    finally:
        await consumer.stop()


def values(records: list[ConsumerRecord]) -> list[dict[str, object]]:
    return [orjson.loads(r.value) for r in records]
