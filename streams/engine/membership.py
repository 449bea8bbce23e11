"""Segment-level membership policies: consent, hysteresis (``stay_condition``), minimum dwell,
and holdout control groups.

``segment_condition`` wraps a segment's compiled ``condition`` into the condition that decides
membership (before family resolution):

1. ``requires_consent: C``: false unless ``facts.trait("consent.C") is True`` (checked first,
   so withdrawing consent ends membership at once, even during a minimum dwell);
2. a current member (``facts.member_since(id)`` not None) whose ``min_dwell`` has not elapsed
   (``now < since + min_dwell``) stays;
3. a current member of a segment with ``stay_condition`` stays while ``stay_condition`` holds;
4. otherwise ``condition`` decides.
"""

from __future__ import annotations

import hashlib
from typing import Any

from streams.engine.compiled import (
    CompiledCondition,
    EvalContext,
    Explain,
    NextChange,
    Reason,
    Test,
    never,
)
from streams.engine.durations import format_duration
from streams.engine.facts import MISSING, Facts
from streams.engine.nextdue import Earliest
from streams.engine.value import merge_crossings


def consent_given(facts: Facts, category: str) -> bool:
    """Whether the customer's consent for ``category`` is recorded as ``true``."""
    return facts.trait(f"consent.{category}") is True


def in_dwell(facts: Facts, segment_id: str, min_dwell_s: float | None) -> bool:
    """Whether the customer is a member whose minimum dwell has not elapsed yet."""
    if min_dwell_s is None:
        return False
    since = facts.member_since(segment_id)
    return since is not None and facts.now < since + min_dwell_s


def is_holdout(customer_id: str, segment_id: str, percent: float) -> bool:
    """Whether the customer is in the segment's holdout (control) group.

    Deterministic and persistent: the first 8 bytes of ``sha256(f"{segment_id}:{customer_id}")``
    read as a big-endian unsigned integer ``x``; holdout when ``x / 2**64 * 100 < percent``.
    Each segment draws its own independent group.
    """
    if percent <= 0:
        return False
    digest = hashlib.sha256(f"{segment_id}:{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100 < percent


def segment_condition(
    segment_id: str,
    condition: CompiledCondition,
    stay: CompiledCondition | None = None,
    min_dwell_s: float | None = None,
    requires_consent: str | None = None,
) -> CompiledCondition:
    """The membership condition of a segment (see the module docstring).

    Returns ``condition`` itself when the segment has none of the policies.
    """
    if stay is None and min_dwell_s is None and requires_consent is None:
        return condition
    children = (condition, stay) if stay is not None else (condition,)
    return CompiledCondition(
        _membership_test(segment_id, condition, stay, min_dwell_s, requires_consent),
        _membership_explain(segment_id, condition, stay, min_dwell_s, requires_consent),
        _membership_next_change(segment_id, condition, stay, min_dwell_s),
        frozenset().union(*(c.event_names for c in children)),
        tuple(dict.fromkeys(r for c in children for r in c.segment_refs)),
    )


def _membership_test(
    segment_id: str,
    condition: CompiledCondition,
    stay: CompiledCondition | None,
    min_dwell_s: float | None,
    requires_consent: str | None,
) -> Test:
    """Whether the customer is a member now: consent, then dwell, then stay, then condition."""
    tracks = stay is not None or min_dwell_s is not None
    consent_key = f"consent.{requires_consent}"
    condition_test = condition.test
    stay_test = None if stay is None else stay.test

    def test(ctx: EvalContext) -> bool:
        facts = ctx.facts
        if requires_consent is not None and facts.trait(consent_key) is not True:
            return False
        if tracks:
            since = facts.member_since(segment_id)
            if since is not None:
                if min_dwell_s is not None and facts.now < since + min_dwell_s:
                    return True
                if stay_test is not None:
                    return stay_test(ctx)
        return condition_test(ctx)

    return test


def _membership_explain(
    segment_id: str,
    condition: CompiledCondition,
    stay: CompiledCondition | None,
    min_dwell_s: float | None,
    requires_consent: str | None,
) -> Explain:
    """The membership test with its reason: the missing consent, the dwell, or the clause."""
    tracks = stay is not None or min_dwell_s is not None
    consent_key = f"consent.{requires_consent}"
    dwell_text = f"minimum dwell {format_duration(min_dwell_s)}" if min_dwell_s else ""

    def consent_ok(facts: Facts) -> bool:
        return requires_consent is None or consent_given(facts, requires_consent)

    def current(ctx: EvalContext) -> tuple[CompiledCondition, float | None]:
        """The condition deciding now, and when the customer entered (None: not a member)."""
        since = ctx.facts.member_since(segment_id) if tracks else None
        if since is not None and stay is not None:
            return stay, since
        return condition, since

    def explain(ctx: EvalContext) -> tuple[bool, Reason]:
        facts = ctx.facts
        if not consent_ok(facts):
            given = facts.trait(consent_key)
            shown = None if given is MISSING else given
            return False, Reason(f"no {requires_consent} consent", {consent_key: shown})
        deciding, since = current(ctx)
        ok, reason = deciding.explain(ctx)
        if deciding is stay:
            reason = Reason(f"stay condition: {reason.rule}", reason.values)
        values: dict[str, Any] = dict(reason.values)
        if requires_consent is not None:
            values[consent_key] = True
        if (
            not ok
            and since is not None
            and min_dwell_s is not None
            and facts.now < since + min_dwell_s
        ):
            values["member_since"] = since
            values["dwell_until"] = since + min_dwell_s
            return True, Reason(f"{dwell_text} not elapsed (the condition no longer holds)", values)
        return ok, Reason(reason.rule, values)

    return explain


def _membership_next_change(
    segment_id: str,
    condition: CompiledCondition,
    stay: CompiledCondition | None,
    min_dwell_s: float | None,
) -> NextChange:
    """When membership may next change: the conditions' next changes and the dwell's end."""
    fns = merge_crossings(
        [c.next_change for c in (condition, stay) if c is not None and c.next_change is not never]
    )

    def dwell_until(facts: Facts) -> float | None:
        """When a current member's minimum dwell ends, if still ahead."""
        if min_dwell_s is None:
            return None
        since = facts.member_since(segment_id)
        if since is not None and since + min_dwell_s > facts.now:
            return since + min_dwell_s
        return None

    if min_dwell_s is not None:
        return Earliest((*fns, dwell_until)).at
    if len(fns) > 1:
        return Earliest(fns).at
    return fns[0] if fns else never


__all__ = ["consent_given", "in_dwell", "is_holdout", "segment_condition"]
