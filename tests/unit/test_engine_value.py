"""Value segmentation: predicted value, hysteresis (stay_condition), minimum dwell, consent,
holdouts, and the new segment fields."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from streams.engine import (
    Reason,
    RuleLoadError,
    RuleSet,
    Transition,
    check_rules,
    is_holdout,
)
from streams.engine.value import predicted_value
from tests.unit.fakes_facts import DAY, NOW, Ev, FakeFacts, rules_from, segment

REVENUE_GE_1000 = "{type: lifetime, metric: revenue, op: ge, value: 1000}"


def step(
    rules: RuleSet, facts: FakeFacts, members: dict[str, float]
) -> tuple[dict[str, float], list[Transition]]:
    """One evaluation as the pipeline does it: membership in, transitions and membership out."""
    seen = facts.with_members(members)
    new = rules.evaluate(seen).members
    moves = rules.transitions(members.keys(), new, seen)
    return {s: members.get(s, seen.now) for s in new}, moves


def walk(
    rules: RuleSet, revenues: Iterable[float], start: float = NOW
) -> list[tuple[str, str, float]]:
    """Migrations along a revenue path, one value a day."""
    members: dict[str, float] = {}
    out: list[tuple[str, str, float]] = []
    for day, revenue in enumerate(revenues):
        facts = FakeFacts.of(rules, now=start + day * DAY, metrics={"revenue": revenue})
        members, moves = step(rules, facts, members)
        out.extend((t.segment, t.direction, revenue) for t in moves)
    return out


# --- predicted value -----------------------------------------------------------------------


def test_predicted_value_metric() -> None:
    def facts(orders: float, revenue: float, tenure_days: float) -> FakeFacts:
        metrics = {"orders": orders, "revenue": revenue, "first_seen": NOW - tenure_days * DAY}
        return FakeFacts.of(metrics=metrics)

    # AOV 100 x (4 orders / (200 / 365) years) = 730 a year
    assert predicted_value(facts(4, 400, 200)) == pytest.approx(730)
    # tenure floor: 2 days counts as 30 days
    assert predicted_value(facts(1, 100, 2)) == pytest.approx(100 * 365 / 30)
    assert predicted_value(facts(1, 100, 2)) == predicted_value(facts(1, 100, 30))
    assert predicted_value(facts(0, 0, 100)) is None
    assert predicted_value(FakeFacts.of(metrics={"orders": 2, "revenue": 10})) is None


def test_predicted_value_condition_and_its_crossing_time() -> None:
    rules = rules_from(
        p=segment(
            "p", "{type: lifetime, metric: predicted_value, op: ge, value: 500}", kind="value"
        )
    )
    first_seen = NOW - 200 * DAY
    facts = FakeFacts.of(rules, metrics={"orders": 4.0, "revenue": 400.0, "first_seen": first_seen})
    explained = rules.explain(facts)["p"]
    assert explained.holds is True
    assert explained.reason == Reason("lifetime predicted_value >= 500", {"predicted_value": 730.0})
    # 400 * 365 / d = 500  <=>  d = 292 days of tenure
    due = rules.next_due(facts)
    assert due is not None and due == pytest.approx(first_seen + 292 * DAY)
    assert rules.evaluate(facts.at(due)).members == {"p"}  # exactly 500: ge still holds
    assert rules.evaluate(facts.at(due + 1)).members == frozenset()


# --- hysteresis ----------------------------------------------------------------------------


def hysteresis_rules(stay: bool = True) -> RuleSet:
    extra = {"stay_condition": "{type: lifetime, metric: revenue, op: ge, value: 900}"}
    return rules_from(big=segment("big", REVENUE_GE_1000, kind="value", **(extra if stay else {})))


def test_stay_condition_stops_flapping() -> None:
    path = [1000, 950, 1000, 890]
    assert walk(hysteresis_rules(), path) == [("big", "entered", 1000), ("big", "exited", 890)]
    assert walk(hysteresis_rules(stay=False), path) == [
        ("big", "entered", 1000),
        ("big", "exited", 950),
        ("big", "entered", 1000),
        ("big", "exited", 890),
    ]


def test_stay_condition_applies_only_to_members_and_explains_itself() -> None:
    rules = hysteresis_rules()
    outsider = FakeFacts.of(rules, metrics={"revenue": 950.0})
    assert rules.evaluate(outsider).members == frozenset()  # 950 does not let anyone in
    member = outsider.with_members({"big": NOW - DAY})
    assert rules.evaluate(member).members == {"big"}
    reason = rules.explain(member)["big"].reason
    assert reason == Reason("stay condition: lifetime revenue >= 900", {"revenue": 950.0})
    gone = member.with_metrics(revenue=890.0)
    [exit_] = rules.transitions({"big"}, rules.evaluate(gone).members, gone)
    assert exit_.reason == Reason("stay condition: lifetime revenue >= 900", {"revenue": 890.0})
    info = rules.segment("big")
    assert info.has_stay_condition and info.min_dwell_s is None


def test_stay_condition_in_a_family_yields_to_higher_priority() -> None:
    rules = rules_from(
        tier="""
family: tier
name: Tier
kind: value
segments:
  - {id: gold, name: Gold, priority: 30,
     condition: {type: lifetime, metric: revenue, op: ge, value: 5000},
     stay_condition: {type: lifetime, metric: revenue, op: ge, value: 4500}}
  - {id: silver, name: Silver, priority: 20,
     condition: {type: lifetime, metric: revenue, op: ge, value: 1000},
     stay_condition: {type: lifetime, metric: revenue, op: ge, value: 900}}
"""
    )
    path = [1000, 950, 5000, 4600, 4400, 950, 890]
    assert walk(rules, path) == [
        ("silver", "entered", 1000),
        ("silver", "exited", 5000),
        ("gold", "entered", 5000),
        ("gold", "exited", 4400),
        ("silver", "entered", 4400),
        ("silver", "exited", 890),
    ]


# --- minimum dwell -------------------------------------------------------------------------


def test_min_dwell_delays_the_exit_and_sets_next_change() -> None:
    rules = rules_from(
        hot=segment("hot", "{type: recency, event: Ping, within: 1d}", min_dwell="7d")
    )
    assert rules.segment("hot").min_dwell_s == 7 * DAY
    facts = FakeFacts.of(rules, events=[Ev("Ping", NOW)])
    members, moves = step(rules, facts, {})
    assert members == {"hot": NOW} and [t.direction for t in moves] == ["entered"]
    # the ping ages out after 1 day, but the customer stays until NOW + 7d
    assert rules.next_due(facts.with_members(members)) == NOW + DAY
    two_days = facts.at(NOW + 2 * DAY).with_members(members)
    assert rules.evaluate(two_days).members == {"hot"}
    explained = rules.explain(two_days)["hot"]
    assert explained.holds and explained.member
    assert explained.reason.rule == "minimum dwell 7d not elapsed (the condition no longer holds)"
    assert explained.reason.values["dwell_until"] == NOW + 7 * DAY
    assert rules.next_due(two_days) == NOW + 7 * DAY  # since + min_dwell
    members, moves = step(rules, facts.at(NOW + 7 * DAY), members)
    assert members == {}
    assert [(t.segment, t.direction) for t in moves] == [("hot", "exited")]
    assert moves[0].reason.rule == "Ping within 1d"
    # a customer for whom the condition still holds is not affected by the dwell
    busy = FakeFacts.of(
        rules, now=NOW + 3 * DAY, events=[Ev("Ping", NOW + 3 * DAY)], members={"hot": NOW}
    )
    assert rules.explain(busy)["hot"].reason.rule == "Ping within 1d"


def test_min_dwell_keeps_the_family_slot() -> None:
    rules = rules_from(
        tier="""
family: tier
name: Tier
kind: value
segments:
  - {id: gold, name: Gold, priority: 30,
     condition: {type: lifetime, metric: revenue, op: ge, value: 1000}}
  - {id: silver, name: Silver, priority: 20, min_dwell: 7d,
     condition: {type: lifetime, metric: revenue, op: ge, value: 100}}
"""
    )
    silver_since = NOW - DAY
    facts = FakeFacts.of(rules, metrics={"revenue": 2000.0}, members={"silver": silver_since})
    result = rules.evaluate(facts)
    assert result.holds["gold"] is True
    assert result.members == {"silver"}  # dwell not elapsed: silver keeps the slot
    assert rules.next_due(facts) == silver_since + 7 * DAY
    later = facts.at(silver_since + 7 * DAY)
    new = rules.evaluate(later).members
    assert new == {"gold"}
    moves = rules.transitions({"silver"}, new, later)
    assert [(t.segment, t.direction, t.from_segment, t.to_segment) for t in moves] == [
        ("silver", "exited", "silver", "gold"),
        ("gold", "entered", "silver", "gold"),
    ]


# --- consent -------------------------------------------------------------------------------


def consent_rules() -> RuleSet:
    return rules_from(
        mail=segment(
            "mail",
            "{type: lifetime, metric: orders, op: ge, value: 1}",
            requires_consent="marketing",
            min_dwell="7d",
        )
    )


@pytest.mark.parametrize(
    ("consent", "member"),
    [
        ({}, False),
        ({"marketing": False}, False),
        ({"marketing": "yes"}, False),
        ({"marketing": True}, True),
    ],
)
def test_consent_excludes_and_includes(consent: dict[str, object], member: bool) -> None:
    rules = consent_rules()
    facts = FakeFacts.of(rules, traits={"consent": consent}, metrics={"orders": 2.0})
    assert (rules.evaluate(facts).members == {"mail"}) is member
    reason = rules.explain(facts)["mail"].reason
    if member:
        assert reason == Reason("lifetime orders >= 1", {"orders": 2.0, "consent.marketing": True})
    else:
        assert reason.rule == "no marketing consent"
        assert reason.values == {"consent.marketing": consent.get("marketing")}
    assert rules.segment("mail").requires_consent == "marketing"


def test_withdrawn_consent_ends_membership_even_during_dwell() -> None:
    rules = consent_rules()
    facts = FakeFacts.of(
        rules,
        traits={"consent": {"marketing": False}},
        metrics={"orders": 0.0},
        members={"mail": NOW - DAY},
    )
    assert rules.evaluate(facts).members == frozenset()
    kept = FakeFacts.of(
        rules,
        traits={"consent": {"marketing": True}},
        metrics={"orders": 0.0},
        members={"mail": NOW - DAY},
    )
    assert rules.evaluate(kept).members == {"mail"}


# --- holdouts ------------------------------------------------------------------------------


@pytest.mark.parametrize("percent", [10.0, 25.0, 2.5])
def test_holdout_share_on_100k_customers(percent: float) -> None:
    ids = [f"customer-{i}" for i in range(100_000)]
    share = 100 * sum(is_holdout(c, "cart_abandoner", percent) for c in ids) / len(ids)
    assert abs(share - percent) <= 1.0


def test_holdout_is_deterministic_and_per_segment() -> None:
    ids = [f"u{i}" for i in range(5000)]
    a = {c for c in ids if is_holdout(c, "a", 20)}
    assert a == {c for c in ids if is_holdout(c, "a", 20)}
    b = {c for c in ids if is_holdout(c, "b", 20)}
    assert a != b and len(a & b) < len(a) / 2  # independent draws per segment
    assert {c for c in ids if is_holdout(c, "a", 10)} <= a  # a larger share extends the group
    assert not any(is_holdout(c, "a", 0) for c in ids)
    assert all(is_holdout(c, "a", 100) for c in ids)


def test_transitions_carry_holdout() -> None:
    rules = rules_from(
        big=segment("big", REVENUE_GE_1000, kind="value", holdout_percent=50),
        plain=segment("plain", REVENUE_GE_1000, kind="value"),
    )
    assert rules.segment("big").holdout_percent == 50
    facts = FakeFacts.of(rules, metrics={"revenue": 2000.0})
    new = rules.evaluate(facts).members
    assert new == {"big", "plain"}  # holdout members are still members
    held = next(c for c in (f"u{i}" for i in range(100)) if is_holdout(c, "big", 50))
    free = next(c for c in (f"u{i}" for i in range(100)) if not is_holdout(c, "big", 50))
    entered = {t.segment: t.holdout for t in rules.transitions(set(), new, facts, held)}
    assert entered == {"big": True, "plain": False}
    assert rules.is_holdout(held, "big") and not rules.is_holdout(held, "plain")
    assert {t.holdout for t in rules.transitions(set(), new, facts, free)} == {False}
    assert {t.holdout for t in rules.transitions(set(), new, facts)} == {False}  # no id given
    gone = facts.with_metrics(revenue=0.0)
    exits = rules.transitions(new, frozenset(), gone, customer_id=held)
    assert {t.segment: t.holdout for t in exits} == {"big": True, "plain": False}
    removed = rules.transitions({"old_segment"}, set(), gone, customer_id=held)
    assert [(t.segment, t.holdout) for t in removed] == [("old_segment", False)]


# --- validation and the default pack -------------------------------------------------------


def test_new_segment_fields_are_validated() -> None:
    with pytest.raises(RuleLoadError) as caught:
        rules_from(
            a=segment("a", REVENUE_GE_1000, holdout_percent=60),
            b=segment("b", REVENUE_GE_1000, min_dwell="3 days"),
            c=segment("c", REVENUE_GE_1000, requires_consent="Marketing!"),
            d=segment("d", REVENUE_GE_1000, stay_condition="{type: lifetim}"),
            e=segment("e", REVENUE_GE_1000, stay_condition="{type: in_segment, segment: zz}"),
        )
    lines = [str(p) for p in caught.value.problems]
    assert lines[0] == "a.yaml:4: holdout_percent: expected less than or equal to 50, got 60"
    assert lines[1].startswith("b.yaml:4: min_dwell: expected a duration")
    assert lines[2].startswith("c.yaml:4: requires_consent: ")
    assert (
        lines[3]
        == "d.yaml:4: stay_condition: unknown condition type 'lifetim', did you mean 'lifetime'?"
    )
    assert lines[4] == "e.yaml:4: in_segment: unknown segment 'zz'"


def test_default_pack_checks_clean() -> None:
    code, lines = check_rules(Path(__file__).resolve().parents[2] / "rules")
    assert code == 0, lines
