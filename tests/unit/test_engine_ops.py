"""Operators on traits and numbers, durations, and the reason text of values."""

from __future__ import annotations

from typing import Any

import pytest

from streams.engine import MISSING, DurationError, format_duration, parse_duration
from streams.engine.model import (
    compare,
    format_value,
    numeric_predicate,
    trait_predicate,
    trait_text,
    values_equal,
)


@pytest.mark.parametrize(
    ("op", "value", "actual", "expected"),
    [
        ("eq", "US", "US", True),
        ("eq", "US", "us", False),
        ("eq", 1, 1.0, True),
        ("eq", 1, True, False),
        ("eq", True, True, True),
        ("eq", 1, "1", False),
        ("eq", None, None, True),
        ("ne", "US", "CA", True),
        ("ne", "US", "US", False),
        ("ne", 5, "5", True),
        ("lt", 18, 17, True),
        ("lt", 18, 18, False),
        ("le", 18, 18, True),
        ("gt", 18, 19.5, True),
        ("gt", 18, 18, False),
        ("ge", 18, 18, True),
        ("ge", "b", "c", True),
        ("ge", 18, "99", False),
        ("lt", 18, None, False),
        ("gt", 0, True, False),
        ("in", ["CA", "US"], "US", True),
        ("in", ["CA", "US"], "GB", False),
        ("in", [1, 2], 2.0, True),
        ("not_in", ["CA", "US"], "GB", True),
        ("not_in", ["CA", "US"], "CA", False),
        ("contains", "shoe", "red shoes", True),
        ("contains", "boot", "red shoes", False),
        ("contains", "vip", ["new", "vip"], True),
        ("contains", "vip", ["new"], False),
        ("contains", 1, 12, False),
        ("contains", "1", 12, False),
        ("exists", None, "x", True),
        ("exists", None, 0, True),
        ("exists", None, False, True),
        ("exists", None, None, False),
        ("between", [18, 24], 18, True),
        ("between", [18, 24], 24, True),
        ("between", [18, 24], 24.5, False),
        ("between", [18, 24], 17, False),
        ("between", [18, 24], "20", False),
        ("between", ["a", "m"], "f", True),
    ],
)
def test_trait_ops(op: str, value: Any, actual: Any, expected: bool) -> None:
    assert trait_predicate(op, value)(actual) is expected


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("eq", "US", False),
        ("ne", "US", True),
        ("lt", 5, False),
        ("le", 5, False),
        ("gt", 5, False),
        ("ge", 5, False),
        ("in", ["US"], False),
        ("not_in", ["US"], True),
        ("contains", "x", False),
        ("exists", None, False),
        ("between", [1, 2], False),
    ],
)
def test_missing_trait_is_false_except_ne_and_not_in(op: str, value: Any, expected: bool) -> None:
    assert trait_predicate(op, value)(MISSING) is expected


@pytest.mark.parametrize("actual", [{"a": 1}, [1, 2], object(), float("nan")])
def test_ordering_incompatible_types_is_false_never_raises(actual: Any) -> None:
    for op in ("lt", "le", "gt", "ge"):
        assert trait_predicate(op, 3)(actual) is False


def test_values_equal_and_compare_keep_types_apart() -> None:
    assert values_equal(2, 2.0)
    assert not values_equal(0, False)
    assert not values_equal("a", ["a"])
    assert compare(1, 2) == -1
    assert compare("b", "a") == 1
    assert compare(1, "1") is None
    assert compare(True, 1) is None


@pytest.mark.parametrize(
    ("op", "value", "x", "expected"),
    [
        ("eq", 1.0, 1, True),
        ("ne", 1.0, 1, False),
        ("lt", 3.0, 2, True),
        ("le", 3.0, 3, True),
        ("gt", 3.0, 3, False),
        ("ge", 3.0, 3, True),
        ("between", (1.0, 99.0), 99, True),
        ("between", (1.0, 99.0), 100, False),
        ("between", (1.0, 99.0), 0.5, False),
    ],
)
def test_numeric_ops(op: str, value: Any, x: float, expected: bool) -> None:
    assert numeric_predicate(op, value)(x) is expected


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("15m", 900),
        ("1h", 3600),
        ("7d", 604800),
        ("2w", 1209600),
        ("1.5h", 5400),
        (" 3 d ", 259200),
        (45, 45),
        (0.5, 0.5),
    ],
)
def test_parse_duration(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["0s", "-1h", "1y", "h", "", "1 hour", 0, -5, True, None, [1]])
def test_bad_durations_are_rejected(bad: Any) -> None:
    with pytest.raises(DurationError, match="expected a duration"):
        parse_duration(bad)


def test_format_duration_prefers_days_and_exact_units() -> None:
    assert format_duration(604800) == "7d"
    assert format_duration(86400) == "1d"
    assert format_duration(5400) == "90m"
    assert format_duration(3600) == "1h"
    assert format_duration(45) == "45s"
    assert format_duration(1.5) == "1.5s"


def test_reason_text_of_values() -> None:
    assert format_value(1000.0) == "1000"
    assert format_value(2.5) == "2.5"
    assert format_value(["CA", "US"]) == "[CA, US]"
    assert format_value(True) == "true"
    assert format_value(None) == "null"
    assert trait_text("address.country", "in", ["CA", "US"]) == "address.country in [CA, US]"
    assert trait_text("age", "between", [18, 24]) == "age between 18 and 24"
    assert trait_text("age", "ge", 18) == "age >= 18"
    assert trait_text("plan", "not_in", ["free"]) == "plan not in [free]"
    assert trait_text("email", "exists", None) == "email exists"
