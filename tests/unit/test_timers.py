"""Time-driven migrations: exact due times, event-time watermark, per-customer time order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from streams.engine import load_rules, parse_rules
from streams.pipeline.outbox import OutboxEntry
from streams.pipeline.processor import PipelineContext, Record, process_batch
from streams.pipeline.timekeeping import ManualClock
from streams.settings import Settings
from streams.store.memory import MemoryStore
from tests import events
from tests.events import encoded
from tests.kit import CONTROL_SECRET, memory_store
from tests.kit import control as signed

PACK = Path(__file__).resolve().parents[2] / "rules"
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def at(**delta: float) -> str:
    return (T0 + timedelta(**delta)).isoformat()


def ctx_for(rules=None, clock: str = "event", lateness: float = 0.0) -> PipelineContext:
    settings = Settings(
        clock=clock,  # type: ignore[arg-type]
        allowed_lateness_s=lateness,
        idle_settle_s=0,
        control_secret=CONTROL_SECRET,
    )
    return PipelineContext.create(settings, rules or load_rules(PACK), MemoryStore(), 1)


def track(mid: str, user: str, name: str, ts: str, **props: object) -> bytes:
    return encoded(events.track(mid, user, name, ts, **props))


def recs(values: list[bytes], start: int = 0) -> list[Record]:
    return [Record("segmenter.events", 0, start + i, None, v) for i, v in enumerate(values)]


def emitted(
    ctx: PipelineContext, user: str | None = None, segment: str | None = None
) -> list[dict]:
    store = memory_store(ctx)
    out = []
    for raw in store.outboxes.get(0, []):
        entry = OutboxEntry.decode(raw)
        if entry.topic != "segmenter.migrations":
            continue
        data = orjson.loads(entry.value or b"")
        data["ce_time"] = dict(entry.headers)["ce_time"].decode()
        if (user is None or data["customer_id"] == user) and (
            segment is None or data["segment"] == segment
        ):
            out.append(data)
    return out


def iso_z(**delta: float) -> str:
    return (T0 + timedelta(**delta)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def test_lapsed_exactly_90_days_after_the_last_order() -> None:
    ctx = ctx_for()
    await process_batch(ctx, recs([track("o1", "ada", "Order Completed", at(), revenue=40)]))
    await process_batch(ctx, recs([track("p1", "bob", "Product Viewed", at(days=200))], start=1))
    stages = [
        (m["segment"], m["direction"], m["ce_time"], m["trigger"]["kind"])
        for m in emitted(ctx, "ada")
        if m["family"] == "lifecycle"
    ]
    assert stages == [
        ("new_customer", "entered", iso_z(), "event"),
        ("new_customer", "exited", iso_z(days=30), "time"),
        ("active", "entered", iso_z(days=30), "time"),
        ("active", "exited", iso_z(days=60), "time"),
        ("at_risk", "entered", iso_z(days=60), "time"),
        ("at_risk", "exited", iso_z(days=90), "time"),
        ("lapsed", "entered", iso_z(days=90), "time"),
    ]
    lapsed = emitted(ctx, "ada", "lapsed")
    assert [(m["direction"], m["ce_time"]) for m in lapsed] == [("entered", iso_z(days=90))]
    assert lapsed[0]["trigger"] == {"kind": "time", "message_id": None, "event": None}
    sequences = [m["sequence"] for m in emitted(ctx, "ada")]
    assert sequences == list(range(1, len(sequences) + 1))


async def test_cart_abandoner_exactly_one_hour_after_the_add() -> None:
    ctx = ctx_for()
    await process_batch(ctx, recs([track("a1", "cy", "Product Added", at(), price=20)]))
    assert emitted(ctx, "cy", "cart_abandoner") == []
    await process_batch(ctx, recs([track("x", "dee", "Product Viewed", at(hours=3))], start=1))
    moves = [(m["direction"], m["ce_time"]) for m in emitted(ctx, "cy", "cart_abandoner")]
    assert moves == [("entered", iso_z(hours=1))]


async def test_checkout_within_the_hour_prevents_cart_abandonment() -> None:
    ctx = ctx_for()
    batch = [
        track("a1", "cy", "Product Added", at(), price=20),
        track("c1", "cy", "Checkout Started", at(minutes=20)),
        track("x", "dee", "Product Viewed", at(hours=5)),
    ]
    await process_batch(ctx, recs(batch))
    assert emitted(ctx, "cy", "cart_abandoner") == []


async def test_a_window_count_drops_as_its_buckets_age() -> None:
    rules = parse_rules(
        {
            "busy.yaml": """
id: busy
name: Busy
description: three page views within a week
kind: behavioral
condition: {type: event_count, event: Page Viewed, within: 7d, op: ge, value: 3}
"""
        }
    )
    ctx = ctx_for(rules)
    views = [
        orjson.dumps(
            {"type": "page", "messageId": f"v{i}", "userId": "ed", "timestamp": at(days=i)}
        )
        for i in range(3)
    ]
    await process_batch(ctx, recs(views))
    await process_batch(ctx, recs([track("z", "fay", "Product Viewed", at(days=30))], start=3))
    moves = [(m["direction"], m["ce_time"]) for m in emitted(ctx, "ed", "busy")]
    # exact windows: the first view (day 0) leaves the 7-day window at exactly day 7
    assert moves == [("entered", iso_z(days=2)), ("exited", iso_z(days=7))]


async def test_a_customers_own_timers_fire_before_its_next_event() -> None:
    ctx = ctx_for(lateness=40 * 86400)
    await process_batch(ctx, recs([track("o1", "gus", "Order Completed", at(), revenue=10)]))
    await process_batch(
        ctx, recs([track("o2", "gus", "Order Completed", at(days=95), revenue=10)], start=1)
    )
    assert [m["direction"] for m in emitted(ctx, "gus", "lapsed")] == ["entered"], (
        "the changes at the partition's latest instant wait until its time moves on"
    )
    await process_batch(ctx, [control(2, T0 + timedelta(days=95))])
    times = [m["ce_time"] for m in emitted(ctx, "gus")]
    assert times == sorted(times), "every customer's migrations come out in time order"
    lapsed = emitted(ctx, "gus", "lapsed")
    assert [(m["direction"], m["ce_time"]) for m in lapsed] == [
        ("entered", iso_z(days=90)),
        ("exited", iso_z(days=95)),
    ]


def control(offset: int, until: datetime) -> Record:
    """The control record ``segmenter replay`` sends: fire everything due up to ``until``."""
    value, headers = signed(until.timestamp())
    return Record("segmenter.events", 0, offset, None, value, headers)


async def test_a_control_watermark_fires_everything_due_up_to_it() -> None:
    """With 3 h of lateness, a bystander's event 2 h later fires nothing yet; a control record
    up to the partition's clock settles everything, the abandoned cart at its exact due time."""
    ctx = ctx_for(lateness=3 * 3600)
    await process_batch(ctx, recs([track("a1", "hal", "Product Added", at())]))
    await process_batch(ctx, recs([track("b1", "ivy", "Page Viewed", at(hours=2))], start=1))
    assert emitted(ctx, "hal", "cart_abandoner") == []
    await process_batch(ctx, [control(2, T0 + timedelta(hours=2))])
    assert [(m["direction"], m["ce_time"]) for m in emitted(ctx, "hal", "cart_abandoner")] == [
        ("entered", iso_z(hours=1))
    ]


def dead_letters(ctx: PipelineContext) -> list[dict[str, str]]:
    store = memory_store(ctx)
    found = []
    for raw in store.outboxes.get(0, []):
        entry = OutboxEntry.decode(raw)
        if entry.topic == ctx.settings.dlq_topic:
            found.append({k: v.decode() for k, v in entry.headers})
    return found


@pytest.mark.parametrize(
    ("value", "headers", "why"),
    [
        (b'{"until": 1767322800}', (("segmenter.control", b"watermark"),), "signature"),
        (
            b'{"until": 1767322800}',
            (("segmenter.control", b"watermark"), ("segmenter.control-signature", b"00")),
            "signature",
        ),
        (*signed(1e15), "from 1970 to 3000"),
        (*signed(T0.timestamp() + 3 * 3600), "past the partition's clock"),
        (b'{"until": "inf"}', signed(0)[1], "signature"),
        (b"not json", (("segmenter.control", b"pause"),), "unknown control record"),
    ],
)
async def test_untrusted_or_time_moving_control_records_go_to_the_dlq(
    value: bytes, headers: tuple[tuple[str, bytes], ...], why: str
) -> None:
    """Anyone who can write to the input topic cannot fire every timer: a control record is
    applied only when signed with SEGMENTER_CONTROL_SECRET and no later than the clock."""
    ctx = ctx_for(lateness=3 * 3600)
    await process_batch(ctx, recs([track("a1", "hal", "Product Added", at())]))
    await process_batch(ctx, recs([track("b1", "ivy", "Page Viewed", at(hours=2))], start=1))
    await process_batch(ctx, [Record("segmenter.events", 0, 2, None, value, headers)])
    assert emitted(ctx, "hal", "cart_abandoner") == []
    [refused] = dead_letters(ctx)
    assert refused["segmenter.error.kind"] == "control"
    assert why in refused["segmenter.error.message"]
    # the partition goes on: a signed record up to the clock still settles everything
    await process_batch(ctx, [control(3, T0 + timedelta(hours=2))])
    assert len(emitted(ctx, "hal", "cart_abandoner")) == 1


async def test_without_a_secret_no_control_record_is_trusted() -> None:
    settings = Settings(clock="event", allowed_lateness_s=3 * 3600, idle_settle_s=0)
    ctx = PipelineContext.create(settings, load_rules(PACK), MemoryStore(), 1)
    await process_batch(ctx, recs([track("a1", "hal", "Product Added", at(hours=2))]))
    await process_batch(ctx, [control(1, T0 + timedelta(hours=2))])
    [refused] = dead_letters(ctx)
    assert "SEGMENTER_CONTROL_SECRET is unset" in refused["segmenter.error.message"]


async def test_batch_boundaries_do_not_change_time_driven_output() -> None:
    history = [
        track("o1", "ann", "Order Completed", at(), revenue=700),
        track("a1", "ben", "Product Added", at(hours=2)),
        track("o2", "ann", "Order Completed", at(days=20), revenue=500),
        track("p1", "ben", "Product Viewed", at(days=40)),
        track("o3", "cat", "Order Completed", at(days=70), revenue=5),
        track("p2", "ann", "Product Viewed", at(days=150)),
        track("p3", "cat", "Product Viewed", at(days=400)),
    ]
    whole = ctx_for(lateness=86400)
    await process_batch(whole, recs(history))
    pieces = ctx_for(lateness=86400)
    for i, value in enumerate(history):
        await process_batch(pieces, recs([value], start=i))
    assert emitted(whole) == emitted(pieces)
    assert any(m["trigger"]["kind"] == "time" for m in emitted(whole))


async def test_processing_clock_fires_due_timers_on_a_tick() -> None:
    rules = parse_rules(
        {
            "recent.yaml": """
id: pinged
name: Pinged
description: pinged within the last second
kind: behavioral
condition: {type: recency, event: Ping, within: 1s}
"""
        }
    )
    now = T0 + timedelta(days=3)
    clock = ManualClock(now.timestamp())
    ctx = PipelineContext.create(Settings(), rules, MemoryStore(), 1, clock=clock)
    await process_batch(ctx, recs([track("p", "ivy", "Ping", now.isoformat())]))
    assert [m["direction"] for m in emitted(ctx, "ivy")] == ["entered"]
    clock.advance(0.999)
    await process_batch(ctx, [], [0])
    assert [m["direction"] for m in emitted(ctx, "ivy")] == ["entered"], "not due yet"
    clock.advance(0.001)
    await process_batch(ctx, [], [0])
    moves = emitted(ctx, "ivy")
    assert [m["direction"] for m in moves] == ["entered", "exited"]
    assert moves[1]["trigger"]["kind"] == "time"
    due = (now + timedelta(seconds=1)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert moves[1]["ce_time"] == due


async def test_event_time_publishes_the_latest_instant_once_time_moves_or_it_is_quiet() -> None:
    def kai(ctx: PipelineContext) -> list[tuple[str, str, str]]:
        return [(m["segment"], m["direction"], m["ce_time"]) for m in emitted(ctx, "kai")]

    first = recs([track("o1", "kai", "Order Completed", at(), revenue=40)])
    wall = ManualClock(T0.timestamp())
    moving = ctx_for()
    await process_batch(moving, first)
    assert kai(moving) == [], "kai's instant is the partition's latest: still open"
    wall.advance(3600)
    await process_batch(moving, [], [0])
    assert kai(moving) == [], "with idle settling off, only event time publishes"
    await process_batch(moving, recs([track("p1", "lee", "Page", at(seconds=1))], start=1))
    by_time = kai(moving)
    assert by_time and {(d, t) for _s, d, t in by_time} == {("entered", iso_z())}

    settings = Settings(clock="event", allowed_lateness_s=0, idle_settle_s=1.0)
    quiet = PipelineContext.create(settings, load_rules(PACK), MemoryStore(), 1, clock=wall)
    await process_batch(quiet, first)
    wall.advance(0.9)
    await process_batch(quiet, [], [0])
    assert kai(quiet) == [], "quiet for less than SEGMENTER_IDLE_SETTLE_S"
    wall.advance(0.1)
    await process_batch(quiet, [], [0])
    assert kai(quiet) == by_time, "a quiet partition publishes what a later event would"
