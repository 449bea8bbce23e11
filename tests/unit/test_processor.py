"""The batch processor against the in-memory store: decoding, routing, applying, migrations."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from streams.engine import parse_rules
from streams.pipeline.migrations import ce_id
from streams.pipeline.outbox import OutboxEntry
from streams.pipeline.processor import PipelineContext, Record, process_batch
from streams.pipeline.routing import partition_for
from streams.settings import Settings
from streams.state.customer import CustomerState
from tests import events
from tests.events import DEFAULT_TS, event
from tests.fixtures import TEST_RULES
from tests.kit import memory_store, pinned_context


def make_ctx(partitions: int = 1, **overrides: object) -> PipelineContext:
    settings = Settings(**overrides)  # type: ignore[arg-type]
    return pinned_context(parse_rules(TEST_RULES), settings, partitions=partitions)


def order(mid: str, revenue: float, user: str = "u1", ts: str = DEFAULT_TS) -> dict[str, Any]:
    """This file's orders name the revenue before the customer."""
    return events.order(mid, user, revenue, ts)


def records(docs: list, partition: int = 0, start: int = 0) -> list[Record]:
    out = []
    for offset, doc in enumerate(docs, start=start):
        value = doc if isinstance(doc, bytes) else orjson.dumps(doc)
        out.append(Record("segmenter.events", partition, offset, b"k", value))
    return out


def outbox(ctx: PipelineContext, partition: int = 0) -> list[OutboxEntry]:
    store = memory_store(ctx)
    return [OutboxEntry.decode(raw) for raw in store.outboxes.get(partition, [])]


def migrations(ctx: PipelineContext) -> list[dict]:
    return [orjson.loads(e.value or b"") for e in outbox(ctx) if e.topic == "segmenter.migrations"]


async def test_an_event_that_changes_membership_emits_a_cloudevent() -> None:
    ctx = make_ctx()
    await process_batch(
        ctx, records([event("identify", "m1", traits={"address": {"country": "CA"}})])
    )
    (entry,) = [e for e in outbox(ctx) if e.topic == "segmenter.migrations"]
    headers = dict(entry.headers)
    assert entry.key == b"u1"
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_type"] == b"segmenter.segment.entered"
    assert headers["ce_subject"] == b"u1"
    assert headers["ce_time"] == b"2026-01-01T10:00:00.000Z"
    assert headers["ce_id"] == ce_id("u1", 1, "canadians", "entered").encode()
    assert headers["content-type"] == b"application/json"
    data = orjson.loads(entry.value or b"")
    assert data["segment"] == "canadians" and data["direction"] == "entered"
    assert (
        data["sequence"] == 1 and data["from_segment"] is None and data["to_segment"] == "canadians"
    )
    assert data["trigger"] == {"kind": "event", "message_id": "m1", "event": "identify"}
    assert data["reason"]["values"] == {"address.country": "CA"}
    assert data["rule_version"] == ctx.rules.version
    assert await ctx.store.segment_sizes() == {"canadians": 1}


async def test_a_family_move_is_one_exit_and_one_entry() -> None:
    ctx = make_ctx()
    await process_batch(ctx, records([order("o1", 100.0), order("o2", 950.0)]))
    moves = [
        (m["segment"], m["direction"], m["from_segment"], m["to_segment"]) for m in migrations(ctx)
    ]
    assert moves == [
        ("buyer", "entered", None, "buyer"),
        ("buyer", "exited", "buyer", "big_spender"),
        ("big_spender", "entered", "buyer", "big_spender"),
    ]
    assert [m["sequence"] for m in migrations(ctx)] == [1, 2, 3]
    assert all(m["family"] == "value" for m in migrations(ctx))
    assert await ctx.store.segment_sizes() == {"big_spender": 1}


async def test_redelivered_offsets_change_nothing() -> None:
    ctx = make_ctx()
    batch = records([order("o1", 100.0), order("o2", 2000.0)])
    await process_batch(ctx, batch)
    store = memory_store(ctx)
    before = (dict(store.states), list(store.outboxes[0]))
    await process_batch(ctx, batch)
    assert (dict(store.states), list(store.outboxes[0])) == before
    assert ctx.metrics.redelivered == 2


async def test_a_duplicate_message_id_at_a_new_offset_changes_nothing() -> None:
    ctx = make_ctx()
    await process_batch(ctx, records([order("o1", 600.0)]))
    await process_batch(ctx, records([order("o1", 600.0)], start=1))
    stored = await ctx.store.get_state("u1")
    assert stored is not None
    state = CustomerState.from_json(stored.data)
    assert state.orders == 1 and state.revenue == 600.0
    assert ctx.metrics.duplicates == 1
    assert len(migrations(ctx)) == 1


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (b"{not json", "json"),
        (b"[1, 2]", "json"),
        (orjson.dumps({"type": "track", "messageId": "x", "userId": "u"}), "schema"),
        (orjson.dumps({"type": "shout", "messageId": "x", "userId": "u"}), "schema"),
        (orjson.dumps(event("track", "x", timestamp_bad=1) | {"timestamp": "yesterday"}), "schema"),
        (b'{"pad": "' + b"x" * 40_000 + b'"}', "oversize"),
    ],
)
async def test_poison_input_goes_to_the_dlq_unchanged(value: bytes, kind: str) -> None:
    ctx = make_ctx()
    await process_batch(ctx, records([value, order("ok", 5.0)], partition=0, start=10))
    entries = outbox(ctx)
    dlq = [e for e in entries if e.topic == "segmenter.events.dlq"]
    assert len(dlq) == 1
    assert dlq[0].value == value
    headers = dict(dlq[0].headers)
    assert headers["segmenter.error.kind"] == kind.encode()
    assert headers["segmenter.error.message"]
    assert headers["segmenter.source.topic"] == b"segmenter.events"
    assert headers["segmenter.source.partition"] == b"0"
    assert headers["segmenter.source.offset"] == b"10"
    assert len(migrations(ctx)) == 1, "the good event after the bad one is still applied"


async def test_an_event_on_the_wrong_partition_is_rerouted_not_applied() -> None:
    ctx = make_ctx(partitions=8)
    right = partition_for(b"u1", 8)
    wrong = (right + 1) % 8
    await process_batch(ctx, records([order("o1", 10.0)], partition=wrong))
    (entry,) = outbox(ctx, wrong)
    assert entry.topic == "segmenter.events" and entry.partition == right and entry.key == b"u1"
    assert await ctx.store.get_state("u1") is None
    await process_batch(ctx, records([order("o1", 10.0)], partition=right))
    assert await ctx.store.get_state("u1") is not None


async def test_batch_boundaries_do_not_change_the_output() -> None:
    docs = [
        event("identify", "i1", traits={"address": {"country": "CA"}}),
        order("o1", 300.0, ts="2026-01-02T00:00:00Z"),
        order("o2", 800.0, ts="2026-01-03T00:00:00Z"),
        event("identify", "i2", traits={"address": {"country": "US"}}, ts="2026-01-04T00:00:00Z"),
        event("erase", "e1", ts="2026-01-05T00:00:00Z"),
    ]
    whole = make_ctx()
    await process_batch(whole, records(docs))
    single = make_ctx()
    for offset, doc in enumerate(docs):
        await process_batch(single, records([doc], start=offset))

    def emitted(ctx: PipelineContext) -> list[bytes]:
        return [e.encode() for e in outbox(ctx) if e.topic != "segmenter.memberships"]

    assert emitted(whole) == emitted(single)
    assert len(emitted(whole)) >= 5


async def test_erasure_exits_every_segment_and_deletes_the_state() -> None:
    ctx = make_ctx()
    docs = [
        event("identify", "i1", traits={"address": {"country": "CA"}}),
        order("o1", 50.0),
        event("erase", "e1", ts="2026-01-01T11:00:00Z"),
    ]
    await process_batch(ctx, records(docs))
    exits = [m for m in migrations(ctx) if m["direction"] == "exited"]
    assert sorted(m["segment"] for m in exits) == ["buyer", "canadians"]
    assert all(m["trigger"]["kind"] == "erasure" for m in exits)
    assert all(m["reason"] == {"rule": "customer erased", "values": {}} for m in exits)
    assert await ctx.store.get_state("u1") is None
    assert await ctx.store.segment_sizes() == {}


async def test_an_event_that_fails_to_apply_goes_to_the_dlq_and_leaves_no_trace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug while applying one event: that event goes to the DLQ; the rest of the batch is
    applied exactly as if it had never been there (no half-applied state, no migration)."""
    from streams.pipeline import logic

    real = logic.apply_event

    def failing(state, event, *args, **kwargs):  # type: ignore[no-untyped-def]
        real(state, event, *args, **kwargs)
        if event.messageId == "bad":
            raise RuntimeError("boom")

    monkeypatch.setattr(logic, "apply_event", failing)
    ctx = make_ctx()
    batch = records(
        [order("o1", 100.0), order("bad", 5000.0), order("o2", 100.0, user="u2"), order("o3", 1.0)]
    )
    await process_batch(ctx, batch)
    entries = outbox(ctx)
    (dlq,) = [e for e in entries if e.topic == "segmenter.events.dlq"]
    assert dlq.value == batch[1].value
    headers = dict(dlq.headers)
    assert headers["segmenter.error.kind"] == b"processing"
    assert b"boom" in headers["segmenter.error.message"]
    assert headers["segmenter.source.offset"] == b"1"
    stored = await ctx.store.get_state("u1")
    assert stored is not None
    state = CustomerState.from_json(stored.data)
    assert state.orders == 2 and state.revenue == 101.0
    moves = [
        (m["customer_id"], m["segment"], m["direction"], m["sequence"]) for m in migrations(ctx)
    ]
    assert moves == [("u1", "buyer", "entered", 1), ("u2", "buyer", "entered", 1)]
    assert await ctx.store.segment_sizes() == {"buyer": 2}
    assert (ctx.metrics.events, ctx.metrics.dlq, ctx.metrics.migrations) == (3, 1, 2)
    assert (await ctx.store.load([], [0])).offsets == {0: 3}
