"""Names of the Redis keys of one namespace, in either layout.

``single`` (the default): one group of keys per namespace. On one Redis server the customer keys
are tagged by customer (``ns:c:{customer}``); on a Redis Cluster (``SEGMENTER_REDIS_CLUSTER``)
the namespace is the hash tag of every key (``{ns}:c:<customer>``), so the whole namespace lives
in one slot, on one shard.

``partitioned`` (``SEGMENTER_REDIS_LAYOUT=partitioned``): one group per input partition, tagged
``{ns:p<k>}`` (or ``{ns:p<k>.<n>}``: see :func:`group_tags`). A group holds its customers'
states (a customer belongs to the partition its id routes to), the partition's offset, clock,
outbox and timers, and the group's share of the member sets, sizes, migration matrix and size
history. A batch commits one Lua call per group, so each partition stays atomic in its own slot
and the groups spread over the cluster's shards. Namespace-wide keys (the published rules,
models, erasure records, progress counters) stay under ``{ns}``.

| single | partitioned (group ``k``) | holds |
| --- | --- | --- |
| ``ns:c:{customer}`` | ``{ns:pk}:c:<customer>`` | ``<version>:<state JSON>`` |
| ``ns:m:<segment>`` | ``{ns:pk}:m:<segment>`` | the segment's members |
| ``ns:sizes`` | ``{ns:pk}:sizes`` | segment -> member count |
| ``ns:offsets``, ``ns:clocks`` | ``{ns:pk}:offsets``, ``:clocks`` | partition -> offset, clock |
| ``ns:outbox:<p>``, ``ns:due:<p>`` | ``{ns:pp}:outbox:<p>``, ``:due:<p>`` | messages, timers |
| ``ns:matrix:<day>`` | ``{ns:pk}:matrix:<day>`` | ``<from>|<to>`` -> migrations that day |
| ``ns:hist:<hour>``, ``ns:hist``, ``ns:hist:base`` | ``{ns:pk}:hist:...`` | the size history |
| | ``{ns:pk}:handover`` | hand-overs committed but not finished (see ``redis_store``) |
| ``ns:erased`` | ``{ns}:erased`` | digest of an erased id -> erasure time |
| ``ns:meta:<name>``, ``ns:progress:<name>`` | ``{ns}:meta:...``, ``{ns}:progress:...`` | rules |
| ``ns:import:<run>`` | ``{ns}:import:<run>`` | an import run's record |
| ``ns:import:<run>:progress`` | ``{ns:pk}:import:<run>:progress`` | its checkpoint |
| ``ns:import:<run>:before`` | ``{ns:pk}:import:<run>:before`` | memberships before it |
| ``ns:outbox:import:<run>:<p>`` | ``{ns:pp}:outbox:import:<run>:<p>`` | its own outboxes |
"""

from __future__ import annotations

import functools
import itertools
from typing import Literal

from redis.crc import key_slot

from streams.pipeline.routing import partition_for

Layout = Literal["single", "partitioned"]
SLOTS = 16384
NAMESPACE_GROUP = -1
"""The group of the namespace-wide keys in the partitioned layout (``{ns}``)."""


@functools.lru_cache(maxsize=64)
def group_tags(namespace: str, partitions: int) -> tuple[str, ...]:
    """Each group's hash tag, chosen so that group ``k``'s slot lies near the middle of the
    ``k``-th of ``partitions`` equal slices of the 16384 slots.

    Clusters give each master a contiguous, even share of the slots, so the groups then spread
    over the masters as evenly as they can (8 groups over 3 masters: 3, 2, 3), where tags hashed
    at random could leave a master without any. The tag is ``{ns:p<k>}``, or ``{ns:p<k>.<n>}``
    with the first ``n`` that lands in the window: deterministic, so every process agrees.
    """
    width = SLOTS / partitions
    radius = max(width / 8, 1.0)
    tags = []
    for group in range(partitions):
        center = (group + 0.5) * width
        for n in itertools.count():
            inner = f"{namespace}:p{group}" if n == 0 else f"{namespace}:p{group}.{n}"
            if abs(key_slot(inner.encode()) - center) <= radius:
                tags.append(f"{{{inner}}}")
                break
    return tuple(tags)


class Keys:
    """Names of every key under one namespace, in one layout."""

    def __init__(
        self, namespace: str, cluster: bool = False, partitions: int = 0, lane: str = ""
    ) -> None:
        """``partitions`` > 0 selects the partitioned layout with that many groups. ``lane``
        names an outbox of its own (an import's), that only its writer sends and trims."""
        self.namespace = namespace
        self.lane = f"{lane}:" if lane else ""
        self.cluster = cluster
        self.partitions = partitions
        self.partitioned = partitions > 0
        self.ns = f"{{{namespace}}}" if cluster or self.partitioned else namespace
        """The prefix of the namespace-wide keys."""
        self.layout: Layout = "partitioned" if self.partitioned else "single"
        if self.partitioned:
            self.customer_pattern = f"{{{namespace}:p*}}:c:*"
        elif cluster:
            self.customer_pattern = f"{self.ns}:c:*"
        else:
            self.customer_pattern = f"{namespace}:c:{{*"
        """What every customer key matches (for SCAN)."""
        self._tags = group_tags(namespace, partitions) if self.partitioned else ()
        self.sizes = self.sizes_of(0)
        self.offsets = self.offsets_of(0)
        self.clocks = self.clocks_of(0)
        self.erased = f"{self.ns}:erased"

    @property
    def groups(self) -> range:
        """Every key group: one per input partition (partitioned), or the one group (single)."""
        return range(self.partitions) if self.partitioned else range(1)

    def group(self, partition: int) -> int:
        """The group of an input partition."""
        return partition if self.partitioned else 0

    def home(self, customer_id: str) -> int:
        """The group of a customer (its home partition's, partitioned; 0, single)."""
        if self.partitions <= 1:
            return 0
        return partition_for(customer_id.encode(), self.partitions)

    def tag(self, group: int) -> str:
        """The prefix of a group's keys."""
        if self.partitioned and group != NAMESPACE_GROUP:
            return self._tags[group]
        return self.ns

    def customer(self, customer_id: str) -> str:
        """The customer's state."""
        if self.partitioned:
            return f"{self.tag(self.home(customer_id))}:c:{customer_id}"
        if self.cluster:
            return f"{self.ns}:c:{customer_id}"
        return f"{self.ns}:c:{{{customer_id}}}"

    def customer_id(self, key: str) -> str:
        """Inverse of :meth:`customer`."""
        if self.partitioned:
            return key[key.index("}:c:") + 4 :]
        if self.cluster:
            return key[len(self.ns) + 3 :]
        return key[len(self.ns) + 4 : -1]

    def sizes_of(self, group: int) -> str:
        """A group's segment sizes."""
        return f"{self.tag(group)}:sizes"

    def offsets_of(self, group: int) -> str:
        """A group's applied offsets."""
        return f"{self.tag(group)}:offsets"

    def clocks_of(self, group: int) -> str:
        """A group's event-time clocks."""
        return f"{self.tag(group)}:clocks"

    def members(self, segment: str, group: int = 0) -> str:
        """A group's share of a segment's member set."""
        return f"{self.tag(group)}:m:{segment}"

    def matrix(self, day: str, group: int = 0) -> str:
        """A group's migration matrix of one day."""
        return f"{self.tag(group)}:matrix:{day}"

    def outbox(self, partition: int) -> str:
        """A partition's outbox list (the lane's, with a lane)."""
        return f"{self.tag(self.group(partition))}:outbox:{self.lane}{partition}"

    def due(self, partition: int) -> str:
        """A partition's timer sorted set."""
        return f"{self.tag(self.group(partition))}:due:{partition}"

    def history_prefix(self, group: int = 0) -> str:
        """What a group's hourly history keys start with (the hour follows)."""
        return f"{self.tag(group)}:hist:"

    def history_hour(self, hour: int, group: int = 0) -> str:
        """One hour's migration counts per segment and direction."""
        return f"{self.history_prefix(group)}{hour}"

    def history_index(self, group: int = 0) -> str:
        """The retained hours."""
        return f"{self.tag(group)}:hist"

    def history_base(self, group: int = 0) -> str:
        """Counts of the hours retention dropped."""
        return f"{self.tag(group)}:hist:base"

    def handover(self, group: int) -> str:
        """A group's committed but unfinished hand-overs."""
        return f"{self.tag(group)}:handover"

    def import_run(self, run: str) -> str:
        """An import run's record (namespace-wide)."""
        return f"{self.ns}:import:{run}"

    def import_progress(self, run: str, group: int) -> str:
        """A group's share of an import run's checkpoint."""
        return f"{self.tag(group)}:import:{run}:progress"

    def import_before(self, run: str, group: int) -> str:
        """A group's customers touched by an import run: their memberships before it."""
        return f"{self.tag(group)}:import:{run}:before"

    def meta(self, name: str) -> str:
        """A named value (the published rules, RFM boundaries, models)."""
        return f"{self.ns}:meta:{name}"

    def progress(self, name: str) -> str:
        """A progress counter."""
        return f"{self.ns}:progress:{name}"
