"""An exact reference for the segments of ``tests/data/exact_rules``, by brute force.

Plain Python over the input events: no import from ``streams``, no rule engine, no state layer.
It is the contract's time semantics written out directly:

* instants are integer epoch milliseconds (timestamps truncated to the ms);
* a window ``within: D`` holds an event at ``t0`` at time ``t`` iff ``0 <= t - t0 < D``;
  ``not_within`` is its negation;
* events at an instant are applied before anything due at it, and a membership that changes and
  changes back at one instant publishes nothing. So a customer's memberships at ``t`` are a pure
  function of its events with ``ts <= t``, and its migrations are the differences between
  consecutive *candidate instants*: every event time, and every event time plus every rule
  duration (nothing can change anywhere else). A change at an instant where the customer has an
  event is triggered by that event (``event``), otherwise by time (``time``);
* ``segmenter replay`` fires what is due up to the last event's time, inclusive.

The generator (:func:`history`) makes purchase histories with ties on purpose: day-precision
stamps, several events of one customer at the same second, orders exactly 7, 30 and 90 days
apart, and one millisecond short of 90 days.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

DAY = 86_400_000
"""A day in milliseconds."""
ORDER = "Order Completed"
VIEW = "Product Viewed"
DURATIONS = (7 * DAY, 30 * DAY, 90 * DAY)
"""Every ``within``/``not_within`` of the pack."""
PACK = "tests/data/exact_rules"
"""The pack, relative to the repository root (one YAML file per segment below)."""
Migration = tuple[str, str, int, str]
"""``(segment, direction, time_ms, trigger_kind)``."""


@dataclass(frozen=True)
class Event:
    """What the reference reads of one input event."""

    ts: int
    name: str
    revenue: float


def ms(timestamp: str) -> int:
    """An ISO 8601 timestamp as epoch milliseconds, truncated."""
    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400_000_000 + delta.seconds * 1_000_000 + delta.microseconds) // 1000


def _in(events: list[Event], name: str, now: int, window: int) -> list[Event]:
    return [e for e in events if e.name == name and 0 <= now - e.ts < window]


def members(events: Iterable[Event], now: int) -> frozenset[str]:
    """The customer's segments at ``now``, from its events up to ``now`` (the pack, spelled out)."""
    seen = [e for e in events if e.ts <= now]
    orders = [e for e in seen if e.name == ORDER]
    revenue = sum(e.revenue for e in orders)
    recent30 = _in(seen, ORDER, now, 30 * DAY)
    recent90 = _in(seen, ORDER, now, 90 * DAY)
    views7 = _in(seen, VIEW, now, 7 * DAY)
    found = set()
    if len(orders) >= 2:
        found.add("repeat_buyer")
    if revenue >= 200:
        found.add("big_spender")
    if recent30:
        found.add("recent_buyer")
    if orders and not recent90:
        found.add("lapsed")
    if len(recent90) >= 3:
        found.add("frequent_buyer")
    if sum(e.revenue for e in recent90) >= 300:
        found.add("spender_90d")
    if recent30 and sum(e.revenue for e in recent30) / len(recent30) >= 100:
        found.add("avg_30d")
    if len(views7) >= 2:
        found.add("browser")
    return frozenset(found)


def expected_migrations(docs: Iterable[Mapping[str, Any]]) -> dict[str, list[Migration]]:
    """Per customer, every migration in time order (see :func:`by_instant` within an instant)."""
    by_customer: dict[str, list[Event]] = {}
    end = None
    for doc in docs:
        ts = ms(doc["timestamp"])
        end = ts if end is None else max(end, ts)
        props = doc.get("properties") or {}
        revenue = float(props.get("revenue", 0)) if doc["event"] == ORDER else 0.0
        by_customer.setdefault(str(doc["userId"]), []).append(Event(ts, doc["event"], revenue))
    out: dict[str, list[Migration]] = {}
    for cid, events in by_customer.items():
        stamps = {e.ts for e in events}
        candidates = sorted(
            t
            for t in stamps | {e.ts + d for e in events for d in DURATIONS}
            if end is None or t <= end
        )
        before: frozenset[str] = frozenset()
        moves: list[Migration] = []
        for t in candidates:
            now = members(events, t)
            kind = "event" if t in stamps else "time"
            for segment in sorted(before - now):
                moves.append((segment, "exited", t, kind))
            for segment in sorted(now - before):
                moves.append((segment, "entered", t, kind))
            before = now
        if moves:
            out[cid] = by_instant(moves)
    return out


def by_instant(moves: Iterable[Migration]) -> list[Migration]:
    """Migrations ordered by time, then segment (the pipeline orders one instant by rule)."""
    return sorted(moves, key=lambda m: (m[2], m[0], m[1]))


# -- generated histories ---------------------------------------------------------------------


def _stamp(at: int) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=at)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def history(
    seed: int, customers: int, days: int, start: str = "2025-01-01"
) -> list[dict[str, Any]]:
    """Segment ``track`` events for ``customers`` over ``days``, in time order, ties on purpose."""
    rng = random.Random(seed)
    origin = ms(f"{start}T00:00:00Z")
    span = days * DAY
    raw: list[tuple[int, str, str, int]] = []
    for n in range(customers):
        cid = f"c{n:05d}"
        at = origin + rng.randrange(0, span // 2) // DAY * DAY
        orders = rng.randint(1, 7)
        for _ in range(orders):
            if at >= origin + span:
                break
            revenue = rng.choice((20, 40, 60, 100, 150, 250))
            raw.append((at, cid, ORDER, revenue))
            if rng.random() < 0.15:
                raw.append((at, cid, ORDER, rng.choice((20, 80))))  # the same instant
            step = rng.random()
            if step < 0.2:
                at += 30 * DAY
            elif step < 0.35:
                at += 90 * DAY
            elif step < 0.45:
                at += 90 * DAY - 1
            elif step < 0.55:
                at += 7 * DAY
            elif step < 0.7:
                at += rng.randint(1, 20) * DAY
            else:
                at += rng.randint(1, 120) * DAY + rng.choice((0, 0, rng.randrange(DAY)))
        views = rng.randint(0, 4)
        view_at = origin + rng.randrange(0, span) // 1000 * 1000
        for _ in range(views):
            raw.append((view_at, cid, VIEW, 0))
            view_at += rng.choice((0, 0, 7 * DAY, 7 * DAY - 1, DAY, rng.randrange(8 * DAY)))
    raw = [r for r in raw if r[0] < origin + span]
    raw.sort(key=lambda r: (r[0], r[1]))
    docs = []
    for i, (at, cid, name, revenue) in enumerate(raw):
        doc: dict[str, Any] = {
            "type": "track",
            "messageId": f"m{i}",
            "userId": cid,
            "timestamp": _stamp(at),
            "event": name,
            "properties": {"revenue": revenue} if name == ORDER else {"sku": "s1"},
        }
        docs.append(doc)
    return docs
