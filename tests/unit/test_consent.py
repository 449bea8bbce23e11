"""Consent: segments needing marketing consent exclude customers without it; withdrawal exits."""

from __future__ import annotations

import orjson

from streams.engine import parse_rules
from streams.pipeline.outbox import OutboxEntry
from streams.pipeline.processor import Record, process_batch
from tests.kit import memory_store, pinned_context

RULES = parse_rules(
    {
        "promo.yaml": """
id: promo_audience
name: Promo audience
description: buyers who agreed to marketing
kind: behavioral
requires_consent: marketing
condition: {type: lifetime, metric: orders, op: ge, value: 1}
""",
        "buyers.yaml": """
id: buyers
name: Buyers
description: everyone who ordered
kind: value
condition: {type: lifetime, metric: orders, op: ge, value: 1}
""",
    }
)


def doc(kind: str, mid: str, ts: str, **fields: object) -> bytes:
    return orjson.dumps(
        {"type": kind, "messageId": mid, "userId": "kim", "timestamp": ts, **fields}
    )


async def test_withdrawing_consent_exits_the_consent_segments_only() -> None:
    ctx = pinned_context(RULES)
    values = [
        doc(
            "track",
            "o1",
            "2026-01-01T10:00:00Z",
            event="Order Completed",
            properties={"revenue": 5},
        ),
        doc("consent", "c1", "2026-01-02T10:00:00Z", categoryPreferences={"marketing": True}),
        doc("consent", "c2", "2026-01-03T10:00:00Z", categoryPreferences={"marketing": False}),
    ]
    records = [Record("segmenter.events", 0, i, None, v) for i, v in enumerate(values)]
    await process_batch(ctx, records)
    store = memory_store(ctx)
    moves = []
    for raw in store.outboxes[0]:
        entry = OutboxEntry.decode(raw)
        if entry.topic == "segmenter.migrations":
            data = orjson.loads(entry.value or b"")
            moves.append((data["segment"], data["direction"], data["trigger"]["kind"]))
    assert moves == [
        ("buyers", "entered", "event"),
        ("promo_audience", "entered", "consent"),
        ("promo_audience", "exited", "consent"),
    ]
    assert await store.segment_sizes() == {"buyers": 1}
