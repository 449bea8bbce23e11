"""``CustomerLogic`` driven directly, as bytewax tests a ``StatefulLogic``: events and timers in,
effects (member-set changes, migrations) out, ``next_due`` and ``snapshot`` read back, the clock
advanced by the test. No batch, no store, no Kafka.

The expectations are worked out by hand from the two rules: ``buyer`` holds while an order is
within 30 days, ``big`` while lifetime revenue is at least 100.
"""

from __future__ import annotations

from datetime import UTC, datetime

from streams.events.models import BaseEvent
from streams.pipeline.logic import CustomerLogic, Effects
from streams.pipeline.migrations import Trigger
from streams.state.customer import CustomerState
from tests import events
from tests.events import parsed
from tests.kit import pinned_context
from tests.unit.fakes_facts import rules_from, segment

DAY = 86400.0
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()
RULES = rules_from(
    buyer=segment(
        "buyer", "{type: event_count, event: Order Completed, within: 30d, op: ge, value: 1}"
    ),
    big=segment("big", "{type: lifetime, metric: revenue, op: ge, value: 100}"),
)


def order(mid: str, at: float, revenue: float) -> BaseEvent:
    return parsed(events.order(mid, "ada", revenue, at))


def moves(effects: Effects) -> list[tuple[str, str, str]]:
    return [(m.segment, m.direction, m.trigger.kind) for m in effects.migrations]


def logic_for(state: CustomerState) -> CustomerLogic:
    return CustomerLogic(pinned_context(RULES), state)


def test_an_order_enters_at_the_close_of_its_instant_and_a_timer_exits_it() -> None:
    logic = logic_for(CustomerState("ada"))
    effects = logic.on_event(order("o1", T0, 60.0), T0, "d1", in_windows=True)
    assert moves(effects) == [], "published when the instant is over"
    assert [(c.segment, c.delta) for c in effects.memberships] == [("buyer", 1)], "applied at once"
    assert moves(logic.close()) == [("buyer", "entered", "event")]
    assert logic.next_due() == T0 + 30 * DAY, "the order leaves the 30-day window then"
    logic.drained(logic.effects)

    expired = logic.fire_until(T0 + 30 * DAY + 1)
    assert moves(expired) == [("buyer", "exited", "time")]
    assert expired.timers_fired == 1
    assert logic.next_due() is None


def test_two_orders_at_one_instant_net_out_and_revenue_adds_up() -> None:
    logic = logic_for(CustomerState("ada"))
    logic.on_event(order("o1", T0, 60.0), T0, "d1", in_windows=True)
    logic.on_event(order("o2", T0, 50.0), T0, "d2", in_windows=True)
    published = moves(logic.close())
    assert sorted(published) == [("big", "entered", "event"), ("buyer", "entered", "event")]


def test_the_snapshot_is_the_state_the_store_keeps_and_reloads() -> None:
    logic = logic_for(CustomerState("ada"))
    logic.on_event(order("o1", T0, 120.0), T0, "d1", in_windows=True)
    logic.close()
    again = logic_for(CustomerState.from_json(logic.snapshot()))
    assert again.state.members.keys() == {"buyer", "big"}
    assert again.next_due() == logic.next_due()
    assert moves(again.fire_until(T0 + 31 * DAY)) == [("buyer", "exited", "time")]


def test_exit_all_leaves_every_segment_with_its_trigger() -> None:
    logic = logic_for(CustomerState("ada"))
    logic.on_event(order("o1", T0, 120.0), T0, "d1", in_windows=True)
    logic.close()
    logic.drained(logic.effects)
    gone = logic.exit_all(Trigger("erasure"), T0 + DAY, T0 + DAY, "erased")
    assert sorted(moves(gone)) == [("big", "exited", "erasure"), ("buyer", "exited", "erasure")]
    assert not logic.state.members
