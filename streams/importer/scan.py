"""The first pass over the sources: rows checked, sorted by time out of core, identities grouped.

Every row becomes a sort record ``(time in ms, serial, payload)``: ``serial`` packs the source's
index and the row's line (``source << 40 | line``), so ties keep the input order and a record
always says where it came from; ``payload`` is the customer id (as a JSON string), a tab, and the
event as a JSON line. A row without a valid time or customer is rejected here; the full schema
is checked when the event is applied (with the same ``file:line`` in the message).

Identity merges (``identify`` with both ids, ``alias``) join customers into groups (union-find):
a group's events and timers are imported by one process, so ``--jobs`` never splits a merge.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from streams.engine.instants import instant_of
from streams.importer.mapping import ColumnMap
from streams.importer.sorting import ExternalSorter
from streams.importer.sources import Source, rows
from streams.pipeline.routing import partition_for

LINE_BITS = 40
SLOTS = 64
"""Customers are spread over this many slots (by identity group); ``--jobs`` processes take
slots, and the checkpoint is kept per partition and slot."""


def origin(sources: Sequence[Source], serial: int) -> str:
    """``file:line`` of a record's serial."""
    index, line = serial >> LINE_BITS, serial & ((1 << LINE_BITS) - 1)
    name = sources[index].name if index < len(sources) else "?"
    return f"{name}:{line}"


@dataclass
class Identities:
    """Union-find over customer ids joined by merges (only ids in a merge are stored)."""

    parent: dict[str, str] = field(default_factory=dict)

    def find(self, cid: str) -> str:
        """The group's representative (its smallest id)."""
        parent = self.parent
        while True:
            up = parent.get(cid)
            if up is None or up == cid:
                return cid
            above = parent.get(up, up)
            parent[cid] = above
            cid = above

    def join(self, a: str, b: str) -> None:
        """``a`` and ``b`` are one customer."""
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            low, high = (ra, rb) if ra < rb else (rb, ra)
            self.parent[high] = low
            self.parent.setdefault(low, low)

    def slot(self, cid: str) -> int:
        """The customer's slot (its group's)."""
        return zlib.crc32(self.find(cid).encode()) % SLOTS


@dataclass
class Scan:
    """What the first pass found."""

    events: int = 0
    rejected: int = 0
    first: dict[int, float] = field(default_factory=dict)
    """Input partition -> its earliest event time (epoch seconds)."""
    last: float | None = None
    """The latest event time (epoch seconds): the end of the history."""
    identities: Identities = field(default_factory=Identities)
    customers: set[int] = field(default_factory=set)
    """Hashes of the customer ids seen (their number is what ``--json`` reports)."""


def scan(
    sources: Sequence[Source],
    mapping: ColumnMap | None,
    partitions: int,
    sorter: ExternalSorter,
    reject: Callable[[str], None],
    progress: Callable[[int], None] | None = None,
) -> Scan:
    """Read every source into ``sorter``; ``reject("file:line: message")`` for bad rows."""
    found = Scan()
    for index, source in enumerate(sources):
        for line, row, error in rows(source, mapping):
            if error is None and row is not None:
                error = _take(found, row, (index << LINE_BITS) | line, partitions, sorter)
            if error is not None:
                found.rejected += 1
                reject(f"{source.name}:{line}: {error}")
            if progress is not None and line % 10_000 == 0:
                progress(found.events + found.rejected)
    return found


def _take(
    found: Scan,
    row: dict[str, Any] | bytes,
    serial: int,
    partitions: int,
    sorter: ExternalSorter,
) -> str | None:
    """Add one row to the sorter; an error message when it cannot be placed in time."""
    if isinstance(row, bytes):
        try:
            doc = orjson.loads(row)
        except orjson.JSONDecodeError as exc:
            return f"json: expected valid JSON: {exc}"
        if not isinstance(doc, dict):
            return f"json: expected a JSON object, found {type(doc).__name__}"
        line = row
    else:
        doc, line = row, orjson.dumps(row)
    user, anonymous = doc.get("userId"), doc.get("anonymousId")
    cid = user if user is not None else anonymous
    if not isinstance(cid, str) or not cid:
        return "schema: expected 'userId' or 'anonymousId', found neither"
    stamp = doc.get("timestamp")
    try:
        moment = datetime.fromisoformat(stamp) if isinstance(stamp, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        return f"schema: timestamp: expected ISO 8601 with an offset, found {stamp!r}"
    at = instant_of(moment)
    _identities(found.identities, doc, cid)
    sorter.add(round(at * 1000), serial, orjson.dumps(cid) + b"\t" + line)
    found.events += 1
    found.customers.add(hash(cid))
    partition = partition_for(cid.encode(), partitions)
    if at < found.first.get(partition, at + 1):
        found.first[partition] = at
    if found.last is None or at > found.last:
        found.last = at
    return None


def _identities(identities: Identities, doc: dict[str, Any], cid: str) -> None:
    """Join the ids a merge event names."""
    kind = doc.get("type")
    if kind == "identify":
        other = doc.get("anonymousId")
    elif kind == "alias":
        other = doc.get("previousId")
    else:
        return
    if isinstance(other, str) and other and other != cid:
        identities.join(cid, other)


def split_payload(payload: bytes) -> tuple[str, bytes]:
    """A sort record's payload as ``(customer id, event JSON)``."""
    head, _, line = payload.partition(b"\t")
    return orjson.loads(head), line
