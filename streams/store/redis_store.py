"""The Redis store: the system of record, written one Lua call per batch.

Key layout (``ns`` = ``SEGMENTER_NAMESPACE``; ``{...}`` is a Redis Cluster hash tag):

| key | type | holds |
| --- | --- | --- |
| ``ns:c:{customer}`` | string | ``<version>:<state JSON>`` (a string: no hash overhead) |
| ``ns:m:<segment>`` | set | the segment's members |
| ``ns:sizes`` | hash | segment -> live member count |
| ``ns:offsets`` | hash | input partition -> last applied offset |
| ``ns:clocks`` | hash | input partition -> event-time clock (highest event time seen) |
| ``ns:outbox:<partition>`` | list | messages committed but not yet acknowledged by Kafka |
| ``ns:due:<partition>`` | sorted set | customer -> next timer (epoch seconds) |
| ``ns:matrix:<YYYY-MM-DD>`` | hash | ``<from>|<to>`` -> migrations that day (``-``: none) |
| ``ns:erased`` | hash | digest of an erased id -> erasure time (no id is kept) |
| ``ns:hist:<hour>`` | hash | ``<segment>|in``/``<segment>|out`` -> migrations that hour |
| ``ns:hist`` | sorted set | the retained hours (score = member = the hour) |
| ``ns:hist:base`` | hash | the same counts summed over the hours retention dropped |
| ``ns:meta:<name>`` | string | the published rule pack, the live RFM boundaries |
| ``ns:progress:<name>`` | string | backfill progress counters |

On Redis Cluster (``SEGMENTER_REDIS_CLUSTER=true``) the namespace itself is the hash tag:
``{ns}:c:<customer>``, ``{ns}:sizes`` and so on. Every key of a namespace then lives in one slot,
so the batch commit stays one atomic Lua call; the namespace's data and load sit on the shard
that owns that slot (docs/scaling.md).
"""

from __future__ import annotations

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
    StoredState,
    suppression_key,
)


def _lua(name: str) -> str:
    return resources.files("streams.store").joinpath("lua", name).read_text()


def stored_state(raw: bytes | None) -> StoredState | None:
    """Split a stored ``<version>:<json>`` value."""
    if raw is None:
        return None
    version, _, data = raw.partition(b":")
    return StoredState(int(version), data)


class Keys:
    """Names of every key under one namespace (``cluster``: all in the namespace's slot)."""

    def __init__(self, namespace: str, cluster: bool = False) -> None:
        self.cluster = cluster
        self.ns = f"{{{namespace}}}" if cluster else namespace
        namespace = self.ns
        self.customer_prefix = f"{namespace}:c:" if cluster else f"{namespace}:c:{{"
        """What every customer key starts with (for SCAN)."""
        self._customer_suffix = "" if cluster else "}"
        self.sizes = f"{namespace}:sizes"
        self.offsets = f"{namespace}:offsets"
        self.clocks = f"{namespace}:clocks"
        self.erased = f"{namespace}:erased"

    def matrix(self, day: str) -> str:
        """One day's migration matrix."""
        return f"{self.ns}:matrix:{day}"

    def customer(self, customer_id: str) -> str:
        """The customer's state (hash-tagged by customer, or by namespace on a cluster)."""
        return f"{self.customer_prefix}{customer_id}{self._customer_suffix}"

    def customer_id(self, key: str) -> str:
        """Inverse of :meth:`customer`."""
        return key[len(self.customer_prefix) : len(key) - len(self._customer_suffix)]

    def meta(self, name: str) -> str:
        """A named value (the published rules, RFM boundaries)."""
        return f"{self.ns}:meta:{name}"

    def progress(self, name: str) -> str:
        """A progress counter."""
        return f"{self.ns}:progress:{name}"

    def members(self, segment: str) -> str:
        """A segment's member set."""
        return f"{self.ns}:m:{segment}"

    def outbox(self, partition: int) -> str:
        """A partition's outbox list."""
        return f"{self.ns}:outbox:{partition}"

    def due(self, partition: int) -> str:
        """A partition's timer sorted set."""
        return f"{self.ns}:due:{partition}"

    def history_hour(self, hour: int) -> str:
        """One hour's migration counts per segment and direction."""
        return f"{self.ns}:hist:{hour}"

    @property
    def history_index(self) -> str:
        """The retained hours."""
        return f"{self.ns}:hist"

    @property
    def history_base(self) -> str:
        """Counts of the hours retention dropped."""
        return f"{self.ns}:hist:base"


class _KeyIndex:
    """Collects keys for KEYS[] and hands out their 1-based positions."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._pos: dict[str, int] = {}

    def __call__(self, key: str) -> int:
        pos = self._pos.get(key)
        if pos is None:
            self.keys.append(key)
            pos = self._pos[key] = len(self.keys)
        return pos


class RedisStore:
    """The :class:`~streams.store.base.Store` on Redis."""

    def __init__(
        self,
        client: aioredis.Redis,
        namespace: str,
        cluster: bool = False,
        history_hours: int = HISTORY_HOURS,
    ) -> None:
        self.client = client
        self.keys = Keys(namespace, cluster)
        self.history_hours = history_hours
        self._commit = client.register_script(_lua("commit.lua"))

    @classmethod
    def from_url(
        cls, url: str, namespace: str, cluster: bool = False, history_hours: int = HISTORY_HOURS
    ) -> RedisStore:
        """Connect lazily to ``url``: one server, or (``cluster``) a Redis Cluster it belongs to."""
        if cluster:
            nodes = RedisCluster.from_url(url, decode_responses=False)
            return cls(cast(aioredis.Redis, nodes), namespace, True, history_hours)
        client = aioredis.Redis.from_url(url, decode_responses=False)
        return cls(client, namespace, False, history_hours)

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisStore:
        """The store ``SEGMENTER_REDIS_URL``, ``_NAMESPACE`` and ``_REDIS_CLUSTER`` describe."""
        if not settings.redis_url:
            raise ValueError("SEGMENTER_REDIS_URL is not set")
        return cls.from_url(
            settings.redis_url,
            settings.namespace,
            settings.redis_cluster,
            settings.history_retention_hours,
        )

    async def load(
        self,
        customer_ids: Sequence[str],
        partitions: Sequence[int],
        due_until: Mapping[int, float] | None = None,
        due_limit: int = 100_000,
    ) -> Snapshot:
        """One pipelined round trip: states, partition offsets and clocks, due timers."""
        pipe = self.client.pipeline(transaction=False)
        due_parts = list((due_until or {}).items())
        for p, until in due_parts:
            pipe.zrangebyscore(
                self.keys.due(p), "-inf", until, start=0, num=due_limit, withscores=True
            )
        for cid in customer_ids:
            pipe.get(self.keys.customer(cid))
        parts = [str(p) for p in partitions]
        if parts:
            pipe.hmget(self.keys.offsets, parts)
            pipe.hmget(self.keys.clocks, parts)
        if customer_ids:
            pipe.hmget(self.keys.erased, [suppression_key(cid) for cid in customer_ids])
        replies: list[Any] = await pipe.execute()
        due = [
            (p, member.decode(), float(score))
            for (p, _until), rows in zip(due_parts, replies[: len(due_parts)], strict=True)
            for member, score in rows
        ]
        del replies[: len(due_parts)]
        erased = replies.pop() if customer_ids else []
        suppressed = {
            cid: float(when)
            for cid, when in zip(customer_ids, erased, strict=True)
            if when is not None
        }
        states: dict[str, StoredState | None] = {}
        for cid, raw in zip(customer_ids, replies, strict=False):
            states[cid] = stored_state(raw)
        offsets: dict[int, int] = {}
        clocks: dict[int, float] = {}
        if parts:
            for p, off, clock in zip(partitions, replies[-2], replies[-1], strict=True):
                if off is not None:
                    offsets[p] = int(float(off))
                if clock is not None:
                    clocks[p] = float(clock)
        return Snapshot(
            states=states, offsets=offsets, clocks=clocks, suppressed=suppressed, due=due
        )

    async def commit(self, batch: CommitBatch) -> dict[int, int]:
        """Run commit.lua once for the whole batch."""
        index = _KeyIndex()
        keys = self.keys
        plan = {
            "states": [
                [
                    index(keys.customer(w.customer_id)),
                    w.expected,
                    w.data.decode() if w.data else False,
                ]
                for w in batch.states
            ],
            "members": [
                [index(keys.members(m.segment)), m.customer_id, m.delta, m.segment]
                for m in batch.memberships
            ],
            "sizes": index(keys.sizes),
            "offsets": [index(keys.offsets), [[str(p), o] for p, o in batch.offsets.items()]],
            "clocks": [index(keys.clocks), [[str(p), c] for p, c in batch.clocks.items()]],
            "outbox": [
                [index(keys.outbox(p)), entry.decode()]
                for p, entries in batch.outbox.items()
                for entry in entries
            ],
            "due": [
                [index(keys.due(p)), cid, when if when is not None else False]
                for p, timers in batch.due.items()
                for cid, when in timers.items()
            ],
            "matrix": [
                [index(keys.matrix(day)), move, count]
                for day, moves in batch.matrix.items()
                for move, count in moves.items()
            ],
            "suppress": [
                index(keys.erased),
                [[suppression_key(cid), when] for cid, when in batch.suppress.items()],
            ],
            "history": [
                [index(keys.history_hour(hour)), hour, list(fields.items())]
                for hour, fields in batch.history.items()
            ],
        }
        if batch.history:
            plan["hist"] = [
                index(keys.history_index),
                index(keys.history_base),
                f"{keys.ns}:hist:",
                self.history_hours,
            ]
        reply = await self._commit(keys=index.keys, args=[orjson.dumps(plan)])
        if int(reply[0]) != 1:
            raise ConflictError(reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1]))
        lengths = [int(n) for n in reply[1:]]
        written = [p for p, entries in batch.outbox.items() if entries]
        return dict(zip(written, lengths, strict=True))

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

    async def matrix(self, day: str) -> dict[str, int]:
        """Moves of one day."""
        raw = cast(dict[bytes, bytes], await self.client.hgetall(self.keys.matrix(day)))
        return {k.decode(): int(v) for k, v in raw.items()}

    async def common_members(self, a: str, b: str) -> int:
        """``SINTERCARD`` of the two member sets (Redis 7; exact)."""
        keys = self.keys
        found = await self.client.sintercard(2, [keys.members(a), keys.members(b)])
        return int(found)

    async def history(self) -> SizeHistory:
        """The retained hours' counts and the base, in one round trip."""
        keys = self.keys
        found = cast(list[bytes], await self.client.zrange(keys.history_index, 0, -1))
        hours = [int(h) for h in found]
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.history_base)
            for hour in hours:
                pipe.hgetall(keys.history_hour(hour))
            raw = await pipe.execute()

        def counts(found: dict[bytes, bytes]) -> dict[str, int]:
            return {k.decode(): int(v) for k, v in found.items()}

        return SizeHistory(
            counts(raw[0]),
            {hour: counts(found) for hour, found in zip(hours, raw[1:], strict=True)},
        )

    async def get_state(self, customer_id: str) -> StoredState | None:
        """One customer's state."""
        return stored_state(
            cast(bytes | None, await self.client.get(self.keys.customer(customer_id)))
        )

    async def segment_sizes(self) -> dict[str, int]:
        """Live counts (segments with members)."""
        raw = cast(dict[bytes, bytes], await self.client.hgetall(self.keys.sizes))
        return {k.decode(): int(v) for k, v in raw.items() if int(v) > 0}

    async def members(self, segment: str, cursor: int, count: int) -> tuple[int, list[str]]:
        """SSCAN paging (a cursor of 0 means done)."""
        following, page = await self.client.sscan(self.keys.members(segment), cursor, count=count)
        return int(following), sorted(cast(bytes, m).decode() for m in page)

    async def scan_customers(self, cursor: int, count: int) -> tuple[int, list[str]]:
        """SCAN over the customer keys (on a cluster, on the node that owns the namespace)."""
        keys = self.keys
        pattern = f"{keys.customer_prefix}*"
        if keys.cluster:
            node = cast(RedisCluster, self.client).get_node_from_key(keys.sizes)
            if node is None:
                raise ConnectionError("no cluster node serves this namespace's slot")
            cursors, found = await self.client.scan(
                cursor, match=pattern, count=count, target_nodes=node
            )
            following = cast(dict[str, int], cursors)[node.name]
        else:
            following, found = await self.client.scan(cursor, match=pattern, count=count)
        ids = [keys.customer_id(k.decode()) for k in cast(list[bytes], found)]
        return int(following), ids

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
