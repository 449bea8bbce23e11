"""Scale-out: N workers in one consumer group, rebalances that lose and duplicate nothing.

* two workers split the 8 input partitions between them (each one's ``/healthz`` reports its
  ``assigned_partitions``);
* while events flow, a third worker joins, one leaves with SIGTERM, one is SIGKILLed and
  restarted: the migrations, deduplicated by ``ce_id``, are exactly those of an in-process run
  of the same events, and the final memberships in Redis are the same too;
* timers move with their partitions: a worker stopped before its customers' timers are due
  leaves them to the worker that takes its partitions over, which fires them with
  ``ce_time`` = the due time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka.structs import ConsumerRecord

from streams.engine import parse_rules
from streams.pipeline.outbox import OutboxEntry
from streams.pipeline.processor import PipelineContext, Record, process_batch
from streams.pipeline.routing import partition_for
from streams.settings import Settings
from streams.stack.children import Child
from streams.stack.embedded import free_port
from streams.store.memory import MemoryStore
from streams.store.redis_store import Keys
from tests.integration.harness import (
    TEST_RULES,
    Deployment,
    consume_until,
    event,
    keyed,
    order,
    produce,
    write_rules,
)

pytestmark = pytest.mark.integration

PARTITIONS = 8


@dataclass
class Worker:
    """One ``segmenter worker`` child with its own HTTP port."""

    child: Child
    port: int
    name: str

    async def health(self) -> dict[str, Any] | None:
        url = f"http://127.0.0.1:{self.port}/healthz"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
                session.get(url) as response,
            ):
                return dict(await response.json(content_type=None))
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return None


def start_worker(deployment: Deployment, name: str, **env: str) -> Worker:
    port = free_port()
    variables = deployment.env()
    variables["SEGMENTER_HTTP_PORT"] = str(port)
    variables.update(env)
    return Worker(Child(["worker"], variables).start(), port, name)


def logs(workers: list[Worker]) -> str:
    return "\n".join(f"--- {w.name}:\n{w.child.log_tail(40)}" for w in workers)


async def settled_assignment(
    workers: list[Worker], timeout: float = 60.0
) -> dict[str, frozenset[int]]:
    """Wait until the workers' assignments are disjoint, non-empty and cover every partition
    (the same answer twice in a row, so a rebalance in progress is not mistaken for the end)."""
    deadline = time.monotonic() + timeout
    previous: dict[str, frozenset[int]] | None = None
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        for w in workers:
            assert w.child.alive(), logs(workers)
        replies = [await w.health() for w in workers]
        last = {w.name: r for w, r in zip(workers, replies, strict=True)}
        if all(r is not None for r in replies):
            current = {
                w.name: frozenset(r["assigned_partitions"])  # type: ignore[index]
                for w, r in zip(workers, replies, strict=True)
            }
            sets = list(current.values())
            union = frozenset().union(*sets)
            disjoint = sum(len(s) for s in sets) == len(union)
            if all(sets) and disjoint and union == frozenset(range(PARTITIONS)):
                if current == previous:
                    return current
                previous = current
            else:
                previous = None
        await asyncio.sleep(0.5)
    raise AssertionError(f"no settled assignment: {last}\n{logs(workers)}")


# -- (a) + (b): partitions shared, rebalances lose and duplicate nothing --------------------------

CUSTOMERS = 300
STEPS = 10


def step_docs(step: int) -> list[dict[str, object]]:
    """Every customer's ``step``-th event: countries flip and revenue grows, so customers enter
    and leave ``canadians``, ``buyer`` and ``big_spender`` several times each."""
    ts = (datetime(2026, 1, 1, 10, tzinfo=UTC) + timedelta(minutes=step)).isoformat()
    docs: list[dict[str, object]] = []
    for n in range(CUSTOMERS):
        cid = f"s{n}"
        if (step + n) % 3 == 0:
            country = "CA" if (step // 3 + n) % 2 == 0 else "US"
            traits = {"address": {"country": country}}
            docs.append(event("identify", f"{cid}-{step}", cid, ts, traits=traits))
        else:
            docs.append(order(f"{cid}-{step}", cid, float(40 + (n * 37 + step * 53) % 260), ts))
    return docs


async def in_process(
    deployment: Deployment, *runs: list[tuple[bytes | None, bytes]], batch: int = 250
) -> tuple[dict[str, dict[str, Any]], dict[str, set[str]]]:
    """The same events through the processor with the in-memory store, each run after the one
    before (partition by partition, ``batch`` records at a time, offsets going on): the
    expected migrations (ce_id -> body) and the final members of each segment."""
    settings = Settings(
        clock="event",
        input_topic=deployment.input,
        migrations_topic=deployment.migrations,
        dlq_topic=deployment.dlq,
        memberships_topic=deployment.memberships,
        namespace=deployment.prefix,
    )
    store = MemoryStore()
    ctx = PipelineContext.create(settings, parse_rules(TEST_RULES), store, PARTITIONS)
    offsets: dict[int, int] = defaultdict(int)
    for items in runs:
        per_partition: dict[int, list[Record]] = defaultdict(list)
        for key, value in items:
            assert key is not None
            p = partition_for(key, PARTITIONS)
            per_partition[p].append(Record(deployment.input, p, offsets[p], key, value))
            offsets[p] += 1
        for _partition, records in sorted(per_partition.items()):
            for start in range(0, len(records), batch):
                await process_batch(ctx, records[start : start + batch])
    return outcome(deployment, store)


def outcome(
    deployment: Deployment, store: MemoryStore
) -> tuple[dict[str, dict[str, Any]], dict[str, set[str]]]:
    """An in-process run's migrations (ce_id -> body) and final members of each segment."""
    expected: dict[str, dict[str, Any]] = {}
    for raw_entries in store.outboxes.values():
        for raw in raw_entries:
            entry = OutboxEntry.decode(raw)
            if entry.topic == deployment.migrations:
                expected[dict(entry.headers)["ce_id"].decode()] = orjson.loads(entry.value or b"")
    members = {segment: set(ids) for segment, ids in store.segments.items() if ids}
    return expected, members


def comparable(body: dict[str, Any]) -> tuple[Any, ...]:
    trigger = body["trigger"]
    return (
        body["customer_id"],
        body["sequence"],
        body["segment"],
        body["direction"],
        body.get("from_segment"),
        body.get("to_segment"),
        trigger["kind"],
        trigger.get("message_id"),
    )


async def same_migrations(
    deployment: Deployment, workers: list[Worker], expected: dict[str, dict[str, Any]]
) -> None:
    """Read the migrations until every expected ``ce_id`` is there; deduplicated, they are the
    expected ones field by field, and every customer's ``sequence`` runs 1..n."""

    def complete(records: list[ConsumerRecord]) -> bool:
        return len({dict(r.headers)["ce_id"] for r in records}) >= len(expected)

    try:
        got = await consume_until(
            deployment.kafka, deployment.migrations, complete, timeout=120, settle=2.0
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs(workers)}") from None
    unique: dict[str, dict[str, Any]] = {}
    for record in got:
        ce = dict(record.headers)["ce_id"].decode()
        body = orjson.loads(record.value)
        if ce in unique:  # a redelivery: the very same migration again
            assert comparable(unique[ce]) == comparable(body), ce
        unique[ce] = body
    assert set(unique) == set(expected), logs(workers)
    for ce, body in expected.items():
        assert comparable(unique[ce]) == comparable(body), ce
    sequences: dict[str, list[int]] = defaultdict(list)
    for body in unique.values():
        sequences[body["customer_id"]].append(body["sequence"])
    for cid, seen in sequences.items():
        assert sorted(seen) == list(range(1, len(seen) + 1)), cid


async def redis_members(deployment: Deployment, segments: list[str]) -> dict[str, set[str]]:
    client = aioredis.Redis.from_url(deployment.redis)
    keys = Keys(deployment.prefix)
    try:
        found = {
            s: {bytes(m).decode() for m in await client.smembers(keys.members(s))} for s in segments
        }
    finally:
        await client.aclose()
    return {s: ids for s, ids in found.items() if ids}


async def test_rebalances_lose_and_duplicate_no_migration(deployment: Deployment) -> None:
    # compared with an in-process run: publish only as event time moves (no idle settling)
    deployment = dataclasses.replace(deployment, idle_settle_s=0)
    await deployment.create_topics()
    steps = [keyed(step_docs(step)) for step in range(STEPS)]
    everything = [item for chunk in steps for item in chunk]
    expected, expected_members = await in_process(deployment, everything)
    assert len(expected) > 3 * CUSTOMERS  # enough moves to notice a loss

    first, second = start_worker(deployment, "w1"), start_worker(deployment, "w2")
    workers = [first, second]
    try:
        # (a) two workers share the 8 partitions, each partition owned by exactly one
        split = await settled_assignment(workers)
        assert all(len(parts) >= 1 for parts in split.values())

        # (b) events flow over several seconds while workers join, leave and crash
        for step, chunk in enumerate(steps):
            await produce(deployment.kafka, deployment.input, chunk)
            if step == 2:
                workers.append(start_worker(deployment, "w3"))
            elif step == 4:
                assert await asyncio.to_thread(first.child.stop) == 0, first.child.log_tail()
                workers.remove(first)
            elif step == 6:
                second.child.kill()
                workers.remove(second)
                workers.append(start_worker(deployment, "w2-restarted"))
            await asyncio.sleep(0.6)

        await same_migrations(deployment, workers, expected)

        segments = ["big_spender", "buyer", "canadians"]
        assert await redis_members(deployment, segments) == expected_members
        # the survivors share the partitions again
        await settled_assignment(workers)
    finally:
        for w in workers:
            w.child.stop()


# -- (c) timers move with their partitions --------------------------------------------------------

WINDOW_S = 8  # long enough for worker a to be gone before any timer is due

RECENT_RULES = {
    "recent.yaml": f"""
id: recent_buyer
name: Recent buyer
description: ordered within the last few seconds
kind: behavioral
condition: {{type: recency, event: Order Completed, within: {WINDOW_S}s}}
""",
}


def ce_time(record: ConsumerRecord) -> datetime:
    return datetime.fromisoformat(dict(record.headers)["ce_time"].decode().replace("Z", "+00:00"))


async def test_timers_move_with_their_partitions(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    deployment = Deployment(
        kafka_bootstrap, redis_url, topic_prefix, write_rules(tmp_path / "rules", RECENT_RULES)
    )
    await deployment.create_topics()
    a = start_worker(deployment, "a", SEGMENTER_CLOCK="processing")
    b = start_worker(deployment, "b", SEGMENTER_CLOCK="processing")
    workers = [a, b]
    try:
        split = await settled_assignment(workers)
        customers = [f"t{n}" for n in range(40)]
        owner = {cid: partition_for(cid.encode(), PARTITIONS) for cid in customers}
        on_a = [cid for cid in customers if owner[cid] in split["a"]]
        assert on_a and len(on_a) < len(customers)

        when = datetime.now(UTC).replace(microsecond=0)
        stamp = when.isoformat()
        docs = [order(f"{cid}-o", cid, 10.0, stamp) for cid in customers]
        await produce(deployment.kafka, deployment.input, keyed(docs))
        entered = await consume_until(
            deployment.kafka,
            deployment.migrations,
            lambda r: len({dict(x.headers)["ce_subject"] for x in r}) >= len(customers),
            timeout=30,
        )
        # worker a leaves before its customers' timers are due; b takes its partitions over
        assert datetime.now(UTC) < when + timedelta(seconds=WINDOW_S), "entries came too late"
        assert all(dict(r.headers)["ce_type"].endswith(b"entered") for r in entered)
        assert await asyncio.to_thread(a.child.stop) == 0, a.child.log_tail()
        workers.remove(a)
        stopped_at = datetime.now(UTC)

        def all_exited(records: list[ConsumerRecord]) -> bool:
            exits = {
                dict(r.headers)["ce_subject"]
                for r in records
                if dict(r.headers)["ce_type"].endswith(b"exited")
            }
            return len(exits) >= len(customers)

        try:
            got = await consume_until(
                deployment.kafka, deployment.migrations, all_exited, timeout=45, settle=1.0
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{logs(workers)}") from None
        exits: dict[str, set[tuple[str, datetime]]] = defaultdict(set)
        for record in got:
            headers = dict(record.headers)
            body = orjson.loads(record.value)
            if body["direction"] == "exited":
                assert body["trigger"]["kind"] == "time"
                exits[body["customer_id"]].add((headers["ce_id"].decode(), ce_time(record)))
        due = when + timedelta(seconds=WINDOW_S)
        for cid in customers:
            assert len(exits[cid]) == 1, (cid, exits[cid])  # one exit (after dedupe by ce_id)
            (_, exited_at) = next(iter(exits[cid]))
            assert exited_at == due, (cid, exited_at, due)
        # a was gone before any timer was due, so b (the only worker left) fired them all
        assert stopped_at < due, (stopped_at, due)
        assert (await b.health() or {}).get("assigned_partitions") == list(range(PARTITIONS))
    finally:
        for w in workers:
            w.child.stop()
