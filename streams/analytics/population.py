"""One pass over every stored customer: what the performance figures and the report need.

Per segment: members (split into the holdout group and the rest), their lifetime revenue,
how many can be reached, how many have it as their primary segment, and for one window the
members who converted and the value they converted for. Non-members are everyone else, so they
are the totals minus the members. Reading every state costs O(customers): it runs on demand,
never on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from streams.analytics.stats import Sample
from streams.api.queries import iter_states
from streams.engine import RuleSet
from streams.engine.membership import is_holdout
from streams.state.customer import CustomerState
from streams.state.facts import StateFacts
from streams.store.base import Store

REACH_TRAITS = ("email", "phone")


@dataclass
class Group:
    """Customers of one group: how many, how many converted, and their converted value."""

    customers: int = 0
    converted: int = 0
    value: Sample = field(default_factory=Sample)

    def add(self, converted: bool, value: float) -> None:
        """Count one customer."""
        self.customers += 1
        self.converted += int(converted)
        self.value = self.value.add(value)

    def minus(self, other: Group) -> Group:
        """This group without ``other`` (a subset of it)."""
        value = Sample(
            self.value.n - other.value.n,
            self.value.total - other.value.total,
            self.value.squares - other.value.squares,
        )
        return Group(self.customers - other.customers, self.converted - other.converted, value)

    def merged(self, other: Group) -> Group:
        """Both groups together."""
        value = Sample(
            self.value.n + other.value.n,
            self.value.total + other.value.total,
            self.value.squares + other.value.squares,
        )
        return Group(self.customers + other.customers, self.converted + other.converted, value)

    def as_dict(self) -> dict[str, object]:
        """The JSON shape of the API."""
        return {
            "customers": self.customers,
            "converted": self.converted,
            "rate": self.converted / self.customers if self.customers else None,
            "value_per_customer": self.value.mean if self.customers else None,
        }


@dataclass
class SegmentFigures:
    """What the pass found for one segment."""

    treated: Group = field(default_factory=Group)
    """Members outside the holdout group."""
    holdout: Group = field(default_factory=Group)
    revenue: float = 0.0
    reachable: int = 0
    primary: int = 0

    @property
    def members(self) -> Group:
        """Every member, holdout included."""
        return self.treated.merged(self.holdout)


@dataclass
class Population:
    """The whole pass: totals and every segment's figures, at ``now`` over ``window_s``."""

    now: float
    window_s: float
    everyone: Group = field(default_factory=Group)
    revenue: float = 0.0
    segments: dict[str, SegmentFigures] = field(default_factory=dict)

    def non_members(self, segment: str) -> Group:
        """Everyone who is not a member of ``segment``."""
        return self.everyone.minus(self.segments[segment].members)


def reachable(state: CustomerState, device_traits: Sequence[str]) -> bool:
    """Marketing consent given, and an e-mail, a phone or a device trait present."""
    if state.consent.get("marketing") is not True:
        return False
    return any(state.traits.get(t) not in (None, "") for t in (*REACH_TRAITS, *device_traits))


async def measure(
    store: Store,
    rules: RuleSet,
    now: float,
    window_s: float,
    device_traits: Sequence[str] = (),
    progress: Callable[[int], None] | None = None,
) -> Population:
    """Read every customer once (``progress`` is told how many so far, every 10,000)."""
    found = Population(now, window_s)
    figures = {info.id: SegmentFigures() for info in rules.segments}
    holdout = {info.id: info.holdout_percent for info in rules.segments}
    conversion = rules.conversion
    seen = 0
    async for state in iter_states(store):
        converted, value = False, 0.0
        if conversion is not None:
            facts = StateFacts(state, now)
            converted = facts.window_count(conversion.series_id, window_s) > 0
            value = facts.window_sum(conversion.series_id, conversion.value_property, window_s)
        found.everyone.add(converted, value)
        found.revenue += state.revenue
        reach = reachable(state, device_traits)
        for segment in state.members:
            mine = figures.get(segment)
            if mine is None:
                continue
            percent = holdout[segment]
            group = (
                mine.holdout
                if percent and is_holdout(state.customer_id, segment, percent)
                else mine.treated
            )
            group.add(converted, value)
            mine.revenue += state.revenue
            mine.reachable += int(reach)
        if state.primary in figures:
            figures[state.primary].primary += 1
        seen += 1
        if progress is not None and seen % 10_000 == 0:
            progress(seen)
    found.segments = figures
    return found
