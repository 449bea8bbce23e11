"""Segment performance: conversion rate and value per member against a comparison group.

A segment with a holdout (``holdout_percent``) compares its other members with its holdout
group; one without compares its members with everyone else. Over a window ``W`` at ``now``, a
customer converted when they had at least one conversion event with ``now - t < W`` (exact,
from the state's conversion series), and their value is the sum of the conversion value
property over those events (0 when none). Rates are compared with the two-proportion z-test,
values per customer with Welch's t-test; both give a 95% interval of the difference.
"""

from __future__ import annotations

from typing import Any

from streams.analytics.population import Group, Population
from streams.analytics.stats import Comparison, two_proportions, welch
from streams.engine import RuleSet


def groups(population: Population, rules: RuleSet, segment: str) -> tuple[Group, Group, str]:
    """(members compared, comparison group, its name: ``holdout`` or ``non_members``)."""
    figures = population.segments[segment]
    if rules.segment(segment).holdout_percent > 0:
        return figures.treated, figures.holdout, "holdout"
    return figures.members, population.non_members(segment), "non_members"


def compare(a: Group, b: Group) -> tuple[Comparison | None, Comparison | None]:
    """The rate and the value per customer of ``a`` against ``b``."""
    rate = two_proportions(a.converted, a.customers, b.converted, b.customers)
    return rate, welch(a.value, b.value)


def performance(population: Population, rules: RuleSet, segment: str) -> dict[str, Any]:
    """``GET /v1/segments/{id}/performance``."""
    members, other, name = groups(population, rules, segment)
    rate, value = compare(members, other)
    conversion = rules.conversion
    return {
        "segment": segment,
        "window_days": population.window_s / 86400,
        "conversion_event": conversion.event if conversion else None,
        "value_property": conversion.value_property if conversion else None,
        "members": members.as_dict(),
        "comparison_group": name,
        "comparison": other.as_dict(),
        "rate": rate.as_dict() if rate else None,
        "value": value.as_dict() if value else None,
    }
