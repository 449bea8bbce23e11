"""Operators on traits and numbers, and the reason text of values (pure helpers)."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

from streams.engine.facts import MISSING


def is_scalar(value: object) -> bool:
    """Whether ``value`` is a JSON scalar (string, finite number, boolean or null)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return is_finite(value)
    return value is None or isinstance(value, str | bool)


def is_finite(value: int | float) -> bool:
    """Whether a number of a rule file is finite as a float (``.nan``, ``.inf`` and integers past
    1.8e308 are not: comparing with them would never or always hold)."""
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


_NUMBERS = (int, float)
"""The number types, as a tuple (``isinstance`` with a tuple builds no union per call)."""


def is_number(value: object) -> bool:
    """Whether ``value`` is an int or float (never a bool)."""
    return isinstance(value, _NUMBERS) and type(value) is not bool


def check_trait_value(op: str, value: object) -> None:
    """Check that ``value`` has the shape ``op`` expects; raise ``ValueError`` if not."""
    if op == "exists":
        raise ValueError("'exists' takes no 'value'; remove it")
    if op == "between":
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(is_scalar(v) and v is not None for v in value)
        ):
            raise ValueError("'between' expects a list of two values [low, high]")
        return
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value or not all(is_scalar(v) for v in value):
            raise ValueError(f"'{op}' expects a non-empty list of values")
        return
    if op in ("lt", "le", "gt", "ge"):
        if not ((is_number(value) and is_scalar(value)) or isinstance(value, str)):
            raise ValueError(f"'{op}' expects a number or a string (numbers finite)")
        return
    if not is_scalar(value):
        raise ValueError(f"'{op}' expects a single value (string, number, boolean or null)")


def check_numeric_value(op: str, value: object) -> None:
    """Check a numeric comparison's value: a number, or ``[low, high]`` for ``between``."""
    if op == "between":
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(is_number(v) and is_scalar(v) for v in value)
        ):
            raise ValueError("'between' expects a list of two numbers [low, high] (finite)")
        if value[0] > value[1]:
            raise ValueError("'between' expects [low, high] with low <= high")
        return
    if not (is_number(value) and is_scalar(value)):
        raise ValueError(f"'{op}' expects a number (finite)")


_SYMBOLS = {"eq": "=", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def format_value(value: object) -> str:
    """A value as reason text: ``1000.0`` -> ``1000``, ``["CA", "US"]`` -> ``[CA, US]``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def trait_text(path: str, op: str, value: object) -> str:
    """The clause ``path op value`` as reason text (``address.country in [CA, US]``)."""
    if op == "exists":
        return f"{path} exists"
    if op == "between" and isinstance(value, list | tuple):
        return f"{path} between {format_value(value[0])} and {format_value(value[1])}"
    if op in _SYMBOLS:
        return f"{path} {_SYMBOLS[op]} {format_value(value)}"
    return f"{path} {op.replace('_', ' ')} {format_value(value)}"


def numeric_text(op: str, value: float | tuple[float, float]) -> str:
    """The comparison part of a numeric clause (``>= 1``, ``between 1 and 99``)."""
    if isinstance(value, tuple):
        return f"between {format_value(value[0])} and {format_value(value[1])}"
    return f"{_SYMBOLS[op]} {format_value(value)}"


def values_equal(a: object, b: object) -> bool:
    """Equality that never mixes types: ``1 == 1.0`` but ``1 != True`` and ``1 != "1"``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if is_number(a) and is_number(b):
        return a == b
    return type(a) is type(b) and a == b


def compare(a: object, b: object) -> int | None:
    """-1, 0 or 1 for two numbers or two strings; ``None`` when they are not comparable."""
    if is_number(a) and is_number(b):
        x, y = float(a), float(b)  # type: ignore[arg-type]
    elif isinstance(a, str) and isinstance(b, str):
        return (a > b) - (a < b)
    else:
        return None
    if x != x or y != y:
        return None
    return (x > y) - (x < y)


def trait_predicate(op: str, value: Any) -> Callable[[Any], bool]:
    """A predicate applying ``op value`` to a trait or property (``MISSING`` when absent).

    A missing value makes every op false except ``ne`` and ``not_in`` (true); values of
    incompatible types never compare (false, never an exception). Common shapes (a string,
    strings, or numbers to compare with) get a specialised predicate with the same results.
    """
    fast = _fast_predicate(op, value)
    if fast is not None:
        return fast
    if op == "exists":
        return lambda a: a is not MISSING and a is not None
    if op == "eq":
        return lambda a: values_equal(a, value)
    if op == "ne":
        return lambda a: a is MISSING or not values_equal(a, value)
    if op in ("in", "not_in"):
        options = tuple(value)
        if op == "in":
            return lambda a: any(values_equal(a, o) for o in options)
        return lambda a: a is MISSING or not any(values_equal(a, o) for o in options)
    if op == "contains":
        return lambda a: _contains(a, value)
    if op == "between":
        low, high = value

        def between(a: Any) -> bool:
            lo, hi = compare(a, low), compare(a, high)
            return lo is not None and hi is not None and lo >= 0 and hi <= 0

        return between
    wanted = _ORDER[op]
    return lambda a: compare(a, value) in wanted


def _fast_predicate(op: str, value: Any) -> Callable[[Any], bool] | None:
    """The predicate of ``trait_predicate`` for a string, strings or numbers; None otherwise.

    ``values_equal(a, s)`` for a string ``s`` is ``type(a) is str and a == s``; ``compare`` of
    two numbers compares them as floats (NaN never compares), and a number with anything else
    gives None (false).
    """
    if op in ("eq", "ne") and type(value) is str:
        if op == "eq":
            return lambda a: type(a) is str and a == value
        return lambda a: a is MISSING or not (type(a) is str and a == value)
    if op in ("in", "not_in") and isinstance(value, list | tuple) and value:
        if not all(type(o) is str for o in value):
            return None
        options = frozenset(value)
        if op == "in":
            return lambda a: type(a) is str and a in options
        return lambda a: a is MISSING or not (type(a) is str and a in options)
    if op == "between" and isinstance(value, list | tuple) and len(value) == 2:
        low, high = value
        if not (is_number(low) and is_number(high)):
            return None
        lo, hi = float(low), float(high)

        def between(a: Any) -> bool:
            return isinstance(a, _NUMBERS) and type(a) is not bool and lo <= float(a) <= hi

        return between
    if op in _ORDER and is_number(value):
        bound = float(value)
        number = _FLOAT_ORDER[op]

        def ordered(a: Any) -> bool:
            return isinstance(a, _NUMBERS) and type(a) is not bool and number(float(a), bound)

        return ordered
    return None


_FLOAT_ORDER: dict[str, Callable[[float, float], bool]] = {
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}
"""``compare(x, y) in _ORDER[op]`` for two floats: NaN on either side is false in both."""


_ORDER: dict[str, frozenset[int | None]] = {
    "lt": frozenset({-1}),
    "le": frozenset({-1, 0}),
    "gt": frozenset({1}),
    "ge": frozenset({0, 1}),
}


def _contains(actual: object, item: object) -> bool:
    if isinstance(actual, str):
        return isinstance(item, str) and item in actual
    if isinstance(actual, list | tuple):
        return any(values_equal(x, item) for x in actual)
    return False


def numeric_check(
    op: str, value: float | tuple[float, float]
) -> tuple[Callable[[float, Any], bool], Any]:
    """``(check, bound)`` with ``check(x, bound) == numeric_predicate(op, value)(x)``.

    One call of a builtin comparison instead of a closure: ``operator.ge(x, float(value))``,
    or ``between(x, (low, high))`` for a range.
    """
    if isinstance(value, tuple):
        return _between, value
    return _NUMERIC[op], float(value)


def _between(x: float, bounds: tuple[float, float]) -> bool:
    """``low <= x <= high``."""
    low, high = bounds
    return low <= x <= high


_NUMERIC: dict[str, Callable[[float, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}
"""The comparison ``x op v`` of ``numeric_predicate`` as a builtin."""


def numeric_predicate(op: str, value: float | tuple[float, float]) -> Callable[[float], bool]:
    """A predicate applying ``op value`` to a number (a count, sum, average or metric)."""
    if isinstance(value, tuple):
        low, high = value
        return lambda x: low <= x <= high
    v = float(value)
    tests: dict[str, Callable[[float], bool]] = {
        "eq": lambda x: x == v,
        "ne": lambda x: x != v,
        "lt": lambda x: x < v,
        "le": lambda x: x <= v,
        "gt": lambda x: x > v,
        "ge": lambda x: x >= v,
    }
    return tests[op]
