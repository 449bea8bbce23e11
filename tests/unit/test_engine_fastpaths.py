"""The specialised predicates, trait paths, next-due merging and digests equal the plain forms."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from streams.engine.facts import MISSING, SeriesSpec
from streams.engine.nextdue import NextDue, RecencyDue, WindowDue
from streams.engine.ops import compare, numeric_check, numeric_predicate, trait_predicate
from streams.engine.ops import values_equal as eq
from streams.state.apply import message_digest
from streams.state.customer import CustomerState
from streams.state.facts import StateFacts
from tests.unit.fakes_facts import DAY, NOW, Ev, FakeFacts

VALUES = st.one_of(
    st.just(MISSING),
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(-5, 5),
    st.just(float("nan")),
    st.sampled_from(["a", "b", "price", ""]),
    st.lists(st.sampled_from(["a", 1]), max_size=2),
)


def _plain(op: str, value: Any, a: Any) -> bool:
    """``trait_predicate`` as written before the specialised shapes."""
    if op == "eq":
        return eq(a, value)
    if op == "ne":
        return a is MISSING or not eq(a, value)
    if op == "in":
        return any(eq(a, o) for o in value)
    if op == "not_in":
        return a is MISSING or not any(eq(a, o) for o in value)
    if op == "between":
        lo, hi = compare(a, value[0]), compare(a, value[1])
        return lo is not None and hi is not None and lo >= 0 and hi <= 0
    wanted = {"lt": {-1}, "le": {-1, 0}, "gt": {1}, "ge": {0, 1}}[op]
    return compare(a, value) in wanted


@given(
    a=VALUES,
    text=st.sampled_from(["a", "price"]),
    number=st.one_of(st.integers(-3, 3), st.floats(-3, 3)),
    low=st.integers(-3, 3),
    high=st.floats(-3, 3),
)
def test_specialised_trait_predicates_equal_the_plain_ones(
    a: Any, text: str, number: float, low: int, high: float
) -> None:
    cases: list[tuple[str, Any]] = [
        ("eq", text),
        ("ne", text),
        ("in", [text, "b"]),
        ("not_in", ["a", "b"]),
        ("in", ["a", 1]),
        ("between", [low, high]),
        ("between", ["a", "b"]),
        *((op, number) for op in ("lt", "le", "gt", "ge")),
    ]
    for op, value in cases:
        assert trait_predicate(op, value)(a) is _plain(op, value, a), (op, value, a)


@given(
    x=st.one_of(st.integers(-5, 5), st.floats(allow_nan=True)),
    op=st.sampled_from(["eq", "ne", "lt", "le", "gt", "ge"]),
    value=st.one_of(st.integers(-5, 5), st.floats(-5, 5), st.tuples(st.just(-1), st.just(2))),
)
def test_numeric_check_equals_numeric_predicate(x: float, op: str, value: Any) -> None:
    check, bound = numeric_check(op, value)
    assert check(x, bound) is numeric_predicate(op, value)(x)


@given(
    path=st.sampled_from(
        ["a", "a.b", "a.b.c", "consent.marketing", "consent.", "consent", "consent.x.y", "x.y"]
    )
)
def test_state_trait_paths(path: str) -> None:
    traits = {"a": {"b": {"c": 1}}, "consent": {"": 2}, "x": 3}
    state = CustomerState("c", traits=traits, consent={"marketing": True, "x.y": False})
    facts = StateFacts(state, NOW)
    head, _, rest = path.partition(".")
    expected: Any = traits
    if head == "consent" and rest:
        expected = state.consent.get(rest, MISSING)
    else:
        for part in path.split("."):
            expected = (
                expected[part] if isinstance(expected, dict) and part in expected else MISSING
            )
            if expected is MISSING:
                break
    assert facts.trait(path) == expected and facts.trait(path) == expected


@given(
    ages=st.lists(st.floats(min_value=0, max_value=100 * DAY), max_size=4),
    windows=st.lists(st.sampled_from([DAY, 7 * DAY, 30 * DAY, 90 * DAY]), min_size=1),
)
def test_merged_recency_and_window_leaves_give_the_earliest(
    ages: list[float], windows: list[float]
) -> None:
    spec = SeriesSpec("s", "Order Completed", lambda _props: True, (), 90 * DAY, DAY)
    events = tuple(Ev("Order Completed", NOW - age) for age in ages)
    facts = FakeFacts(events=events, series={"s": spec})
    leaves = [RecencyDue("Order Completed", (w,)).at for w in windows]
    leaves += [WindowDue("s", w).at for w in windows] * 2
    found = [due for due in (leaf(facts) for leaf in leaves) if due is not None]
    merged = NextDue(leaves)
    assert len(merged._leaves) == 1 + len(set(windows))
    assert merged.at(facts) == (min(found) if found else None)


@given(message_id=st.text(max_size=40))
def test_message_digest_is_base85_of_the_blake2b_digest(message_id: str) -> None:
    raw = hashlib.blake2b(message_id.encode(), digest_size=4).digest()
    assert message_digest(message_id) == base64.b85encode(raw).decode()
