"""The Redis store: the system of record, written one Lua call per batch (per key group).

The keys and the two layouts are described in :mod:`streams.store.keys`. In the single layout a
batch is one atomic Lua call. In the partitioned layout it is one Lua call per key group (input
partition), each atomic with its partition's offsets, so a crash between two of them leaves each
partition either applied or not, and redelivery applies the rest.

A merge whose two profiles live in different groups is a two-step hand-over:

1. **claim**: the other profile's key becomes a redirect to the survivor that keeps its data
   (``handing_over``), if its version is still the one the batch read. From then on its own
   partition re-routes its events to the survivor, and cannot change it;
2. the survivor's group commits the merged profile, the migrations and, in the same call, a
   hand-over record: the other group's changes (the bare redirect, leaving its member sets,
   dropping its timer). The store then applies them there and deletes the record.

A crash after (1) leaves a claim without its merge: the merge's event is redelivered and merges
the claimed data again (:func:`streams.pipeline.identity.merge`). A crash after (2) leaves a
record: :meth:`RedisStore.recover` (run when a worker starts) finishes it. Erasures hand over the
aliases' keys and the erasure records the same way, without a claim (a redirect never changes).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from streams.settings import Settings
from streams.store.base import (
    HISTORY_HOURS,
    CommitBatch,
    ConflictError,
    SizeHistory,
    Snapshot,
    StateWrite,
    StoredState,
    fold_history,
    suppression_key,
)
from streams.store.groups import Blobs, commit_plan, needs_claim, split
from streams.store.keys import Keys

__all__ = ["Keys", "LayoutError", "RedisStore", "stored_state"]


class LayoutError(Exception):
    """The namespace's keys are in another layout than the settings say."""


def _lua(name: str) -> str:
    return resources.files("streams.store").joinpath("lua", name).read_text()


def stored_state(raw: bytes | None) -> StoredState | None:
    """Split a stored ``<version>:<json>`` value."""
    if raw is None:
        return None
    version, _, data = raw.partition(b":")
    return StoredState(int(version), data)


class RedisStore:
    """The :class:`~streams.store.base.Store` on Redis."""

    def __init__(
        self,
        client: aioredis.Redis,
        namespace: str,
        cluster: bool = False,
        history_hours: int = HISTORY_HOURS,
        partitions: int = 0,
        lane: str = "",
    ) -> None:
        """``partitions`` > 0: the partitioned layout, one key group per input partition.
        ``lane``: commit to (and send from) outboxes of that name, which workers never touch
        (an import's)."""
        self.client = client
        self.keys = Keys(namespace, cluster, partitions, lane)
        self.history_hours = history_hours
        self._commit = client.register_script(_lua("commit.lua"))
        self._pending: list[tuple[int, str, bytes]] = []
        """Hand-over records this store committed and has not finished (an error came first)."""
        self._mget = not isinstance(client, RedisCluster) or cluster or partitions > 0
        """One MGET per group can read the states (their keys share a slot, or one server)."""

    @classmethod
    def from_url(
        cls,
        url: str,
        namespace: str,
        cluster: bool = False,
        history_hours: int = HISTORY_HOURS,
        partitions: int = 0,
    ) -> RedisStore:
        """Connect lazily to ``url``: one server, or (``cluster``) a Redis Cluster it belongs to."""
        if cluster:
            nodes = RedisCluster.from_url(url, decode_responses=False)
            return cls(cast(aioredis.Redis, nodes), namespace, True, history_hours, partitions)
        client = aioredis.Redis.from_url(url, decode_responses=False)
        return cls(client, namespace, False, history_hours, partitions)

    @classmethod
    def from_settings(cls, settings: Settings, lane: str = "") -> RedisStore:
        """The store ``SEGMENTER_REDIS_URL``, ``_NAMESPACE``, ``_REDIS_CLUSTER`` and
        ``_REDIS_LAYOUT`` describe (partitioned: one group per ``SEGMENTER_INPUT_PARTITIONS``)."""
        if not settings.redis_url:
            raise ValueError("SEGMENTER_REDIS_URL is not set")
        store = cls.from_url(
            settings.redis_url,
            settings.namespace,
            settings.redis_cluster,
            settings.history_retention_hours,
            settings.input_partitions if settings.redis_layout == "partitioned" else 0,
        )
        if lane:
            store.keys = Keys(store.keys.namespace, store.keys.cluster, store.keys.partitions, lane)
        return store

    async def load(
        self,
        customer_ids: Sequence[str],
        partitions: Sequence[int],
        due_until: Mapping[int, float] | None = None,
        due_limit: int = 100_000,
    ) -> Snapshot:
        """One pipelined round trip: states, partition offsets and clocks, due timers."""
        keys = self.keys
        pipe = self.client.pipeline(transaction=False)
        due_parts = list((due_until or {}).items())
        for p, until in due_parts:
            pipe.zrangebyscore(keys.due(p), "-inf", until, start=0, num=due_limit, withscores=True)
        # one MGET per group, not a GET each: a pipelined reply costs the client about three
        # times an element of one array reply
        by_group: dict[int, list[str]] = {}
        home = keys.home if keys.partitioned else None
        for cid in customer_ids:
            by_group.setdefault(home(cid) if home else 0, []).append(cid)
        customer_key = keys.customer
        if self._mget:
            for ids in by_group.values():
                # (redis-py's cluster pipeline blocks its ``mget``; the command itself is fine
                # for keys of one slot)
                pipe.execute_command("MGET", *[customer_key(cid) for cid in ids])
        else:
            for cid in customer_ids:
                pipe.get(customer_key(cid))
        parts: dict[int, list[int]] = {}
        for p in partitions:
            parts.setdefault(keys.group(p), []).append(p)
        for group, members in parts.items():
            fields = [str(p) for p in members]
            pipe.hmget(keys.offsets_of(group), fields)
            pipe.hmget(keys.clocks_of(group), fields)
        if customer_ids:
            pipe.hmget(keys.erased, [suppression_key(cid) for cid in customer_ids])
        replies: list[Any] = await pipe.execute()
        due = [
            (p, member.decode(), float(score))
            for (p, _until), rows in zip(due_parts, replies[: len(due_parts)], strict=True)
            for member, score in rows
        ]
        at = len(due_parts)
        states: dict[str, StoredState | None] = {}
        if self._mget:
            for ids in by_group.values():
                for cid, raw in zip(ids, replies[at], strict=True):
                    states[cid] = stored_state(raw)
                at += 1
        else:
            for cid in customer_ids:
                states[cid] = stored_state(replies[at])
                at += 1
        offsets: dict[int, int] = {}
        clocks: dict[int, float] = {}
        for members in parts.values():
            for p, off, clock in zip(members, replies[at], replies[at + 1], strict=True):
                if off is not None:
                    offsets[p] = int(float(off))
                if clock is not None:
                    clocks[p] = float(clock)
            at += 2
        erased = replies[at] if customer_ids else []
        suppressed = {
            cid: float(when)
            for cid, when in zip(customer_ids, erased, strict=True)
            if when is not None
        }
        return Snapshot(
            states={cid: states[cid] for cid in customer_ids},
            offsets=offsets,
            clocks=clocks,
            suppressed=suppressed,
            due=due,
        )

    async def commit(self, batch: CommitBatch) -> dict[int, int]:
        """Run commit.lua once per key group (once in all, single layout); see the module doc."""
        keys = self.keys
        if self._pending:
            await self._finish(self._pending)
        local, foreign = split(batch, keys)
        for customer_id, claim in batch.claims.items():
            if needs_claim(batch, keys, customer_id):
                state = CommitBatch()
                state.states.append(StateWrite(customer_id, claim.expected, claim.data))
                await self._run(keys.home(customer_id), state)
        lengths: dict[int, int] = {}
        handed: list[tuple[int, str, bytes]] = []
        try:
            for group in sorted(local):
                records = [
                    (uuid.uuid4().hex, self._handover(target, changes))
                    for target, changes in sorted(foreign.get(group, {}).items())
                ]
                lengths.update(await self._run(group, local[group], records))
                handed.extend((group, name, record) for name, record in records)
        finally:
            await self._finish(handed)
        return lengths

    def _handover(self, target: int, changes: CommitBatch) -> bytes:
        """A hand-over record: the KEYS and plan that apply ``changes`` in group ``target``."""
        index, plan = commit_plan(self.keys, target, changes, self.history_hours)
        return orjson.dumps({"keys": index.keys, "plan": plan})

    async def _run(
        self, group: int, batch: CommitBatch, handovers: Sequence[tuple[str, bytes]] = ()
    ) -> dict[int, int]:
        """One atomic commit.lua call for one group (with its hand-over records)."""
        blobs = Blobs()
        index, plan = commit_plan(self.keys, group, batch, self.history_hours, blobs)
        if handovers:
            key = index(self.keys.handover(group))
            plan["hset"] = [[key, name, blobs(record)] for name, record in handovers]
        reply = await self._commit(keys=index.keys, args=[orjson.dumps(plan), *blobs.values])
        if int(reply[0]) != 1:
            raise ConflictError(reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1]))
        written = [p for p, entries in batch.outbox.items() if entries]
        return dict(zip(written, (int(n) for n in reply[1:]), strict=True))

    async def _finish(self, handed: Sequence[tuple[int, str, bytes]]) -> None:
        """Apply committed hand-over records in their target groups, then forget them. Those
        not finished when an error interrupts are finished before this store's next commit."""
        left = list(handed)
        self._pending = left
        while left:
            group, name, record = left[0]
            found = orjson.loads(record)
            reply = await self._commit(keys=found["keys"], args=[orjson.dumps(found["plan"])])
            if int(reply[0]) != 1:
                raise ConflictError(f"hand-over {name} of group {group}")
            await self.client.hdel(self.keys.handover(group), name)
            left.pop(0)

    @property
    def layout(self) -> str:
        """This store's layout marker: ``single`` or ``partitioned:<partitions>``."""
        keys = self.keys
        return f"partitioned:{keys.partitions}" if keys.partitioned else "single"

    async def stored_layout(self) -> str | None:
        """The namespace's layout marker (in either layout's place), or ``single`` for a
        namespace written before markers existed, or None when it holds nothing."""
        keys = self.keys
        single = Keys(keys.namespace, keys.cluster)
        places = (keys, single, Keys(keys.namespace, keys.cluster, 1))
        for key in dict.fromkeys(place.meta("layout") for place in places):
            raw = await self.client.get(key)
            if raw is not None:
                return cast(bytes, raw).decode()
        if await self.client.exists(single.offsets):
            return "single"
        return None

    async def check_layout(self) -> None:
        """Refuse a namespace that holds data in another layout (or another partition count):
        raise :class:`LayoutError` naming both and the command that migrates. A namespace with
        no marker yet gets this layout's."""
        mine = self.layout
        found = await self.stored_layout()
        if found is not None and found != mine:
            raise LayoutError(
                f"namespace {self.keys.namespace!r} is in the {found} Redis layout, and this"
                f" process is set up for {mine}: set SEGMENTER_REDIS_LAYOUT (and"
                " SEGMENTER_INPUT_PARTITIONS) to match, or migrate it with `segmenter redis-layout"
                f" migrate --to {self.keys.layout}` while no worker runs"
            )
        if await self.meta_get("layout") is None:
            await self.meta_set("layout", mine.encode())

    async def recover(self) -> int:
        """Finish the hand-overs a crash left between their two steps (partitioned layout)."""
        keys = self.keys
        if not keys.partitioned:
            return 0
        done = 0
        for group in keys.groups:
            found = cast(dict[bytes, bytes], await self.client.hgetall(keys.handover(group)))
            await self._finish([(group, name.decode(), record) for name, record in found.items()])
            done += len(found)
        return done

    async def outbox(self, partition: int, limit: int) -> list[bytes]:
        """Oldest unsent messages."""
        entries = await self.client.lrange(self.keys.outbox(partition), 0, limit - 1)
        return cast(list[bytes], entries)

    async def outbox_trim_many(self, counts: Mapping[int, int]) -> None:
        """Drop the oldest messages of several partitions in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for partition, count in counts.items():
            pipe.ltrim(self.keys.outbox(partition), count, -1)
        await pipe.execute()

    async def outbox_trim(self, partition: int, count: int) -> None:
        """Drop the ``count`` oldest messages."""
        if count > 0:
            await self.client.ltrim(self.keys.outbox(partition), count, -1)

    async def due(self, partition: int, until: float, limit: int) -> list[tuple[str, float]]:
        """Due timers, earliest first."""
        rows: list[tuple[bytes, float]] = await self.client.zrangebyscore(
            self.keys.due(partition), "-inf", until, start=0, num=limit, withscores=True
        )  # type: ignore[assignment]
        return [(member.decode(), float(score)) for member, score in rows]

    async def _per_group(self, command: str, *key_args: Any, key: Any) -> list[Any]:
        """``command`` on every group's key (``key(group)``), in one pipelined round trip."""
        pipe = self.client.pipeline(transaction=False)
        for group in self.keys.groups:
            getattr(pipe, command)(key(group), *key_args)
        return await pipe.execute()

    async def matrix(self, day: str) -> dict[str, int]:
        """Moves of one day (summed over the groups)."""
        total: dict[str, int] = {}
        for raw in await self._per_group("hgetall", key=lambda g: self.keys.matrix(day, g)):
            for k, v in cast(dict[bytes, bytes], raw).items():
                total[k.decode()] = total.get(k.decode(), 0) + int(v)
        return total

    async def common_members(self, a: str, b: str) -> int:
        """``SINTERCARD`` of the two member sets (Redis 7; exact), summed over the groups."""
        keys = self.keys
        pipe = self.client.pipeline(transaction=False)
        for group in keys.groups:
            pipe.sintercard(2, [keys.members(a, group), keys.members(b, group)])
        return sum(int(n) for n in await pipe.execute())

    async def history(self) -> SizeHistory:
        """The retained hours' counts and the base (merged over the groups, then folded by the
        retention of the newest hour, which each group's own folding never contradicts)."""
        keys = self.keys
        indexes = await self._per_group("zrange", 0, -1, key=keys.history_index)
        pipe = self.client.pipeline(transaction=False)
        hours_of: list[tuple[int, list[int]]] = []
        for group, found in zip(keys.groups, indexes, strict=True):
            hours = [int(h) for h in cast(list[bytes], found)]
            hours_of.append((group, hours))
            pipe.hgetall(keys.history_base(group))
            for hour in hours:
                pipe.hgetall(keys.history_hour(hour, group))
        raw = iter(await pipe.execute())
        base: dict[str, int] = {}
        merged: dict[int, dict[str, int]] = {}
        for _group, hours in hours_of:
            for name, count in cast(dict[bytes, bytes], next(raw)).items():
                base[name.decode()] = base.get(name.decode(), 0) + int(count)
            for hour in hours:
                counts = merged.setdefault(hour, {})
                for name, count in cast(dict[bytes, bytes], next(raw)).items():
                    counts[name.decode()] = counts.get(name.decode(), 0) + int(count)
        retained: dict[int, dict[str, int]] = {}
        fold_history(base, retained, merged, self.history_hours)
        return SizeHistory(base, retained)

    async def get_state(self, customer_id: str) -> StoredState | None:
        """One customer's state."""
        return stored_state(
            cast(bytes | None, await self.client.get(self.keys.customer(customer_id)))
        )

    async def segment_sizes(self) -> dict[str, int]:
        """Live counts (segments with members), summed over the groups."""
        total: dict[str, int] = {}
        for raw in await self._per_group("hgetall", key=self.keys.sizes_of):
            for k, v in cast(dict[bytes, bytes], raw).items():
                total[k.decode()] = total.get(k.decode(), 0) + int(v)
        return {segment: n for segment, n in total.items() if n > 0}

    async def offsets(self) -> dict[int, int]:
        """Input partition -> last applied offset, for every partition with one."""
        found: dict[int, int] = {}
        for raw in await self._per_group("hgetall", key=self.keys.offsets_of):
            for p, off in cast(dict[bytes, bytes], raw).items():
                found[int(p)] = int(float(off))
        return found

    async def clocks(self) -> dict[int, float]:
        """Input partition -> event-time clock, for every partition with one."""
        found: dict[int, float] = {}
        for raw in await self._per_group("hgetall", key=self.keys.clocks_of):
            for p, clock in cast(dict[bytes, bytes], raw).items():
                found[int(p)] = float(clock)
        return found

    async def run_progress(self, run: str) -> dict[str, int]:
        """An import run's checkpoint: field -> position applied (merged over the groups)."""
        found: dict[str, int] = {}
        for raw in await self._per_group(
            "hgetall", key=lambda g: self.keys.import_progress(run, g)
        ):
            for name, position in cast(dict[bytes, bytes], raw).items():
                found[name.decode()] = int(float(position))
        return found

    async def run_before(self, run: str, group: int, count: int) -> list[tuple[str, bytes]]:
        """Up to ``count`` customers of a group touched by an import run and not announced yet,
        with their memberships before it."""
        _cursor, found = await self.client.hscan(
            self.keys.import_before(run, group), 0, count=count
        )
        return [(cid.decode(), value) for cid, value in cast(dict[bytes, bytes], found).items()]

    async def run_forget(self, run: str) -> None:
        """Delete an import run's checkpoint and before-records (the run record stays)."""
        for group in self.keys.groups:
            await self.client.delete(
                self.keys.import_progress(run, group), self.keys.import_before(run, group)
            )

    async def members(self, segment: str, cursor: int, count: int) -> tuple[int, list[str]]:
        """SSCAN paging (a cursor of 0 means done): the groups' sets one after the other, the
        cursor saying which group and where in it."""
        groups = len(self.keys.groups)
        inner, group = divmod(cursor, groups)
        following, page = await self.client.sscan(
            self.keys.members(segment, group), inner, count=count
        )
        following = int(following)
        if following == 0:
            group += 1
            next_cursor = group if group < groups else 0
        else:
            next_cursor = following * groups + group
        return next_cursor, sorted(cast(bytes, m).decode() for m in page)

    async def scan_customers(self, cursor: int, count: int) -> tuple[int, list[str]]:
        """SCAN over the customer keys: on a cluster, node after node (the cursor says which
        node and where in it); in the single layout only the namespace's node."""
        keys = self.keys
        pattern = keys.customer_pattern
        if keys.cluster:
            cluster = cast(RedisCluster, self.client)
            if keys.partitioned:
                nodes = sorted(cluster.get_primaries(), key=lambda n: n.name)
            else:
                node = cluster.get_node_from_key(keys.sizes)
                if node is None:
                    raise ConnectionError("no cluster node serves this namespace's slot")
                nodes = [node]
            inner, at = divmod(cursor, len(nodes))
            cursors, found = await self.client.scan(
                inner, match=pattern, count=count, target_nodes=nodes[at]
            )
            following = int(cast(dict[str, int], cursors)[nodes[at].name])
            if following == 0:
                at += 1
                next_cursor = at if at < len(nodes) else 0
            else:
                next_cursor = following * len(nodes) + at
        else:
            next_cursor, found = await self.client.scan(cursor, match=pattern, count=count)
        ids = [keys.customer_id(k.decode()) for k in cast(list[bytes], found)]
        return int(next_cursor), ids

    async def meta_get(self, name: str) -> bytes | None:
        """A named value."""
        return cast(bytes | None, await self.client.get(self.keys.meta(name)))

    async def meta_set(self, name: str, value: bytes) -> None:
        """Store a named value."""
        await self.client.set(self.keys.meta(name), value)

    async def progress_add(self, name: str, count: int) -> int:
        """INCRBY a progress counter."""
        return int(await self.client.incrby(self.keys.progress(name), count))

    async def ping(self) -> bool:
        """True when Redis answers PING."""
        try:
            return bool(await self.client.ping())
        except Exception:
            return False

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()
