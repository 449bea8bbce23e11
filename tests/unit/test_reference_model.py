"""Hand-checked cases of the reference model itself, so its verdicts can be trusted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from streams.engine import parse_rules
from tests.kit import condition_series
from tests.reference_model import Applied, NaiveFacts, durations_in, fold, run_model, to_ms

PACK = Path(__file__).resolve().parents[2] / "rules"
USED = ("lifecycle.yaml", "cart_abandoner.yaml", "frequent_visitor.yaml")
PACK_SOURCES = {name: (PACK / name).read_text() for name in USED}
"""The default pack's files these cases are about (the whole pack has segments, like predicted
value tiers, whose flip instants the model's candidate instants do not cover)."""
T0 = datetime(2026, 3, 2, 10, 10, tzinfo=UTC)
DAY = 86400


def at(seconds: float = 0) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def ms(seconds: float = 0) -> int:
    return to_ms(at(seconds))


def track(mid: str, user: str, name: str, seconds: float, **props: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": mid,
        "userId": user,
        "timestamp": at(seconds),
        "event": name,
        "properties": props,
    }


def page(mid: str, user: str, seconds: float) -> dict[str, Any]:
    return {"type": "page", "messageId": mid, "userId": user, "timestamp": at(seconds)}


def of(result_migrations: list[tuple[str, str, int, str]], *segments: str) -> list[Any]:
    return [m for m in result_migrations if m[0] in segments]


def test_durations_are_read_from_the_rule_text() -> None:
    durations = durations_in(PACK_SOURCES)
    assert {3600.0, 86400.0, 30 * 86400.0, 60 * 86400.0, 90 * 86400.0} <= durations
    assert durations_in({"x.yaml": "id: x\ncondition: {type: trait, path: a, op: exists}"}) == set()


def test_lapsed_exactly_90_days_after_the_last_order() -> None:
    rules = parse_rules(PACK_SOURCES)
    events = [
        track("o1", "ada", "Order Completed", 0, revenue=40),
        track("o2", "ada", "Order Completed", 10 * DAY, total=15),
        page("late", "zed", 200 * DAY),
    ]
    result = run_model(rules, events, durations_in(PACK_SOURCES), lateness_s=300)
    lifecycle = [m for m in result.migrations["ada"] if m[0] in rules.families["lifecycle"]]
    assert lifecycle == [
        ("new_customer", "entered", ms(0), "event"),
        # the second order ends "first order" and the customer is simply active
        ("new_customer", "exited", ms(10 * DAY), "event"),
        ("active", "entered", ms(10 * DAY), "event"),
        ("active", "exited", ms(70 * DAY), "time"),
        ("at_risk", "entered", ms(70 * DAY), "time"),
        ("at_risk", "exited", ms(100 * DAY), "time"),
        ("lapsed", "entered", ms(100 * DAY), "time"),
    ]
    assert "lapsed" in result.final["ada"]
    assert fold(result.migrations["ada"]) == result.final["ada"]


def test_cart_abandoner_one_hour_after_the_add_and_out_exactly_a_day_after_it() -> None:
    rules = parse_rules(PACK_SOURCES)
    events = [
        track("a1", "cy", "Product Added", 0, price=20),
        track("a2", "dee", "Product Added", 0, price=20),
        track("c1", "dee", "Checkout Started", 20 * 60),
        page("tick", "zed", 3 * DAY),
    ]
    result = run_model(rules, events, durations_in(PACK_SOURCES), lateness_s=300)
    # the add leaves the 1-day window exactly one day after it
    assert of(result.migrations["cy"], "cart_abandoner") == [
        ("cart_abandoner", "entered", ms(3600), "time"),
        ("cart_abandoner", "exited", ms(DAY), "time"),
    ]
    # dee checked out 20 minutes after the add: the checkout is within 1d until the add has
    # left its 1-day window, so dee is never an abandoner
    assert of(result.migrations["dee"], "cart_abandoner") == []


def test_a_window_count_drops_exactly_when_the_oldest_event_leaves_the_window() -> None:
    rules = parse_rules(PACK_SOURCES)
    events = [page(f"v{i}", "ed", i * DAY + 5 * 3600) for i in range(5)]
    events.append(page("tick", "zed", 30 * DAY))
    result = run_model(rules, events, durations_in(PACK_SOURCES), lateness_s=300)
    assert of(result.migrations["ed"], "frequent_visitor") == [
        ("frequent_visitor", "entered", ms(4 * DAY + 5 * 3600), "event"),
        ("frequent_visitor", "exited", ms(7 * DAY + 5 * 3600), "time"),
    ]


BUSY = {
    "busy.yaml": """
id: busy
name: Busy
description: three page views within an hour
kind: behavioral
condition: {type: event_count, event: Page Viewed, within: 1h, op: ge, value: 3}
""",
    "pro.yaml": """
id: pro
name: Pro
description: on the pro plan
kind: firmographic
condition: {type: trait, path: plan, op: eq, value: pro}
""",
}


def test_naive_window_semantics_at_the_exact_edge() -> None:
    rules = parse_rules(BUSY)
    (spec,) = condition_series(rules)
    views = [page(f"v{i}", "ed", i * 60 + 30) for i in range(3)]
    result = run_model(rules, views, durations_in(BUSY), lateness_s=0, end_ms=ms(2 * 3600))
    applied = [Applied(to_ms(v["timestamp"]), "page", "Page Viewed", {}, {}, True) for v in views]
    first_leaves = ms(30) + 3600_000  # t - t0 < 1h: the first view is out at t0 + 1h exactly
    at_edge = NaiveFacts(applied, first_leaves - 1, {spec.id: spec})
    after = NaiveFacts(applied, first_leaves, {spec.id: spec})
    assert at_edge.window_count(spec.id, 3600) == 3
    assert after.window_count(spec.id, 3600) == 2
    assert at_edge.window_expiry(spec.id, 3600) == first_leaves / 1000
    assert result.migrations["ed"] == [
        ("busy", "entered", ms(150), "event"),
        ("busy", "exited", first_leaves, "time"),
    ]


def test_duplicates_are_ignored_and_traits_merge_in_processing_order() -> None:
    rules = parse_rules(BUSY)
    ident = {
        "type": "identify",
        "messageId": "i1",
        "userId": "ivy",
        "timestamp": at(0),
        "traits": {"plan": "pro", "seats": 3},
    }
    downgrade = dict(ident, messageId="i2", timestamp=at(60), traits={"plan": "free"})
    views = [page("v1", "ivy", 100), page("v1", "ivy", 100), page("v1", "ivy", 100)]
    result = run_model(rules, [ident, *views, downgrade, ident], durations_in(BUSY), 0)
    assert result.migrations["ivy"] == [
        ("pro", "entered", ms(0), "event"),
        ("pro", "exited", ms(60), "event"),
    ]
    assert result.final["ivy"] == frozenset()
    # an older identify arriving last still wins: traits merge in arrival order
    # (both late identifies are judged at ivy's own instant, the views' 100 s: out and back in
    # at one instant, so nothing is published)
    upgrade = dict(ident, messageId="i3", timestamp=at(30), traits={"plan": "pro"})
    again = run_model(rules, [ident, *views, downgrade, upgrade], durations_in(BUSY), 0)
    assert again.migrations["ivy"] == [("pro", "entered", ms(0), "event")]
    assert again.final["ivy"] == frozenset({"pro"})


def test_a_reordered_event_is_evaluated_at_the_customers_own_time() -> None:
    rules = parse_rules(BUSY)
    events = [page("v1", "ed", 0), page("v3", "ed", 200), page("v2", "ed", 100)]
    result = run_model(rules, events, durations_in(BUSY), lateness_s=300)
    assert result.migrations["ed"][0] == ("busy", "entered", ms(100), "event")


def test_an_event_later_than_the_allowed_lateness_counts_in_no_window() -> None:
    rules = parse_rules(BUSY)
    events = [page("v1", "ed", 0), page("v3", "ed", 1000), page("v2", "ed", 100)]
    late = run_model(rules, events, durations_in(BUSY), lateness_s=300)
    assert late.migrations["ed"] == []
    on_time = run_model(rules, events, durations_in(BUSY), lateness_s=900)
    assert on_time.migrations["ed"][0] == ("busy", "entered", ms(100), "event")


def test_own_timers_fire_before_the_customers_next_event_even_above_the_watermark() -> None:
    rules = parse_rules(BUSY)
    views = [page(f"v{i}", "ed", i) for i in range(3)]
    # the 4th view comes 2h later; lateness is huge so only the customer's own order fires
    result = run_model(rules, [*views, page("v9", "ed", 7200)], durations_in(BUSY), 10 * DAY)
    assert result.migrations["ed"] == [
        ("busy", "entered", ms(2), "event"),
        ("busy", "exited", ms(3600), "time"),
    ]


VIEWER = {
    "viewer.yaml": """
id: viewer
name: Viewer
description: viewed a product within 2 hours
kind: behavioral
condition: {type: recency, event: Product Viewed, within: 2h}
""",
}


def test_an_overtaken_event_does_not_pull_a_later_change_before_it() -> None:
    """cy's page view at T0+1h-10s arrives after zed's event at T0+1h+100s: cy still enters
    cart_abandoner at T0+1h exactly, by time (not at the view, by the view)."""
    rules = parse_rules({"c.yaml": PACK_SOURCES["cart_abandoner.yaml"]})
    events = [
        track("a1", "cy", "Product Added", 0),
        page("z", "zed", 3600 + 100),
        page("v", "cy", 3600 - 10),
    ]
    result = run_model(rules, events, durations_in(PACK_SOURCES), lateness_s=300)
    assert result.migrations["cy"] == [("cart_abandoner", "entered", ms(3600), "time")]


def test_an_overtaken_event_prevents_a_change_due_after_it() -> None:
    """ann's second view at T0+2h-10s arrives after ben's event at T0+2h+100s: ann never
    stops being a viewer (no exit at T0+2h)."""
    rules = parse_rules(VIEWER)
    events = [
        track("v1", "ann", "Product Viewed", 0),
        page("b", "ben", 7200 + 100),
        track("v2", "ann", "Product Viewed", 7200 - 10),
    ]
    result = run_model(rules, events, durations_in(VIEWER), lateness_s=600)
    assert result.migrations["ann"] == [("viewer", "entered", ms(0), "event")]
    end = run_model(rules, events, durations_in(VIEWER), 600, end_ms=ms(5 * 3600))
    assert end.migrations["ann"][-1] == ("viewer", "exited", ms(4 * 3600 - 10), "time")
