"""The reliability run: real workers under SIGKILL, a Redis crash, duplicates, reordering, poison.

Synthetic history (``streams.generate.personas.history``) with 5% duplicates (the same bytes,
same ``messageId``, re-sent shortly after), bounded reordering (within the allowed lateness) and
0.5% malformed input goes to the input topic of its own deployment, keyed and partitioned by
customer. Two workers (``python -m streams worker``, event clock, the default rule pack
``rules/``) process it while one of them is SIGKILLed and restarted every ``KILL_EVERY`` seconds,
and the Redis they use (AOF, ``appendfsync always``) is SIGKILLed and restarted once on the same
port and directory. Dead workers (exit code 75 after their retries) are restarted like a
supervisor would.

The oracle is the in-process processor over a :class:`~streams.store.memory.MemoryStore`, fed
the input topic as Kafka holds it, partition by partition in offset order (the pipeline is
deterministic per partition, so this is what at-least-once processing must converge to).

At the end it checks:

* final memberships in Redis equal the oracle's;
* the migrations, deduplicated by ``ce_id``, equal the oracle's: the same ids, the same values,
  and per customer the same ordered list;
* every customer's ``sequence`` runs 1..n with no gap;
* the DLQ (deduplicated by source partition and offset) holds exactly the malformed values.

It prints one line, ``lost=N duplicates_after_dedupe=N raw_duplicates=N dlq=N/M kills=N``:

* ``lost``: oracle migrations missing from the topic, plus malformed values missing from the DLQ;
* ``duplicates_after_dedupe``: migrations (distinct ``ce_id``) or DLQ records the oracle does
  not have: an event applied twice shows up here;
* ``raw_duplicates``: migration records sent more than once (same ``ce_id``, at-least-once
  delivery after a crash; expected, and harmless for a subscriber that deduplicates);
* ``dlq``: distinct DLQ records / malformed records produced;
* ``kills``: worker SIGKILLs.

Parameters (environment): ``RELIABILITY_EVENTS`` (200000), ``RELIABILITY_CUSTOMERS`` (20000),
``RELIABILITY_SEED`` (7), ``RELIABILITY_PARTITIONS`` (8), ``RELIABILITY_WORKERS`` (2),
``RELIABILITY_KILL_EVERY`` (10 s), ``RELIABILITY_MAX_KILLS`` (0: no limit),
``RELIABILITY_REDIS_AT`` (0.5: share of the input applied when Redis is killed; < 0: never),
``RELIABILITY_RATE`` (0: produce as fast as possible; else events per second),
``RELIABILITY_TIMEOUT`` (1500 s). ``SEGMENTER_KAFKA_BOOTSTRAP`` selects a broker; otherwise an
embedded one is started. Redis is always a dedicated embedded one (it gets killed).

Run: ``python -m tests.reliability.run_reliability`` (exit 0 when every check holds).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.engine import RuleSet, load_rules
from streams.generate.personas import customer_key, history
from streams.pipeline.outbox import OutboxEntry
from streams.pipeline.processor import PipelineContext, Record, process_batch
from streams.pipeline.routing import partition_for
from streams.settings import Settings
from streams.stack.children import Child
from streams.stack.embedded import EmbeddedBroker, EmbeddedRedis
from streams.store.memory import MemoryStore
from streams.store.redis_store import RedisStore
from tests.integration.harness import Deployment

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2026, 1, 5, tzinfo=UTC)
EVENTS_PER_CUSTOMER_DAY = 9.0
"""Roughly what ``history`` produces (about 10 events per customer per day)."""


@dataclass(frozen=True)
class Config:
    """One run's parameters."""

    events: int = 200_000
    customers: int = 20_000
    seed: int = 7
    partitions: int = 8
    workers: int = 2
    kill_every: float = 10.0
    max_kills: int = 0
    redis_at: float = 0.5
    rate: float = 0.0
    timeout: float = 1500.0
    duplicate_share: float = 0.05
    malformed_share: float = 0.005
    max_delay_s: float = 240.0
    """Reordering: each event is sent as if delayed by up to this much (< allowed lateness)."""

    @classmethod
    def from_env(cls, **defaults: Any) -> Config:
        """The environment's ``RELIABILITY_*`` values over ``defaults`` over the class defaults."""
        base = cls(**defaults)
        env = os.environ

        def pick(name: str, cast: Any) -> Any:
            raw = env.get(f"RELIABILITY_{name.upper()}")
            return cast(raw) if raw not in (None, "") else getattr(base, name)

        return cls(
            events=pick("events", int),
            customers=pick("customers", int),
            seed=pick("seed", int),
            partitions=pick("partitions", int),
            workers=pick("workers", int),
            kill_every=pick("kill_every", float),
            max_kills=pick("max_kills", int),
            redis_at=pick("redis_at", float),
            rate=pick("rate", float),
            timeout=pick("timeout", float),
            duplicate_share=base.duplicate_share,
            malformed_share=base.malformed_share,
            max_delay_s=base.max_delay_s,
        )


@dataclass
class Result:
    """What a run found."""

    lost: int
    duplicates_after_dedupe: int
    raw_duplicates: int
    dlq: int
    malformed: int
    kills: int
    redis_restarts: int
    worker_exits: list[int | None]
    memberships_equal: bool
    membership_diff: dict[str, tuple[int, int]]
    order_mismatches: list[str]
    value_mismatches: int
    sequence_gaps: list[str]
    dlq_raw_duplicates: int
    migrations: int
    produced: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        """The one summary line."""
        return (
            f"lost={self.lost} duplicates_after_dedupe={self.duplicates_after_dedupe} "
            f"raw_duplicates={self.raw_duplicates} dlq={self.dlq}/{self.malformed} "
            f"kills={self.kills}"
        )

    @property
    def ok(self) -> bool:
        """Every check holds."""
        return (
            self.lost == 0
            and self.duplicates_after_dedupe == 0
            and self.dlq == self.malformed
            and self.memberships_equal
            and not self.order_mismatches
            and self.value_mismatches == 0
            and not self.sequence_gaps
        )


# -- input --------------------------------------------------------------------------------------


def malformed_value(rng: random.Random, index: int, max_bytes: int) -> bytes:
    """One poison message of a rotating kind; each value is unique (``bad-<index>``)."""
    tag = f"bad-{index}"
    kind = index % 7
    if kind == 0:
        return b'{"type": "track", "messageId": "' + tag.encode() + b'", "userId": '
    if kind == 1:
        return orjson.dumps({"type": "track", "messageId": tag, "userId": "x", "event": "E"})
    if kind == 2:
        doc = {"type": "identify", "messageId": tag, "userId": "x", "traits": {}}
        doc["timestamp"] = "2026-01-05T10:00:00"
        return orjson.dumps(doc)
    if kind == 3:
        return orjson.dumps([tag, 1, 2])
    if kind == 4:
        blob = "x" * (max_bytes + 10)
        return orjson.dumps(
            {
                "type": "track",
                "messageId": tag,
                "userId": "x",
                "timestamp": "2026-01-05T10:00:00Z",
                "event": "Big",
                "properties": {"blob": blob},
            }
        )
    if kind == 5:
        nested: Any = tag
        for _ in range(40):
            nested = {"n": nested}
        return orjson.dumps(
            {
                "type": "track",
                "messageId": tag,
                "userId": "x",
                "timestamp": "2026-01-05T10:00:00Z",
                "event": "Deep",
                "properties": {"deep": nested, "pad": "p" * 1200},
            }
        )
    return b"\xff\xfe" + tag.encode() + bytes(rng.randrange(256) for _ in range(20))


@dataclass
class Input:
    """What is produced, in order: (partition, key, value), and the malformed values."""

    records: list[tuple[int, bytes, bytes]]
    malformed: list[bytes]
    duplicates: int


def build_input(config: Config, max_bytes: int) -> Input:
    """History, reordered within the lateness, with duplicates and malformed records mixed in."""
    rng = random.Random(config.seed)
    base_count = max(
        1, round(config.events / (1 + config.duplicate_share + config.malformed_share))
    )
    days = max(0.05, 1.15 * base_count / (config.customers * EVENTS_PER_CUSTOMER_DAY))
    docs = history(config.seed, config.customers, days, START)
    while len(docs) < base_count:
        days *= 1.5
        docs = history(config.seed, config.customers, days, START)
    docs = docs[:base_count]
    keyed = []
    for doc in docs:
        ts = datetime.fromisoformat(doc["timestamp"]).timestamp()
        keyed.append((ts + rng.uniform(0.0, config.max_delay_s), customer_key(doc), doc))
    keyed.sort(key=lambda item: item[0])
    ordered: list[tuple[str, bytes]] = [(cid, orjson.dumps(doc)) for _, cid, doc in keyed]
    duplicates = round(len(ordered) * config.duplicate_share)
    inserts: dict[int, list[tuple[str, bytes]]] = defaultdict(list)
    for index in rng.sample(range(len(ordered)), duplicates):
        later = min(len(ordered) - 1, index + rng.randint(0, 40))
        inserts[later].append(ordered[index])
    malformed_count = max(1, config.events - len(ordered) - duplicates)
    customers = [cid for cid, _ in ordered]
    malformed = [malformed_value(rng, i, max_bytes) for i in range(malformed_count)]
    for value in malformed:
        inserts[rng.randrange(len(ordered))].append((rng.choice(customers), value))
    final: list[tuple[int, bytes, bytes]] = []
    for index, item in enumerate(ordered):
        for cid, value in (item, *inserts.get(index, ())):
            key = cid.encode()
            final.append((partition_for(key, config.partitions), key, value))
    return Input(final, malformed, duplicates)


async def produce_all(
    kafka: str, topic: str, records: list[tuple[int, bytes, bytes]], rate: float
) -> None:
    """Send every record to its partition (acks=all), at ``rate`` per second when set."""
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka, acks="all", linger_ms=5, max_request_size=4 * 1024 * 1024
    )
    await producer.start()
    started = time.monotonic()
    try:
        chunk = 500
        for offset in range(0, len(records), chunk):
            futures = [
                await producer.send(topic, value=value, key=key, partition=partition)
                for partition, key, value in records[offset : offset + chunk]
            ]
            await asyncio.gather(*futures)
            if rate > 0:
                ahead = (offset + chunk) / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
    finally:
        await producer.stop()


async def read_topic(
    kafka: str, topic: str, expected: int | None = None, idle_s: float = 3.0, timeout: float = 300.0
) -> list[Any]:
    """Every record of ``topic``, in partition order.

    Tansu's ListOffsets can report an end offset a few records short of what a fetch returns,
    so the read goes on until ``expected`` records are in (when known) and nothing new arrived
    for ``idle_s`` seconds past the reported ends.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    await consumer.start()
    try:
        await consumer.topics()
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        seen: dict[int, list[Any]] = {tp.partition: [] for tp in tps}
        position = {tp.partition: 0 for tp in tps}
        deadline = time.monotonic() + timeout
        last_new = time.monotonic()
        while True:
            count = sum(len(v) for v in seen.values())
            at_end = all(position[tp.partition] >= ends[tp] for tp in tps)
            enough = expected is None or count >= expected
            if at_end and enough and time.monotonic() - last_new >= idle_s:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out reading {topic}: {count} records, {ends}")
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp, records in batch.items():
                if records:
                    seen[tp.partition].extend(records)
                    position[tp.partition] = records[-1].offset + 1
                    last_new = time.monotonic()
        return [record for p in sorted(seen) for record in seen[p]]
    finally:
        await consumer.stop()


# -- oracle -------------------------------------------------------------------------------------


@dataclass
class Oracle:
    """The expected outcome, from one partition-ordered pass per partition."""

    memberships: dict[str, set[str]]
    migrations: list[tuple[str, bytes]]
    """(ce_id, value) in emission order."""
    dlq: list[bytes]


async def run_oracle(
    settings: Settings, rules: RuleSet, inputs: list[Any], partitions: int
) -> Oracle:
    """Feed the input, as Kafka holds it, through the processor over a MemoryStore."""
    store = MemoryStore()
    ctx = PipelineContext.create(settings, rules, store, partitions)
    by_partition: dict[int, list[Record]] = defaultdict(list)
    for r in inputs:
        by_partition[r.partition].append(
            Record(r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers or ()))
        )
    migrations: list[tuple[str, bytes]] = []
    dlq: list[bytes] = []
    for partition in sorted(by_partition):
        records = by_partition[partition]
        for start in range(0, len(records), settings.batch_size):
            await process_batch(ctx, records[start : start + settings.batch_size])
        await process_batch(ctx, [], [partition])
    for partition in sorted(store.outboxes):
        for raw in store.outboxes[partition]:
            entry = OutboxEntry.decode(raw)
            if entry.topic == settings.migrations_topic:
                migrations.append((dict(entry.headers)["ce_id"].decode(), entry.value or b""))
            elif entry.topic == settings.dlq_topic:
                dlq.append(entry.value or b"")
    memberships = {seg: set(members) for seg, members in store.segments.items() if members}
    return Oracle(memberships, migrations, dlq)


# -- the run ------------------------------------------------------------------------------------


class Chaos:
    """The workers and the Redis under test, and the faults done to them."""

    def __init__(self, deployment: Deployment, redis: EmbeddedRedis, workers: int) -> None:
        self.deployment = deployment
        self.redis = redis
        self.workers: list[Child] = [deployment.worker() for _ in range(workers)]
        self.logs: list[Path] = [w.log_path for w in self.workers]
        self.kills = 0
        self.redis_restarts = 0
        self.exits: list[int | None] = []
        self.turn = 0

    def kill_one(self) -> None:
        """SIGKILL one worker (in turn) and start a new one in its place."""
        index = self.turn % len(self.workers)
        self.turn += 1
        self.workers[index].kill()
        self.kills += 1
        self.workers[index] = self.deployment.worker()
        self.logs.append(self.workers[index].log_path)

    def supervise(self) -> None:
        """Restart any worker that exited on its own (code 75 after its retries, say)."""
        for index, worker in enumerate(self.workers):
            if not worker.alive():
                assert worker.proc is not None
                self.exits.append(worker.proc.returncode)
                self.workers[index] = self.deployment.worker()
                self.logs.append(self.workers[index].log_path)

    def crash_redis(self, down_s: float = 2.0) -> float:
        """SIGKILL Redis, wait, restart it on the same port and directory; seconds it was down."""
        assert self.redis.proc is not None
        started = time.monotonic()
        self.redis.proc.kill()
        self.redis.proc.wait(timeout=10)
        time.sleep(down_s)
        self.redis.start()
        self.redis_restarts += 1
        return time.monotonic() - started

    def stop(self) -> None:
        """Stop every worker (SIGTERM)."""
        for worker in self.workers:
            self.exits.append(worker.stop())


async def progress(store: RedisStore, partitions: int) -> tuple[int, int]:
    """(records applied over all partitions, messages waiting in outboxes); Redis must be up."""
    offsets = (await store.load([], list(range(partitions)))).offsets
    applied = sum(offset + 1 for offset in offsets.values())
    pipe = store.client.pipeline(transaction=False)
    for p in range(partitions):
        pipe.llen(store.keys.outbox(p))
    waiting = sum(int(n) for n in await pipe.execute())
    return applied, waiting


async def run(config: Config, kafka: str | None = None, log: Any = print) -> Result:
    """One reliability run; ``kafka`` is a broker to use (else an embedded one is started)."""
    started = time.monotonic()
    broker: EmbeddedBroker | None = None
    if kafka is None:
        kafka = os.environ.get("SEGMENTER_KAFKA_BOOTSTRAP") or None
    if kafka is None:
        broker = EmbeddedBroker()
        kafka = broker.start()
    workdir = tempfile.TemporaryDirectory(prefix="segmenter-reliability-redis-")
    redis = EmbeddedRedis(appendonly=True, workdir=Path(workdir.name))
    redis.start()
    chaos: Chaos | None = None
    try:
        prefix = f"rel{uuid.uuid4().hex[:8]}"
        deployment = Deployment(
            kafka, redis.url, prefix, ROOT / "rules", config.partitions, idle_settle_s=0
        )
        settings = Settings(
            clock="event",
            idle_settle_s=0,
            input_topic=deployment.input,
            migrations_topic=deployment.migrations,
            dlq_topic=deployment.dlq,
            memberships_topic=deployment.memberships,
            input_partitions=config.partitions,
            namespace=prefix,
        )
        rules = load_rules(ROOT / "rules")
        data = build_input(config, settings.max_event_bytes)
        total = len(data.records)
        log(
            f"input: {total} records ({data.duplicates} duplicates, {len(data.malformed)} "
            f"malformed) for {config.customers} customers, built in "
            f"{time.monotonic() - started:.1f}s"
        )
        await deployment.create_topics()
        store = RedisStore.from_url(redis.url, prefix)
        chaos = Chaos(deployment, redis, config.workers)
        producing = asyncio.create_task(
            produce_all(kafka, deployment.input, data.records, config.rate)
        )
        deadline = time.monotonic() + config.timeout
        last_kill = time.monotonic()
        redis_done = config.redis_at < 0
        applied = waiting = 0
        last_report = 0.0
        quiet_since: float | None = None
        while True:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out: {applied}/{total} applied, {waiting} in outboxes; logs: "
                    + ", ".join(str(p) for p in chaos.logs)
                )
            await asyncio.sleep(0.5)
            if producing.done():
                producing.result()
            chaos.supervise()
            try:
                applied, waiting = await progress(store, config.partitions)
            except Exception as exc:  # Redis may be restarting
                log(f"progress unavailable: {exc!r}")
                continue
            finished = producing.done() and applied >= total and waiting == 0
            share = applied / total
            if finished:
                quiet_since = quiet_since or time.monotonic()
                # a few timer ticks after the last event fire what the final watermark passed
                if time.monotonic() - quiet_since >= 3.0:
                    break
                continue
            quiet_since = None
            if not redis_done and share >= config.redis_at:
                down = chaos.crash_redis()
                redis_done = True
                log(f"redis SIGKILLed at {applied}/{total} applied; back after {down:.1f}s")
                continue
            may_kill = config.max_kills <= 0 or chaos.kills < config.max_kills
            if may_kill and share > 0.02 and time.monotonic() - last_kill >= config.kill_every:
                chaos.kill_one()
                last_kill = time.monotonic()
                log(f"worker SIGKILLed at {applied}/{total} applied (kill {chaos.kills})")
            if time.monotonic() - last_report >= 15:
                last_report = time.monotonic()
                log(f"progress: {applied}/{total} applied, {waiting} in outboxes")
        processed_at = time.monotonic()
        chaos.stop()
        log(f"pipeline done in {processed_at - started:.1f}s; reading the topics")
        inputs = await read_topic(kafka, deployment.input, expected=total)
        assert len(inputs) == total, f"input topic holds {len(inputs)} of {total}"
        got_migrations = await read_topic(kafka, deployment.migrations)
        got_dlq = await read_topic(kafka, deployment.dlq)
        got_members: dict[str, set[str]] = {}
        for segment in rules.segments:
            seg_id = segment.id
            cursor, members = 0, set()
            while True:
                cursor, page = await store.members(seg_id, cursor, 1000)
                members.update(page)
                if cursor == 0:
                    break
            if members:
                got_members[seg_id] = members
        await store.close()
        oracle_started = time.monotonic()
        oracle = await run_oracle(settings, rules, inputs, config.partitions)
        log(f"oracle computed in {time.monotonic() - oracle_started:.1f}s")
        result = compare(config, data, oracle, got_members, got_migrations, got_dlq, chaos)
        result.seconds = time.monotonic() - started
        if not result.ok:
            result.notes.append("worker logs: " + ", ".join(str(p) for p in chaos.logs))
        return result
    finally:
        if chaos is not None:
            for worker in chaos.workers:
                worker.kill()
        redis.stop()
        workdir.cleanup()
        if broker is not None:
            broker.stop()


def compare(
    config: Config,
    data: Input,
    oracle: Oracle,
    got_members: dict[str, set[str]],
    got_migrations: list[Any],
    got_dlq: list[Any],
    chaos: Chaos,
) -> Result:
    """The checks, as counts and lists of what differs."""
    expected_ids = [cid for cid, _ in oracle.migrations]
    expected_values = dict(oracle.migrations)
    unique: dict[str, bytes] = {}
    per_customer: dict[str, list[str]] = defaultdict(list)
    for record in got_migrations:
        mid = dict(record.headers)["ce_id"].decode()
        if mid in unique:
            continue
        unique[mid] = record.value
        per_customer[record.key.decode()].append(mid)
    raw_duplicates = len(got_migrations) - len(unique)
    missing = set(expected_values) - set(unique)
    extra = set(unique) - set(expected_values)
    value_mismatches = sum(
        1
        for mid, value in unique.items()
        if mid in expected_values and expected_values[mid] != value
    )
    expected_per_customer: dict[str, list[str]] = defaultdict(list)
    for mid in expected_ids:
        expected_per_customer[orjson.loads(expected_values[mid])["customer_id"]].append(mid)
    order_mismatches = sorted(
        cid
        for cid in set(expected_per_customer) | set(per_customer)
        if expected_per_customer.get(cid, []) != per_customer.get(cid, [])
    )
    gaps = []
    sequences: dict[str, list[int]] = defaultdict(list)
    for value in unique.values():
        doc = orjson.loads(value)
        sequences[doc["customer_id"]].append(doc["sequence"])
    for cid, seqs in sequences.items():
        if sorted(seqs) != list(range(1, len(seqs) + 1)):
            gaps.append(cid)
    by_source: dict[tuple[bytes, bytes], bytes] = {}
    for record in got_dlq:
        headers = dict(record.headers)
        where = (headers["segmenter.source.partition"], headers["segmenter.source.offset"])
        by_source.setdefault(where, record.value)
    dlq_values = Counter(by_source.values())
    wanted = Counter(data.malformed)
    dlq_missing = sum((wanted - dlq_values).values())
    dlq_extra = sum((dlq_values - wanted).values())
    membership_diff = {
        seg: (len(got_members.get(seg, set())), len(oracle.memberships.get(seg, set())))
        for seg in set(got_members) | set(oracle.memberships)
        if got_members.get(seg, set()) != oracle.memberships.get(seg, set())
    }
    notes = []
    dump = os.environ.get("RELIABILITY_DUMP")
    if dump and (order_mismatches or missing or extra):
        with open(dump, "wb") as out:
            for cid in order_mismatches[:50]:
                for label, ids, values in (
                    ("expected", expected_per_customer.get(cid, []), expected_values),
                    ("got", per_customer.get(cid, []), unique),
                ):
                    for mid in ids:
                        out.write(orjson.dumps({"side": label, "ce_id": mid}) + b" ")
                        out.write(values[mid] + b"\n")
        notes.append(f"differences written to {dump}")
    if Counter(oracle.dlq) != wanted:
        notes.append("the oracle's DLQ differs from the malformed input")
    return Result(
        lost=len(missing) + dlq_missing,
        duplicates_after_dedupe=len(extra) + dlq_extra,
        raw_duplicates=raw_duplicates,
        dlq=len(by_source),
        malformed=len(data.malformed),
        kills=chaos.kills,
        redis_restarts=chaos.redis_restarts,
        worker_exits=chaos.exits,
        memberships_equal=not membership_diff,
        membership_diff=membership_diff,
        order_mismatches=order_mismatches[:20],
        value_mismatches=value_mismatches,
        sequence_gaps=sorted(gaps)[:20],
        dlq_raw_duplicates=len(got_dlq) - len(by_source),
        migrations=len(unique),
        produced=len(data.records),
        seconds=0.0,
        notes=notes,
    )


def describe(result: Result) -> str:
    """Details beyond the summary line."""
    return (
        f"produced={result.produced} migrations={result.migrations} "
        f"redis_restarts={result.redis_restarts} worker_exits={result.worker_exits} "
        f"dlq_raw_duplicates={result.dlq_raw_duplicates} "
        f"memberships_equal={result.memberships_equal} diff={result.membership_diff} "
        f"order_mismatches={result.order_mismatches} value_mismatches={result.value_mismatches} "
        f"sequence_gaps={result.sequence_gaps} seconds={result.seconds:.1f} "
        f"notes={result.notes}"
    )


def main() -> int:
    """Run with the environment's parameters; print the summary line; exit 0 when all holds."""
    config = Config.from_env()
    result = asyncio.run(run(config, log=lambda line: print(line, file=sys.stderr, flush=True)))
    print(describe(result), file=sys.stderr)
    print(result.summary, flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
