"""The reason of a migration: an entry gives the segment's condition, an exit the stay
condition that failed (both in event time, where changes are published when the instant ends)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from streams.engine import parse_rules
from streams.pipeline.outbox import OutboxEntry
from streams.pipeline.processor import PipelineContext, Record, process_batch
from streams.settings import Settings
from streams.store.memory import MemoryStore
from tests.events import encoded, order
from tests.kit import CONTROL_SECRET, control, memory_store

RULES = parse_rules(
    {
        "big.yaml": """
id: big
name: Big
description: revenue of 100 or more, staying while 50 or more
kind: value
condition: {type: lifetime, metric: revenue, op: ge, value: 100}
stay_condition: {type: lifetime, metric: revenue, op: ge, value: 50}
""",
    }
)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def track(mid: str, moment: datetime, revenue: float) -> bytes:
    return encoded(order(mid, "ada", revenue, moment))


async def test_an_entry_gives_the_condition_and_an_exit_the_stay_condition() -> None:
    ctx = PipelineContext.create(
        Settings(clock="event", allowed_lateness_s=0, control_secret=CONTROL_SECRET),
        RULES,
        MemoryStore(),
        1,
    )
    later = T0 + timedelta(hours=1)
    values = [
        track("o1", T0, 120.0),
        track("refund", later, -100.0),
        control(later.timestamp())[0],
    ]
    headers = [(), (), control(later.timestamp())[1]]
    records = [
        Record("segmenter.events", 0, n, b"ada", value, head)
        for n, (value, head) in enumerate(zip(values, headers, strict=True))
    ]
    await process_batch(ctx, records)
    store = memory_store(ctx)
    reasons = [
        (data["direction"], data["reason"]["rule"])
        for data in (
            orjson.loads(OutboxEntry.decode(raw).value or b"")
            for raw in store.outboxes.get(0, [])
            if OutboxEntry.decode(raw).topic == "segmenter.migrations"
        )
    ]
    assert reasons == [
        ("entered", "lifetime revenue >= 100"),
        ("exited", "stay condition: lifetime revenue >= 50"),
    ]
