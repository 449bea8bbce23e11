"""Moving a namespace between the single and the partitioned Redis layouts.

``segmenter redis-layout migrate --to partitioned|single`` runs while no worker runs. It finishes
pending hand-overs, then copies every key of the namespace into the other layout and deletes the
original once its copy is written: customer states (version kept), member sets (each member
into its home group) and recomputed sizes, applied offsets and clocks, outboxes, timers, the
migration matrix and size history (summed into the first group; reads sum the groups),
erasure records, and the namespace-wide keys (rules, models, progress, destinations). The layout
marker changes last. An interrupted migration can be run again: it continues from the keys
left behind (states, members, offsets, clocks and timers are copied idempotently; an
interruption inside the outbox or history step can send a message twice, with its ``ce_id``, or
count an hour's migrations twice).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any, cast

from streams.settings import Settings
from streams.store.redis_store import RedisStore

PAGE = 1000
Say = Callable[[str], None]


def _partitions(layout: str) -> int:
    return int(layout.split(":")[1]) if layout.startswith("partitioned:") else 0


async def migrate(source: RedisStore, target: RedisStore, say: Say) -> dict[str, int]:
    """Copy every key of ``source``'s namespace to ``target``'s layout; return counts."""
    src, dst = source.keys, target.keys
    client = source.client
    counts: dict[str, int] = {}
    counts["handovers"] = await source.recover()
    counts["customers"] = await _customers(source, target, say)
    counts["members"] = await _members(source, target)
    partitions = max(src.partitions, dst.partitions, 1)
    progress: dict[str, dict[int, float]] = {"offsets": {}, "clocks": {}}
    for group in src.groups:
        for name, key in (("offsets", src.offsets_of(group)), ("clocks", src.clocks_of(group))):
            found = cast(dict[bytes, bytes], await client.hgetall(key))
            progress[name].update((int(p), float(v)) for p, v in found.items())
    for name, values in progress.items():
        for p, value in values.items():
            key = dst.offsets_of(dst.group(p)) if name == "offsets" else dst.clocks_of(dst.group(p))
            await client.hset(key, str(p), f"{value:.17g}" if name == "clocks" else str(int(value)))
    for group in src.groups:
        await client.delete(src.offsets_of(group), src.clocks_of(group))
    counts["partitions"] = len(progress["offsets"])
    counts["outbox"] = await _lists_and_timers(source, target, partitions)
    counts["days"] = await _matrix(source, target)
    counts["hours"] = await _history(source, target)
    if src.erased != dst.erased:
        found = cast(dict[bytes, bytes], await client.hgetall(src.erased))
        if found:
            await client.hset(dst.erased, mapping=found)  # type: ignore[arg-type]
        await client.delete(src.erased)
    counts["other"] = await _namespace_wide(source, target)
    marker = f"partitioned:{dst.partitions}" if dst.partitioned else "single"
    await client.delete(src.meta("layout"))
    await target.meta_set("layout", marker.encode())
    return counts


async def _customers(source: RedisStore, target: RedisStore, say: Say) -> int:
    """States, a page at a time: written under the new key, then deleted from the old."""
    client, src, dst = source.client, source.keys, target.keys
    moved, cursor = 0, 0
    while True:
        cursor, ids = await source.scan_customers(cursor, PAGE)
        ids = [cid for cid in ids if src.customer(cid) != dst.customer(cid)]
        if ids:
            pipe = client.pipeline(transaction=False)
            for cid in ids:
                pipe.get(src.customer(cid))
            values = await pipe.execute()
            pipe = client.pipeline(transaction=False)
            for cid, value in zip(ids, values, strict=True):
                if value is not None:
                    pipe.set(dst.customer(cid), value)
            await pipe.execute()
            pipe = client.pipeline(transaction=False)
            for cid in ids:
                pipe.delete(src.customer(cid))
            await pipe.execute()
            moved += len(ids)
            if moved // 10_000 != (moved - len(ids)) // 10_000:
                say(f"{moved:,} customers moved")
        if cursor == 0:
            return moved


async def _segments(store: RedisStore) -> set[str]:
    """Every segment with a size entry in any group (an entry stays once a segment had one)."""
    found: set[str] = set()
    for group in store.keys.groups:
        names = cast(list[bytes], await store.client.hkeys(store.keys.sizes_of(group)))
        found.update(name.decode() for name in names)
    return found


async def _members(source: RedisStore, target: RedisStore) -> int:
    """Member sets: each member into its home group's set; sizes counted again."""
    client, src, dst = source.client, source.keys, target.keys
    total = 0
    segments = sorted(await _segments(source) | await _segments(target))
    for segment in segments:
        cursor = 0
        while True:
            cursor, page = await source.members(segment, cursor, PAGE)
            by_group: dict[int, list[str]] = {}
            for cid in page:
                by_group.setdefault(dst.home(cid) if dst.partitioned else 0, []).append(cid)
            for group, ids in by_group.items():
                await client.sadd(dst.members(segment, group), *ids)
            if cursor == 0:
                break
        for group in src.groups:
            if src.members(segment, group) not in {dst.members(segment, g) for g in dst.groups}:
                await client.delete(src.members(segment, group))
    for group in src.groups:
        if src.sizes_of(group) not in {dst.sizes_of(g) for g in dst.groups}:
            await client.delete(src.sizes_of(group))
    for group in dst.groups:
        sizes = dst.sizes_of(group)
        await client.delete(sizes)
        for segment in segments:
            size = int(await client.scard(dst.members(segment, group)))
            await client.hset(sizes, segment, size)
            total += size
    return total


async def _lists_and_timers(source: RedisStore, target: RedisStore, partitions: int) -> int:
    """Each partition's outbox and timers under the new keys."""
    client, src, dst = source.client, source.keys, target.keys
    messages = 0
    for p in range(partitions):
        if src.outbox(p) != dst.outbox(p):
            entries = cast(list[bytes], await client.lrange(src.outbox(p), 0, -1))
            if entries:
                await client.rpush(dst.outbox(p), *entries)
            await client.delete(src.outbox(p))
            messages += len(entries)
        if src.due(p) != dst.due(p):
            timers = cast(
                list[tuple[bytes, float]], await client.zrange(src.due(p), 0, -1, withscores=True)
            )
            if timers:
                await client.zadd(dst.due(p), {member: score for member, score in timers})
            await client.delete(src.due(p))
    return messages


async def _scan(client: Any, pattern: str) -> list[str]:
    return sorted({k.decode() for k in [key async for key in client.scan_iter(match=pattern)]})


async def _matrix(source: RedisStore, target: RedisStore) -> int:
    """Migration matrix days, summed over the source groups, into the target's first group."""
    client, src, dst = source.client, source.keys, target.keys
    days: dict[str, dict[str, int]] = {}
    old: list[str] = []
    for group in src.groups:
        prefix = src.matrix("", group)
        for key in await _scan(client, _glob(prefix) + "*"):
            day = key[len(prefix) :]
            old.append(key)
            cells = days.setdefault(day, {})
            for cell, count in cast(dict[bytes, bytes], await client.hgetall(key)).items():
                cells[cell.decode()] = cells.get(cell.decode(), 0) + int(count)
    for key in old:
        await client.delete(key)
    for day, cells in days.items():
        await client.hset(dst.matrix(day, 0), mapping=cells)  # type: ignore[arg-type]
    return len(days)


async def _history(source: RedisStore, target: RedisStore) -> int:
    """The size history, merged over the source groups, into the target's first group."""
    client, src, dst = source.client, source.keys, target.keys
    found = await source.history()
    for group in src.groups:
        hours = cast(list[bytes], await client.zrange(src.history_index(group), 0, -1))
        keys = [src.history_hour(int(h), group) for h in hours]
        await client.delete(src.history_index(group), src.history_base(group), *keys)
    if found.base:
        await client.hset(dst.history_base(0), mapping=found.base)  # type: ignore[arg-type]
    for hour, counts in found.hours.items():
        await client.hset(dst.history_hour(hour, 0), mapping=counts)  # type: ignore[arg-type]
        await client.zadd(dst.history_index(0), {str(hour): hour})
    return len(found.hours)


def _glob(text: str) -> str:
    """``text`` with SCAN's glob characters escaped."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


async def _namespace_wide(source: RedisStore, target: RedisStore) -> int:
    """Every other key under the old namespace prefix (rules, models, progress, destination
    bookkeeping) renamed under the new one (by DUMP and RESTORE: across slots on a cluster)."""
    client, src, dst = source.client, source.keys, target.keys
    if src.ns == dst.ns:
        return 0
    moved = 0
    for key in await _scan(client, _glob(src.ns) + ":*"):
        dumped = await client.dump(key)
        if dumped is None:
            continue
        ttl = int(await client.pttl(key))
        new = dst.ns + key[len(src.ns) :]
        await client.restore(new, max(ttl, 0), dumped, replace=True)
        await client.delete(key)
        moved += 1
    return moved


async def _run(settings: Settings, to: str) -> int:
    assert settings.redis_url is not None
    probe = RedisStore.from_settings(settings)
    try:
        layout = await probe.stored_layout()
        if layout is None:
            print(f"namespace {settings.namespace!r} holds nothing to migrate")
            return 0
        partitions = settings.input_partitions if to == "partitioned" else 0
        hours, cluster = settings.history_retention_hours, settings.redis_cluster
        target = RedisStore(probe.client, settings.namespace, cluster, hours, partitions)
        wanted = target.layout
        if layout == wanted:
            print(f"namespace {settings.namespace!r} is already in the {layout} layout")
            return 0
        source = RedisStore(probe.client, settings.namespace, cluster, hours, _partitions(layout))
        print(f"migrating namespace {settings.namespace!r}: {layout} -> {wanted}")
        counts = await migrate(source, target, lambda text: print(text, file=sys.stderr))
        print(
            f"done: {counts['customers']:,} customers, {counts['members']:,} memberships,"
            f" {counts['partitions']} partitions' offsets, {counts['outbox']:,} unsent messages,"
            f" {counts['days']} matrix days, {counts['hours']} history hours,"
            f" {counts['other']} other keys; set SEGMENTER_REDIS_LAYOUT={to} before starting"
            " workers"
        )
        return 0
    finally:
        await probe.close()


def run_relayout(settings: Settings, to: str) -> int:
    """``segmenter redis-layout migrate --to single|partitioned``."""
    if not settings.redis_url:
        print(
            "segmenter redis-layout: set SEGMENTER_REDIS_URL or run beside `segmenter up`",
            file=sys.stderr,
        )
        return 2
    return asyncio.run(_run(settings, to))
