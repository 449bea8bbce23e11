"""``CustomerLogic``'s catch-up, ``notify_at`` and ``counted``: what the batch asks a customer
before a change, driven directly (no batch, no store). Expectations worked out by hand from the
two rules of ``test_customer_logic``: ``buyer`` holds while an order is within 30 days, ``big``
while lifetime revenue is at least 100.
"""

from __future__ import annotations

from streams.pipeline.logic import CustomerLogic
from streams.state.customer import CustomerState
from tests.unit.test_customer_logic import DAY, T0, logic_for, moves, order


def bought(revenue: float) -> CustomerLogic:
    """A customer with one order at T0, its instant still open."""
    logic = logic_for(CustomerState("ada"))
    logic.on_event(order("o1", T0, revenue), T0, "d1", in_windows=True)
    return logic


def test_notify_at_names_the_open_instant_then_only_the_timer() -> None:
    logic = bought(60.0)
    assert logic.notify_at() == (T0 + 30 * DAY, T0)
    logic.close()
    assert logic.notify_at() == (T0 + 30 * DAY, None)


def test_catch_up_closes_the_earlier_instant_then_fires_the_timers_before_now() -> None:
    logic = bought(60.0)
    effects = logic.catch_up(T0 + 40 * DAY)
    assert moves(effects) == [("buyer", "entered", "event"), ("buyer", "exited", "time")]
    assert effects.timers_fired == 1
    assert logic.notify_at() == (None, None)


def test_catch_up_at_the_open_instant_leaves_it_open() -> None:
    logic = bought(60.0)
    logic.drained(logic.effects)
    effects = logic.catch_up(T0)
    assert moves(effects) == [] and not effects.changed
    assert logic.notify_at() == (T0 + 30 * DAY, T0)


def test_catch_up_under_other_rules_re_evaluates_as_a_rule_change() -> None:
    logic = bought(120.0)
    logic.close()
    logic.drained(logic.effects)
    logic.state.evaluated_under = "an older pack"
    logic.state.members.pop("big")
    effects = logic.catch_up(T0 + DAY)
    assert moves(effects) == [("big", "entered", "rule_change")]


def test_counted_knows_redeliveries_and_what_an_import_counted() -> None:
    logic = bought(60.0)
    assert logic.counted("d1", T0) and not logic.counted("d2", T0)
    logic.state.imported_until = T0 + DAY
    assert logic.counted("d9", T0 + DAY) and not logic.counted("d9", T0 + DAY + 0.001)
