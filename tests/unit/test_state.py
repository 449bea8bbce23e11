"""Customer state: applying events, windows in time buckets, pruning, JSON round trip."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import orjson

from streams.engine import MISSING, parse_rules
from streams.events.models import BaseEvent
from streams.state.apply import apply_event, message_digest, prune, remember, seen_before
from streams.state.customer import CustomerState
from streams.state.facts import StateFacts
from streams.state.merge import merge_profiles
from tests.events import event, parsed
from tests.kit import condition_series

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
BY_EVENT = {spec.event: [spec] for spec in condition_series(RULES)}
DAY = 86400.0


def ev(ts: float, **fields: object) -> BaseEvent:
    return parsed(event("track", f"m{ts}", "u", ts, **fields))


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
    facts = StateFacts(state, t0 + 2 * DAY)
    (spec,) = condition_series(RULES)
    assert facts.window_count(spec.id, 7 * DAY) == 2
    assert facts.window_sum(spec.id, "revenue", 7 * DAY) == 105.0
    assert facts.metric("average_order_value") == 155.0 / 3
    assert RULES.evaluate(facts).members == {"shoe_fan"}
    just_before = StateFacts(state, t0 + 9 * DAY - 0.001)
    assert just_before.window_count(spec.id, 7 * DAY) == 1
    at_seven_days = StateFacts(state, t0 + 9 * DAY)
    assert at_seven_days.window_count(spec.id, 7 * DAY) == 0, "t - t0 < 7d, exactly"
    assert just_before.window_expiry(spec.id, 7 * DAY) == t0 + 9 * DAY


def test_identify_group_and_consent_fill_traits() -> None:
    state = CustomerState("u")
    apply_event(
        state, ev(1.0, type="identify", traits={"age": 31, "address": {"country": "CA"}}), {}, 1.0
    )
    apply_event(
        state, ev(2.0, type="group", groupId="acme", traits={"employee_count": 1200}), {}, 2.0
    )
    apply_event(state, ev(3.0, type="consent", categoryPreferences={"marketing": False}), {}, 3.0)
    facts = StateFacts(state, 3.0)
    assert facts.trait("address.country") == "CA"
    assert facts.trait("company.employee_count") == 1200
    assert facts.trait("company.id") == "acme"
    assert facts.trait("consent.marketing") is False
    assert facts.trait("address.city") is MISSING
    assert state.events == 0, "identify, group and consent are not behavioral events"


def test_old_buckets_are_pruned_and_events_beyond_the_horizon_skip_windows() -> None:
    state = CustomerState("u")
    (spec,) = condition_series(RULES)
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


def full_state() -> CustomerState:
    """A state with every kind of instant: whole milliseconds, finer, and integral seconds."""
    state = CustomerState("u")
    t0 = 1_800_000_000.123
    apply_event(state, order(t0, 120, "shoes"), BY_EVENT, t0)
    apply_event(state, order(t0 + DAY, 80, "shoes"), BY_EVENT, t0 + DAY)
    apply_event(state, ev(t0 + 5, type="identify", traits={"plan": "pro"}), {}, t0 + 5)
    state.members = {"shoe_fan": t0, "late": 1_800_000_000.1234567, "midnight": 1_800_057_600.0}
    state.primary = "shoe_fan"
    state.sequence = 4
    state.due = t0 + DAY + 7 * DAY
    state.evaluated_at = round(t0 + DAY + 0.0004, 3)
    state.evaluated_under = "a6c07a530f3776dc+0123456789abcdef"
    for n in range(20):
        remember(state, message_digest(f"m{n}"), 16)
    return state


def test_the_compact_format_round_trips_exactly() -> None:
    state = full_state()
    raw = state.to_json()
    back = CustomerState.from_json(raw)
    assert back == state
    assert back.members["late"] == 1_800_000_000.1234567, "a finer instant stays as it was"
    assert back.named["Order Completed"] == state.named["Order Completed"]
    assert CustomerState.from_json(back.to_json()) == state
    doc = orjson.loads(raw)
    assert doc["fs"] == 0 and isinstance(doc["d"], int), "instants are relative milliseconds"
    assert len(doc["h"]) == 16 * 5, "16 digests of 5 characters"


def test_a_state_with_no_whole_millisecond_instant_round_trips() -> None:
    state = CustomerState("u", first_seen=1.0000001, last_seen=2.0000001, due=3.0000001)
    state.named = {"Page Viewed": [1, 1.0000001, 1.0000001]}
    raw = state.to_json()
    assert "tb" not in orjson.loads(raw)
    assert CustomerState.from_json(raw) == state


def test_states_stored_in_the_former_format_are_read() -> None:
    state = full_state()
    legacy_ring = [
        hashlib.blake2b(f"m{n}".encode(), digest_size=4).hexdigest() for n in range(4, 20)
    ]
    legacy = {
        "id": "u",
        "q": state.sequence,
        "t": state.traits,
        "fs": state.first_seen,
        "ls": state.last_seen,
        "e": state.events,
        "o": state.orders,
        "rv": state.revenue,
        "n": state.named,
        "s": {sid: [s.props, [list(b) for b in s.buckets]] for sid, s in state.series.items()},
        "m": state.members,
        "p": state.primary,
        "r": "".join(legacy_ring),
        "d": state.due,
        "ev": state.evaluated_under,
        "ea": state.evaluated_at,
    }
    # the former format did not keep the first order's value
    assert CustomerState.from_json(orjson.dumps(legacy)) == replace(state, first_revenue=None)
    as_list = CustomerState.from_json(orjson.dumps({**legacy, "r": legacy_ring}))
    assert as_list.recent == state.recent


def test_redeliveries_are_still_detected_after_a_round_trip() -> None:
    state = CustomerState("u")
    remember(state, message_digest("m1"), 16)
    back = CustomerState.from_json(state.to_json())
    assert seen_before(back, message_digest("m1")) and not seen_before(back, message_digest("m2"))
    legacy_ring = hashlib.blake2b(b"m1", digest_size=4).hexdigest()
    legacy = CustomerState.from_json(orjson.dumps({"id": "u", "q": 1, "r": legacy_ring}))
    assert seen_before(legacy, message_digest("m1")), "a message seen before the upgrade"
    merged = merge_profiles(CustomerState("v"), legacy, 16)
    again = CustomerState.from_json(merged.to_json())
    assert seen_before(again, message_digest("m1"))
