"""RuleSet: families, primary segment, in_segment ordering, transitions, next_due."""

from __future__ import annotations

from streams.engine import REMOVED_RULE, Reason, RuleSet, Transition
from tests.unit.fakes_facts import DAY, NOW, Ev, FakeFacts, rules_from, segment

TIERS = """
family: tier
name: Tier
kind: value
segments:
  - {id: gold, name: Gold, priority: 30,
     condition: {type: lifetime, metric: revenue, op: ge, value: 1000}}
  - {id: silver, name: Silver, priority: 20,
     condition: {type: lifetime, metric: revenue, op: ge, value: 100}}
  - {id: bronze, name: Bronze, priority: 20, kind: rfm,
     condition: {type: lifetime, metric: revenue, op: ge, value: 10}}
"""


def tiers(**more: str) -> RuleSet:
    return rules_from(tier=TIERS, **more)


def revenue(rules: RuleSet, value: float | None) -> FakeFacts:
    return FakeFacts.of(rules, metrics={"revenue": value})


def test_family_members_inherit_family_and_kind() -> None:
    rules = tiers()
    assert rules.families == {"tier": ("gold", "bronze", "silver")}
    assert [s.id for s in rules.segments] == ["gold", "bronze", "silver"]
    gold, bronze = rules.segment("gold"), rules.segment("bronze")
    assert (gold.family, gold.kind, gold.priority, gold.name) == ("tier", "value", 30, "Gold")
    assert (bronze.family, bronze.kind) == ("tier", "rfm")
    assert gold.file == "tier.yaml"


def test_family_highest_priority_wins_ties_by_id() -> None:
    rules = tiers()
    result = rules.evaluate(revenue(rules, 5000))
    assert result.holds == {"gold": True, "silver": True, "bronze": True}
    assert result.members == {"gold"}
    result = rules.evaluate(revenue(rules, 500))
    assert result.members == {"bronze"}  # silver and bronze tie on priority: 'bronze' < 'silver'
    assert rules.evaluate(revenue(rules, 5)).members == frozenset()
    assert rules.evaluate(revenue(rules, 5)).primary is None


def test_primary_is_highest_priority_member_ties_by_id() -> None:
    rules = tiers(
        a=segment("zeta", "{type: trait, path: plan, op: eq, value: pro}", priority=30),
        b=segment("alpha", "{type: trait, path: plan, op: eq, value: pro}", priority=25),
    )
    facts = FakeFacts.of(rules, traits={"plan": "pro"}, metrics={"revenue": 2000.0})
    result = rules.evaluate(facts)
    assert result.members == {"gold", "zeta", "alpha"}
    assert result.primary == "gold"  # gold and zeta both 30: 'gold' < 'zeta'
    assert rules.primary(["alpha", "unknown"]) == "alpha"


def test_explain_covers_every_segment() -> None:
    rules = tiers()
    explained = rules.explain(revenue(rules, 500))
    assert list(explained) == ["gold", "bronze", "silver"]
    assert explained["gold"].holds is False and explained["gold"].member is False
    assert explained["silver"].holds is True and explained["silver"].member is False
    assert explained["bronze"].member is True
    assert explained["gold"].reason == Reason("lifetime revenue >= 1000", {"revenue": 500})


def test_in_segment_reads_membership_after_family_resolution() -> None:
    rules = tiers(
        a=segment(
            "silver_pro",
            "{type: all, of: [{type: in_segment, segment: silver},"
            " {type: trait, path: plan, op: eq, value: pro}]}",
        ),
        b=segment("not_gold", "{type: not, condition: {type: in_segment, segment: gold}}"),
    )
    # readers come after the family they read, even though 'a.yaml' sorts before 'tier.yaml'
    ids = [s.id for s in rules.segments]
    assert ids.index("silver_pro") > ids.index("silver")
    assert ids.index("not_gold") > ids.index("gold")
    rules_only_silver = rules_from(
        tier=TIERS.replace("id: bronze", "id: zbronze"),
        a=segment("silver_pro", "{type: in_segment, segment: silver}"),
    )
    facts = FakeFacts.of(rules_only_silver, metrics={"revenue": 500.0})
    assert rules_only_silver.evaluate(facts).members == {"silver", "silver_pro"}
    facts = FakeFacts.of(rules, traits={"plan": "pro"}, metrics={"revenue": 500.0})
    result = rules.evaluate(facts)
    assert result.holds["silver"] is True
    assert "silver_pro" not in result.members  # silver holds but bronze is the member
    assert "not_gold" in result.members
    reason = rules.explain(facts)["silver_pro"].reason
    assert reason == Reason("in segment silver", {"in_segment(silver)": False})


def test_in_segment_chain_is_ordered_topologically() -> None:
    rules = rules_from(
        a=segment("a", "{type: in_segment, segment: b}"),
        b=segment("b", "{type: in_segment, segment: c}"),
        c=segment("c", "{type: trait, path: plan, op: eq, value: pro}"),
    )
    assert [s.id for s in rules.segments] == ["c", "b", "a"]
    assert rules.evaluate(FakeFacts.of(rules, traits={"plan": "pro"})).members == {"a", "b", "c"}


def test_in_segment_next_change_follows_the_target() -> None:
    rules = rules_from(
        a=segment("a", "{type: in_segment, segment: b}"),
        b=segment("b", "{type: recency, event: Order Completed, within: 30d}"),
    )
    facts = FakeFacts.of(rules, events=[Ev("Order Completed", NOW - DAY)])
    assert rules.next_due(facts) == NOW + 29 * DAY
    assert rules.evaluate(facts.at(NOW + 29 * DAY)).members == frozenset()


def test_next_due_is_the_earliest_segment_change() -> None:
    rules = rules_from(
        a=segment("a", "{type: recency, event: Order Completed, within: 30d}"),
        b=segment("b", "{type: event_count, event: Page Viewed, within: 7d, op: ge, value: 1}"),
        c=segment("c", "{type: trait, path: plan, op: eq, value: pro}"),
    )
    events = [Ev("Order Completed", NOW - DAY), Ev("Page Viewed", NOW - 3 * DAY)]
    facts = FakeFacts.of(rules, events=events)
    assert rules.next_due(facts) == NOW + 4 * DAY
    assert rules.next_due(FakeFacts.of(rules)) is None


def test_transitions_family_move_exit_then_entry() -> None:
    rules = tiers()
    facts = revenue(rules, 1500)
    moves = rules.transitions({"bronze"}, rules.evaluate(facts).members, facts)
    assert [(t.segment, t.direction) for t in moves] == [("bronze", "exited"), ("gold", "entered")]
    exit_, entry = moves
    assert (exit_.family, exit_.from_segment, exit_.to_segment) == ("tier", "bronze", "gold")
    assert (entry.family, entry.from_segment, entry.to_segment) == ("tier", "bronze", "gold")
    assert exit_.reason == Reason("moved to gold (higher priority in tier)", {"revenue": 1500})
    assert entry.reason == Reason("lifetime revenue >= 1000", {"revenue": 1500})


def test_transitions_family_exit_when_condition_fails() -> None:
    rules = tiers()
    facts = revenue(rules, 5)
    assert rules.transitions({"bronze"}, set(), facts) == [
        Transition("bronze", "exited", "tier", "bronze", None,
                   Reason("lifetime revenue >= 10", {"revenue": 5})),
    ]  # fmt: skip
    facts = revenue(rules, 50)
    [entry] = rules.transitions(set(), {"bronze"}, facts)
    assert (entry.direction, entry.from_segment, entry.to_segment) == ("entered", None, "bronze")


def test_transitions_plain_segments_and_removed_segments() -> None:
    rules = tiers(
        a=segment("pro", "{type: trait, path: plan, op: eq, value: pro}"),
        b=segment("adult", "{type: trait, path: age, op: ge, value: 18}"),
    )
    facts = FakeFacts.of(rules, traits={"plan": "free", "age": 30})
    moves = rules.transitions({"pro", "gone", "also_gone"}, {"adult"}, facts)
    assert moves == [
        Transition("also_gone", "exited", None, "also_gone", None, Reason(REMOVED_RULE, {})),
        Transition("gone", "exited", None, "gone", None, Reason(REMOVED_RULE, {})),
        Transition("pro", "exited", None, "pro", None, Reason("plan = pro", {"plan": "free"})),
        Transition("adult", "entered", None, None, "adult", Reason("age >= 18", {"age": 30})),
    ]
    assert rules.transitions({"adult"}, {"adult"}, facts) == []


def test_transitions_follow_rule_set_order() -> None:
    rules = rules_from(
        a=segment("a", "{type: trait, path: x, op: exists}"),
        b=segment("b", "{type: in_segment, segment: c}"),
        c=segment("c", "{type: trait, path: x, op: exists}"),
    )
    facts = FakeFacts.of(rules, traits={"x": 1})
    moves = rules.transitions([], rules.evaluate(facts).members, facts)
    assert [t.segment for t in moves] == [s.id for s in rules.segments] == ["a", "c", "b"]


def test_empty_rule_set() -> None:
    rules = RuleSet.empty()
    facts = FakeFacts.of(rules)
    assert rules.evaluate(facts).members == frozenset()
    assert rules.next_due(facts) is None
    assert [t.segment for t in rules.transitions({"x"}, set(), facts)] == ["x"]
