"""Exact instants: timestamps to the ms, ``t - t0 < D`` on floats, due times, compaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.engine import parse_rules
from streams.engine.instants import ceil_instant, instant_of, to_ms
from streams.engine.nextdue import RecencyDue
from streams.events.models import BaseEvent
from streams.pipeline.timekeeping import EventTime, ManualClock, ProcessingTime, Watermark
from streams.state.apply import apply_event, compact
from streams.state.customer import CustomerState
from streams.state.facts import StateFacts
from tests.events import order, parsed

WINDOW = parse_rules(
    {
        "w.yaml": """
id: w
name: W
description: an order within the window
kind: behavioral
condition: {type: event_count, event: Order Completed, within: 90d, op: ge, value: 1}
"""
    }
)
(SPEC,) = WINDOW.series
BY_EVENT = {SPEC.event: [SPEC]}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# epoch milliseconds from 1971 to 2100, durations from 1 ms to 400 days
MOMENTS = st.integers(min_value=31_536_000_000, max_value=4_102_444_800_000)
DURATIONS = st.integers(min_value=1, max_value=400 * 86_400_000)


def order_at(ms: int, message_id: str = "m") -> BaseEvent:
    return parsed(order(message_id, "u", 5, EPOCH + timedelta(milliseconds=ms)))


def test_timestamps_are_truncated_to_the_millisecond() -> None:
    moment = datetime(2026, 3, 1, 10, 0, 0, 123_999, tzinfo=UTC)
    assert to_ms(instant_of(moment)) == to_ms(
        datetime(2026, 3, 1, 10, 0, 0, 123_000, tzinfo=UTC).timestamp()
    )
    before_epoch = datetime(1969, 12, 31, 23, 59, 59, 999_500, tzinfo=UTC)
    assert to_ms(instant_of(before_epoch)) == -1, "floor, not toward zero"


@settings(max_examples=300, deadline=None)
@given(t0=MOMENTS, window=DURATIONS)
def test_recency_due_is_exactly_t0_plus_the_window(t0: int, window: int) -> None:
    last = t0 / 1000
    due = ceil_instant(last + window / 1000)
    assert to_ms(due) == t0 + window
    assert RecencyDue("Order Completed", (window / 1000,)).at(_Last(last, due - 0.001)) == due


@settings(max_examples=300, deadline=None)
@given(t0=MOMENTS, days=st.integers(min_value=0, max_value=200), extra=st.integers(-3, 3))
def test_a_90_day_window_holds_an_event_iff_t_minus_t0_is_under_90_days(
    t0: int, days: int, extra: int
) -> None:
    state = CustomerState("u")
    apply_event(state, order_at(t0), BY_EVENT, t0 / 1000)
    now = t0 + days * 86_400_000 + extra
    count = StateFacts(state, now / 1000).window_count(SPEC.id, 90 * 86400.0)
    assert count == (1 if 0 <= now - t0 < 90 * 86_400_000 else 0)


@settings(max_examples=200, deadline=None)
@given(
    times=st.lists(st.integers(0, 60 * 86_400_000), min_size=1, max_size=40),
    limit=st.integers(1, 8),
    after=st.integers(0, 200 * 86_400_000),
)
def test_compaction_never_overstates_a_window(times: list[int], limit: int, after: int) -> None:
    """At any instant after the events (rules are never evaluated before an applied event)."""
    base = 1_800_000_000_000
    entries = [[(base + t) / 1000, 1, 0] for t in sorted(set(times))]
    exact = [list(e) for e in entries]
    compact(entries, limit)
    assert len(entries) <= limit
    assert sum(e[1] for e in entries) == len(exact), "compaction keeps every event"
    now = (base + max(times) + after) / 1000
    window = 90 * 86400.0

    def count(rows: list[list[float]]) -> float:
        return sum(r[1] for r in rows if 0 <= now - r[0] < window)

    assert count(entries) <= count(exact)


def test_watermarks_let_events_at_an_instant_go_before_timers_due_then() -> None:
    mode = EventTime(lateness_s=0)
    at = 1_800_000_000.0
    assert not mode.watermark(0, at).passed(at), "a timer due at the clock waits"
    assert mode.watermark(0, at).passed(at - 0.001)
    assert Watermark.through(at).passed(at)
    processing = ProcessingTime()
    assert processing.evaluation_instant(at, at + 3600, None) == at, "a stamp ahead is ignored"
    assert processing.closing_watermark(at, None).passed(at)
    clock = ManualClock(at)
    clock.advance(0.001)
    assert to_ms(clock.now()) == to_ms(at) + 1


class _Last:
    """Facts with one last order, at ``now``."""

    def __init__(self, last: float, now: float) -> None:
        self._last = last
        self.now = now

    def last_time(self, _event: str) -> float | None:
        return self._last
