"""Read-only queries the HTTP API needs beyond the :class:`~streams.store.base.Store` interface.

Each query has a Redis path (through ``store.client`` and ``store.keys`` of a
:class:`~streams.store.redis_store.RedisStore`) and an equivalent in-memory path for
:class:`~streams.store.memory.MemoryStore`, so unit tests exercise the same code. Every read is
defensive: a key that is absent (or of an unexpected shape) reads as empty.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

from streams.state.customer import CustomerState, StateDecodeError
from streams.store.base import Store, StoredState

log = logging.getLogger("segmenter.api")

ORDER_EVENT = "Order Completed"
SAMPLE_SIZE = 1000
SCAN_PAGE = 500
NONE_SEGMENT = "-"
"""The ``from``/``to`` of a migration matrix cell for "no segment"."""


class Skipped:
    """Customer states the shared views could not read, skipped and counted (``/metrics``:
    ``segmenter_unreadable_states_total``) instead of failing the whole view."""

    count = 0


def readable(stored: Iterable[tuple[str, StoredState | None]]) -> list[CustomerState]:
    """The states that decode; an unreadable one is logged, counted and left out."""
    states = []
    for cid, found in stored:
        if found is None:
            continue
        try:
            states.append(CustomerState.from_json(found.data))
        except StateDecodeError as exc:
            Skipped.count += 1
            log.warning("customer %r skipped by a shared view: %s", cid, exc)
    return states


def _decode(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


async def scan_states(store: Store, cursor: int, count: int) -> tuple[int, list[CustomerState]]:
    """One page of stored customer states and the cursor of the next page (0 when done).

    Pages follow ``Store.scan_customers`` (with Redis, a page may hold more or fewer than
    ``count`` states, as with ``SCAN``); merged-away ids (redirects) are left out.
    """
    following, ids = await store.scan_customers(cursor, count)
    snapshot = await store.load(ids, []) if ids else None
    states = readable(snapshot.states.items() if snapshot else ())
    return following, [state for state in states if state.merged_into is None]


async def iter_states(store: Store, limit: int | None = None) -> AsyncIterator[CustomerState]:
    """Every stored customer state (at most ``limit``), page by page."""
    cursor, seen = 0, 0
    while True:
        cursor, page = await scan_states(store, cursor, SCAN_PAGE)
        for state in page:
            if limit is not None and seen >= limit:
                return
            seen += 1
            yield state
        if cursor == 0:
            return


async def sample_members(store: Store, segment: str, limit: int = SAMPLE_SIZE) -> list[str]:
    """Up to ``limit`` member ids of ``segment`` (the first pages of its member set)."""
    found: list[str] = []
    cursor = 0
    while len(found) < limit:
        cursor, page = await store.members(segment, cursor, min(SCAN_PAGE, limit))
        found.extend(page)
        if cursor == 0:
            break
    return list(dict.fromkeys(found))[:limit]


async def load_states(store: Store, customer_ids: list[str]) -> list[CustomerState]:
    """The states of ``customer_ids`` that exist (one round trip)."""
    if not customer_ids:
        return []
    snapshot = await store.load(customer_ids, [])
    return readable(snapshot.states.items())


async def migration_matrix(store: Store, day: str) -> dict[tuple[str, str], int]:
    """(from, to) -> count of membership moves on ``day`` (YYYY-MM-DD, UTC); ``-`` is none.

    Reads the store's ``matrix(day)`` (fields ``"<from>|<to>"``). Absent or malformed reads as
    empty.
    """
    found = await store.matrix(day)
    raw: Mapping[Any, Any] = found if isinstance(found, Mapping) else {}
    cells: dict[tuple[str, str], int] = {}
    for field, value in raw.items():
        source, sep, target = _decode(field).partition("|")
        if not sep:
            continue
        try:
            count = int(float(_decode(value)))
        except ValueError:
            continue
        if count > 0:
            cells[(source or NONE_SEGMENT, target or NONE_SEGMENT)] = count
    return cells


def _leaves(traits: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, str]]:
    """Scalar traits as (dotted path, value as text)."""
    for key, value in traits.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _leaves(value, path + ".")
        elif isinstance(value, str | int | float | bool) and value is not None:
            yield path, str(value).lower() if isinstance(value, bool) else str(value)


def summarize(states: list[CustomerState], top: int = 10) -> dict[str, Any]:
    """Averages and most common traits over a sample of customer states."""
    n = len(states)
    revenue = sum(s.revenue for s in states)
    orders = sum(s.orders for s in states)
    traits: Counter[tuple[str, str]] = Counter()
    for state in states:
        traits.update(set(_leaves(state.traits)))
    common = [(pair, count) for pair, count in traits.most_common() if count >= 2 or n < 2]
    return {
        "sampled": n,
        "average_lifetime_revenue": round(revenue / n, 2) if n else None,
        "average_order_value": round(revenue / orders, 2) if orders else None,
        "average_orders": round(orders / n, 2) if n else None,
        "top_traits": [
            {"trait": path, "value": value, "count": count, "share": round(count / n, 3)}
            for (path, value), count in common[:top]
        ],
    }


def quintile_bounds(values: list[float]) -> tuple[float, float, float, float]:
    """The 20th, 40th, 60th and 80th percentiles of ``values`` (linear interpolation)."""
    data = sorted(values)
    span = len(data) - 1
    cuts: list[float] = []
    for i in range(1, 5):
        j, delta = divmod(i * span, 5)
        cuts.append(data[j] if delta == 0 else data[j] + (data[j + 1] - data[j]) * delta / 5)
    return cuts[0], cuts[1], cuts[2], cuts[3]


def _score(value: float, cuts: tuple[float, ...], higher_is_better: bool) -> int:
    below = bisect.bisect_left(cuts, value)
    return 1 + below if higher_is_better else 5 - below


def last_order_time(state: CustomerState) -> float | None:
    """When the customer last completed an order (None if never)."""
    entry = state.named.get(ORDER_EVENT)
    return entry[2] if entry and len(entry) > 2 else None


def _engine_scorer(
    cuts: tuple[tuple[float, ...], ...], at: float
) -> Callable[[CustomerState], tuple[int, int] | None] | None:
    """R and F from ``streams.engine.rfm.rfm_scores`` when that module is there."""
    try:
        from streams.engine.rfm import RfmBoundaries, rfm_scores
        from streams.state.facts import StateFacts
    except ImportError:
        return None
    bounds = RfmBoundaries(cuts[0], cuts[1], cuts[2])  # type: ignore[arg-type]

    def scorer(state: CustomerState) -> tuple[int, int] | None:
        scores = rfm_scores(StateFacts(state, at), bounds)
        return None if scores is None else (scores[0], scores[1])

    return scorer


def rfm_grid(states: list[CustomerState], now: float | None = None) -> dict[str, Any]:
    """A 5x5 recency x frequency grid of the sampled customers who ordered.

    Boundaries are the quintiles of the sample: R from days since the last ``Order Completed``
    (fewer days, higher score), F from lifetime orders (more, higher). Scores come from the
    engine's ``rfm_scores`` (``streams.engine.rfm``) when available, else from the same
    quintile rule computed here. ``grid[r - 1][f - 1]`` counts customers scored (r, f); ties
    share a score (a value equal to a cut point falls in the lower interval).
    """
    at = time.time() if now is None else now
    rows = [
        ((at - t) / 86400.0, float(s.orders), s.revenue, s)
        for s in states
        if s.orders > 0 and (t := last_order_time(s)) is not None
    ]
    grid = [[0] * 5 for _ in range(5)]
    cuts: tuple[tuple[float, ...], ...] = ()
    if rows:
        cuts = tuple(quintile_bounds([row[k] for row in rows]) for k in range(3))  # type: ignore[misc]
        scorer = _engine_scorer(cuts, at)
        for days, orders, _revenue, state in rows:
            if scorer is not None:
                scored = scorer(state)
                if scored is None:
                    continue
                r, f = scored
            else:
                r, f = _score(days, cuts[0], False), _score(orders, cuts[1], True)
            grid[r - 1][f - 1] += 1
    return {
        "method": "quintiles of the sample: R = days since last order, F = lifetime orders",
        "sampled": len(states),
        "scored": sum(map(sum, grid)),
        "without_orders": len(states) - len(rows),
        "bounds": {
            "recency_days": [round(c, 2) for c in cuts[0]] if cuts else [],
            "orders": [round(c, 2) for c in cuts[1]] if cuts else [],
        },
        "grid": grid,
    }
