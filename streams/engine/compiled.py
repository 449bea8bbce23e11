"""The compiled form of a condition: ``CompiledCondition``, its ``Reason``, ``EvalContext``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from streams.engine.facts import Facts

DAY = 86400.0
"""Seconds in a day."""


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a condition holds or not: the deciding clause as text, and the values it read."""

    rule: str
    values: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used in migration events: ``{"rule": ..., "values": {...}}``."""
        return {"rule": self.rule, "values": dict(self.values)}


class EvalContext(Protocol):
    """What compiled closures read during one evaluation."""

    @property
    def facts(self) -> Facts:
        """The customer's facts at the evaluation instant."""
        ...

    def is_member(self, segment_id: str) -> bool:
        """Whether the customer is a member of the segment (after family resolution)."""
        ...

    @property
    def memo(self) -> dict[Any, Any]:
        """Values computed once per evaluation, keyed by an object of the closure computing them.

        Only for values that depend on ``facts`` alone (the same in every closure that reads
        them), such as RFM scores.
        """
        ...


Test = Callable[[EvalContext], bool]
Explain = Callable[[EvalContext], tuple[bool, Reason]]
NextChange = Callable[[Facts], float | None]


@dataclass(frozen=True, slots=True)
class CompiledCondition:
    """A condition compiled into closures, with what it reads."""

    test: Test
    explain: Explain
    next_change: NextChange
    event_names: frozenset[str]
    segment_refs: tuple[str, ...]


def never(_facts: Facts) -> float | None:
    """A next-change function for conditions that change only with new events."""
    return None


def earliest(times: Sequence[float | None]) -> float | None:
    """The smallest of ``times`` that is not None, or None."""
    found = [t for t in times if t is not None]
    return min(found) if found else None


def earliest_of(functions: Sequence[NextChange], facts: Facts) -> float | None:
    """``earliest([fn(facts) for fn in functions])`` without building the list.

    The same comparisons in the same order as ``min``, so the same result.
    """
    best: float | None = None
    for function in functions:
        due = function(facts)
        if due is not None and (best is None or due < best):
            best = due
    return best
