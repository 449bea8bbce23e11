"""A dict-backed ``Facts`` for engine tests, with exact (unbucketed) windows."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from streams.engine import MISSING, RfmBoundaries, RuleSet, SeriesSpec, parse_rules

DAY = 86400.0
NOW = 1_700_000_000.0


@dataclass(frozen=True)
class Ev:
    """An event the fake customer did: name, epoch seconds, properties."""

    name: str
    ts: float
    props: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FakeFacts:
    """One customer's facts: nested trait dict, event list, metrics, the rule set's series.

    A window of W seconds at ``now`` holds the events with ``now - W < ts <= now``; so an event
    leaves the window at ``ts + W`` (that is what ``window_expiry`` returns). ``members`` maps
    a segment the customer is in to when it entered (``member_since``); ``live_rfm`` is what
    ``rfm_boundaries`` returns.
    """

    now: float = NOW
    traits: Mapping[str, Any] = field(default_factory=dict)
    events: tuple[Ev, ...] = ()
    metrics: Mapping[str, float | None] = field(default_factory=dict)
    series: Mapping[str, SeriesSpec] = field(default_factory=dict)
    members: Mapping[str, float] = field(default_factory=dict)
    live_rfm: RfmBoundaries | None = None

    @classmethod
    def of(
        cls,
        rules: RuleSet | None = None,
        *,
        now: float = NOW,
        traits: Mapping[str, Any] | None = None,
        events: Iterable[Ev] = (),
        metrics: Mapping[str, float | None] | None = None,
        members: Mapping[str, float] | None = None,
        live_rfm: RfmBoundaries | None = None,
    ) -> FakeFacts:
        """Facts for ``rules`` (whose series the windows use)."""
        return cls(
            now=now,
            traits=dict(traits or {}),
            events=tuple(events),
            metrics=dict(metrics or {}),
            series={s.id: s for s in (rules.series if rules else ())},
            members=dict(members or {}),
            live_rfm=live_rfm,
        )

    def prediction(
        self, metric: str, horizon_s: float | None, at: float | None = None
    ) -> float | None:
        """No model in these facts."""
        return None

    def prediction_due(
        self, metric: str, horizon_s: float | None, threshold: float, holds: Any
    ) -> float | None:
        """No model in these facts."""
        return None

    def at(self, now: float) -> FakeFacts:
        """The same customer seen at another instant."""
        return replace(self, now=now)

    def with_metrics(self, **metrics: float | None) -> FakeFacts:
        """The same customer with some metrics changed."""
        return replace(self, metrics={**self.metrics, **metrics})

    def with_members(self, members: Mapping[str, float]) -> FakeFacts:
        """The same customer with another membership (segment -> when entered)."""
        return replace(self, members=dict(members))

    def trait(self, path: str) -> Any:
        current: Any = self.traits
        for part in path.split("."):
            if not isinstance(current, Mapping) or part not in current:
                return MISSING
            current = current[part]
        return current

    def _in_window(self, series_id: str, seconds: float) -> list[Ev]:
        spec = self.series[series_id]
        return [
            e
            for e in self.events
            if e.name == spec.event
            and self.now - seconds < e.ts <= self.now
            and spec.where(e.props)
        ]

    def window_count(self, series_id: str, seconds: float) -> int:
        return len(self._in_window(series_id, seconds))

    def window_sum(self, series_id: str, prop: str, seconds: float) -> float:
        total = 0.0
        for e in self._in_window(series_id, seconds):
            value = e.props.get(prop)
            if isinstance(value, int | float) and not isinstance(value, bool):
                total += value
        return total

    def window_counts(self, series_id: str, seconds: float) -> list[tuple[float, float]]:
        counts: dict[float, float] = {}
        for e in self._in_window(series_id, seconds):
            counts[e.ts] = counts.get(e.ts, 0) + 1
        return sorted(counts.items())

    def window_expiry(self, series_id: str, seconds: float) -> float | None:
        ends = [e.ts + seconds for e in self._in_window(series_id, seconds)]
        return min(ends) if ends else None

    def last_time(self, event: str) -> float | None:
        times = [e.ts for e in self.events if e.name == event and e.ts <= self.now]
        return max(times) if times else None

    def first_time(self, event: str) -> float | None:
        times = [e.ts for e in self.events if e.name == event and e.ts <= self.now]
        return min(times) if times else None

    def metric(self, name: str) -> float | None:
        return self.metrics.get(name)

    def member_since(self, segment_id: str) -> float | None:
        return self.members.get(segment_id)

    def rfm_boundaries(self) -> RfmBoundaries | None:
        return self.live_rfm


def rules_from(**files: str) -> RuleSet:
    """A rule set from YAML texts keyed by file stem: ``rules_from(a="id: a ...")``."""
    return parse_rules({f"{stem}.yaml": textwrap.dedent(text) for stem, text in files.items()})


def segment(seg_id: str, condition: str, **extra: Any) -> str:
    """A one-segment YAML file with ``condition`` given as inline YAML (flow style)."""
    lines = [f"id: {seg_id}", f"name: {seg_id}", f"kind: {extra.pop('kind', 'behavioral')}"]
    lines += [f"{key}: {value}" for key, value in extra.items()]
    lines.append(f"condition: {condition}")
    return "\n".join(lines) + "\n"
