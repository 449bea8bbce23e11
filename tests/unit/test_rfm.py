"""RFM: scores and boundaries, the rfm condition, the rfm file, the named RFM map."""

from __future__ import annotations

import random
import statistics
from pathlib import Path

import pytest

from streams.engine import (
    RfmBoundaries,
    RuleLoadError,
    RuleSet,
    load_rules,
    next_rfm_change,
    quintile_boundaries,
    rfm_scores,
)
from streams.engine.rfm import score
from tests.unit.fakes_facts import DAY, NOW, Ev, FakeFacts, rules_from, segment

FIXED = RfmBoundaries((30, 60, 90, 180), (1, 2, 3, 5), (100, 250, 500, 1000))
RFM_FILE = """
rfm:
  boundaries: {mode}
  recency_days: [30, 60, 90, 180]
  frequency: [1, 2, 3, 5]
  monetary: [100, 250, 500, 1000]
"""


def buyer(
    days_ago: float | None, orders: float, revenue: float, rules: RuleSet | None = None
) -> FakeFacts:
    """A customer whose last order was ``days_ago`` days before NOW (None: never ordered)."""
    events = [] if days_ago is None else [Ev("Order Completed", NOW - days_ago * DAY)]
    return FakeFacts.of(rules, events=events, metrics={"orders": orders, "revenue": revenue})


# --- score -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "higher", "lower"),
    [
        (0, 1, 5),
        (100, 1, 5),  # equal to the first cut point: still the lowest interval
        (100.5, 2, 4),
        (250, 2, 4),
        (251, 3, 3),
        (500, 3, 3),
        (1000, 4, 2),
        (1000.01, 5, 1),
        (1e9, 5, 1),
    ],
)
def test_score_intervals_are_right_closed(value: float, higher: int, lower: int) -> None:
    cuts = (100, 250, 500, 1000)
    assert score(value, cuts, higher_is_better=True) == higher
    assert score(value, cuts, higher_is_better=False) == lower


def test_score_with_tied_cut_points() -> None:
    cuts = (1, 1, 2, 3)  # e.g. live quintiles where most customers have one order
    assert [score(v, cuts, True) for v in (0, 1, 2, 3, 4)] == [1, 1, 3, 4, 5]
    assert score(1, (1, 1, 1, 1), True) == 1
    assert score(2, (1, 1, 1, 1), True) == 5


def test_boundaries_must_be_four_ascending_numbers() -> None:
    with pytest.raises(ValueError, match="ascending"):
        RfmBoundaries((30, 20, 90, 180), (1, 2, 3, 5), (1, 2, 3, 4))
    with pytest.raises(ValueError, match="4 cut points"):
        RfmBoundaries((30, 60, 90), (1, 2, 3, 5), (1, 2, 3, 4))  # type: ignore[arg-type]
    assert RfmBoundaries.from_dict(FIXED.to_dict()) == FIXED
    assert FIXED.frequency == (1.0, 2.0, 3.0, 5.0)


# --- quintile_boundaries -------------------------------------------------------------------


def test_quintiles_known_values_single_and_empty() -> None:
    assert quintile_boundaries(range(1, 11)) == pytest.approx((2.8, 4.6, 6.4, 8.2))
    assert quintile_boundaries([5, 1, 3, 2, 4, 6]) == (2.0, 3.0, 4.0, 5.0)
    assert quintile_boundaries([7.5]) == (7.5, 7.5, 7.5, 7.5)
    assert quintile_boundaries([1, 1, 1, 1, 1, 9]) == (1.0, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="at least one"):
        quintile_boundaries([])
    with pytest.raises(ValueError, match="finite"):
        quintile_boundaries([1.0, float("nan")])


@pytest.mark.parametrize("size", [2, 3, 7, 10, 101, 1000])
def test_quintiles_match_the_standard_library(size: int) -> None:
    """``statistics.quantiles(method="inclusive")`` is numpy's "linear" method: the reference."""
    rng = random.Random(size)
    for data in (
        [rng.uniform(0, 5000) for _ in range(size)],
        [float(rng.randint(1, 6)) for _ in range(size)],  # many ties
        [rng.expovariate(1 / 200) for _ in range(size)],
    ):
        expected = statistics.quantiles(data, n=5, method="inclusive")
        assert quintile_boundaries(data) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_population_scores_match_an_independent_computation() -> None:
    """Live boundaries of a synthetic population, and every customer's scores, recomputed
    independently (``statistics.quantiles`` and counting the cut points below each value)."""
    rng = random.Random(42)
    population = [
        (rng.uniform(0, 400), float(rng.randint(1, 12)), round(rng.lognormvariate(5, 1), 2))
        for _ in range(2000)
    ]
    days, orders, revenue = (list(column) for column in zip(*population, strict=True))
    live = RfmBoundaries(
        quintile_boundaries(days), quintile_boundaries(orders), quintile_boundaries(revenue)
    )
    reference = [statistics.quantiles(c, n=5, method="inclusive") for c in (days, orders, revenue)]
    for got, want in zip(
        (live.recency_days, live.frequency, live.monetary), reference, strict=True
    ):
        assert got == pytest.approx(want, rel=1e-12)

    def independent(value: float, cuts: list[float]) -> int:
        return 1 + sum(1 for c in cuts if value > c)

    m_scores = []
    for d, f, m in population:
        scores = rfm_scores(buyer(d, f, m), live)
        expected = (
            6 - independent(d, reference[0]),
            independent(f, reference[1]),
            independent(m, reference[2]),
        )
        assert scores == expected
        m_scores.append(expected[2])
    # a continuous value splits into five near-equal fifths
    for s in range(1, 6):
        assert abs(m_scores.count(s) / len(m_scores) - 0.2) < 0.01


# --- rfm_scores and next_rfm_change --------------------------------------------------------


def test_rfm_scores() -> None:
    assert rfm_scores(buyer(10, 6, 2000), FIXED) == (5, 5, 5)
    assert rfm_scores(buyer(30, 1, 100), FIXED) == (5, 1, 1)  # on the cut points: lower side
    assert rfm_scores(buyer(30.5, 2, 100.01), FIXED) == (4, 2, 2)
    assert rfm_scores(buyer(400, 3, 0), FIXED) == (1, 3, 1)
    assert rfm_scores(buyer(None, 0, 0), FIXED) is None
    assert rfm_scores(buyer(None, 1, 10), FIXED) is None  # no order time known
    assert rfm_scores(FakeFacts.of(), FIXED) is None


def test_next_rfm_change_is_when_days_since_last_order_exceed_the_next_cut() -> None:
    facts = buyer(10, 2, 50)
    last = NOW - 10 * DAY
    due = next_rfm_change(facts, FIXED)
    assert due is not None and last + 30 * DAY < due <= last + 30 * DAY + 0.01
    assert rfm_scores(facts.at(last + 30 * DAY), FIXED) == (5, 2, 1)
    assert rfm_scores(facts.at(due), FIXED) == (4, 2, 1)
    assert next_rfm_change(facts.at(due), FIXED) == pytest.approx(last + 60 * DAY, abs=0.01)
    assert next_rfm_change(facts.at(last + 180 * DAY + 1), FIXED) is None  # already R = 1
    assert next_rfm_change(buyer(None, 0, 0), FIXED) is None


# --- the rfm condition and the rfm file ----------------------------------------------------


def rfm_rules(mode: str = "fixed", **segments: str) -> RuleSet:
    return rules_from(rfm=RFM_FILE.format(mode=mode), **segments)


def test_rfm_condition_reasons_and_next_change() -> None:
    rules = rfm_rules(
        top=segment("top", "{type: rfm, r: [4, 5], f: [4, 5]}", kind="rfm"),
        rich=segment("rich", "{type: rfm, m: [5, 5]}", kind="rfm"),
    )
    assert rules.rfm is not None and rules.rfm.fixed == FIXED and not rules.rfm.live
    facts = buyer(40, 4, 300, rules)
    explained = rules.explain(facts)
    assert explained["top"].holds is True
    assert explained["top"].reason.rule == "RFM R 4-5, F 4-5"
    assert explained["top"].reason.values == {"R": 4, "F": 4, "M": 3}
    assert explained["rich"].holds is False
    assert explained["rich"].reason.rule == "RFM M = 5"
    never = rules.explain(buyer(None, 0, 0, rules))["top"]
    assert never.holds is False
    assert never.reason.rule == "RFM R 4-5, F 4-5 (no order yet)"
    assert never.reason.values == {"R": None, "F": None, "M": None}
    # R 4 -> 3 once 60 days have passed: 'top' is left on time, with no event
    due = rules.next_due(facts)
    assert due is not None and due == pytest.approx(NOW + 20 * DAY, abs=0.01)
    assert "top" not in rules.evaluate(facts.at(due)).members
    assert "Order Completed" in rules.event_names
    only_m = rfm_rules(rich=segment("rich", "{type: rfm, m: [5, 5]}", kind="rfm"))
    assert only_m.next_due(buyer(40, 4, 300, only_m)) is None  # F and M need an event


def test_live_boundaries_come_from_facts_with_fixed_fallback() -> None:
    live = RfmBoundaries((5, 10, 15, 20), (10, 20, 30, 40), (1, 2, 3, 4))
    rules = rfm_rules("live", top=segment("top", "{type: rfm, r: [5, 5]}", kind="rfm"))
    assert rules.rfm is not None and rules.rfm.live
    facts = buyer(12, 1, 50, rules)
    assert rules.explain(facts)["top"].reason.values == {"R": 5, "F": 1, "M": 1}  # fixed
    with_live = FakeFacts.of(rules, events=facts.events, metrics=facts.metrics, live_rfm=live)
    assert rules.explain(with_live)["top"].reason.values == {"R": 3, "F": 1, "M": 5}
    fixed = rfm_rules("fixed", top=segment("top", "{type: rfm, r: [5, 5]}", kind="rfm"))
    ignored = FakeFacts.of(fixed, events=facts.events, metrics=facts.metrics, live_rfm=live)
    assert fixed.explain(ignored)["top"].reason.values == {"R": 5, "F": 1, "M": 1}


def problems(**files: str) -> list[str]:
    with pytest.raises(RuleLoadError) as caught:
        rules_from(**files)
    return [str(p) for p in caught.value.problems]


def test_rfm_file_and_condition_validation() -> None:
    assert problems(a=segment("a", "{type: rfm, r: [4, 5]}")) == [
        "a.yaml:4: an 'rfm' condition needs an rfm file in the pack (rfm: ...)"
    ]
    found = problems(
        a=segment("a", "{type: rfm, r: [5, 4]}"),
        b=segment("b", "{type: rfm}"),
        c=segment("c", "{type: rfm, f: [0, 3]}"),
        rfm=RFM_FILE.format(mode="fixed"),
    )
    assert found[0] == "a.yaml:4: condition.r: expected [low, high] with 1 <= low <= high <= 5"
    assert found[1] == "b.yaml:4: condition: expected at least one of 'r', 'f' or 'm'"
    assert found[2].startswith("c.yaml:4: condition.f: expected [low, high]")
    bad_file = "rfm:\n  boundaries: live\n  recency_days: [30, 20, 90, 180]\n  frequncy: [1]\n"
    assert problems(rfm=bad_file) == [
        "rfm.yaml:1: rfm: missing required field 'frequency'",
        "rfm.yaml:1: rfm: missing required field 'monetary'",
        "rfm.yaml:3: rfm.recency_days: expected cut points in ascending order",
        "rfm.yaml:4: rfm: unknown field 'frequncy', did you mean 'frequency'?",
    ]
    twice = problems(rfm=RFM_FILE.format(mode="fixed"), rfm2=RFM_FILE.format(mode="live"))
    assert twice == ["rfm2.yaml:1: rfm is already configured in rfm.yaml"]


# --- the named RFM map ---------------------------------------------------------------------

DAYS_FOR_R = {5: 10, 4: 45, 3: 75, 2: 120, 1: 300}
ORDERS_FOR_F = {1: 1, 2: 2, 3: 3, 4: 4, 5: 6}
EXPECTED_MAP = {
    "rfm_champions": {(5, 4), (5, 5)},
    "rfm_loyal": {(3, 4), (3, 5), (4, 4), (4, 5)},
    "rfm_potential_loyalist": {(4, 2), (4, 3), (5, 2), (5, 3)},
    "rfm_new": {(5, 1)},
    "rfm_promising": {(4, 1)},
    "rfm_need_attention": {(3, 3)},
    "rfm_about_to_sleep": {(3, 1), (3, 2)},
    "rfm_at_risk": {(1, 3), (1, 4), (2, 3), (2, 4)},
    "rfm_cannot_lose": {(1, 5), (2, 5)},
    "rfm_hibernating": {(2, 1), (2, 2)},
    "rfm_lost": {(1, 1), (1, 2)},
}


@pytest.fixture(scope="module")
def pack() -> RuleSet:
    return load_rules(Path(__file__).resolve().parents[2] / "rules")


def test_named_rfm_map_is_a_partition_of_the_r_f_grid(pack: RuleSet) -> None:
    family = pack.families["rfm"]
    assert set(family) == set(EXPECTED_MAP)
    for r, days in DAYS_FOR_R.items():
        for f, n in ORDERS_FOR_F.items():
            for revenue in (10.0, 5000.0):
                facts = buyer(days, n, revenue, pack)
                assert rfm_scores(facts, FIXED)[:2] == (r, f)  # type: ignore[index]
                result = pack.evaluate(facts)
                holding = [s for s in family if result.holds[s]]
                assert len(holding) == 1, (r, f, holding)  # at most one, and exactly one
                assert (r, f) in EXPECTED_MAP[holding[0]]
                assert result.members & set(family) == {holding[0]}
    assert not pack.evaluate(buyer(None, 0, 0, pack)).members & set(family)


def test_rfm_move_inside_the_family_on_time(pack: RuleSet) -> None:
    facts = buyer(20, 1, 80, pack)  # R 5, F 1: new
    assert "rfm_new" in pack.evaluate(facts).members
    due = next_rfm_change(facts, FIXED)
    assert due is not None and due == pytest.approx(NOW + 10 * DAY, abs=0.01)
    assert pack.next_due(facts) == NOW + 10 * DAY  # new_customer's 30 days end at that time too
    later = facts.at(due)
    moves = pack.transitions({"rfm_new"}, pack.evaluate(later).members & {"rfm_promising"}, later)
    assert [(t.segment, t.direction, t.family) for t in moves] == [
        ("rfm_new", "exited", "rfm"),
        ("rfm_promising", "entered", "rfm"),
    ]
    assert moves[1].reason.values == {"R": 4, "F": 1, "M": 1}
