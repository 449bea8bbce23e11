"""The engine's shortcuts give the same results as the plain computations they replace.

- ``transitions`` explained from the evaluation's own context equals a fresh evaluation;
- ``next_due`` (distinct functions, ``never`` left out) equals the earliest of every condition;
- merged ``predicted_value`` crossings equal the earliest of the separate ones.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.engine import load_rules
from streams.engine.compiled import earliest
from streams.engine.value import PredictedCrossings, merge_crossings, predicted_value_crossings
from tests.unit.fakes_facts import DAY, NOW, Ev, FakeFacts

PACK = load_rules(Path(__file__).resolve().parents[2] / "rules")
IDS = PACK.ids
EVENTS = (
    "Order Completed",
    "Page Viewed",
    "Product Viewed",
    "Product Added",
    "Checkout Started",
    "Email Opened",
    "Email Link Clicked",
)
TOKENS = (
    "event:Order Completed",
    "event:Page Viewed",
    "event:Product Added",
    "events",
    "seen",
    "consent",
    "trait:survey",
    "trait:company",
)


@st.composite
def customers(draw: st.DrawFn) -> FakeFacts:
    """A customer of the example pack: events, metrics, traits, consent and memberships."""
    ages = st.floats(min_value=0, max_value=400 * DAY)
    events = [
        Ev(name, NOW - age, {"revenue": draw(st.sampled_from([0, 40, 300, 900]))})
        for name, age in draw(st.lists(st.tuples(st.sampled_from(EVENTS), ages), max_size=14))
    ]
    orders = sum(1 for e in events if e.name == "Order Completed")
    revenue = sum(float(e.props["revenue"]) for e in events if e.name == "Order Completed")
    first = min((e.ts for e in events), default=None)
    traits = {
        "survey": {"lifestyle": draw(st.sampled_from(["luxury", "eco_conscious", "x"]))},
        "company": {"employee_count": draw(st.sampled_from([5, 500, 5000]))},
        "consent": {"marketing": draw(st.booleans())},
    }
    members = {sid: NOW - draw(ages) for sid in draw(st.lists(st.sampled_from(IDS), max_size=6))}
    return FakeFacts.of(
        PACK,
        traits=traits,
        events=events,
        metrics={
            "orders": float(orders),
            "revenue": revenue,
            "first_seen": first,
            "last_seen": max((e.ts for e in events), default=None),
            "events": float(len(events)),
        },
        members=members,
    )


@settings(max_examples=80, deadline=None)
@given(facts=customers(), old=st.frozensets(st.sampled_from((*IDS, "gone"))))
def test_transitions_from_the_evaluation_equal_a_fresh_evaluation(
    facts: FakeFacts, old: frozenset[str]
) -> None:
    evaluation = PACK.evaluate(facts)
    fresh = PACK.transitions(old, evaluation.members, facts, "c1")
    assert PACK.transitions(old, evaluation.members, facts, "c1", evaluation) == fresh


@settings(max_examples=80, deadline=None)
@given(
    facts=customers(),
    moved=st.frozensets(st.sampled_from(IDS)),
    changed=st.frozensets(st.sampled_from(TOKENS), min_size=1),
)
def test_transitions_from_an_incremental_evaluation_equal_a_fresh_evaluation(
    facts: FakeFacts, moved: frozenset[str], changed: frozenset[str]
) -> None:
    full = PACK.evaluate(facts)
    kept = PACK._plan(changed).kept_ids
    previous = (full.members & kept) | (moved - kept)
    evaluation, _due = PACK.evaluate_changed(facts, previous, changed)
    assert (evaluation.members, evaluation.primary) == (full.members, full.primary)
    fresh = PACK.transitions(previous, evaluation.members, facts, "c1")
    assert PACK.transitions(previous, evaluation.members, facts, "c1", evaluation) == fresh


def test_an_evaluation_of_other_facts_is_not_used() -> None:
    spender = FakeFacts.of(PACK, metrics={"orders": 1.0, "revenue": 6000.0, "first_seen": NOW})
    other = FakeFacts.of(PACK, metrics={"orders": 1.0, "revenue": 200.0, "first_seen": NOW})
    evaluation = PACK.evaluate(spender)
    moves = PACK.transitions(set(), evaluation.members, other, None, evaluation)
    assert moves == PACK.transitions(set(), evaluation.members, other)


@settings(max_examples=80, deadline=None)
@given(facts=customers(), later=st.floats(min_value=0, max_value=200 * DAY))
def test_next_due_is_the_earliest_next_change_of_every_segment(
    facts: FakeFacts, later: float
) -> None:
    facts = facts.at(NOW + later)
    every = [PACK._conditions[sid].next_change(facts) for sid in IDS]
    assert PACK.next_due(facts) == earliest(every)


@given(
    orders=st.integers(0, 5),
    revenue=st.floats(min_value=0, max_value=10_000),
    age=st.floats(min_value=0, max_value=900 * DAY),
    a=st.lists(st.floats(min_value=-10, max_value=5000), min_size=1, max_size=2),
    b=st.lists(st.floats(min_value=-10, max_value=5000), min_size=1, max_size=2),
)
def test_merged_crossings_are_the_earliest_of_the_separate_ones(
    orders: int, revenue: float, age: float, a: list[float], b: list[float]
) -> None:
    facts = FakeFacts.of(
        metrics={"orders": float(orders), "revenue": revenue, "first_seen": NOW - age}
    )
    first, second = PredictedCrossings(tuple(a)).at, PredictedCrossings(tuple(b)).at
    (merged,) = merge_crossings([first, second])
    separate = [
        predicted_value_crossings(facts, tuple(a)),
        predicted_value_crossings(facts, tuple(b)),
    ]
    assert merged(facts) == earliest(separate)
    assert merge_crossings([first]) == (first,)
