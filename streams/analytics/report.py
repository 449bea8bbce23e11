"""``segmenter report`` and ``GET /v1/report``: every segment against MIDAS.

Measurable (size, growth), Accessible (reach), Substantial (share of customers and revenue),
Differentiable (overlap, and conversion compared with the most similar segment), Actionable
(performance against a comparison group). Flags, each with its reason:

- ``too_small`` / ``too_large``: share of customers below ``report_min_share`` / above
  ``report_max_share``;
- ``not_differentiable``: Jaccard index with another segment above ``report_max_jaccard``, or a
  conversion rate not different at 95% from the most similar segment's (both with at least
  ``report_min_compare`` members);
- ``unreachable``: fewer than ``report_min_reach`` of the members reachable;
- and for the whole pack, ``too_many_primary``: more than ``report_max_primary`` segments are
  some customer's primary segment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from streams.analytics import history as h
from streams.analytics.overlap import Overlap, most_similar
from streams.analytics.performance import compare, groups
from streams.analytics.population import Group, Population, SegmentFigures
from streams.analytics.stats import Comparison, two_proportions
from streams.engine import RuleSet
from streams.settings import Settings
from streams.store.base import SizeHistory


def _share(part: float, whole: float) -> float | None:
    """``part / whole``, None when ``whole`` is 0."""
    return part / whole if whole else None


def _size_flags(share: float | None, settings: Settings) -> list[dict[str, str]]:
    """``too_small`` or ``too_large`` when the share of customers is out of bounds."""
    flags: list[dict[str, str]] = []
    if share is not None and share < settings.report_min_share:
        flags.append(
            {
                "flag": "too_small",
                "reason": f"{share:.1%} of customers, below {settings.report_min_share:.1%}",
            }
        )
    if share is not None and share > settings.report_max_share:
        flags.append(
            {
                "flag": "too_large",
                "reason": f"{share:.1%} of customers, above {settings.report_max_share:.1%}",
            }
        )
    return flags


def _differentiation_flags(
    figures: SegmentFigures,
    population: Population,
    similar: tuple[str, Overlap] | None,
    settings: Settings,
) -> list[dict[str, str]]:
    """``not_differentiable`` against the most similar segment: by overlap, else by conversion."""
    if similar is None:
        return []
    other_id, overlap = similar
    if overlap.jaccard > settings.report_max_jaccard:
        return [
            {
                "flag": "not_differentiable",
                "reason": f"Jaccard {overlap.jaccard:.2f} with {other_id}, above"
                f" {settings.report_max_jaccard:.2f}",
            }
        ]
    mine = figures.members
    theirs = population.segments[other_id].members
    floor = settings.report_min_compare
    test = two_proportions(mine.converted, mine.customers, theirs.converted, theirs.customers)
    if (
        test is not None
        and mine.customers >= floor
        and theirs.customers >= floor
        and not test.significant
    ):
        return [
            {
                "flag": "not_differentiable",
                "reason": f"conversion {test.a:.1%} vs {test.b:.1%} of {other_id}"
                f" (its most similar segment): not different at 95% (p={test.p_value:.2f})",
            }
        ]
    return []


def _reach_flags(reach: float | None, settings: Settings) -> list[dict[str, str]]:
    """``unreachable`` when too few members can be reached."""
    if reach is not None and reach < settings.report_min_reach:
        return [
            {
                "flag": "unreachable",
                "reason": f"{reach:.0%} of members reachable,"
                f" below {settings.report_min_reach:.0%}",
            }
        ]
    return []


def _performance(
    members: Group, other: Group, name: str, rate: Comparison | None
) -> dict[str, Any]:
    """The members' conversion rate against the comparison group's, with the lift."""
    return {
        "comparison_group": name,
        "rate": members.as_dict()["rate"],
        "comparison_rate": other.as_dict()["rate"],
        "lift": rate.lift if rate else None,
        "ci95": [rate.low, rate.high] if rate else None,
        "significant": rate.significant if rate else None,
    }


def segment_report(
    segment: str,
    population: Population,
    rules: RuleSet,
    sizes: Mapping[str, int],
    history: SizeHistory,
    pairs: Sequence[Overlap],
    settings: Settings,
) -> dict[str, Any]:
    """One segment's row, with its flags."""
    info = rules.segment(segment)
    figures = population.segments[segment]
    size = sizes.get(segment, 0)
    customers = population.everyone.customers
    share = _share(size, customers)
    points = h.hourly(history, segment)
    members, other, name = groups(population, rules, segment)
    rate, _value = compare(members, other)
    similar = most_similar(pairs, segment)
    flags = _size_flags(share, settings)
    flags += _differentiation_flags(figures, population, similar, settings)
    reach = _share(figures.reachable, figures.members.customers)
    flags += _reach_flags(reach, settings)
    return {
        "segment": segment,
        "name": info.name,
        "kind": info.kind,
        "family": info.family,
        "size": size,
        "share": share,
        "revenue_share": _share(figures.revenue, population.revenue),
        "growth_7d": h.growth(points, 7),
        "growth_30d": h.growth(points, 30),
        "reach": reach,
        "primary_customers": figures.primary,
        "largest_overlap": (
            {"segment": similar[0], "jaccard": similar[1].jaccard, "both": similar[1].both}
            if similar is not None
            else None
        ),
        "performance": _performance(members, other, name, rate),
        "flags": flags,
    }


def report(
    population: Population,
    rules: RuleSet,
    sizes: Mapping[str, int],
    history: SizeHistory,
    pairs: Sequence[Overlap],
    settings: Settings,
) -> dict[str, Any]:
    """The whole report."""
    rows = [
        segment_report(info.id, population, rules, sizes, history, pairs, settings)
        for info in rules.segments
    ]
    primary = [row["segment"] for row in rows if row["primary_customers"] > 0]
    flags = []
    if len(primary) > settings.report_max_primary:
        flags.append(
            {
                "flag": "too_many_primary",
                "reason": f"{len(primary)} segments are some customer's primary segment, more"
                f" than {settings.report_max_primary}",
            }
        )
    conversion = rules.conversion
    return {
        "customers": population.everyone.customers,
        "revenue": population.revenue,
        "window_days": population.window_s / 86400,
        "conversion_event": conversion.event if conversion else None,
        "rule_version": rules.version,
        "active_primary_segments": len(primary),
        "flags": flags,
        "segments": rows,
    }
