"""A small reliability run in the normal suite: one worker SIGKILL and one Redis crash.

The full-size run is ``make test-reliability`` (``tests/reliability``). Also here: the smallest
reproduction of a bug the run found (timers fired by another partition's watermark, fixed in
``WorkingSet`` with one timer heap per partition).
"""

from __future__ import annotations

import orjson
import pytest

from streams.engine import parse_rules
from streams.pipeline.outbox import OutboxEntry
from streams.pipeline.processor import PipelineContext, Record, process_batch
from streams.pipeline.routing import partition_for
from streams.settings import Settings
from streams.store.memory import MemoryStore
from tests.kit import memory_store
from tests.reliability.run_reliability import Config, describe, run

RECENT = {
    "recent.yaml": """
id: recent_adder
name: Recent adder
description: added to the cart in the last hour
kind: behavioral
condition: {type: recency, event: Product Added, within: 1h}
"""
}


def _on(partition: int, prefix: str) -> str:
    return next(
        cid
        for cid in (f"{prefix}{n}" for n in range(1000))
        if partition_for(cid.encode(), 2) == partition
    )


def _added(cid: str, mid: str, ts: str) -> Record:
    doc = {"type": "track", "messageId": mid, "userId": cid, "timestamp": ts}
    doc |= {"event": "Product Added", "properties": {}}
    return Record(
        "segmenter.events", partition_for(cid.encode(), 2), 0, cid.encode(), orjson.dumps(doc)
    )


async def _moves(batches: list[list[Record]]) -> list[tuple[str, str, str]]:
    ctx = PipelineContext.create(
        Settings(clock="event", idle_settle_s=0), parse_rules(RECENT), MemoryStore(), 2
    )
    for batch in batches:
        await process_batch(ctx, batch)
    store = memory_store(ctx)
    out = []
    for partition in sorted(store.outboxes):
        for raw in store.outboxes[partition]:
            entry = OutboxEntry.decode(raw)
            if entry.topic == ctx.settings.migrations_topic:
                doc = orjson.loads(entry.value or b"")
                out.append((doc["customer_id"], doc["direction"], doc["trigger"]["kind"]))
    return out


def _pair() -> tuple[Record, Record]:
    # x lives on partition 0 (clock 10:00, watermark 09:55): its 1 h timer is due at 11:00.
    # y lives on partition 1 (clock 12:00, watermark 11:55).
    x, y = _on(0, "x"), _on(1, "y")
    return _added(x, "m1", "2026-01-01T10:00:00Z"), _added(y, "m2", "2026-01-01T12:00:00Z")


async def test_a_partition_watermark_never_fires_another_partitions_timers() -> None:
    x_event, y_event = _pair()
    separate = await _moves([[x_event], [y_event]])
    mixed = await _moves([[x_event, y_event]])
    assert x_event.key is not None
    assert (x_event.key.decode(), "exited", "time") not in mixed
    assert mixed == separate


@pytest.mark.integration
@pytest.mark.timeout(180)
async def test_small_reliability_run_loses_and_duplicates_nothing(kafka_bootstrap: str) -> None:
    config = Config(
        events=5000,
        customers=500,
        kill_every=4.0,
        max_kills=1,
        redis_at=0.55,
        rate=400.0,
        timeout=150.0,
    )
    lines: list[str] = []
    result = await run(config, kafka=kafka_bootstrap, log=lines.append)
    report = describe(result) + "\n" + "\n".join(lines)
    print(result.summary)
    assert result.lost == 0, report
    assert result.duplicates_after_dedupe == 0, report
    assert result.dlq == result.malformed, report
    assert result.memberships_equal, report
    assert not result.order_mismatches, report
    assert result.value_mismatches == 0, report
    assert not result.sequence_gaps, report
    assert result.kills == 1 and result.redis_restarts == 1, report
