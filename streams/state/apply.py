"""Applying one event to one customer's state: a pure function, the same for every store.

Window series follow the late-event policy: an event older than a series' horizon (its longest
window, measured from the evaluation clock) is not added to that series (no window can hold it
any more), but it still counts in the lifetime aggregates, traits and first/last seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from streams.engine.facts import SeriesSpec
from streams.engine.instants import HALF_MS
from streams.events.models import (
    BaseEvent,
    ConsentEvent,
    GroupEvent,
    IdentifyEvent,
    event_name,
    event_properties,
)
from streams.state.customer import Bucket, CustomerState, SeriesState

ORDER_EVENT = "Order Completed"
DIGEST_BYTES = 4
"""A messageId digest is 4 bytes (5 base85 characters): collisions among one customer's latest
ids are negligible (about 1 in 30 million for 16 ids)."""
MAX_NAMED_EVENTS = 48
"""Event names tracked per customer (first/last seen, count); names used by rules always are."""


def message_digest(message_id: str) -> str:
    """A short, stable digest of a messageId for the per-customer duplicate ring (base85).

    The same 4 bytes as the former hex digests (see
    :func:`streams.state.customer.hex_to_digest`), so rings stored before still match.
    """
    word = int.from_bytes(
        hashlib.blake2b(message_id.encode(), digest_size=DIGEST_BYTES).digest(), "big"
    )
    return (
        _B85[word // 52200625]
        + _B85[word // 614125 % 85]
        + _B85[word // 7225 % 85]
        + _B85[word // 85 % 85]
        + _B85[word % 85]
    )


_B85 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~"
"""The base85 alphabet of ``base64.b85encode``: 4 bytes (a big-endian word ``w``) encode as
the 5 digits of ``w`` in base 85, most significant first (``85**4 = 52200625``)."""


def seen_before(state: CustomerState, digest: str) -> bool:
    """True when the messageId digest is among the customer's recent ones."""
    return digest in state.recent


def remember(state: CustomerState, digest: str, depth: int) -> None:
    """Add a messageId digest to the ring, keeping the newest ``depth``."""
    if depth <= 0:
        return
    state.recent.append(digest)
    if len(state.recent) > depth:
        del state.recent[: len(state.recent) - depth]


MAX_AMOUNT = 1e15
"""The largest magnitude of a number the engine adds up (revenue, window sums): a larger one, or
one that is not finite (``"NaN"``, ``"Infinity"``, ``1e400``), is ignored as if it were absent,
so that no sum can overflow and every state stays encodable (docs/events.md)."""


def _number(value: Any) -> float | None:
    """``value`` as a number the engine may add up, or None (absent, not a number, out of range)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | str):
        try:
            number = float(value)
        except (ValueError, OverflowError):
            return None
        return number if -MAX_AMOUNT <= number <= MAX_AMOUNT else None
    return None


def order_revenue(properties: dict[str, Any]) -> float:
    """Revenue of an ``Order Completed``: ``revenue``, else ``total``, else 0."""
    for name in ("revenue", "total"):
        amount = _number(properties.get(name))
        if amount is not None:
            return amount
    return 0.0


def _add_to_series(
    state: CustomerState, spec: SeriesSpec, ts: float, now: float, properties: dict[str, Any]
) -> None:
    """Add one event to its series as an entry at its exact instant ``ts``."""
    if now - ts > spec.horizon_s - HALF_MS:
        return
    series = state.series.get(spec.id)
    props = list(spec.sum_props)
    if series is None or series.props != props:
        series = state.series[spec.id] = SeriesState(props)
    entries = series.buckets
    index = len(entries)
    while index > 0 and entries[index - 1][0] > ts:
        index -= 1
    if index > 0 and entries[index - 1][0] == ts:
        entry = entries[index - 1]
    else:
        entry = [ts, 0] + [0] * len(props)
        entries.insert(index, entry)
    entry[1] += 1
    for offset, prop in enumerate(props, start=2):
        amount = _number(properties.get(prop))
        if amount is not None:
            entry[offset] = round(entry[offset] + amount, 6)
    if len(entries) > spec.max_entries:
        compact(entries, spec.max_entries)


def compact(entries: list[Bucket], limit: int) -> None:
    """Bound a series to ``limit`` entries: the oldest entries fold into the next oldest.

    The folded entry keeps the *older* time, so its events leave every window early (by at most
    the gap between the two times), never late: at any instant after both (rules are never
    evaluated before an applied event) counts and sums are only ever under-stated, and a
    threshold ``count >= n`` or ``sum >= x`` is never met by compaction. Only a customer with
    more than ``limit`` distinct instants of one series inside its horizon is affected.
    """
    while len(entries) > limit:
        oldest, following = entries[0], entries[1]
        for offset in range(1, len(oldest)):
            oldest[offset] = round(oldest[offset] + following[offset], 6)
        del entries[1]


def prune(state: CustomerState, specs: Sequence[SeriesSpec], now: float) -> None:
    """Drop entries that no window can hold any more (``now - time >= horizon``), and series
    no rule uses."""
    by_id = {spec.id: spec for spec in specs}
    for sid in list(state.series):
        spec = by_id.get(sid)
        if spec is None:
            del state.series[sid]
            continue
        oldest = now - spec.horizon_s + HALF_MS
        entries = state.series[sid].buckets
        drop = 0
        while drop < len(entries) and entries[drop][0] < oldest:
            drop += 1
        if drop:
            del entries[:drop]
        if not entries:
            del state.series[sid]


def _track_name(state: CustomerState, name: str, ts: float, keep: frozenset[str]) -> None:
    entry = state.named.get(name)
    if entry is None:
        if len(state.named) >= MAX_NAMED_EVENTS and name not in keep:
            return
        state.named[name] = [1, ts, ts]
        return
    entry[0] += 1
    entry[1] = min(entry[1], ts)
    entry[2] = max(entry[2], ts)


def apply_event(
    state: CustomerState,
    event: BaseEvent,
    specs_by_event: dict[str, list[SeriesSpec]],
    now: float,
    keep_names: frozenset[str] = frozenset(),
    name: str | None = None,
) -> None:
    """Fold one event into ``state`` (in place). ``now`` is the evaluation clock; ``name`` is
    ``event_name(event)`` when the caller has it."""
    ts = event.ts
    state.first_seen = ts if state.first_seen is None else min(state.first_seen, ts)
    state.last_seen = ts if state.last_seen is None else max(state.last_seen, ts)
    if isinstance(event, IdentifyEvent):
        state.traits.update(event.traits)
        return
    if isinstance(event, GroupEvent):
        company = state.traits.get("company")
        merged = dict(company) if isinstance(company, dict) else {}
        merged.update(event.traits)
        merged["id"] = event.groupId
        state.traits["company"] = merged
        return
    if isinstance(event, ConsentEvent):
        state.consent.update(event.categoryPreferences)
        return
    if name is None:
        name = event_name(event)
        if name is None:
            return
    properties = event_properties(event)
    state.events += 1
    if name == ORDER_EVENT:
        amount = order_revenue(properties)
        earliest = state.named.get(name)
        if state.orders == 0 or (earliest is not None and ts < earliest[1]):
            state.first_revenue = amount
        state.orders += 1
        state.revenue = round(state.revenue + amount, 6)
    _track_name(state, name, ts, keep_names)
    for spec in specs_by_event.get(name, ()):
        if spec.where(properties):
            _add_to_series(state, spec, ts, now, properties)
