"""Rule changes: backfill re-evaluates stored customers (``rule_change``), with or without emit."""

from __future__ import annotations

import statistics

import orjson

from streams.engine import parse_rules
from streams.pipeline import rulepack
from streams.pipeline.backfill import backfill, refresh_customers
from streams.pipeline.outbox import OutboxEntry
from streams.pipeline.processor import PipelineContext, Record, process_batch
from streams.pipeline.rfm_live import compute_boundaries, live_boundaries, publish_boundaries
from streams.settings import Settings
from streams.state.customer import CustomerState
from streams.store.memory import MemoryStore
from tests.fixtures import BIG_SPENDERS
from tests.kit import memory_store

V1 = {"big.yaml": BIG_SPENDERS}
V2 = {"big.yaml": V1["big.yaml"].replace("value: 1000", "value: 500")}
NOW = 1_800_000_000.0


def ctx_with(files: dict[str, str], partitions: int = 1) -> PipelineContext:
    return PipelineContext.create(
        Settings(clock="event", idle_settle_s=0), parse_rules(files), MemoryStore(), partitions
    )


async def seed(ctx: PipelineContext, revenues: dict[str, float]) -> None:
    records = []
    for offset, (cid, revenue) in enumerate(revenues.items()):
        doc = {
            "type": "track",
            "messageId": f"o-{cid}",
            "userId": cid,
            "event": "Order Completed",
            "timestamp": "2027-01-15T08:00:00Z",
            "properties": {"revenue": revenue},
        }
        partition = ctx.home_partition(cid)
        records.append(Record("segmenter.events", partition, offset, None, orjson.dumps(doc)))
    for partition in sorted({r.partition for r in records}):
        await process_batch(ctx, [r for r in records if r.partition == partition])


def migrations(ctx: PipelineContext) -> list[dict]:
    store = memory_store(ctx)
    out = []
    for p in sorted(store.outboxes):
        for raw in store.outboxes[p]:
            entry = OutboxEntry.decode(raw)
            if entry.topic == "segmenter.migrations":
                out.append(orjson.loads(entry.value or b""))
    return out


async def test_a_lower_threshold_moves_customers_in_with_rule_change() -> None:
    old = ctx_with(V1)
    await seed(old, {"a": 600.0, "b": 1200.0, "c": 100.0})
    new = old.with_rules(parse_rules(V2), None)
    await refresh_customers(new, ["a", "b", "c"], emit=True, now=NOW)
    rule_changes = [m for m in migrations(new) if m["trigger"]["kind"] == "rule_change"]
    assert [(m["customer_id"], m["direction"]) for m in rule_changes] == [("a", "entered")]
    assert rule_changes[0]["rule_version"] == new.rules.version
    assert await new.store.segment_sizes() == {"big": 2}
    stored = await new.store.get_state("a")
    assert (
        stored is not None and CustomerState.from_json(stored.data).evaluated_under == new.version
    )
    before = len(migrations(new))
    await refresh_customers(new, ["a", "b", "c"], emit=True, now=NOW)
    assert len(migrations(new)) == before, "a second backfill finds nothing to do"


async def test_no_emit_changes_membership_silently() -> None:
    old = ctx_with(V1)
    await seed(old, {"a": 600.0})
    new = old.with_rules(parse_rules(V2), None)
    await refresh_customers(new, ["a"], emit=False, now=NOW)
    assert [m for m in migrations(new) if m["trigger"]["kind"] == "rule_change"] == []
    assert await new.store.segment_sizes() == {"big": 1}
    stored = await new.store.get_state("a")
    assert stored is not None
    state = CustomerState.from_json(stored.data)
    assert "big" in state.members and state.sequence == 0, "no event published, no sequence used"


async def test_an_event_for_a_stale_customer_first_migrates_with_rule_change() -> None:
    old = ctx_with(V1)
    await seed(old, {"a": 600.0})
    new = old.with_rules(parse_rules(V2), None)
    doc = {"type": "page", "messageId": "p1", "userId": "a", "timestamp": "2027-01-16T00:00:00Z"}
    await process_batch(new, [Record("segmenter.events", 0, 10, None, orjson.dumps(doc))])
    kinds = [(m["segment"], m["direction"], m["trigger"]["kind"]) for m in migrations(new)]
    assert kinds == [("big", "entered", "rule_change")]


async def test_backfill_walks_only_the_partitions_it_owns() -> None:
    ctx = ctx_with(V1, partitions=8)
    customers = {f"u{n}": 700.0 for n in range(40)}
    await seed(ctx, customers)
    new = ctx.with_rules(parse_rules(V2), None)
    seen: list[str] = []

    async def run_page(ids, emit):  # type: ignore[no-untyped-def]
        seen.extend(ids)
        await refresh_customers(new, ids, emit, now=NOW)

    mine = {0, 1, 2}
    done = await backfill(lambda: new, mine, True, run_page, page=7)
    expected = sorted(c for c in customers if new.home_partition(c) in mine)
    assert sorted(seen) == expected and done == len(expected)
    entered = sorted(
        m["customer_id"] for m in migrations(new) if m["trigger"]["kind"] == "rule_change"
    )
    assert entered == expected


async def test_workers_backfill_progress_adds_up_to_the_customers() -> None:
    """Two workers owning disjoint partitions: their progress counts sum to the number of
    stored customers (what ``rules apply`` waits for), neither reaching it alone."""
    ctx = ctx_with(V1, partitions=8)
    customers = {f"u{n}": 700.0 for n in range(40)}
    await seed(ctx, customers)
    new = ctx.with_rules(parse_rules(V2), None)
    counted: dict[str, int] = {"a": 0, "b": 0}

    async def run_page(ids, emit):  # type: ignore[no-untyped-def]
        await refresh_customers(new, ids, emit, now=NOW)

    for worker, partitions in (("a", {0, 1, 2}), ("b", {3, 4, 5, 6, 7})):

        async def progress(count: int, worker: str = worker) -> None:
            counted[worker] += count

        await backfill(lambda: new, partitions, True, run_page, progress, page=7)
    assert counted["a"] + counted["b"] == len(customers)
    assert 0 < counted["a"] < len(customers) and 0 < counted["b"] < len(customers)


async def test_published_packs_round_trip() -> None:
    store = MemoryStore()
    assert await rulepack.published(store) is None
    rules = await rulepack.publish(store, V2, emit=False)
    pack = await rulepack.published(store)
    assert pack is not None and pack.rules.version == rules.version and pack.emit is False
    assert await rulepack.published_version(store) == rules.version


async def test_live_rfm_boundaries_are_population_quintiles() -> None:
    ctx = ctx_with(V1)
    revenues = {f"c{n}": float(10 * n + (n % 7)) for n in range(1, 60)}
    await seed(ctx, revenues)
    when = 1_800_000_000.0
    boundaries = await compute_boundaries(ctx.store, now=when)
    assert boundaries is not None
    expected = statistics.quantiles(list(revenues.values()), n=5, method="inclusive")
    assert list(boundaries.monetary) == expected
    assert list(boundaries.frequency) == [1.0, 1.0, 1.0, 1.0]
    await publish_boundaries(ctx.store, boundaries)
    assert await live_boundaries(ctx.store) == boundaries
