"""The worker loop in process: one :class:`RetryPolicy` with an injected sleep (the tests record
the waits, or move a manual clock, instead of sleeping), errors that end the worker as typed
exceptions (only the entry turns them into exit codes), and the :class:`Runtime` driven with
the in-memory store, an in-memory consumer and outlet: retries, a rebalance mid-batch, a
poisoned event, a rule change."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError
from redis.exceptions import ConnectionError as RedisConnectionError

from streams.engine import RuleSet, load_rules, parse_rules
from streams.pipeline import rulepack, worker
from streams.pipeline.outbox import OutboxEntry
from streams.pipeline.processor import PipelineContext, Record
from streams.pipeline.retry import (
    EXIT_CONFIG,
    EXIT_INFRASTRUCTURE,
    EXIT_SOFTWARE,
    BatchLoopFailed,
    ConfigMismatch,
    GaveUp,
    RetryPolicy,
)
from streams.pipeline.runtime import Runtime
from streams.pipeline.startup import Connection, Status
from streams.pipeline.state_cache import StateCache
from streams.pipeline.timekeeping import Clock, ManualClock
from streams.pipeline.working_set import WorkingSet
from streams.settings import Settings
from streams.state.customer import CustomerState
from streams.store.base import CommitBatch, ConflictError, Store
from streams.store.memory import MemoryStore
from tests import events
from tests.events import encoded
from tests.fixtures import BIG_SPENDERS


class Flaky:
    """Fails with each of ``errors`` in turn, then answers ``result``."""

    def __init__(self, errors: list[BaseException], result: str = "done") -> None:
        self.errors, self.result, self.calls = list(errors), result, 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


def policy(attempts: int = 8, longest: float = 5.0) -> tuple[RetryPolicy, list[float]]:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    return RetryPolicy(attempts, longest, sleep=sleep), waits


def test_infrastructure_errors_wait_doubling_up_to_the_longest_then_succeed() -> None:
    retry, waits = policy(longest=1.0)
    flaky = Flaky([RedisConnectionError("down")] * 4)
    assert asyncio.run(retry.run(flaky, "infrastructure error")) == "done"
    assert flaky.calls == 5
    assert waits == [0.2, 0.4, 0.8, 1.0]


def test_a_persistent_error_gives_up_after_the_budget_without_ending_the_process(
    caplog: Any,
) -> None:
    retry, waits = policy(attempts=3)
    flaky = Flaky([OSError("refused")] * 10)
    with pytest.raises(GaveUp) as raised:
        asyncio.run(retry.run(flaky, "cannot start yet"))
    assert raised.value.code == EXIT_INFRASTRUCTURE == 75
    assert flaky.calls == 3 and len(waits) == 3
    logged = [r.getMessage() for r in caplog.records]
    assert [m.split(": ")[0] for m in logged] == [
        f"cannot start yet (attempt {n}/3)" for n in (1, 2, 3)
    ]


def test_a_conflict_is_applied_again_at_once_and_counts_as_an_attempt() -> None:
    retry, waits = policy(attempts=3)
    seen: list[BaseException] = []
    flaky = Flaky([ConflictError("c1"), ConflictError("c1")])
    result = asyncio.run(
        retry.run(flaky, "x", again_at_once=(ConflictError,), on_error=seen.append)
    )
    assert result == "done" and waits == [] and len(seen) == 2
    with pytest.raises(GaveUp):
        asyncio.run(retry.run(Flaky([ConflictError("c")] * 3), "x", again_at_once=(ConflictError,)))


def test_errors_that_are_not_the_infrastructures_pass_through_at_once() -> None:
    retry, waits = policy()
    flaky = Flaky([ValueError("a bug")])
    with pytest.raises(ValueError):
        asyncio.run(retry.run(flaky, "x"))
    assert flaky.calls == 1 and waits == []


def test_each_fatal_error_names_its_exit_code() -> None:
    assert (GaveUp().code, ConfigMismatch().code, BatchLoopFailed().code) == (75, 78, 70)
    assert (EXIT_INFRASTRUCTURE, EXIT_CONFIG, EXIT_SOFTWARE) == (75, 78, 70)


def test_the_entrys_exit_request_keeps_the_first_code_and_stops_like_sigterm(
    monkeypatch: Any, tmp_path: Any
) -> None:
    signals: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: signals.append((pid, sig)))
    monkeypatch.setattr(worker, "STOP_GRACE_S", 3600.0)
    exits = worker.ExitRequest(str(tmp_path))
    exits(ConfigMismatch("layout"))
    exits(GaveUp("later"))
    assert exits.code == EXIT_CONFIG, "the first fatal error decides"
    assert signals == [(os.getpid(), signal.SIGTERM)], "one clean stop, the way SIGTERM does"


# The w loop in process: a Runtime connected to the in-memory store, an outlet that
# collects what would go to Kafka, and a consumer over an in-memory topic, on a manual clock.

V1 = BIG_SPENDERS
V2 = V1.replace("value: 1000", "value: 500")
TOPIC = "segmenter.events"
AT = datetime(2026, 6, 1, tzinfo=UTC)


def order(mid: str, user: str, revenue: float) -> bytes:
    return encoded(events.order(mid, user, revenue, AT - timedelta(hours=1)))


class MemoryOutlet:
    """What the w sends, collected (and trimmed from the outbox, as the producer's outlet
    does once the broker acknowledged it); ``down`` fails that many sends first."""

    def __init__(self) -> None:
        self.sent: list[OutboxEntry] = []
        self.down: list[BaseException] = []
        self.after_send: Callable[[], None] | None = None

    async def flush(self, store: Store, partition: int) -> None:
        raw = await store.outbox(partition, 100_000)
        self.sent.extend(OutboxEntry.decode(r) for r in raw)
        await store.outbox_trim(partition, len(raw))

    async def send(self, store: Store, commit: CommitBatch) -> None:
        if self.down:
            raise self.down.pop(0)
        for partition, entries in sorted(commit.outbox.items()):
            if entries:
                await self.flush(store, partition)
        hook, self.after_send = self.after_send, None
        if hook is not None:
            hook()

    def migrations(self) -> list[tuple[str, str, str]]:
        """(customer, direction, trigger) of each migration sent, in order."""
        docs = [orjson.loads(e.value or b"") for e in self.sent if e.topic == MIGRATIONS]
        return [(d["customer_id"], d["direction"], d["trigger"]["kind"]) for d in docs]

    def dead_letters(self) -> list[tuple[str, str]]:
        """(error kind, messageId) of each record sent to the DLQ."""
        return [
            (
                dict(e.headers)["segmenter.error.kind"].decode(),
                orjson.loads(e.value or b"")["messageId"],
            )
            for e in self.sent
            if e.topic == DLQ
        ]


MIGRATIONS = Settings().migrations_topic
DLQ = Settings().dlq_topic


class TopicConsumer:
    """One member of a consumer group over an in-memory topic (partition -> values): it reads a
    partition it is assigned from the group's committed offset, and records what it is acked."""

    def __init__(self, topic: dict[int, list[bytes]], committed: dict[int, int]) -> None:
        self.topic, self.committed = topic, committed
        self.position: dict[int, int] = {}
        self.acks: list[tuple[int, int]] = []

    def assign(self, *partitions: int) -> None:
        for p in partitions:
            self.position[p] = self.committed.get(p, -1) + 1

    def revoke(self, partition: int) -> None:
        del self.position[partition]

    def assignment(self) -> frozenset[int]:
        return frozenset(self.position)

    async def take(self, max_records: int, within: float) -> list[Record]:
        batch: list[Record] = []
        for p in sorted(self.position):
            values = self.topic.get(p, [])
            while self.position[p] < len(values) and len(batch) < max_records:
                offset = self.position[p]
                batch.append(Record(TOPIC, p, offset, None, values[offset]))
                self.position[p] = offset + 1
        return batch

    def ack(self, records: Sequence[Record]) -> None:
        self.acks.extend((r.partition, r.offset) for r in records)

    async def commit(self) -> None:
        for p, offset in self.acks:
            self.committed[p] = max(offset, self.committed.get(p, -1))


@dataclass
class Worker:
    runtime: Runtime
    store: MemoryStore
    outlet: MemoryOutlet
    clock: ManualClock


def make_worker(
    rules_dir: Path,
    store: MemoryStore | None = None,
    partitions: int = 1,
    attempts: int = 4,
    batch_size: int = 500,
) -> Worker:
    """A w over ``store`` whose rule directory is ``rules_dir``; its retries wait on the
    manual clock (a wait moves the clock, nothing sleeps)."""
    store = store if store is not None else MemoryStore()
    settings = Settings(rules=rules_dir, input_partitions=partitions, batch_size=batch_size)
    clock = ManualClock(AT.timestamp())
    outlet = MemoryOutlet()

    async def wait(seconds: float) -> None:
        clock.advance(seconds)

    async def connect(rules: RuleSet, clock: Clock, status: Status) -> Connection:
        ctx = PipelineContext.create(
            settings, rules, store, partitions, clock=clock, state_cache=StateCache(100)
        )
        return Connection(ctx, outlet, True, rulepack.directory_signature(rules_dir))

    rules = load_rules(rules_dir)
    retry = RetryPolicy(attempts, 5.0, sleep=wait)
    runtime = Runtime(settings, rules, connect, clock=clock, retry=retry)
    return Worker(runtime, store, outlet, clock)


def rules_dir(tmp_path: Path, text: str = V1) -> Path:
    directory = tmp_path / "rules"
    directory.mkdir(exist_ok=True)
    (directory / "big.yaml").write_text(text)
    return directory


def orders(store: MemoryStore, cid: str) -> tuple[int, float]:
    state = CustomerState.from_json(store.states[cid].data)
    return state.orders, state.revenue


def test_a_batch_is_applied_sent_then_acknowledged_and_committed(tmp_path: Path) -> None:
    async def scenario() -> tuple[Worker, TopicConsumer]:
        w = make_worker(rules_dir(tmp_path))
        consumer = TopicConsumer({0: [order("o1", "ann", 700), order("o2", "ann", 400)]}, {})
        consumer.assign(0)
        await w.runtime.ensure_started()
        await w.runtime.run_batches(consumer)
        return w, consumer

    w, consumer = asyncio.run(scenario())
    assert orders(w.store, "ann") == (2, 1100.0)
    assert w.outlet.migrations() == [("ann", "entered", "event")]
    assert consumer.acks == [(0, 0), (0, 1)]
    assert consumer.committed == {0: 1}
    assert w.store.outboxes.get(0, []) == [], "sent, then trimmed"


def test_a_broker_outage_is_retried_on_the_clock_and_sends_each_message_once(
    tmp_path: Path,
) -> None:
    """The commit succeeds but sending fails twice: the retries wait 0.2 then 0.4 s (on the
    manual clock), the leftover outbox is sent before the batch is applied again, the applied
    records are skipped, and the migration goes out once."""

    async def scenario() -> tuple[Worker, TopicConsumer, float]:
        w = make_worker(rules_dir(tmp_path))
        consumer = TopicConsumer({0: [order("o1", "ann", 1500)]}, {})
        consumer.assign(0)
        await w.runtime.ensure_started()
        await w.runtime.tick(consumer.assignment())
        w.outlet.down = [KafkaConnectionError(), KafkaConnectionError()]
        before = w.clock.now()
        await w.runtime.run_batches(consumer)
        return w, consumer, w.clock.now() - before

    w, consumer, waited = asyncio.run(scenario())
    assert waited == pytest.approx(0.6)
    assert w.outlet.migrations() == [("ann", "entered", "event")]
    assert orders(w.store, "ann") == (1, 1500.0)
    assert w.runtime.ctx is not None and w.runtime.ctx.metrics.redelivered == 2
    assert consumer.acks == [(0, 0)]


def test_retries_that_run_out_end_the_loop_unacknowledged(tmp_path: Path) -> None:
    async def scenario() -> tuple[Worker, TopicConsumer, float]:
        w = make_worker(rules_dir(tmp_path), attempts=3)
        consumer = TopicConsumer({0: [order("o1", "ann", 1500)]}, {})
        consumer.assign(0)
        await w.runtime.ensure_started()
        w.outlet.down = [RedisConnectionError("down")] * 3
        before = w.clock.now()
        with pytest.raises(GaveUp):
            await w.runtime.run_batches(consumer)
        return w, consumer, w.clock.now() - before

    w, consumer, waited = asyncio.run(scenario())
    assert waited == pytest.approx(0.2 + 0.4 + 0.8)
    assert consumer.acks == [] and consumer.committed == {}
    assert w.outlet.sent == []
    kept = [OutboxEntry.decode(raw).topic for raw in w.store.outboxes[0]]
    assert kept == [MIGRATIONS, Settings().memberships_topic], "kept for the next start to send"


def test_a_partition_revoked_mid_batch_is_not_acknowledged_and_applied_once(
    tmp_path: Path,
) -> None:
    """Worker A holds partitions 0 and 1 and loses 1 while its batch is in flight: it
    acknowledges only partition 0's records and forgets the cached states of partition 1's
    customers. Worker B, the new owner, reads partition 1 again from the committed offset: the
    store says those records were applied, so cat keeps two orders and nothing is sent twice."""
    topic = {
        0: [order("a1", "ann", 100), order("a2", "bob", 200)],
        1: [order("c1", "cat", 1200), order("c2", "cat", 30)],
    }
    committed: dict[int, int] = {}
    store = MemoryStore()

    async def scenario() -> tuple[Worker, TopicConsumer, Worker, TopicConsumer, int]:
        a = make_worker(rules_dir(tmp_path), store, partitions=2)
        a_in = TopicConsumer(topic, committed)
        a_in.assign(0, 1)
        await a.runtime.ensure_started()
        await a.runtime.tick(a_in.assignment())
        a.outlet.after_send = lambda: a_in.revoke(1)
        await a.runtime.run_batches(a_in)
        await a.runtime.tick(a_in.assignment())
        assert a.runtime.ctx is not None and a.runtime.ctx.state_cache is not None
        cached = len(a.runtime.ctx.state_cache)
        b = make_worker(rules_dir(tmp_path), store, partitions=2)
        b_in = TopicConsumer(topic, committed)
        b_in.assign(1)
        await b.runtime.ensure_started()
        await b.runtime.tick(b_in.assignment())
        await b.runtime.run_batches(b_in)
        return a, a_in, b, b_in, cached

    a, a_in, b, b_in, cached = asyncio.run(scenario())
    assert a_in.acks == [(0, 0), (0, 1)]
    assert committed == {0: 1, 1: 1}
    assert b_in.acks == [(1, 0), (1, 1)]
    assert cached == 2, "ann and bob (partition 0) stay cached, cat (partition 1) is dropped"
    assert orders(store, "cat") == (2, 1230.0)
    assert (orders(store, "ann"), orders(store, "bob")) == ((1, 100.0), (1, 200.0))
    assert b.runtime.ctx is not None and b.runtime.ctx.metrics.redelivered == 2
    assert a.outlet.migrations() == [("cat", "entered", "event")]
    assert b.outlet.migrations() == []


def test_a_poisoned_event_goes_to_the_dlq_and_the_rest_of_the_batch_is_applied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply = WorkingSet.apply

    def apply_unless_poisoned(self: WorkingSet, partition: int, event: Any) -> Any:
        if event.messageId == "poison":
            raise RuntimeError("a bug met this event")
        return apply(self, partition, event)

    monkeypatch.setattr(WorkingSet, "apply", apply_unless_poisoned)
    values = [order("o1", "ann", 600), order("poison", "ann", 5000), order("o2", "ann", 500)]

    async def scenario() -> tuple[Worker, TopicConsumer]:
        w = make_worker(rules_dir(tmp_path))
        consumer = TopicConsumer({0: values}, {})
        consumer.assign(0)
        await w.runtime.ensure_started()
        await w.runtime.run_batches(consumer)
        return w, consumer

    w, consumer = asyncio.run(scenario())
    assert w.outlet.dead_letters() == [("processing", "poison")]
    assert orders(w.store, "ann") == (2, 1100.0)
    assert w.outlet.migrations() == [("ann", "entered", "event")]
    assert consumer.acks == [(0, 0), (0, 1), (0, 2)]


def test_the_follower_publishes_a_changed_rule_directory_on_the_clock_and_backfills(
    tmp_path: Path,
) -> None:
    """ann (revenue 600) is not big under V1; the directory changes to V2 (500): nothing
    happens until the check is due (2 s on the worker's clock), then V2 is published at the
    clock's time, adopted, and the backfill moves ann in with a rule_change migration."""
    directory = rules_dir(tmp_path)

    async def scenario() -> tuple[Worker, list[str | None]]:
        w = make_worker(directory)
        consumer = TopicConsumer({0: [order("o1", "ann", 600), order("o2", "bob", 200)]}, {})
        consumer.assign(0)
        runtime = w.runtime
        await runtime.ensure_started()
        await rulepack.publish(w.store, rulepack.read_directory(directory), emit=True)
        await runtime.tick(consumer.assignment())
        await runtime.run_batches(consumer)
        versions = [await rulepack.published_version(w.store)]
        (directory / "big.yaml").write_text(V2)
        w.clock.advance(1.0)
        await runtime.tick(consumer.assignment())
        versions.append(await rulepack.published_version(w.store))
        w.clock.advance(1.0)
        await runtime.tick(consumer.assignment())
        versions.append(await rulepack.published_version(w.store))
        assert runtime.parts is not None and runtime.parts.backfiller.task is not None
        await runtime.parts.backfiller.task
        return w, versions

    w, versions = asyncio.run(scenario())
    v1, v2 = parse_rules({"big.yaml": V1}).version, parse_rules({"big.yaml": V2}).version
    assert versions == [v1, v1, v2]
    pack = asyncio.run(rulepack.published(w.store))
    assert pack is not None and pack.published_at == AT.timestamp() + 2.0
    assert w.runtime.rules.version == v2
    assert w.outlet.migrations() == [("ann", "entered", "rule_change")]
    assert w.store.segments["big"] == {"ann"}
