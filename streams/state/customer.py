"""One customer's state: what the store keeps and the rule engine reads.

The state is a plain dataclass serialised to compact JSON (orjson). Keys in JSON are short on
purpose: the state of every customer lives in Redis memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

DIGEST_CHARS = 8

Bucket = list[float]
"""``[bucket_start, count, sum_1, ..., sum_n]`` for one time bucket of a series."""


@dataclass(slots=True)
class SeriesState:
    """The buckets of one series, oldest first, with the names of the summed properties."""

    props: list[str]
    buckets: list[Bucket] = field(default_factory=list)


@dataclass(slots=True)
class CustomerState:
    """Everything the segmenter knows about one customer."""

    customer_id: str
    traits: dict[str, Any] = field(default_factory=dict)
    consent: dict[str, bool] = field(default_factory=dict)
    first_seen: float | None = None
    last_seen: float | None = None
    events: int = 0
    orders: int = 0
    revenue: float = 0.0
    named: dict[str, list[float]] = field(default_factory=dict)
    """Event name -> ``[count, first_ts, last_ts]`` over the customer's lifetime."""
    series: dict[str, SeriesState] = field(default_factory=dict)
    members: dict[str, float] = field(default_factory=dict)
    """Segment id -> when the customer entered it."""
    primary: str | None = None
    sequence: int = 0
    recent: list[str] = field(default_factory=list)
    """Digests of the latest messageIds, newest last (redelivery and duplicate detection)."""
    due: float | None = None
    """When the outcome of some rule can next change with no new event (the timer)."""
    aliases: list[str] = field(default_factory=list)
    """Ids merged into this profile (their keys redirect here)."""
    merged_into: str | None = None
    """Set on a merged-away id: a redirect to the surviving profile, with no other data."""
    evaluated_at: float | None = None
    """The customer's own time: the latest instant its rules were evaluated at."""
    evaluated_under: str | None = None
    """The rule version (with live RFM boundaries) the memberships were last evaluated under."""

    @classmethod
    def redirect(cls, customer_id: str, survivor: str, sequence: int) -> CustomerState:
        """The record left behind by a merged-away id."""
        return cls(customer_id=customer_id, merged_into=survivor, sequence=sequence)

    def to_json(self) -> bytes:
        """Compact JSON for the store."""
        doc: dict[str, Any] = {"id": self.customer_id, "q": self.sequence}
        if self.traits:
            doc["t"] = self.traits
        if self.consent:
            doc["c"] = self.consent
        if self.first_seen is not None:
            doc["fs"] = self.first_seen
            doc["ls"] = self.last_seen
        if self.events:
            doc["e"] = self.events
        if self.orders:
            doc["o"] = self.orders
            doc["rv"] = self.revenue
        if self.named:
            doc["n"] = self.named
        if self.series:
            doc["s"] = {
                sid: [s.props, [[_compact(x) for x in bucket] for bucket in s.buckets]]
                for sid, s in self.series.items()
                if s.buckets
            }
        if self.members:
            doc["m"] = self.members
        if self.primary is not None:
            doc["p"] = self.primary
        if self.recent:
            doc["r"] = "".join(self.recent)
        if self.due is not None:
            doc["d"] = self.due
        if self.aliases:
            doc["al"] = self.aliases
        if self.merged_into is not None:
            doc["mi"] = self.merged_into
        if self.evaluated_under is not None:
            doc["ev"] = self.evaluated_under
        if self.evaluated_at is not None:
            doc["ea"] = self.evaluated_at
        return orjson.dumps(doc)

    @classmethod
    def from_json(cls, raw: bytes | str) -> CustomerState:
        """Inverse of :meth:`to_json`."""
        doc = orjson.loads(raw)
        return cls(
            customer_id=doc["id"],
            traits=doc.get("t", {}),
            consent=doc.get("c", {}),
            first_seen=doc.get("fs"),
            last_seen=doc.get("ls"),
            events=doc.get("e", 0),
            orders=doc.get("o", 0),
            revenue=doc.get("rv", 0.0),
            named=doc.get("n", {}),
            series={
                sid: SeriesState(props, buckets)
                for sid, (props, buckets) in doc.get("s", {}).items()
            },
            members=doc.get("m", {}),
            primary=doc.get("p"),
            sequence=doc.get("q", 0),
            recent=_digests(doc.get("r", "")),
            due=doc.get("d"),
            aliases=doc.get("al", []),
            merged_into=doc.get("mi"),
            evaluated_under=doc.get("ev"),
            evaluated_at=doc.get("ea"),
        )


def _digests(packed: str | list[str]) -> list[str]:
    """The duplicate ring from its stored form (digests concatenated into one string)."""
    if isinstance(packed, list):
        return packed
    return [packed[i : i + DIGEST_CHARS] for i in range(0, len(packed), DIGEST_CHARS)]


def _compact(value: float) -> float | int:
    """Integral numbers as ints: ``11`` takes fewer bytes in Redis than ``11.0``."""
    return int(value) if float(value).is_integer() else value
