"""A batch's commit as commit.lua plans: one per key group (the partitioned layout), or one.

Each input partition's records and timers change only that partition's customers, with two
exceptions: a merge changes the other profile (its key becomes a redirect, it leaves its
segments, its timer goes), and an erasure deletes the aliases' keys and records every id as
erased. Those changes belong to another group than the operation that made them. They are
*foreign*: the operation's group records them, in its own atomic commit, as a hand-over to
finish in the other group, and the store finishes it right after (or, after a crash, on start).
Everything a foreign change writes is idempotent (a state written whatever its version, set
members added or removed, a timer removed), so finishing one twice does no harm.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streams.store.base import ANY_VERSION, CommitBatch, StateWrite, suppression_key
from streams.store.keys import NAMESPACE_GROUP, Keys

Foreign = dict[int, dict[int, CommitBatch]]
"""Origin group -> target group -> the changes to hand over."""


def split(batch: CommitBatch, keys: Keys) -> tuple[dict[int, CommitBatch], Foreign]:
    """``batch`` as one commit per group, and the foreign changes per origin and target group.

    The single layout has one group: the batch itself, and nothing foreign.
    """
    if not keys.partitioned:
        return {0: batch}, {}
    local: dict[int, CommitBatch] = {}
    foreign: Foreign = {}
    origins = batch.origins
    group = keys.group

    def part(customer_id: str, target: int) -> tuple[CommitBatch, bool]:
        origin_partition = origins.get(customer_id)
        origin = target if origin_partition is None else group(origin_partition)
        if origin == target:
            return local.setdefault(target, CommitBatch()), False
        local.setdefault(origin, CommitBatch())
        return foreign.setdefault(origin, {}).setdefault(target, CommitBatch()), True

    home = keys.home
    for write in batch.states:
        into, handed = part(write.customer_id, home(write.customer_id))
        into.states.append(
            StateWrite(write.customer_id, ANY_VERSION, write.data) if handed else write
        )
    for change in batch.memberships:
        part(change.customer_id, home(change.customer_id))[0].memberships.append(change)
    for partition, timers in batch.due.items():
        for customer_id, when in timers.items():
            into = part(customer_id, group(partition))[0]
            into.due.setdefault(partition, {})[customer_id] = when
    for customer_id, when in batch.suppress.items():
        part(customer_id, NAMESPACE_GROUP)[0].suppress[customer_id] = when
    for partition, offset in batch.offsets.items():
        local.setdefault(group(partition), CommitBatch()).offsets[partition] = offset
    for partition, clock in batch.clocks.items():
        local.setdefault(group(partition), CommitBatch()).clocks[partition] = clock
    for partition, entries in batch.outbox.items():
        if entries:
            local.setdefault(group(partition), CommitBatch()).outbox[partition] = entries
    for partition, moves in batch.matrix.items():
        if moves:
            local.setdefault(group(partition), CommitBatch()).matrix[partition] = moves
    for partition, hours in batch.history.items():
        if hours:
            local.setdefault(group(partition), CommitBatch()).history[partition] = hours
    _split_run(batch, keys, local)
    return local, foreign


def _split_run(batch: CommitBatch, keys: Keys, local: dict[int, CommitBatch]) -> None:
    """An import run's progress (per partition), ``before`` records and deletions (per
    customer) into the groups they belong to."""
    if not batch.run:
        return
    for partition, fields in batch.progress.items():
        into = local.setdefault(keys.group(partition), CommitBatch())
        into.progress[partition] = fields
    for customer_id, value in batch.before.items():
        local.setdefault(keys.home(customer_id), CommitBatch()).before[customer_id] = value
    for customer_id in batch.announced:
        local.setdefault(keys.home(customer_id), CommitBatch()).announced.append(customer_id)
    for part in local.values():
        part.run = batch.run


def needs_claim(batch: CommitBatch, keys: Keys, customer_id: str) -> bool:
    """True when a merged-away profile lives in another group than the merge (the partitioned
    layout): it is claimed before the merge commits (see ``redis_store``)."""
    if not keys.partitioned:
        return False
    origin = batch.origins.get(customer_id)
    return origin is not None and keys.group(origin) != keys.home(customer_id)


class KeyIndex:
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


class Blobs:
    """commit.lua's ARGV after the plan: the states and outbox entries, passed as they are.

    Given a ``Blobs``, a plan names each of them by its ARGV position instead of holding it as
    JSON text (which would be decoded, escaped into the plan, and parsed again by the script);
    without one (a hand-over record, kept as one JSON document) the plan holds the text."""

    def __init__(self) -> None:
        self.values: list[bytes] = []

    def __call__(self, value: bytes) -> int:
        self.values.append(value)
        return len(self.values) + 1


def _inline(value: bytes) -> str:
    return value.decode()


def commit_plan(
    keys: Keys, group: int, batch: CommitBatch, history_hours: int, blobs: Blobs | None = None
) -> tuple[KeyIndex, dict[str, Any]]:
    """commit.lua's KEYS (the index) and plan for one group's share of a batch (states and
    outbox entries in ``blobs`` when given, see :class:`Blobs`)."""
    index = KeyIndex()
    put: Callable[[bytes], int | str] = blobs if blobs is not None else _inline
    plan: dict[str, Any] = {
        "states": [
            [index(keys.customer(w.customer_id)), w.expected, put(w.data) if w.data else False]
            for w in batch.states
        ],
        "members": [
            [index(keys.members(m.segment, group)), m.customer_id, m.delta, m.segment]
            for m in batch.memberships
        ],
        "sizes": index(keys.sizes_of(group)),
        "offsets": [index(keys.offsets_of(group)), [[str(p), o] for p, o in batch.offsets.items()]],
        "clocks": [index(keys.clocks_of(group)), [[str(p), c] for p, c in batch.clocks.items()]],
        "outbox": [
            [key, put(entry)]
            for p, entries in batch.outbox.items()
            for key in ((index(keys.outbox(p)),) if entries else ())
            for entry in entries
        ],
        "due": [
            [key, cid, when if when is not None else False]
            for p, timers in batch.due.items()
            for key in ((index(keys.due(p)),) if timers else ())
            for cid, when in timers.items()
        ],
        "matrix": [
            [index(keys.matrix(day, group)), move, count]
            for days in batch.matrix.values()
            for day, moves in days.items()
            for move, count in moves.items()
        ],
        "suppress": [
            index(keys.erased),
            [[suppression_key(cid), when] for cid, when in batch.suppress.items()],
        ]
        if batch.suppress
        else [0, []],
        "history": [
            [index(keys.history_hour(hour, group)), hour, list(fields.items())]
            for hours in batch.history.values()
            for hour, fields in hours.items()
        ],
        "hset": [],
    }
    if batch.run:
        _run_plan(keys, group, batch, index, plan)
    if plan["history"]:
        plan["hist"] = [
            index(keys.history_index(group)),
            index(keys.history_base(group)),
            keys.history_prefix(group),
            history_hours,
        ]
    return index, plan


def _run_plan(
    keys: Keys, group: int, batch: CommitBatch, index: KeyIndex, plan: dict[str, Any]
) -> None:
    """The import run's part of a plan: progress (raised), ``before`` (HSETNX), deletions."""
    run = batch.run
    if batch.progress:
        plan["progress"] = [
            index(keys.import_progress(run, group)),
            [
                [name, position]
                for fields in batch.progress.values()
                for name, position in fields.items()
            ],
        ]
    if batch.before or batch.announced:
        before = index(keys.import_before(run, group))
        plan["hsetnx"] = [[before, cid, value.decode()] for cid, value in batch.before.items()]
        plan["hdel"] = [[before, cid] for cid in batch.announced]
