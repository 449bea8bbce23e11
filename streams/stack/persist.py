"""What ``segmenter up`` keeps between runs, and how it starts and stops around it.

The embedded Redis keeps its data in an append-only file under ``SEGMENTER_DATA_DIR`` (default
``.segmenter/data``; ``appendfsync everysec``), so customers, memberships, timers, size history,
rules, models and the outbox survive a stop. The embedded broker (the Tansu memory engine) keeps
nothing: its topics start empty at every start. So, at start-up, before any child runs:

- the applied input offsets stored in Redis are forgotten (:func:`forget_input_positions`):
  they count records of a log that is gone, and the new log's records start again at offset 0;
  each event is still applied once (its ``messageId`` is remembered per customer);
- the deliverers are told (``SEGMENTER_LOG_RESETS``) that a group without a position reads the
  new log from its start, so the migrations the worker re-sends from its outbox reach them.

At a clean stop (Ctrl-C, SIGTERM) the producers stop first and :func:`drain` waits until the
worker has applied every input record and sent its outbox, so nothing that was accepted is
left only in the broker's memory. A SIGKILL of the whole stack loses what the broker held and
not yet applied, and at most the last second of Redis writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.settings import Settings
from streams.stack.embedded import StackError
from streams.store.redis_store import RedisStore

DRAIN_TIMEOUT_S = 20.0


class DataDir:
    """The stack's data directory, locked for one ``segmenter up`` at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock: IO[bytes] | None = None

    @property
    def redis(self) -> Path:
        """Where the embedded Redis keeps its append-only file."""
        return self.path / "redis"

    def open(self, fresh: bool) -> bool:
        """Lock the directory (a :class:`StackError` if another ``up`` holds it); with
        ``fresh``, remove what it kept. True when there is data from an earlier run."""
        self.path.mkdir(parents=True, exist_ok=True)
        lock = (self.path / ".lock").open("ab")
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            lock.close()
            raise StackError(
                f"another `segmenter up` uses {self.path}: stop it, or set SEGMENTER_DATA_DIR "
                "(or --data-dir) to another directory"
            ) from exc
        self._lock = lock
        if fresh and self.redis.exists():
            shutil.rmtree(self.redis)
        kept = self.redis.is_dir() and any(self.redis.iterdir())
        self.redis.mkdir(parents=True, exist_ok=True)
        return kept

    def close(self) -> None:
        """Release the lock."""
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None


@dataclass(frozen=True)
class Kept:
    """What a start found in the data directory."""

    customers: int
    positions_forgotten: int

    def describe(self, where: Path) -> str:
        """One line for the start-up banner."""
        if not self.customers:
            return f"data: {where} (empty)"
        plural = "s" if self.customers != 1 else ""
        return (
            f"data: {where} (kept {self.customers} customer{plural} and their segments, timers "
            "and history; the embedded broker starts with empty topics)"
        )


async def forget_input_positions(store: RedisStore) -> int:
    """Forget the applied input offsets of every key group (their log is gone); the count."""
    keys = store.keys
    names = [keys.offsets_of(group) for group in keys.groups]
    return int(await store.client.delete(*names))


async def count_customers(store: RedisStore, limit: int = 10_000_000) -> int:
    """How many customers the store holds (redirects of merged ids included)."""
    total, cursor = 0, 0
    while True:
        cursor, found = await store.scan_customers(cursor, 10_000)
        total += len(found)
        if not cursor or total >= limit:
            return total


async def _prepare(settings: Settings, log_resets: bool) -> Kept:
    store = RedisStore.from_settings(settings)
    try:
        customers = await count_customers(store)
        forgotten = await forget_input_positions(store) if log_resets else 0
        return Kept(customers, forgotten)
    finally:
        await store.close()


def prepare_store(settings: Settings, log_resets: bool) -> Kept:
    """Before the children start: count what was kept, and forget the input positions when the
    broker's log starts empty (an embedded broker)."""
    try:
        return asyncio.run(_prepare(settings, log_resets))
    except Exception as exc:
        raise StackError(f"cannot read the kept data in Redis: {exc}") from exc


async def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """Partition -> end offset of ``topic`` (its next offset).

    The memory engine's ListOffsets answers the last batch's base offset + 1 when that batch
    holds several records, so the answer is corrected by reading that last batch.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        listed = {tp.partition: int(end) for tp, end in (await consumer.end_offsets(tps)).items()}
        nonempty = [tp for tp in tps if listed[tp.partition] > 0]
        if not nonempty:
            return listed
        consumer.assign(nonempty)
        for tp in nonempty:
            consumer.seek(tp, listed[tp.partition] - 1)
        ends, waiting = dict(listed), set(nonempty)
        for _ in range(10):
            got = await consumer.getmany(*waiting, timeout_ms=200)
            for tp, records in got.items():
                if records:
                    ends[tp.partition] = max(ends[tp.partition], records[-1].offset + 1)
                    waiting.discard(tp)
            if not waiting:
                break
        return ends
    finally:
        await consumer.stop()


async def committed_offsets(
    bootstrap: str, group: str, topic: str, partitions: int
) -> dict[int, int]:
    """Partition -> the offset consumer group ``group`` committed on ``topic`` (0 when none),
    read without joining the group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        found = {}
        for p in range(partitions):
            offset = await consumer.committed(TopicPartition(topic, p))
            found[p] = int(offset) if offset is not None and offset >= 0 else 0
        return found
    finally:
        await consumer.stop()


async def _delivery_lag(settings: Settings, groups: list[str]) -> int:
    """Migrations the deliverers' groups have not committed yet."""
    if not groups:
        return 0
    assert settings.kafka_bootstrap is not None
    topic, partitions = settings.migrations_topic, settings.migrations_partitions
    ends = await end_offsets(settings.kafka_bootstrap, topic, partitions)
    lag = 0
    for group in groups:
        done = await committed_offsets(settings.kafka_bootstrap, group, topic, partitions)
        lag += sum(max(0, end - done[p]) for p, end in ends.items())
    return lag


async def _backlog(settings: Settings, store: RedisStore, groups: list[str]) -> int:
    """Input records not yet applied, migrations not yet sent from the outbox, and migrations
    not yet delivered by the deliverers' ``groups``."""
    assert settings.kafka_bootstrap is not None
    partitions = range(settings.input_partitions)
    ends = await end_offsets(settings.kafka_bootstrap, settings.input_topic, len(partitions))
    applied = (await store.load([], list(partitions))).offsets
    unapplied = sum(max(0, ends[p] - 1 - applied.get(p, -1)) for p in partitions)
    outboxes = sum([len(await store.outbox(p, 1)) for p in partitions])
    return unapplied + outboxes + await _delivery_lag(settings, groups)


async def _drain(
    settings: Settings, groups: list[str], timeout: float, say: Callable[[str], None]
) -> int:
    store = RedisStore.from_settings(settings)
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = await _backlog(settings, store, groups)
            if not left or time.monotonic() > deadline:
                return left
            say(f"waiting for the worker and deliverers: {left} records to apply, send or deliver")
            await asyncio.sleep(0.5)
    finally:
        await store.close()


def drain(
    settings: Settings,
    say: Callable[[str], None],
    groups: list[str] | None = None,
    timeout: float = DRAIN_TIMEOUT_S,
) -> int:
    """Wait (up to ``timeout``) until the worker has applied every input record and sent its
    outbox, and the deliverers' consumer ``groups`` have delivered every migration; return what
    is left (0 when drained, -1 when it could not be checked). Errors are reported, not raised:
    the caller goes on either way."""
    try:
        return asyncio.run(_drain(settings, groups or [], timeout, say))
    except Exception as exc:
        say(f"could not check that the worker caught up: {exc}")
        return -1


def data_dir_of(settings: Settings) -> Path:
    """``settings.data_dir``, absolute (children run elsewhere)."""
    return Path(os.path.abspath(settings.data_dir))
