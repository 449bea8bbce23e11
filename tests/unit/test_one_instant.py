"""One rule for one instant: events before timers at the same instant, and no flaps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from streams.engine import parse_rules
from streams.pipeline.outbox import OutboxEntry
from streams.pipeline.processor import PipelineContext, Record, process_batch
from streams.settings import Settings
from streams.state.customer import CustomerState
from streams.store.memory import MemoryStore
from tests import events
from tests.events import encoded
from tests.kit import CONTROL_SECRET, memory_store
from tests.kit import control as signed

RULES = parse_rules(
    {
        "orders.yaml": """
family: orders
name: Orders
description: how many orders
kind: lifecycle
segments:
  - {id: repeat, name: Repeat, description: d, priority: 20,
     condition: {type: lifetime, metric: orders, op: ge, value: 2}}
  - {id: first_order, name: First order, description: d, priority: 10,
     condition: {type: lifetime, metric: orders, op: eq, value: 1}}
""",
        "recent.yaml": """
id: recent
name: Recent
description: ordered within 30 days
kind: behavioral
condition: {type: recency, event: Order Completed, within: 30d}
""",
    }
)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def order(mid: str, moment: datetime) -> bytes:
    return encoded(events.order(mid, "ada", 10, moment))


def control(until: datetime) -> tuple[bytes, tuple[tuple[str, bytes], ...]]:
    return signed(until.timestamp())


async def run(batches: list[list[bytes | tuple[bytes, tuple[tuple[str, bytes], ...]]]]):
    ctx = PipelineContext.create(
        Settings(clock="event", allowed_lateness_s=0, control_secret=CONTROL_SECRET),
        RULES,
        MemoryStore(),
        1,
    )
    offset = 0
    for batch in batches:
        records = []
        for item in batch:
            value, headers = item if isinstance(item, tuple) else (item, ())
            records.append(Record("segmenter.events", 0, offset, b"ada", value, headers))
            offset += 1
        await process_batch(ctx, records)
    store = memory_store(ctx)
    moves = []
    for raw in store.outboxes.get(0, []):
        entry = OutboxEntry.decode(raw)
        if entry.topic == "segmenter.migrations":
            data = orjson.loads(entry.value or b"")
            when = dict(entry.headers)["ce_time"].decode()
            moves.append((data["segment"], data["direction"], when, data["trigger"]["kind"]))
    return moves, store


def z(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def test_an_order_exactly_when_the_last_ones_30_days_end_keeps_the_customer_in() -> None:
    again = T0 + timedelta(days=30)
    moves, _ = await run([[order("o1", T0)], [order("o2", again), control(again)]])
    recent = [m for m in moves if m[0] == "recent"]
    assert recent == [("recent", "entered", z(T0), "event")], "no exit and re-entry at 30d"


async def test_an_order_one_ms_after_the_30_days_exits_then_re_enters() -> None:
    late = T0 + timedelta(days=30, milliseconds=1)
    moves, _ = await run([[order("o1", T0)], [order("o2", late), control(late)]])
    assert [m for m in moves if m[0] == "recent"] == [
        ("recent", "entered", z(T0), "event"),
        ("recent", "exited", z(T0 + timedelta(days=30)), "time"),
        ("recent", "entered", z(late), "event"),
    ]


async def test_two_orders_at_one_instant_are_one_move_whatever_the_batching() -> None:
    both = [order("o1", T0), order("o2", T0)]
    whole, store = await run([[*both, control(T0)]])
    split, _ = await run([[both[0]], [both[1]], [control(T0)]])
    assert (
        whole
        == split
        == [
            ("repeat", "entered", z(T0), "event"),
            ("recent", "entered", z(T0), "event"),
        ]
    ), "first_order is entered and left at one instant: nothing is published for it"
    state = CustomerState.from_json(store.states["ada"].data)
    assert state.sequence == 2 and set(state.members) == {"repeat", "recent"}
    assert state.open is None


async def test_an_open_instant_survives_the_batch_and_the_store() -> None:
    moves, store = await run([[order("o1", T0)]])
    assert moves == [], "the partition's latest instant is still open"
    state = CustomerState.from_json(store.states["ada"].data)
    assert state.open is not None and state.open.at == T0.timestamp()
    assert set(state.members) == {"first_order", "recent"}, "members change at once"
    assert {s for s, ids in store.segments.items() if "ada" in ids} == {"first_order", "recent"}
