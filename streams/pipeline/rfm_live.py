"""Live RFM boundaries: quintiles of the customer population, kept in the store.

The boundaries are recomputed on a schedule (``SEGMENTER_RFM_REFRESH_S``) by one worker and on
demand (``segmenter rfm refresh``); workers pick the new ones up and backfill the customers
whose scores move (``trigger.kind = rule_change``).
"""

from __future__ import annotations

import time

import orjson

from streams.engine.rfm import RfmBoundaries, quintile_boundaries
from streams.state.customer import CustomerState, StateDecodeError
from streams.store.base import Store

RFM = "rfm"
DAY = 86400.0


async def compute_boundaries(store: Store, now: float | None = None) -> RfmBoundaries | None:
    """Quintile boundaries of days since last order, orders and revenue over every buyer."""
    instant = time.time() if now is None else now
    recency: list[float] = []
    frequency: list[float] = []
    monetary: list[float] = []
    cursor = 0
    while True:
        cursor, ids = await store.scan_customers(cursor, 1000)
        for cid in ids:
            stored = await store.get_state(cid)
            if stored is None:
                continue
            try:
                state = CustomerState.from_json(stored.data)
            except StateDecodeError:
                continue  # counted where the views read it; a boundary needs no such customer
            last = state.named.get("Order Completed")
            if state.merged_into is not None or not state.orders or last is None:
                continue
            recency.append((instant - last[2]) / DAY)
            frequency.append(float(state.orders))
            monetary.append(state.revenue)
        if cursor == 0:
            break
    if not recency:
        return None
    return RfmBoundaries(
        recency_days=quintile_boundaries(recency),
        frequency=quintile_boundaries(frequency),
        monetary=quintile_boundaries(monetary),
    )


async def publish_boundaries(
    store: Store, boundaries: RfmBoundaries, now: float | None = None
) -> None:
    """Make ``boundaries`` the live ones, computed at ``now`` (the system clock when None)."""
    doc = {"boundaries": boundaries.to_dict(), "computed_at": time.time() if now is None else now}
    await store.meta_set(RFM, orjson.dumps(doc))


async def live_boundaries(store: Store) -> RfmBoundaries | None:
    """The live boundaries, or None before the first computation."""
    raw = await store.meta_get(RFM)
    if raw is None:
        return None
    return RfmBoundaries.from_dict(orjson.loads(raw)["boundaries"])


async def computed_at(store: Store) -> float | None:
    """When the live boundaries were computed."""
    raw = await store.meta_get(RFM)
    return None if raw is None else float(orjson.loads(raw)["computed_at"])
