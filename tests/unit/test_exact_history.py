"""The pipeline against the independent exact reference (``tests/exact_model.py``), in process.

The reference is checked on hand-computed cases first; then generated histories with ties on
purpose go through ``process_batch`` (event time, no lateness, the in-memory store) in random
batches, and every customer's migrations must equal the reference's, time to the millisecond.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.engine import load_rules
from streams.pipeline.outbox import OutboxEntry
from streams.pipeline.processor import PipelineContext, Record, process_batch
from streams.settings import Settings
from streams.store.memory import MemoryStore
from tests.exact_model import (
    DAY,
    ORDER,
    PACK,
    VIEW,
    Migration,
    by_instant,
    expected_migrations,
    history,
    ms,
)
from tests.kit import CONTROL_SECRET, memory_store
from tests.kit import control as signed

ROOT = Path(__file__).resolve().parents[2]
RULES = load_rules(ROOT / PACK)
T0 = ms("2025-03-01T00:00:00Z")


def track(mid: str, user: str, at: int, name: str = ORDER, revenue: int = 50) -> dict[str, Any]:
    stamp = _iso(at)
    props = {"revenue": revenue} if name == ORDER else {}
    doc = {"type": "track", "messageId": mid, "userId": user, "timestamp": stamp}
    return {**doc, "event": name, "properties": props}


def _iso(at: int) -> str:
    from datetime import UTC, datetime, timedelta

    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=at)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- the reference itself, by hand --------------------------------------------------------------


def test_reference_an_order_leaves_90_days_exactly_after_it() -> None:
    got = expected_migrations([track("a", "u", T0), track("z", "zed", T0 + 200 * DAY)])
    assert ("lapsed", "entered", T0 + 90 * DAY, "time") in got["u"]
    assert ("recent_buyer", "exited", T0 + 30 * DAY, "time") in got["u"]


def test_reference_an_order_exactly_30_days_later_keeps_recent_buyer() -> None:
    docs = [track("a", "u", T0), track("b", "u", T0 + 30 * DAY)]
    recent = [m for m in expected_migrations(docs)["u"] if m[0] == "recent_buyer"]
    assert recent == [("recent_buyer", "entered", T0, "event")]


def test_reference_two_orders_at_one_instant_are_one_change() -> None:
    docs = [track("a", "u", T0, revenue=150), track("b", "u", T0, revenue=150)]
    assert expected_migrations(docs)["u"] == [
        ("avg_30d", "entered", T0, "event"),
        ("big_spender", "entered", T0, "event"),
        ("recent_buyer", "entered", T0, "event"),
        ("repeat_buyer", "entered", T0, "event"),
        ("spender_90d", "entered", T0, "event"),
    ]


def test_reference_averages_the_window_and_counts_views_at_the_edge() -> None:
    docs = [
        track("a", "u", T0, revenue=150),
        track("b", "u", T0 + DAY, revenue=20),
        track("v1", "u", T0, VIEW),
        track("v2", "u", T0 + 7 * DAY - 1, VIEW),
        track("z", "zed", T0 + 40 * DAY),
    ]
    got = expected_migrations(docs)["u"]
    assert ("avg_30d", "exited", T0 + DAY, "event") in got, "(150 + 20) / 2 < 100"
    assert ("browser", "entered", T0 + 7 * DAY - 1, "event") in got
    assert ("browser", "exited", T0 + 7 * DAY, "time") in got, "the first view leaves at 7d"


# -- the pipeline against it ----------------------------------------------------------------------


def run(docs: list[dict[str, Any]], seed: int = 0) -> tuple[dict[str, list[Migration]], dict]:
    """The docs through ``process_batch`` in random batches, then the replay's control record."""
    ctx = PipelineContext.create(
        Settings(
            clock="event", allowed_lateness_s=0, idle_settle_s=0, control_secret=CONTROL_SECRET
        ),
        RULES,
        MemoryStore(),
        1,
    )
    rng = random.Random(seed)
    records = [
        Record("segmenter.events", 0, i, str(doc["userId"]).encode(), orjson.dumps(doc))
        for i, doc in enumerate(docs)
    ]
    last = max(ms(doc["timestamp"]) for doc in docs)
    value, headers = signed(last / 1000)
    records.append(Record("segmenter.events", 0, len(records), None, value, headers))

    async def feed() -> None:
        start = 0
        while start < len(records):
            size = rng.choice((1, 2, 3, 7, 50, 500))
            await process_batch(ctx, records[start : start + size])
            start += size

    asyncio.run(feed())
    store = memory_store(ctx)
    got: dict[str, list[Migration]] = {}
    sequences: dict[str, list[int]] = {}
    for raw in store.outboxes.get(0, []):
        entry = OutboxEntry.decode(raw)
        assert entry.topic != ctx.settings.dlq_topic, entry
        if entry.topic != ctx.settings.migrations_topic:
            continue
        data = orjson.loads(entry.value or b"")
        when = ms(dict(entry.headers)["ce_time"].decode())
        cid = data["customer_id"]
        got.setdefault(cid, []).append(
            (data["segment"], data["direction"], when, data["trigger"]["kind"])
        )
        sequences.setdefault(cid, []).append(data["sequence"])
    return got, sequences


def check(docs: list[dict[str, Any]], seed: int = 0) -> None:
    want = expected_migrations(docs)
    got, sequences = run(docs, seed)
    for cid, moves in got.items():
        times = [m[2] for m in moves]
        assert times == sorted(times), f"{cid}: migrations out of time order"
        assert sequences[cid] == list(range(1, len(moves) + 1)), cid
    differing = sorted(
        c for c in set(want) | set(got) if by_instant(got.get(c, [])) != want.get(c, [])
    )
    shown = {
        c: {"pipeline": by_instant(got.get(c, [])), "reference": want.get(c)} for c in differing[:3]
    }
    assert not differing, f"{len(differing)} customers differ, e.g. {shown}"


def test_a_generated_history_matches_the_reference_transition_for_transition() -> None:
    docs = history(seed=7, customers=400, days=240)
    ties = len(docs) - len({(d["userId"], d["timestamp"]) for d in docs})
    assert ties > 20, "the history has same-instant events on purpose"
    check(docs, seed=1)


TIMES = st.sampled_from(
    (0, 1, 7 * DAY - 1, 7 * DAY, 30 * DAY - 1, 30 * DAY, 90 * DAY - 1, 90 * DAY)
)


@st.composite
def small_histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    """1 to 3 customers whose events sit on window edges of each other, many at one instant."""
    events: list[tuple[int, str, str, int]] = []
    for n in range(draw(st.integers(1, 3))):
        at = T0 + draw(st.integers(0, 3)) * DAY
        for _ in range(draw(st.integers(1, 6))):
            at += draw(TIMES)
            name = draw(st.sampled_from((ORDER, ORDER, VIEW)))
            events.append((at, f"u{n}", name, draw(st.sampled_from((20, 100, 150, 250)))))
    events.sort(key=lambda e: e[0])
    return [track(f"m{i}", user, at, name, rev) for i, (at, user, name, rev) in enumerate(events)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=small_histories(), seed=st.integers(0, 1000))
def test_tied_histories_match_the_reference_whatever_the_batching(
    docs: list[dict[str, Any]], seed: int
) -> None:
    check(docs, seed)
