"""Incremental evaluation (only the segments an event can change) equals full evaluation."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.engine import load_rules
from streams.generate.personas import history
from streams.pipeline.outbox import OutboxEntry
from streams.pipeline.processor import PipelineContext, Record, process_batch
from streams.settings import Settings
from streams.store.memory import MemoryStore
from tests.kit import CONTROL_SECRET, memory_store
from tests.kit import control as signed

PACK = load_rules(Path(__file__).resolve().parents[2] / "rules")


async def run(events: list[dict], incremental: bool, clock: str) -> list[bytes]:
    config = Settings(
        clock=clock,  # type: ignore[arg-type]
        incremental_evaluation=incremental,
        idle_settle_s=0,
        control_secret=CONTROL_SECRET,
    )
    ctx = PipelineContext.create(config, PACK, MemoryStore(), 1)
    records = [
        Record("segmenter.events", 0, i, None, orjson.dumps(e)) for i, e in enumerate(events)
    ]
    for start in range(0, len(records), 97):
        await process_batch(ctx, records[start : start + 97])
    # everything up to the last event is over (a control record never moves time past it)
    last = max(datetime.fromisoformat(e["timestamp"]).timestamp() for e in events)
    control, headers = signed(last)
    await process_batch(ctx, [Record("segmenter.events", 0, len(records), None, control, headers)])
    store = memory_store(ctx)
    return [
        raw
        for raw in store.outboxes.get(0, [])
        if OutboxEntry.decode(raw).topic == "segmenter.migrations"
    ]


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(min_value=0, max_value=10_000), customers=st.integers(4, 12))
async def test_incremental_equals_full_evaluation(seed: int, customers: int) -> None:
    events = history(seed, customers, days=75, start=datetime(2026, 1, 1, tzinfo=UTC))
    full = await run(events, incremental=False, clock="event")
    fast = await run(events, incremental=True, clock="event")
    assert len(full) > customers, "the history must move customers between segments"
    assert fast == full
