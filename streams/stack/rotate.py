"""Keeping ``segmenter up``'s embedded broker small: a new broker once it holds too much.

The Tansu memory engine cannot delete records and lists every stored batch of a partition on
each fetch, so its CPU and memory grow with everything it was ever sent. Everything the stack
must keep is in Redis (states, offsets, timers, the outbox), so once the broker holds more than
``SEGMENTER_EMBEDDED_MAX_RECORDS`` records, ``up`` starts a new generation of it:

1. the producers stop (the generator; the API, whose collector produces);
2. the worker and the deliverers catch up (up to 10 s: :func:`streams.stack.persist.drain`);
3. the worker and the deliverers stop; what reached the broker after the drain (a client that
   writes to Kafka directly, a timer's last migrations) is read out: the input records past the
   offsets the worker applied, the migrations past the slowest deliverer's commit;
4. the broker restarts on the same port with empty topics, those records are written to it, and
   the applied input offsets in Redis are forgotten, exactly as at a start of ``up``;
5. the API starts again at once (lookups are back within a second or two), then the worker,
   the deliverers and the generator.

Nothing accepted is lost: a collector request during the switch is refused (Segment's libraries
retry), and what the old broker holds that nobody has taken is carried over. Only a record
acknowledged by the old broker in the instant between that read and its stop would be lost.
The drain waits at most 10 s: clients that write to Kafka directly may keep it from ever
reaching zero, and what is left is carried over.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.settings import Settings
from streams.stack.discovery import broker_lock
from streams.stack.persist import committed_offsets, drain, end_offsets, prepare_store
from streams.stack.supervise import StopFlag, Supervisor
from streams.stack.topics import topic_layout
from streams.store.redis_store import RedisStore

ROTATION_DRAIN_S = 10.0
TAIL_QUIET_POLLS = 3
"""Empty reads (of 0.5 s) in a row that mark the end of the old broker's log."""
TAIL_MAX_S = 10.0
"""The longest the old broker's tail is read (a client writing directly may never stop)."""
PRODUCERS = {"generator", "api"}
CONSUMERS = {"deliver", "worker"}


@dataclass(frozen=True)
class Carried:
    """A record read from the old broker, to be written to the new one."""

    topic: str
    partition: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp_ms: int


async def read_tail(settings: Settings, since: dict[str, dict[int, int]]) -> list[Carried]:
    """Every record of ``since``'s topics from its partition's offset to the end, in order.

    The producers are stopped, so the end is where reads come back empty for a while: the
    memory engine's ListOffsets answers the last batch's base offset + 1, not the end, when that
    batch holds several records, so end offsets are not to be trusted here.
    """
    assert settings.kafka_bootstrap is not None
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t, parts in since.items() for p in parts]
        if not tps:
            return []
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, since[tp.topic][tp.partition])
        carried: list[Carried] = []
        quiet, deadline = 0, time.monotonic() + TAIL_MAX_S
        while quiet < TAIL_QUIET_POLLS and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            quiet = 0 if any(batches.values()) else quiet + 1
            for tp, records in batches.items():
                for r in records:
                    headers = [(k, bytes(v)) for k, v in r.headers]
                    carried.append(
                        Carried(tp.topic, tp.partition, r.key, r.value, headers, r.timestamp)
                    )
        return carried
    finally:
        await consumer.stop()


async def write_tail(settings: Settings, carried: list[Carried]) -> None:
    """Write ``carried`` to the (new) broker, each to its partition, in order."""
    if not carried:
        return
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for r in carried:
            await producer.send(
                r.topic,
                r.value,
                key=r.key,
                partition=r.partition,
                headers=r.headers,
                timestamp_ms=r.timestamp_ms,
            )
        await producer.flush()
    finally:
        await producer.stop()


async def _tail_positions(settings: Settings, groups: list[str]) -> dict[str, dict[int, int]]:
    """Where the records nobody has taken yet start: the input topic after the offsets the
    worker applied (in Redis), the migrations topic after the slowest deliverer's commit."""
    store = RedisStore.from_settings(settings)
    try:
        parts = list(range(settings.input_partitions))
        applied = (await store.load([], parts)).offsets
    finally:
        await store.close()
    since = {settings.input_topic: {p: applied.get(p, -1) + 1 for p in parts}}
    if groups:
        assert settings.kafka_bootstrap is not None
        topic, partitions = settings.migrations_topic, settings.migrations_partitions
        slowest = {p: 2**62 for p in range(partitions)}
        for group in groups:
            done = await committed_offsets(settings.kafka_bootstrap, group, topic, partitions)
            slowest = {p: min(slowest[p], done[p]) for p in slowest}
        since[settings.migrations_topic] = slowest
    return since


async def _held(settings: Settings) -> int:
    assert settings.kafka_bootstrap is not None
    total = 0
    for topic, partitions in topic_layout(settings).items():
        total += sum((await end_offsets(settings.kafka_bootstrap, topic, partitions)).values())
    return total


def records_held(settings: Settings) -> int:
    """How many records the broker holds in the stack's topics (the sum of their end offsets;
    -1 when it cannot be read)."""
    try:
        return asyncio.run(_held(settings))
    except Exception:
        return -1


@dataclass
class Rotation:
    """When and how ``up`` replaces its embedded broker (see the module)."""

    settings: Settings
    """The stack's settings, with the broker's and Redis' addresses."""
    restart_broker: Callable[[], None]
    """Stops the broker and starts it again on the same port, its topics created."""
    wait_api: Callable[[], None]
    wait_worker: Callable[[], None]
    deliver_groups: list[str]
    say: Callable[[str], None]
    next_check: float = 0.0
    generations: int = 1

    async def _read_tail(self) -> list[Carried]:
        return await read_tail(
            self.settings, await _tail_positions(self.settings, self.deliver_groups)
        )

    def due(self, now: float) -> bool:
        """True when the broker holds more than its limit (counted every
        ``SEGMENTER_EMBEDDED_CHECK_S``)."""
        if now < self.next_check:
            return False
        self.next_check = now + self.settings.embedded_check_s
        held = records_held(self.settings)
        return held > self.settings.embedded_max_records

    def rotate(self, supervisor: Supervisor, stop: StopFlag) -> bool:
        """Replace the broker (see the module); True when done."""
        limit = self.settings.embedded_max_records
        self.say(f"the embedded broker holds over {limit} records: starting a new one")
        producers = supervisor.stop_named(PRODUCERS)
        # let the worker and the deliverers catch up, so that little is left to carry over
        drain(self.settings, self.say, self.deliver_groups, timeout=ROTATION_DRAIN_S)
        consumers = supervisor.stop_named(CONSUMERS)
        started = time.monotonic()
        # what reached the old broker after the drain (a client of its own, a last timer)
        with broker_lock(self.settings, exclusive=True):  # `segmenter send` waits
            tail = asyncio.run(self._read_tail())
            self.restart_broker()
            asyncio.run(write_tail(self.settings, tail))
        prepare_store(self.settings, log_resets=True)
        api = [c for c in producers if c.name == "api"]
        Supervisor.resume(api)
        self.wait_api()
        Supervisor.resume([c for c in consumers if c.name == "worker"])
        self.wait_worker()
        Supervisor.resume([c for c in consumers if c.name != "worker"])
        Supervisor.resume([c for c in producers if c.name != "api"])
        self.generations += 1
        inputs = sum(1 for r in tail if r.topic == self.settings.input_topic)
        self.say(
            f"broker generation {self.generations} ready in {time.monotonic() - started:.1f}s "
            f"({inputs} events and {len(tail) - inputs} migrations carried over)"
        )
        return True
