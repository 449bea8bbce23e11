"""A pure, slow, obviously-right reference model of the segmenter's time semantics.

The model uses the rule engine only for what a rule *means* at one instant
(``RuleSet.evaluate`` and ``RuleSet.families``/``segments`` for the order of a move) and the
rule set's ``SeriesSpec`` descriptions (which event a window counts, its bucket width). It never
touches the state layer, timers, ``next_due``, the working set or the processor.

Per customer it keeps the full list of applied events and computes every fact from that list
at any instant (:class:`NaiveFacts`). Membership changes with no event are found by brute force:
the customer is evaluated at every instant at which some condition *could* flip (every event
time plus every rule duration, every bucket end plus every window, and 1 ms after each), in
time order. All time arithmetic is done in integer milliseconds.

Semantics modelled (event-time clock, one input partition, allowed lateness ``L``):

* events are processed in the order given; an event whose ``messageId`` the customer already
  had is ignored entirely (it does not even move the clock);
* the partition clock ``C`` is the highest event time seen so far; the watermark is ``C - L``;
* every customer has its own time: the last instant it was evaluated at. Before an event is
  applied, every customer's changes due at or before the watermark happen (trigger ``time``, at
  their instant; the customer's time moves to the watermark), then the event's customer's own
  changes due at or before the event's time (its time moves to the event's time);
* the event is then applied and the customer evaluated at **its own time**: the event's time,
  or, for an event arriving behind changes already made, the customer's time. An out-of-order
  event thus neither pulls a change due later than its own time earlier (as evaluating at the
  partition clock would) nor lets a change due between its time and the clock happen before it
  (as firing the customer's timers up to the clock would). The changes are stamped with the
  event's time, trigger ``event``;
* an event more than ``L`` behind the clock when it arrives still counts in lifetime facts,
  traits and first/last times, but not in any window;
* identify traits are merged in processing order (top-level keys replace);
* at the end, every change due at or before the final instant happens.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import yaml

from streams.engine import MISSING, RuleSet, SeriesSpec, parse_duration

ORDER = "Order Completed"
Migration = tuple[str, str, int, str]
"""``(segment, direction, time_ms, trigger_kind)``."""


def to_ms(timestamp: str) -> int:
    """An ISO 8601 timestamp (with offset) as integer epoch milliseconds."""
    return round(datetime.fromisoformat(timestamp).timestamp() * 1000)


def durations_in(sources: Mapping[str, str]) -> set[float]:
    """Every ``within``/``not_within`` duration (seconds) written in rule files' YAML text."""
    found: set[float] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("within", "not_within"):
                    found.add(parse_duration(value))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for text in sources.values():
        walk(yaml.safe_load(text))
    return found


@dataclass(frozen=True)
class Applied:
    """One applied event, reduced to what facts are computed from."""

    ts_ms: int
    kind: str
    name: str | None
    """The counted name: the track ``event``, ``Page Viewed``, ``Screen Viewed``; else None."""
    properties: Mapping[str, Any]
    traits: Mapping[str, Any]
    in_windows: bool
    """False for an event that arrived more than the allowed lateness behind the clock."""


def _counted_name(doc: Mapping[str, Any]) -> str | None:
    kind = doc["type"]
    if kind == "track":
        return str(doc["event"])
    if kind == "page":
        return "Page Viewed"
    if kind == "screen":
        return "Screen Viewed"
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _revenue(properties: Mapping[str, Any]) -> float:
    for name in ("revenue", "total"):
        amount = _number(properties.get(name))
        if amount is not None:
            return amount
    return 0.0


class NaiveFacts:
    """The engine's ``Facts`` protocol, recomputed from the full event list on every call."""

    def __init__(
        self,
        events: Sequence[Applied],
        now_ms: int,
        series: Mapping[str, SeriesSpec],
        since: Mapping[str, int] | None = None,
    ) -> None:
        self._events = list(events)
        self._now_ms = now_ms
        self._series = series
        self._since = dict(since or {})

    @property
    def now(self) -> float:
        """The evaluation instant (epoch seconds)."""
        return self._now_ms / 1000

    def trait(self, path: str) -> Any:
        """Identify traits merged in processing order, top-level keys replacing."""
        traits: dict[str, Any] = {}
        for event in self._events:
            if event.kind == "identify":
                traits.update(event.traits)
        value: Any = traits
        for part in path.split("."):
            if not isinstance(value, dict) or part not in value:
                return MISSING
            value = value[part]
        return value

    def _window_events(self, series_id: str, seconds: float) -> list[Applied]:
        spec = self._series[series_id]
        window = round(seconds * 1000)
        now = self._now_ms
        return [
            event
            for event in self._events
            if event.in_windows
            and event.name == spec.event
            and spec.where(event.properties)
            and 0 <= now - event.ts_ms < window
        ]

    def window_count(self, series_id: str, seconds: float) -> int:
        """Events of the series with ``0 <= now - t < window`` (exact, in ms)."""
        return len(self._window_events(series_id, seconds))

    def window_sum(self, series_id: str, prop: str, seconds: float) -> float:
        """Sum of the numeric ``prop`` over the window's events."""
        amounts = (_number(e.properties.get(prop)) for e in self._window_events(series_id, seconds))
        return float(sum(a for a in amounts if a is not None))

    def window_counts(self, series_id: str, seconds: float) -> list[tuple[float, float]]:
        """``(time, events)`` of each instant in the window, oldest first."""
        counts: dict[int, int] = {}
        for e in self._window_events(series_id, seconds):
            counts[e.ts_ms] = counts.get(e.ts_ms, 0) + 1
        return [(ms / 1000, float(n)) for ms, n in sorted(counts.items())]

    def window_expiry(self, series_id: str, seconds: float) -> float | None:
        """When the oldest event now inside the window leaves it (None when empty)."""
        events = self._window_events(series_id, seconds)
        if not events:
            return None
        return (min(e.ts_ms for e in events) + round(seconds * 1000)) / 1000

    def _times(self, name: str) -> list[int]:
        return [e.ts_ms for e in self._events if e.name == name]

    def last_time(self, event: str) -> float | None:
        """When ``event`` last happened."""
        times = self._times(event)
        return max(times) / 1000 if times else None

    def first_time(self, event: str) -> float | None:
        """When ``event`` first happened."""
        times = self._times(event)
        return min(times) / 1000 if times else None

    def metric(self, name: str) -> float | None:
        """Lifetime metrics over every applied event."""
        orders = [e for e in self._events if e.name == ORDER]
        revenue = float(sum(_revenue(e.properties) for e in orders))
        if name == "orders":
            return float(len(orders))
        if name == "revenue":
            return revenue
        if name == "average_order_value":
            return revenue / len(orders) if orders else None
        if name == "events":
            return float(sum(1 for e in self._events if e.name is not None))
        if name in ("first_seen", "last_seen"):
            times = [e.ts_ms for e in self._events]
            if not times:
                return None
            return (min(times) if name == "first_seen" else max(times)) / 1000
        return None

    def member_since(self, segment_id: str) -> float | None:
        """When the customer entered ``segment_id`` (before this evaluation), or None."""
        since = self._since.get(segment_id)
        return None if since is None else since / 1000

    def rfm_boundaries(self) -> None:
        """No live RFM boundaries: the pack's fixed ones apply."""
        return None


@dataclass
class _Open:
    """Changes of a customer at one instant, not yet published."""

    at: int
    members: frozenset[str]
    since: dict[str, int]
    kind: str
    when: int


@dataclass
class _Customer:
    events: list[Applied] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    members: frozenset[str] = frozenset()
    since: dict[str, int] = field(default_factory=dict)
    evaluated_at: int | None = None
    """The last instant the customer was evaluated at (changes up to it are accounted for)."""
    open: _Open | None = None
    migrations: list[Migration] = field(default_factory=list)


@dataclass(frozen=True)
class ModelResult:
    """Per customer: the expected migrations in order, and the memberships at the end."""

    migrations: dict[str, list[Migration]]
    final: dict[str, frozenset[str]]
    end_ms: int


class ReferenceModel:
    """Feed events in arrival order; read the expected migrations."""

    def __init__(self, rules: RuleSet, durations: Iterable[float], lateness_s: float) -> None:
        self.rules = rules
        self.durations_ms = sorted({round(d * 1000) for d in durations})
        self.lateness_ms = round(lateness_s * 1000)
        self.series = {spec.id: spec for spec in rules.series}
        self.clock: int | None = None
        self.customers: dict[str, _Customer] = {}

    # -- evaluation -----------------------------------------------------------------------------

    def members_at(self, customer_id: str, now_ms: int) -> frozenset[str]:
        """The customer's memberships evaluated from scratch at ``now_ms``."""
        customer = self.customers[customer_id]
        facts = NaiveFacts(customer.events, now_ms, self.series, customer.since)
        return self.rules.evaluate(facts).members

    def _order(self) -> list[list[str]]:
        """Units (a segment, or a whole family) in rule-set order, members in that order."""
        units: list[list[str]] = []
        family_unit: dict[str, list[str]] = {}
        for info in self.rules.segments:
            if info.family is None:
                units.append([info.id])
            elif info.family in family_unit:
                family_unit[info.family].append(info.id)
            else:
                family_unit[info.family] = [info.id]
                units.append(family_unit[info.family])
        return units

    def _publish(
        self, customer: _Customer, old: frozenset[str], new: frozenset[str], when: int, kind: str
    ) -> None:
        for unit in self._order():
            for sid in unit:
                if sid in old and sid not in new:
                    customer.migrations.append((sid, "exited", when, kind))
            for sid in unit:
                if sid in new and sid not in old:
                    customer.migrations.append((sid, "entered", when, kind))

    def _close(self, customer: _Customer) -> None:
        """Publish the net change of the customer's open instant."""
        opened = customer.open
        if opened is None:
            return
        customer.open = None
        for sid in opened.members & customer.members:
            customer.since[sid] = opened.since[sid]
        self._publish(customer, opened.members, customer.members, opened.when, opened.kind)

    def _change(self, customer: _Customer, new: frozenset[str], when: int, kind: str) -> None:
        """A change with no event: published at once (after the open instant, if any)."""
        self._close(customer)
        self._publish(customer, customer.members, new, when, kind)
        customer.members = new
        customer.since = {sid: customer.since.get(sid, when) for sid in new}

    def _hold(
        self, customer: _Customer, new: frozenset[str], instant: int, when: int, kind: str
    ) -> None:
        """An event's change at ``instant``: published when the instant is over, as a net change."""
        if customer.open is not None and customer.open.at != instant:
            self._close(customer)
        if new == customer.members:
            return
        if customer.open is None:
            customer.open = _Open(instant, customer.members, dict(customer.since), kind, when)
        else:
            customer.open.kind = kind
            customer.open.when = when
        customer.members = new
        customer.since = {sid: customer.since.get(sid, when) for sid in new}

    def _candidates(self, customer: _Customer) -> set[int]:
        """Every instant at which some condition could flip with no new event."""
        found: set[int] = set()
        for event in customer.events:
            for duration in self.durations_ms:
                found.add(event.ts_ms + duration)
        return found | {t + 1 for t in found}

    def _fire(self, customer_id: str, before: int) -> None:
        """Every change of the customer with no event, at instants before ``before``."""
        customer = self.customers[customer_id]
        last = customer.evaluated_at
        if last is None:
            return
        for instant in sorted(t for t in self._candidates(customer) if last < t < before):
            self._change(customer, self.members_at(customer_id, instant), instant, "time")
            customer.evaluated_at = instant

    # -- input ----------------------------------------------------------------------------------

    def feed(self, doc: Mapping[str, Any]) -> None:
        """Apply one input event (a Segment-spec dict) in arrival order."""
        kind = doc["type"]
        if kind not in ("track", "page", "screen", "identify"):
            raise NotImplementedError(f"the reference model does not handle {kind!r} events")
        cid = str(doc.get("userId") or doc["anonymousId"])
        customer = self.customers.setdefault(cid, _Customer())
        message_id = str(doc["messageId"])
        if message_id in customer.seen:
            return
        ts = to_ms(doc["timestamp"])
        late_by = 0 if self.clock is None else self.clock - ts
        self.clock = ts if self.clock is None else max(self.clock, ts)
        watermark = self.clock - self.lateness_ms
        for other in sorted(self.customers):
            opened = self.customers[other].open
            if opened is not None and opened.at < self.clock:
                self._close(self.customers[other])
            self._fire(other, watermark)
        instant = ts if customer.evaluated_at is None else max(ts, customer.evaluated_at)
        self._fire(cid, instant)
        if customer.open is not None and customer.open.at < instant:
            self._close(customer)
        customer.seen.add(message_id)
        customer.events.append(
            Applied(
                ts_ms=ts,
                kind=kind,
                name=_counted_name(doc),
                properties=dict(doc.get("properties") or {}),
                traits=dict(doc.get("traits") or {}),
                in_windows=late_by <= self.lateness_ms,
            )
        )
        self._hold(customer, self.members_at(cid, instant), instant, ts, "event")
        customer.evaluated_at = instant

    def finish(self, end_ms: int | None = None) -> ModelResult:
        """Publish every open instant and fire everything due up to ``end_ms`` (default: the
        latest event time), inclusive."""
        end = end_ms if end_ms is not None else self.clock
        if end is None:
            return ModelResult({}, {}, 0)
        for cid in sorted(self.customers):
            self._close(self.customers[cid])
            self._fire(cid, end + 1)
        return ModelResult(
            migrations={cid: list(c.migrations) for cid, c in self.customers.items()},
            final={cid: self.members_at(cid, end) for cid in self.customers},
            end_ms=end,
        )


def run_model(
    rules: RuleSet,
    events: Iterable[Mapping[str, Any]],
    durations: Iterable[float],
    lateness_s: float,
    end_ms: int | None = None,
) -> ModelResult:
    """The expected migration stream of ``events`` (in arrival order) under ``rules``."""
    model = ReferenceModel(rules, durations, lateness_s)
    for doc in events:
        model.feed(doc)
    return model.finish(end_ms)


def fold(migrations: Iterable[Migration]) -> frozenset[str]:
    """The memberships a migration stream leaves a customer in."""
    members: set[str] = set()
    for segment, direction, _time, _kind in migrations:
        if direction == "entered":
            members.add(segment)
        else:
            members.discard(segment)
    return frozenset(members)
