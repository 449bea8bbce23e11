"""What each segment reads, so that an event re-evaluates only the segments it can change.

A segment's inputs are tokens:

| token | changed by |
| --- | --- |
| ``event:<name>`` | a counted event with that name (``Order Completed`` also moves the order |
| | metrics: orders, revenue, average order value, predicted value, RFM) |
| ``events`` | every counted event (the lifetime event count) |
| ``seen`` | every event (first and last seen) |
| ``trait:<key>`` | an ``identify`` (or ``group``: ``trait:company``) setting that top-level trait |
| ``consent`` | a ``consent`` event |
| ``time`` | the passing of time only: handled by timers, never by an event |
| ``member:<segment>`` | another segment's membership (``in_segment``) |

The pipeline names the tokens an event changes; :meth:`RuleSet.evaluate_changed` evaluates the
units (segments, or whole families) whose inputs meet them, plus the units that read those
through ``in_segment``, and keeps every other membership as it was. Time-driven changes are the
timers' job, so the result equals a full evaluation whenever the customer's due timers have
fired first.
"""

from __future__ import annotations

from streams.engine import model as m
from streams.engine.condition_types import ORDER_EVENT, PREDICTED, condition_inputs

__all__ = ["ORDER_EVENT", "PREDICTED", "condition_inputs", "segment_inputs", "with_conversion"]


def segment_inputs(
    condition: m.Condition,
    stay_condition: m.Condition | None,
    min_dwell_s: float | None,
    requires_consent: str | None,
) -> frozenset[str]:
    """The tokens a segment's membership reads (condition, stay, dwell, consent)."""
    found = set(condition_inputs(condition))
    if stay_condition is not None:
        found |= condition_inputs(stay_condition)
    if min_dwell_s is not None:
        found.add("time")
    if requires_consent is not None:
        found.add("consent")
    return frozenset(found)


_EVENT_TOKENS: dict[str | None, frozenset[str]] = {None: frozenset({"seen"})}
"""Memo of :func:`event_tokens` (one entry per event name seen, bounded)."""


def event_tokens(name: str | None) -> frozenset[str]:
    """What a counted event named ``name`` changes (``None``: an uncounted event)."""
    tokens = _EVENT_TOKENS.get(name)
    if tokens is None:
        tokens = frozenset({f"event:{name}", "events", "seen"})
        if len(_EVENT_TOKENS) < 4096:
            _EVENT_TOKENS[name] = tokens
    return tokens


def trait_tokens(keys: object) -> frozenset[str]:
    """What setting these top-level traits changes."""
    return frozenset({"seen", *(f"trait:{key}" for key in keys)})  # type: ignore[attr-defined]


def with_conversion(tokens: frozenset[str], event: str) -> frozenset[str]:
    """``tokens`` with the ``predicted`` placeholder replaced by the conversion event."""
    if PREDICTED not in tokens:
        return tokens
    return (tokens - {PREDICTED}) | {f"event:{event}"}
