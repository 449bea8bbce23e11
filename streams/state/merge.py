"""Merging two profiles of one person (identity resolution): a pure function."""

from __future__ import annotations

from streams.state.customer import Bucket, CustomerState, SeriesState


def _merge_buckets(a: list[Bucket], b: list[Bucket]) -> list[Bucket]:
    merged: dict[float, Bucket] = {bucket[0]: list(bucket) for bucket in a}
    for bucket in b:
        mine = merged.get(bucket[0])
        if mine is None:
            merged[bucket[0]] = list(bucket)
        else:
            for i in range(1, len(mine)):
                mine[i] += bucket[i]
    return [merged[start] for start in sorted(merged)]


def merge_profiles(
    survivor: CustomerState, merged: CustomerState, max_recent: int
) -> CustomerState:
    """The surviving profile with ``merged`` folded in (neither argument is changed).

    Traits and consent: the profile seen most recently wins, key by key. Counts, revenue and
    window buckets add up; first seen is the earliest, last seen the latest. Memberships,
    sequence and timer stay the survivor's (the caller re-evaluates).
    """
    newer, older = (
        (merged, survivor)
        if (merged.last_seen or 0) > (survivor.last_seen or 0)
        else (survivor, merged)
    )
    out = CustomerState.from_json(survivor.to_json())
    out.traits = {**older.traits, **newer.traits}
    out.consent = {**older.consent, **newer.consent}
    seen = [t for t in (survivor.first_seen, merged.first_seen) if t is not None]
    out.first_seen = min(seen) if seen else None
    last = [t for t in (survivor.last_seen, merged.last_seen) if t is not None]
    out.last_seen = max(last) if last else None
    out.events = survivor.events + merged.events
    out.orders = survivor.orders + merged.orders
    out.revenue = round(survivor.revenue + merged.revenue, 6)
    for name, (count, first, latest) in merged.named.items():
        mine = out.named.get(name)
        if mine is None:
            out.named[name] = [count, first, latest]
        else:
            out.named[name] = [mine[0] + count, min(mine[1], first), max(mine[2], latest)]
    for sid, series in merged.series.items():
        mine_series = out.series.get(sid)
        if mine_series is None:
            out.series[sid] = SeriesState(list(series.props), [list(b) for b in series.buckets])
        elif mine_series.props == series.props:
            mine_series.buckets = _merge_buckets(mine_series.buckets, series.buckets)
    out.recent = (
        (survivor.recent + [d for d in merged.recent if d not in survivor.recent])[-max_recent:]
        if max_recent > 0
        else []
    )
    out.aliases = list(dict.fromkeys([*survivor.aliases, merged.customer_id, *merged.aliases]))
    out.open = None
    return out
