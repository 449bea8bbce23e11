"""One bad input, or one bad customer, never stops a partition (issue: poison input).

Each case runs the real batch processor over the in-memory store: the bad record or customer
goes to the DLQ (or is quarantined), and the normal events around it are applied, checked
against what plain Python says they should give.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from streams.engine import load_rules
from streams.pipeline.logic import CustomerLogic
from streams.pipeline.outbox import OutboxEntry
from streams.pipeline.processor import PipelineContext, Record, process_batch
from streams.pipeline.timekeeping import ManualClock
from streams.settings import Settings
from streams.state.customer import CustomerState
from streams.store.base import StoredState
from streams.store.memory import MemoryStore
from tests import events
from tests.events import encoded

RULES = load_rules(Path(__file__).resolve().parents[2] / "rules")
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def context(**settings: object) -> tuple[PipelineContext, MemoryStore]:
    store = MemoryStore()
    clock = ManualClock(NOW.timestamp())
    config = Settings(**settings)  # type: ignore[arg-type]
    return PipelineContext.create(config, RULES, store, 1, clock=clock), store


def order(mid: str, user: str, revenue: object, when: datetime = NOW) -> bytes:
    return encoded(events.order(mid, user, revenue, when))


def records(values: list[bytes]) -> list[Record]:
    return [Record("segmenter.events", 0, i, None, v) for i, v in enumerate(values)]


def dead_letters(store: MemoryStore) -> list[tuple[str, str]]:
    found = []
    for raw in store.outboxes.get(0, []):
        entry = OutboxEntry.decode(raw)
        if entry.topic == "segmenter.events.dlq":
            headers = dict(entry.headers)
            found.append(
                (
                    headers["segmenter.error.kind"].decode(),
                    orjson.loads(entry.value or b"{}")["messageId"],
                )
            )
    return found


def stored(store: MemoryStore, cid: str) -> CustomerState:
    return CustomerState.from_json(store.states[cid].data)


@pytest.mark.parametrize(
    "timestamp",
    ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "1969-12-31T23:59:59Z"],
)
async def test_a_time_outside_the_range_goes_to_the_dlq(timestamp: str) -> None:
    ctx, store = context()
    bad = orjson.loads(order("bad", "u1", 10))
    bad["timestamp"] = timestamp
    await process_batch(
        ctx, records([order("a", "u1", 10), orjson.dumps(bad), order("b", "u1", 5)])
    )
    assert dead_letters(store) == [("schema", "bad")]
    assert stored(store, "u1").orders == 2


async def test_processing_time_refuses_events_stamped_far_ahead() -> None:
    ctx, store = context(max_future_s=86400)
    ahead = NOW + timedelta(days=2)
    soon = NOW + timedelta(hours=23)
    batch = [order("far", "u1", 10, ahead), order("near", "u1", 10, soon), order("now", "u1", 1)]
    await process_batch(ctx, records(batch))
    assert dead_letters(store) == [("schema", "far")]
    assert stored(store, "u1").orders == 2


@pytest.mark.parametrize("revenue", ["NaN", "Infinity", "-Infinity", "1e400", 1e16, "12abc"])
async def test_a_number_the_engine_cannot_add_is_ignored(revenue: object) -> None:
    """Revenue that is not finite or beyond 1e15 counts as absent: the order is counted, its
    value is not, and the state stays readable (lifetime revenue = the plain-Python sum)."""
    ctx, store = context()
    await process_batch(
        ctx, records([order("a", "u1", 10), order("b", "u1", revenue), order("c", "u1", 2.5)])
    )
    state = stored(store, "u1")
    assert (state.orders, state.revenue) == (3, 12.5)
    assert dead_letters(store) == []


async def test_huge_revenues_never_overflow_the_sum() -> None:
    ctx, store = context()
    await process_batch(
        ctx, records([order("a", "u1", 1e308), order("b", "u1", 1e308), order("c", "u1", 1e15)])
    )
    state = stored(store, "u1")
    assert (state.orders, state.revenue) == (3, 1e15)


async def test_an_unreadable_state_quarantines_that_customer_only() -> None:
    """A corrupt stored state: its customer's events go to the DLQ (kind processing), its timer
    is dropped, and everyone else's events are applied."""
    ctx, store = context()
    store.states["broken"] = StoredState(3, b'{"id": "broken", "rv": null}')
    store.timers[0] = {"broken": NOW.timestamp() - 60}
    batch = [order("a", "u1", 10), order("b", "broken", 10), order("c", "u2", 20)]
    await process_batch(ctx, records(batch))
    assert dead_letters(store) == [("processing", "b")]
    assert (stored(store, "u1").orders, stored(store, "u2").orders) == (1, 1)
    assert store.states["broken"] == StoredState(3, b'{"id": "broken", "rv": null}')
    assert "broken" not in store.timers.get(0, {})
    assert ctx.metrics.quarantined == 1
    # the next batch goes on as usual
    await process_batch(ctx, [Record("segmenter.events", 0, 3, None, order("d", "u1", 1))])
    assert stored(store, "u1").orders == 2


async def test_a_timer_that_fails_quarantines_its_customer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in firing one customer's timer (here forced) leaves that customer as it was and
    applies the rest of the batch."""
    ctx, store = context()
    await process_batch(ctx, records([order("a", "victim", 10, NOW - timedelta(days=100))]))
    due = stored(store, "victim").due
    assert due is not None
    clock = ctx.clock
    assert isinstance(clock, ManualClock)
    clock.advance(due - clock.now() + 1)
    before = store.states["victim"]
    real = CustomerLogic.on_timer

    def failing(self: CustomerLogic, due: float) -> object:
        if self.state.customer_id == "victim":
            raise RuntimeError("a bug")
        return real(self, due)

    monkeypatch.setattr(CustomerLogic, "on_timer", failing)
    later = [Record("segmenter.events", 0, 1, None, order("b", "u1", 10))]
    await process_batch(ctx, later)
    assert store.states["victim"] == before
    assert stored(store, "u1").orders == 1
    assert ctx.metrics.quarantined == 1
    assert "victim" not in store.timers.get(0, {})
