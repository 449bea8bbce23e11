"""Customer state: applying events, windows in time buckets, pruning, JSON round trip."""

from __future__ import annotations

from streams.engine import MISSING, parse_rules
from streams.events.decode import decode
from streams.events.models import BaseEvent
from streams.state.apply import apply_event, message_digest, prune, remember
from streams.state.customer import CustomerState
from streams.state.facts import StateFacts

RULES = parse_rules(
    {
        "shoes.yaml": """
id: shoe_fan
name: Shoe fan
description: spent 100 on shoes in a week
kind: behavioral
condition:
  type: event_sum
  event: Order Completed
  property: revenue
  where: {category: shoes}
  within: 7d
  op: ge
  value: 100
""",
    }
)
SPECS = {spec.id: spec for spec in RULES.series}
BY_EVENT = {spec.event: [spec] for spec in RULES.series}
DAY = 86400.0


def ev(ts: float, **fields: object) -> BaseEvent:
    import orjson

    from streams.events.models import iso

    base = {"type": "track", "messageId": f"m{ts}", "userId": "u", "timestamp": iso(ts)}
    base.update(fields)
    event = decode(orjson.dumps(base), 1 << 20)
    assert isinstance(event, BaseEvent), event
    return event


def order(ts: float, revenue: float, category: str) -> BaseEvent:
    return ev(ts, event="Order Completed", properties={"revenue": revenue, "category": category})


def test_orders_feed_lifetime_aggregates_and_filtered_windows() -> None:
    state = CustomerState("u")
    t0 = 1_800_000_000.0
    for ts, revenue, category in [
        (t0, 60, "shoes"),
        (t0 + DAY, 50, "hats"),
        (t0 + 2 * DAY, 45, "shoes"),
    ]:
        apply_event(state, order(ts, revenue, category), BY_EVENT, ts)
    assert state.orders == 3 and state.revenue == 155.0
    assert state.first_seen == t0 and state.last_seen == t0 + 2 * DAY
    assert state.named["Order Completed"] == [3, t0, t0 + 2 * DAY]
    facts = StateFacts(state, t0 + 2 * DAY, SPECS)
    (spec,) = RULES.series
    assert facts.window_count(spec.id, 7 * DAY) == 2
    assert facts.window_sum(spec.id, "revenue", 7 * DAY) == 105.0
    assert facts.metric("average_order_value") == 155.0 / 3
    assert RULES.evaluate(facts).members == {"shoe_fan"}
    later = StateFacts(state, t0 + 9 * DAY, SPECS)
    assert later.window_count(spec.id, 7 * DAY) == 1


def test_identify_group_and_consent_fill_traits() -> None:
    state = CustomerState("u")
    apply_event(
        state, ev(1.0, type="identify", traits={"age": 31, "address": {"country": "CA"}}), {}, 1.0
    )
    apply_event(
        state, ev(2.0, type="group", groupId="acme", traits={"employee_count": 1200}), {}, 2.0
    )
    apply_event(state, ev(3.0, type="consent", categoryPreferences={"marketing": False}), {}, 3.0)
    facts = StateFacts(state, 3.0, {})
    assert facts.trait("address.country") == "CA"
    assert facts.trait("company.employee_count") == 1200
    assert facts.trait("company.id") == "acme"
    assert facts.trait("consent.marketing") is False
    assert facts.trait("address.city") is MISSING
    assert state.events == 0, "identify, group and consent are not behavioral events"


def test_old_buckets_are_pruned_and_events_beyond_the_horizon_skip_windows() -> None:
    state = CustomerState("u")
    (spec,) = RULES.series
    t0 = 1_800_000_000.0
    apply_event(state, order(t0, 10, "shoes"), BY_EVENT, t0)
    apply_event(state, order(t0 - 30 * DAY, 10, "shoes"), BY_EVENT, t0)
    assert len(state.series[spec.id].buckets) == 1, "a closed window is not reopened"
    assert state.orders == 2, "lifetime aggregates still count the late event"
    prune(state, RULES.series, t0 + 9 * DAY)
    assert spec.id not in state.series


def test_state_round_trips_through_json() -> None:
    state = CustomerState("u")
    apply_event(state, order(1_800_000_000.0, 120, "shoes"), BY_EVENT, 1_800_000_000.0)
    apply_event(
        state, ev(1_800_000_100.0, type="identify", traits={"plan": "pro"}), {}, 1_800_000_100.0
    )
    state.members = {"shoe_fan": 1_800_000_000.0}
    state.primary = "shoe_fan"
    state.sequence = 4
    state.due = 1_800_604_800.0
    remember(state, message_digest("abc"), 16)
    assert CustomerState.from_json(state.to_json()) == state


def test_the_duplicate_ring_keeps_the_newest_digests() -> None:
    state = CustomerState("u")
    for n in range(20):
        remember(state, message_digest(f"m{n}"), 16)
    assert len(state.recent) == 16
    assert message_digest("m19") in state.recent and message_digest("m0") not in state.recent
