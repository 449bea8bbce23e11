"""Identity resolution, erasure, the membership topic and personal data, through the processor."""

from __future__ import annotations

import orjson

from streams.engine import parse_rules
from streams.pipeline.outbox import OutboxEntry
from streams.pipeline.processor import PipelineContext
from streams.pipeline.routing import partition_for
from streams.settings import Settings
from streams.state.customer import CustomerState
from tests import events
from tests.kit import MemoryPipeline, memory_store, pinned_clock, pinned_context

RULES = {
    "value.yaml": """
family: value
name: Value
description: value by lifetime revenue
kind: value
segments:
  - {id: big_spender, name: Big spender, description: d, priority: 20,
     condition: {type: lifetime, metric: revenue, op: ge, value: 1000}}
  - {id: buyer, name: Buyer, description: d, priority: 10,
     condition: {type: lifetime, metric: orders, op: ge, value: 1}}
""",
    "browsers.yaml": """
id: browser
name: Browser
description: viewed 3 products this week
kind: behavioral
condition: {type: event_count, event: Product Viewed, within: 7d, op: ge, value: 3}
""",
    "gmail.yaml": """
id: gmail_user
name: Gmail user
description: has a gmail address
kind: demographic
condition: {type: trait, path: email, op: contains, value: "@gmail.com"}
""",
}


def make_ctx(partitions: int = 1, **overrides: object) -> PipelineContext:
    settings = Settings(**overrides)  # type: ignore[arg-type]
    clock = pinned_clock("2026-01-06T00:00:00+00:00")
    return pinned_context(parse_rules(RULES), settings, partitions=partitions, clock=clock)


def ev(kind: str, mid: str, ts: str, **fields: object) -> dict[str, object]:
    return {"type": kind, "messageId": mid, "timestamp": ts, **fields}


def view(mid: str, who: dict[str, str], day: int) -> dict[str, object]:
    return ev("track", mid, f"2026-01-0{day}T10:00:00Z", event="Product Viewed", **who)


def order(mid: str, user: str, revenue: float, day: int) -> dict[str, object]:
    return events.order(mid, user, revenue, f"2026-01-0{day}T12:00:00Z")


def sent(ctx: PipelineContext, topic: str = "segmenter.migrations") -> list[OutboxEntry]:
    return MemoryPipeline(ctx).emitted(topic)


def moves(ctx: PipelineContext, customer: str) -> list[tuple[str, str, str]]:
    out = []
    for entry in sent(ctx):
        data = orjson.loads(entry.value or b"")
        if data["customer_id"] == customer:
            out.append((data["segment"], data["direction"], data["trigger"]["kind"]))
    return out


async def state_of(ctx: PipelineContext, cid: str) -> CustomerState | None:
    stored = await ctx.store.get_state(cid)
    return CustomerState.from_json(stored.data) if stored else None


async def test_alias_merges_the_anonymous_profile_into_the_known_one() -> None:
    ctx = make_ctx()
    feed = MemoryPipeline(ctx)
    anon = {"anonymousId": "anon-1"}
    await feed.send([view(f"v{i}", anon, i + 1) for i in range(3)])
    await feed.send([order("o1", "ada", 1500.0, 4)])
    assert moves(ctx, "anon-1") == [("browser", "entered", "event")]
    await feed.send([ev("alias", "a1", "2026-01-04T13:00:00Z", userId="ada", previousId="anon-1")])
    assert moves(ctx, "anon-1")[-1] == ("browser", "exited", "merge")
    assert ("browser", "entered", "merge") in moves(ctx, "ada")
    survivor = await state_of(ctx, "ada")
    assert survivor is not None and survivor.aliases == ["anon-1"]
    assert survivor.named["Product Viewed"][0] == 3 and survivor.revenue == 1500.0
    redirect = await state_of(ctx, "anon-1")
    assert redirect is not None and redirect.merged_into == "ada" and not redirect.traits
    await feed.send([view("v9", anon, 5)])
    survivor = await state_of(ctx, "ada")
    assert survivor is not None and survivor.named["Product Viewed"][0] == 4


async def test_identify_with_both_ids_merges_them() -> None:
    ctx = make_ctx()
    feed = MemoryPipeline(ctx)
    await feed.send([order("o1", "anon-2", 20.0, 1)])
    doc = ev(
        "identify",
        "i1",
        "2026-01-02T00:00:00Z",
        userId="bo",
        anonymousId="anon-2",
        traits={"plan": "pro"},
    )
    await feed.send([doc])
    survivor = await state_of(ctx, "bo")
    assert survivor is not None and survivor.orders == 1 and survivor.traits == {"plan": "pro"}
    assert moves(ctx, "bo") == [("buyer", "entered", "merge")]


async def test_merge_chains_resolve_and_cycles_are_refused() -> None:
    ctx = make_ctx()
    feed = MemoryPipeline(ctx)
    await feed.send([order("o1", "a", 10.0, 1)])
    await feed.send([ev("alias", "x1", "2026-01-02T00:00:00Z", userId="b", previousId="a")])
    await feed.send([ev("alias", "x2", "2026-01-03T00:00:00Z", userId="c", previousId="b")])
    await feed.send([order("o2", "a", 2000.0, 4)])
    root = await state_of(ctx, "c")
    assert root is not None and root.orders == 2 and root.revenue == 2010.0
    assert sorted(root.aliases) == ["a", "b"]
    await feed.send([ev("alias", "x3", "2026-01-05T00:00:00Z", userId="b", previousId="c")])
    dlq = sent(ctx, "segmenter.events.dlq")
    assert len(dlq) == 1
    headers = dict(dlq[0].headers)
    assert headers["segmenter.error.kind"] == b"identity"
    assert b"cycle" in headers["segmenter.error.message"]


async def test_too_many_identifiers_are_refused() -> None:
    ctx = make_ctx(max_identities=3)
    feed = MemoryPipeline(ctx)
    for n in range(3):
        await feed.send(
            [
                ev(
                    "alias",
                    f"x{n}",
                    f"2026-01-0{n + 1}T00:00:00Z",
                    userId="main",
                    previousId=f"old{n}",
                )
            ]
        )
    dlq = sent(ctx, "segmenter.events.dlq")
    assert len(dlq) == 1
    assert b"the limit is 3" in dict(dlq[0].headers)["segmenter.error.message"]


async def test_a_merge_across_partitions_moves_later_events_to_the_survivor() -> None:
    ctx = make_ctx(partitions=8)
    survivor, other = "u-survivor", "u-other-9"
    assert ctx.home_partition(survivor) != ctx.home_partition(other)
    feed = MemoryPipeline(ctx)
    await feed.send([order("o1", other, 600.0, 1)])
    await feed.send([ev("alias", "a", "2026-01-02T00:00:00Z", userId=survivor, previousId=other)])
    await feed.send([order("o2", other, 600.0, 3)])
    root = await state_of(ctx, survivor)
    assert root is not None and root.orders == 2 and root.revenue == 1200.0
    assert ("big_spender", "entered", "event") in moves(ctx, survivor)
    assert partition_for(other.encode(), 8) == ctx.home_partition(other)


async def test_erasure_forgets_the_profile_and_its_aliases_for_good() -> None:
    ctx = make_ctx()
    feed = MemoryPipeline(ctx)
    history = [order("o1", "eve", 1200.0, 1), view("v1", {"anonymousId": "anon-e"}, 1)]
    await feed.send(history)
    await feed.send([ev("alias", "a", "2026-01-02T00:00:00Z", userId="eve", previousId="anon-e")])
    await feed.send([ev("erase", "e", "2026-01-03T00:00:00Z", userId="eve")])
    exits = [m for m in moves(ctx, "eve") if m[1] == "exited"]
    assert exits == [("big_spender", "exited", "erasure")]
    store = memory_store(ctx)
    assert "eve" not in store.states and "anon-e" not in store.states
    assert all("eve" not in members for members in store.segments.values())
    before = len(sent(ctx))
    await feed.send(
        [order("o1-replayed", "eve", 1200.0, 1), view("v2", {"anonymousId": "anon-e"}, 2)]
    )
    assert "eve" not in store.states and "anon-e" not in store.states
    assert len(sent(ctx)) == before and ctx.metrics.suppressed == 2
    await feed.send([order("o-new", "eve", 5.0, 4)])
    fresh = await state_of(ctx, "eve")
    assert fresh is not None and fresh.orders == 1 and fresh.revenue == 5.0


async def test_membership_records_follow_changes_with_tombstones() -> None:
    ctx = make_ctx()
    feed = MemoryPipeline(ctx)
    await feed.send([order("o1", "fay", 50.0, 1), order("o2", "fay", 2000.0, 2)])
    await feed.send([ev("erase", "e", "2026-01-03T00:00:00Z", userId="fay")])
    records = sent(ctx, "segmenter.memberships")
    assert all(r.key == b"fay" for r in records)
    assert orjson.loads(records[0].value or b"")["segments"] == ["big_spender"]
    assert records[-1].value is None, "erasure leaves a tombstone"


async def test_personal_traits_never_reach_migration_events() -> None:
    ctx = make_ctx()
    feed = MemoryPipeline(ctx)
    await feed.send(
        [
            ev(
                "identify",
                "i",
                "2026-01-01T00:00:00Z",
                userId="gil",
                traits={"email": "gil@gmail.com"},
            )
        ]
    )
    (entry,) = sent(ctx)
    assert b"gil@gmail.com" not in (entry.value or b"")
    assert orjson.loads(entry.value or b"")["reason"]["values"] == {"email": "[redacted]"}


async def test_the_migration_matrix_counts_moves_per_day() -> None:
    ctx = make_ctx()
    feed = MemoryPipeline(ctx)
    await feed.send([order("o1", "hal", 50.0, 1), order("o2", "hal", 2000.0, 1)])
    assert await ctx.store.matrix("2026-01-01") == {"-|buyer": 1, "buyer|big_spender": 1}
