"""Next-change functions as small objects, so that a rule set can combine them cheaply.

Conditions combine their children's next changes by the earliest result (``Earliest``). A rule
set's next due time is the earliest over every segment, so :class:`NextDue` flattens those
trees into their leaves and merges leaves that read the same thing:

- every ``RecencyDue`` of one event becomes one, over the union of the windows (one
  ``last_time`` read; the first ``last + window`` after ``now`` in ascending windows is the
  smallest);
- equal ``WindowDue`` leaves (same series and window) and equal ``CountDue`` leaves (same
  series, window and comparison) are called once, and the
  ``predicted_value`` crossings are one call (``merge_crossings``);
- an ``in_segment`` leaf (``SegmentNext``) is skipped when the function it delegates to only
  combines leaves the rule set calls anyway (the earliest is then the same).

Each merge keeps the result: the earliest of the same candidate instants.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from streams.engine.compiled import CompiledCondition, NextChange, earliest_of, never
from streams.engine.facts import Facts
from streams.engine.instants import ceil_instant
from streams.engine.value import merge_crossings


class Earliest:
    """The earliest result of ``functions``: ``at`` is the next-change function."""

    __slots__ = ("functions",)

    def __init__(self, functions: Sequence[NextChange]) -> None:
        self.functions = tuple(functions)

    def at(self, facts: Facts) -> float | None:
        """``earliest_of(self.functions, facts)``."""
        return earliest_of(self.functions, facts)


class RecencyDue:
    """When the last ``event`` leaves the first of ``windows`` (ascending) it is still in."""

    __slots__ = ("event", "windows")

    def __init__(self, event: str, windows: Iterable[float]) -> None:
        self.event = event
        self.windows = tuple(sorted(set(windows)))

    def at(self, facts: Facts) -> float | None:
        """The smallest ``last + window`` after ``now``, or None (no such event, or none)."""
        last = facts.last_time(self.event)
        if last is None:
            return None
        now = facts.now
        for window in self.windows:
            due = ceil_instant(last + window)
            if due > now:
                return due
        return None


class WindowDue:
    """When the oldest entry in a non-empty window of a series leaves it."""

    __slots__ = ("series_id", "window")

    def __init__(self, series_id: str, window: float) -> None:
        self.series_id = series_id
        self.window = window

    def at(self, facts: Facts) -> float | None:
        """None for an empty window, else ``facts.window_expiry``."""
        if facts.window_count(self.series_id, self.window) == 0:
            return None
        return facts.window_expiry(self.series_id, self.window)


class CountDue:
    """When a window count's comparison (``check(count, bound)``) next changes with no new
    event: the count only falls as entries leave, so at the first expiry after which the
    comparison differs from now. None when no expiry changes it (a ``count >= n`` below ``n``
    stays false until an event), which spares the timers of expiries that change nothing."""

    __slots__ = ("bound", "check", "key", "series_id", "window")

    def __init__(
        self, series_id: str, window: float, check: Callable[[float, Any], bool], bound: Any
    ) -> None:
        self.series_id = series_id
        self.window = window
        self.check = check
        self.bound = bound
        self.key = (series_id, window, check, bound)

    def at(self, facts: Facts) -> float | None:
        """The expiry at which the comparison flips, or None."""
        entries = facts.window_counts(self.series_id, self.window)
        if not entries:
            return None
        check, bound = self.check, self.bound
        count = sum(n for _, n in entries)
        holds = check(count, bound)
        for time, n in entries:
            count -= n
            if check(count, bound) != holds:
                return ceil_instant(time + self.window)
        return None


class SegmentNext:
    """``in_segment``: the next change of the target's unit, bound after compilation."""

    __slots__ = ("bound", "target")

    def __init__(self, bound: Mapping[str, NextChange], target: str) -> None:
        self.bound = bound
        self.target = target

    def at(self, facts: Facts) -> float | None:
        """The bound function's result, or None while none is bound."""
        fn = self.bound.get(self.target)
        return fn(facts) if fn is not None else None


def _owner(function: NextChange) -> object:
    return getattr(function, "__self__", None)


def leaves(functions: Iterable[NextChange]) -> list[NextChange]:
    """``functions`` with every ``Earliest`` replaced by its leaves, recursively, in order."""
    found: list[NextChange] = []
    for function in functions:
        owner = _owner(function)
        if isinstance(owner, Earliest):
            found.extend(leaves(owner.functions))
        else:
            found.append(function)
    return found


def _merge(functions: Sequence[NextChange]) -> tuple[NextChange, ...]:
    """Merge recency leaves by event and equal window leaves, each at its first place."""
    recency: dict[str, list[float]] = {}
    result: list[NextChange | str] = []
    seen: set[object] = set()
    for function in dict.fromkeys(functions):
        owner = _owner(function)
        if isinstance(owner, RecencyDue):
            if owner.event not in recency:
                recency[owner.event] = []
                result.append(owner.event)
            recency[owner.event].extend(owner.windows)
            continue
        if isinstance(owner, WindowDue | CountDue):
            key = owner.key if isinstance(owner, CountDue) else (owner.series_id, owner.window)
            if key in seen:
                continue
            seen.add(key)
        result.append(function)
    return tuple(
        RecencyDue(item, recency[item]).at if isinstance(item, str) else item for item in result
    )


class NextDue:
    """The earliest of many next-change functions, flattened and merged (module docstring)."""

    __slots__ = ("_covered", "_leaves", "_raw", "_segments")

    def __init__(self, functions: Iterable[NextChange]) -> None:
        raw = leaves(functions)
        self._raw = frozenset(raw)
        self._segments = tuple(
            owner for owner in map(_owner, raw) if isinstance(owner, SegmentNext)
        )
        kept = [f for f in raw if not isinstance(_owner(f), SegmentNext)]
        self._leaves = merge_crossings(_merge(kept))
        self._covered: dict[NextChange, bool] = {}

    @classmethod
    def of(cls, conditions: Iterable[CompiledCondition]) -> NextDue:
        """The earliest next change of ``conditions`` (``never`` left out: always None)."""
        return cls(c.next_change for c in conditions if c.next_change is not never)

    def _covers(self, function: NextChange) -> bool:
        """Whether ``function`` only combines leaves called anyway (memoised per function)."""
        covered = self._covered.get(function)
        if covered is None:
            covered = all(leaf in self._raw for leaf in leaves([function]))
            if len(self._covered) < 1024:
                self._covered[function] = covered
        return covered

    def at(self, facts: Facts) -> float | None:
        """The earliest result of every function given, or None."""
        best = earliest_of(self._leaves, facts)
        for segment in self._segments:
            function = segment.bound.get(segment.target)
            if function is None or self._covers(function):
                continue
            due = function(facts)
            if due is not None and (best is None or due < best):
                best = due
        return best


__all__ = ["CountDue", "Earliest", "NextDue", "RecencyDue", "SegmentNext", "WindowDue", "leaves"]
