"""Consent: segments needing marketing consent exclude customers without it; withdrawal exits."""

from __future__ import annotations

from streams.engine import parse_rules
from tests.events import event, order
from tests.kit import MemoryPipeline, pinned_context

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


def consent(mid: str, ts: str, **categories: bool) -> dict[str, object]:
    return event("consent", mid, "kim", ts, categoryPreferences=categories)


async def test_withdrawing_consent_exits_the_consent_segments_only() -> None:
    pipeline = MemoryPipeline(pinned_context(RULES))
    await pipeline.send(
        [
            order("o1", "kim", 5, "2026-01-01T10:00:00Z"),
            consent("c1", "2026-01-02T10:00:00Z", marketing=True),
            consent("c2", "2026-01-03T10:00:00Z", marketing=False),
        ]
    )
    moves = [(m["segment"], m["direction"], m["trigger"]["kind"]) for m in pipeline.migrations()]
    assert moves == [
        ("buyers", "entered", "event"),
        ("promo_audience", "entered", "consent"),
        ("promo_audience", "exited", "consent"),
    ]
    assert await pipeline.store.segment_sizes() == {"buyers": 1}
