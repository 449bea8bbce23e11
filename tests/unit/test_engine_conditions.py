"""Conditions compiled from rule files: windows, recency, lifetime, composites and reasons."""

from __future__ import annotations

import hashlib
import json

import pytest

from streams.engine import Facts, RuleSet
from tests.kit import condition_series
from tests.unit.fakes_facts import DAY, NOW, Ev, FakeFacts, rules_from, segment

HOUR = 3600.0


def one(condition: str) -> RuleSet:
    return rules_from(x=segment("x", condition))


def check(rules: RuleSet, facts: FakeFacts, seg: str = "x") -> tuple[bool, str, dict[str, object]]:
    """holds (fast path), and the explained rule and values, asserting both paths agree."""
    holds = rules.evaluate(facts).holds[seg]
    explained = rules.explain(facts)[seg]
    assert explained.holds is holds
    return holds, explained.reason.rule, explained.reason.values


def test_fake_facts_is_a_facts() -> None:
    facts: Facts = FakeFacts()
    assert facts.now == NOW


def test_trait_condition_reason_and_missing_values() -> None:
    rules = one("{type: trait, path: address.country, op: in, value: [CA, US]}")
    holds, rule, values = check(rules, FakeFacts.of(rules, traits={"address": {"country": "US"}}))
    assert (holds, rule, values) == (
        True,
        "address.country in [CA, US]",
        {"address.country": "US"},
    )
    holds, _, values = check(rules, FakeFacts.of(rules))
    assert holds is False
    assert values == {"address.country": None}


def test_trait_type_mismatch_is_false() -> None:
    rules = one("{type: trait, path: age, op: ge, value: 18}")
    assert check(rules, FakeFacts.of(rules, traits={"age": "twenty"}))[0] is False
    assert check(rules, FakeFacts.of(rules, traits={"age": 30}))[0] is True


def test_event_count_window_and_expiry() -> None:
    rules = one("{type: event_count, event: Product Added, within: 1d, op: ge, value: 2}")
    events = [Ev("Product Added", NOW - 20 * HOUR), Ev("Product Added", NOW - 2 * HOUR)]
    facts = FakeFacts.of(rules, events=[*events, Ev("Product Added", NOW - 2 * DAY)])
    holds, rule, values = check(rules, facts)
    assert holds is True
    assert rule == "count(Product Added within 1d) >= 2"
    assert values == {"count(Product Added, 1d)": 2}
    # the oldest event in the window leaves it 4 hours from now, the outcome may change then
    assert rules.next_due(facts) == NOW + 4 * HOUR
    assert check(rules, facts.at(NOW + 4 * HOUR))[0] is False


def test_empty_window_has_no_next_change() -> None:
    rules = one("{type: event_count, event: Product Added, within: 1d, op: eq, value: 0}")
    facts = FakeFacts.of(rules, events=[Ev("Product Added", NOW - 2 * DAY)])
    assert check(rules, facts)[0] is True
    assert rules.next_due(facts) is None


def test_where_filters_scalar_and_op_forms() -> None:
    rules = one(
        "{type: event_count, event: Product Added, within: 7d, op: ge, value: 2,"
        " where: {category: shoes, price: {op: ge, value: 100}}}"
    )
    events = [
        Ev("Product Added", NOW - 10, {"category": "shoes", "price": 120}),
        Ev("Product Added", NOW - 20, {"category": "shoes", "price": 100}),
        Ev("Product Added", NOW - 30, {"category": "shoes", "price": 99}),
        Ev("Product Added", NOW - 40, {"category": "hats", "price": 500}),
        Ev("Product Added", NOW - 50, {"category": "shoes"}),
    ]
    holds, rule, values = check(rules, FakeFacts.of(rules, events=events))
    assert holds is True
    assert rule == "count(Product Added where category = shoes and price >= 100 within 7d) >= 2"
    assert values == {"count(Product Added where category = shoes and price >= 100, 7d)": 2}


def test_event_sum_and_average() -> None:
    rules = rules_from(
        total=segment(
            "total",
            "{type: event_sum, event: Order Completed, property: revenue, within: 30d,"
            " op: ge, value: 300}",
        ),
        avg=segment(
            "avg",
            "{type: event_average, event: Order Completed, property: revenue, within: 30d,"
            " op: between, value: [100, 200]}",
        ),
    )
    events = [
        Ev("Order Completed", NOW - DAY, {"revenue": 100}),
        Ev("Order Completed", NOW - 2 * DAY, {"revenue": 250.5}),
        Ev("Order Completed", NOW - 40 * DAY, {"revenue": 1000}),
    ]
    facts = FakeFacts.of(rules, events=events)
    holds, rule, values = check(rules, facts, "total")
    assert holds is True
    assert rule == "sum(Order Completed.revenue within 30d) >= 300"
    assert values == {"sum(Order Completed.revenue, 30d)": 350.5}
    holds, rule, values = check(rules, facts, "avg")
    assert holds is True
    assert rule == "avg(Order Completed.revenue within 30d) between 100 and 200"
    assert values["avg(Order Completed.revenue, 30d)"] == pytest.approx(175.25)
    assert values["count(Order Completed, 30d)"] == 2


def test_average_of_no_events_is_false_for_every_op() -> None:
    rules = one(
        "{type: event_average, event: Order Completed, property: revenue, within: 30d,"
        " op: le, value: 1000}"
    )
    holds, _, values = check(rules, FakeFacts.of(rules))
    assert holds is False
    assert values["avg(Order Completed.revenue, 30d)"] is None


def test_series_are_deduplicated_with_longest_horizon_and_union_of_sums() -> None:
    rules = rules_from(
        a=segment("a", "{type: event_count, event: Order Completed, within: 1h, op: ge, value: 1}"),
        b=segment(
            "b",
            "{type: event_sum, event: Order Completed, property: revenue, within: 30d,"
            " op: ge, value: 1}",
        ),
        c=segment(
            "c",
            "{type: event_average, event: Order Completed, property: total, within: 2d,"
            " op: ge, value: 1}",
        ),
        d=segment(
            "d",
            "{type: event_count, event: Order Completed, within: 1d, op: ge, value: 1,"
            " where: {category: shoes}}",
        ),
        e=segment(
            "e",
            "{type: event_count, event: Order Completed, within: 2h, op: ge, value: 1,"
            " where: {category: {op: eq, value: shoes}}}",
        ),
    )
    assert len(rules.series) == 2
    plain, shoes = rules.series
    assert plain.event == shoes.event == "Order Completed"
    assert plain.sum_props == ("revenue", "total")
    # The pack's conversion (Order Completed, revenue, 90 days by default) shares the series.
    assert plain.horizon_s == 90 * DAY
    assert rules.conversion is not None and rules.conversion.series_id == plain.id
    assert shoes.sum_props == ()
    assert shoes.horizon_s == DAY
    assert shoes.where({"category": "shoes"}) and not shoes.where({"category": "hats"})
    assert plain.where({}) is True
    canonical = json.dumps(
        {"event": "Order Completed", "where": []}, sort_keys=True, separators=(",", ":")
    )
    assert plain.id == "s" + hashlib.sha1(canonical.encode()).hexdigest()[:10]
    assert rules.event_names == frozenset({"Order Completed"})


@pytest.mark.parametrize(
    ("ago", "within", "not_within"),
    [(None, False, True), (30 * 60, True, False), (HOUR, False, True), (5 * HOUR, False, True)],
)
def test_recency_within_and_not_within(ago: float | None, within: bool, not_within: bool) -> None:
    rules = rules_from(
        w=segment("w", "{type: recency, event: Checkout Started, within: 1h}"),
        n=segment("n", "{type: recency, event: Checkout Started, not_within: 1h}"),
    )
    events = [] if ago is None else [Ev("Checkout Started", NOW - ago)]
    facts = FakeFacts.of(rules, events=events)
    assert check(rules, facts, "w")[0] is within
    holds, rule, values = check(rules, facts, "n")
    assert holds is not_within
    assert rule == "no Checkout Started within 1h"
    expected = None if ago is None else round(ago / DAY, 3)
    assert values == {"days_since_last(Checkout Started)": expected}


def test_recency_next_change_is_when_the_last_event_leaves_the_period() -> None:
    rules = one("{type: recency, event: Order Completed, not_within: 90d}")
    facts = FakeFacts.of(rules, events=[Ev("Order Completed", NOW - 10 * DAY)])
    assert check(rules, facts)[0] is False
    due = rules.next_due(facts)
    assert due == NOW + 80 * DAY
    assert check(rules, facts.at(due))[0] is True
    assert rules.next_due(facts.at(due)) is None
    assert rules.next_due(FakeFacts.of(rules)) is None


def test_lifetime_metrics_and_missing_metric() -> None:
    rules = one("{type: lifetime, metric: revenue, op: ge, value: 1000}")
    holds, rule, values = check(rules, FakeFacts.of(rules, metrics={"revenue": 1200.0}))
    assert (holds, rule, values) == (True, "lifetime revenue >= 1000", {"revenue": 1200.0})
    assert check(rules, FakeFacts.of(rules))[0] is False
    never = one("{type: lifetime, metric: orders, op: ne, value: 5}")
    assert check(never, FakeFacts.of(never))[0] is False
    assert never.next_due(FakeFacts.of(never, metrics={"orders": 1})) is None


def test_days_since_metrics_and_their_next_change() -> None:
    rules = rules_from(
        old=segment("old", "{type: lifetime, metric: days_since_first_seen, op: ge, value: 30}"),
        quiet=segment("quiet", "{type: lifetime, metric: days_since_last_seen, op: gt, value: 7}"),
    )
    facts = FakeFacts.of(rules, metrics={"first_seen": NOW - 10 * DAY, "last_seen": NOW - DAY})
    holds, rule, values = check(rules, facts, "old")
    assert (holds, rule, values) == (
        False,
        "lifetime days_since_first_seen >= 30",
        {"days_since_first_seen": 10.0},
    )
    # 'quiet' (strictly more than 7 days) flips just after last_seen + 7d: the timer may fire
    # at the threshold and again a moment later, never after the flip
    due = rules.next_due(facts)
    assert due == NOW + 6 * DAY
    assert check(rules, facts.at(due), "quiet")[0] is False
    again = rules.next_due(facts.at(due))
    assert again is not None and due < again <= due + 0.01
    assert check(rules, facts.at(again), "quiet")[0] is True
    assert rules.next_due(facts.at(again)) == pytest.approx(NOW + 20 * DAY)
    assert check(rules, facts.at(NOW + 20 * DAY), "old")[0] is True
    assert check(rules, FakeFacts.of(rules), "old")[0] is False


def test_all_reasons_join_when_true_and_name_first_failure() -> None:
    rules = one(
        "{type: all, of: [{type: trait, path: age, op: ge, value: 18},"
        " {type: trait, path: plan, op: eq, value: pro},"
        " {type: trait, path: gender, op: eq, value: f}]}"
    )
    facts = FakeFacts.of(rules, traits={"age": 20, "plan": "pro", "gender": "f"})
    assert check(rules, facts) == (
        True,
        "age >= 18 and plan = pro and gender = f",
        {"age": 20, "plan": "pro", "gender": "f"},
    )
    facts = FakeFacts.of(rules, traits={"age": 20, "plan": "free", "gender": "m"})
    assert check(rules, facts) == (False, "plan = pro", {"plan": "free"})


def test_any_reasons_name_first_success_and_join_failures() -> None:
    rules = one(
        "{type: any, of: [{type: trait, path: plan, op: eq, value: pro},"
        " {type: all, of: [{type: trait, path: age, op: lt, value: 25},"
        " {type: trait, path: gender, op: eq, value: f}]},"
        " {type: trait, path: age, op: gt, value: 60}]}"
    )
    facts = FakeFacts.of(rules, traits={"plan": "free", "age": 70})
    assert check(rules, facts) == (True, "age > 60", {"age": 70})
    facts = FakeFacts.of(rules, traits={"plan": "free", "age": 40, "gender": "f"})
    holds, rule, values = check(rules, facts)
    assert holds is False
    assert rule == "plan = pro or age < 25 or age > 60"
    assert values == {"plan": "free", "age": 40}


def test_nested_composites_are_parenthesised() -> None:
    rules = one(
        "{type: all, of: [{type: any, of: [{type: trait, path: a, op: eq, value: 1},"
        " {type: trait, path: b, op: eq, value: 1}]}, {type: trait, path: c, op: eq, value: 1}]}"
    )
    facts = FakeFacts.of(rules, traits={"a": 0, "b": 1, "c": 1})
    assert check(rules, facts)[1] == "b = 1 and c = 1"


def test_not_and_label() -> None:
    rules = one("{type: not, condition: {type: lifetime, metric: orders, op: ge, value: 1}}")
    facts = FakeFacts.of(rules, metrics={"orders": 0})
    assert check(rules, facts) == (True, "not (lifetime orders >= 1)", {"orders": 0})
    labelled = one(
        "{type: all, label: big spender, of: [{type: lifetime, metric: revenue, op: ge,"
        " value: 10}, {type: lifetime, metric: orders, op: ge, value: 2}]}"
    )
    facts = FakeFacts.of(labelled, metrics={"revenue": 50.0, "orders": 1})
    assert check(labelled, facts) == (False, "big spender", {"orders": 1})


def test_composite_next_change_is_the_earliest_child() -> None:
    rules = one(
        "{type: any, of: [{type: recency, event: A, within: 1h},"
        " {type: not, condition: {type: recency, event: B, within: 2h}},"
        " {type: trait, path: plan, op: eq, value: pro}]}"
    )
    facts = FakeFacts.of(rules, events=[Ev("A", NOW - 1800), Ev("B", NOW - 1200)])
    assert rules.next_due(facts) == NOW + 1800
    assert rules.next_due(facts.at(NOW + 1800)) == NOW + 6000


def test_where_reads_nested_properties_and_other_ops() -> None:
    rules = one(
        "{type: event_count, event: Order Completed, within: 1d, op: eq, value: 1,"
        " where: {product.category: {op: in, value: [shoes, hats]}, coupon: {op: exists}}}"
    )
    [spec] = condition_series(rules)
    assert spec.where({"product": {"category": "hats"}, "coupon": "X"})
    assert spec.where({"product.category": "shoes", "coupon": "X"})
    assert not spec.where({"product": {"category": "socks"}, "coupon": "X"})
    assert not spec.where({"product": {"category": "hats"}})
    assert not spec.where({"product": "hats", "coupon": "X"})
