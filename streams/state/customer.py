"""One customer's state: what the store keeps and the rule engine reads.

The state is a plain dataclass serialised to compact JSON (orjson). Keys in JSON are short on
purpose: the state of every customer lives in Redis memory. Two more savings, both exact:

- instants (first/last seen, named events' first/last, segment entry times, due, evaluated at)
  that are whole milliseconds are written as integer milliseconds relative to one time base per
  state (``"tb"``, in ms); any other instant is written as a JSON float, unchanged;
- the duplicate ring is one string of fixed-width base85 digests (``"h"``);
- window series (``"x"``) hold one entry per instant, its time written like every instant.

States written before (floats everywhere, no ``"tb"``; the ring as hex digests in ``"r"``, a
string or a list; bucketed series in ``"s"``) are still read.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

DIGEST_CHARS = 5
"""Characters of one messageId digest as kept in :attr:`CustomerState.recent` (base85)."""
LEGACY_DIGEST_CHARS = 8
"""Characters of one digest in the former ring format (hex)."""
_MAX_MS = 2**53
"""Bound of the instants written as milliseconds (exact integers in every JSON reader)."""

Bucket = list[float]
"""``[time, count, sum_1, ..., sum_n]``: the events of a series at one instant (states written
before exact windows hold epoch-aligned bucket starts here, read as the entries' times)."""


class StateDecodeError(ValueError):
    """A stored customer state that cannot be read."""


@dataclass(slots=True)
class SeriesState:
    """The entries of one series, oldest first, with the names of the summed properties."""

    props: list[str]
    buckets: list[Bucket] = field(default_factory=list)


@dataclass(slots=True)
class OpenInstant:
    """Membership changes at one instant not yet published (see :mod:`streams.pipeline.moves`).

    Events at one instant can change a membership and change it back: what is published is the
    net change from ``members`` (the memberships, with entry times, before the instant) to the
    memberships once the instant is over, with the trigger of the last change.
    """

    at: float
    """The instant (the evaluation time of the changes)."""
    members: dict[str, float]
    """Segment -> entry time, as before the instant."""
    primary: str | None
    trigger: tuple[str, str | None, str | None]
    """``(kind, message_id, event)`` of the last change at the instant."""
    when: float
    """The migrations' time: the last change's event time."""


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
    first_revenue: float | None = None
    """The value of the first ``Order Completed`` (Gamma-Gamma reads repeat orders only); None
    in states written before it was kept."""
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
    """Set on a merged-away id: a redirect to the surviving profile, with no other data (but see
    ``handing_over``)."""
    handing_over: bool = False
    """A merged-away profile claimed by a survivor in another partition (partitioned layout):
    it redirects like any merged-away id, and keeps its data until the survivor has it."""
    evaluated_at: float | None = None
    """The customer's own time: the latest instant its rules were evaluated at."""
    evaluated_under: str | None = None
    """The rule version (with live RFM boundaries) the memberships were last evaluated under."""
    open: OpenInstant | None = None
    """Changes at the customer's latest instant, published once that instant is over."""
    imported_until: float | None = None
    """Set by ``segmenter import``: the customer's history up to this instant came from the
    import, so live events at or before it are already counted (the cut-over)."""

    def timer(self) -> float | None:
        """When the customer next needs attention with no event: its due time, or the end of
        its open instant when earlier."""
        opened = self.open
        if opened is None:
            return self.due
        due = self.due
        return opened.at if due is None or opened.at < due else due

    @classmethod
    def redirect(cls, customer_id: str, survivor: str, sequence: int) -> CustomerState:
        """The record left behind by a merged-away id."""
        return cls(customer_id=customer_id, merged_into=survivor, sequence=sequence)

    def to_json(self) -> bytes:
        """Compact JSON for the store."""
        doc: dict[str, Any] = {"id": self.customer_id, "q": self.sequence}
        base = _time_base(self.first_seen, self.evaluated_at, self.last_seen, self.due)
        at = _as_stored if base is None else _instant_encoder(base)
        if base is not None:
            doc["tb"] = base
        if self.traits:
            doc["t"] = self.traits
        if self.consent:
            doc["c"] = self.consent
        if self.first_seen is not None:
            doc["fs"] = at(self.first_seen)
            doc["ls"] = None if self.last_seen is None else at(self.last_seen)
        if self.events:
            doc["e"] = self.events
        if self.orders:
            doc["o"] = self.orders
            doc["rv"] = self.revenue
            if self.first_revenue is not None:
                doc["fr"] = self.first_revenue
        if self.named:
            doc["n"] = (
                self.named
                if base is None
                else {
                    name: [count, at(first), at(last)]
                    for name, (count, first, last) in self.named.items()
                }
            )
        if self.series:
            doc["x"] = {
                sid: [s.props, [[at(e[0]), *map(_compact, e[1:])] for e in s.buckets]]
                for sid, s in self.series.items()
                if s.buckets
            }
        if self.members:
            doc["m"] = (
                self.members
                if base is None
                else {segment: at(since) for segment, since in self.members.items()}
            )
        if self.primary is not None:
            doc["p"] = self.primary
        if self.recent:
            doc["h"] = "".join(self.recent)
        if self.due is not None:
            doc["d"] = at(self.due)
        if self.aliases:
            doc["al"] = self.aliases
        if self.merged_into is not None:
            doc["mi"] = self.merged_into
            if self.handing_over:
                doc["ho"] = 1
        if self.evaluated_under is not None:
            doc["ev"] = self.evaluated_under
        if self.evaluated_at is not None:
            doc["ea"] = at(self.evaluated_at)
        if self.imported_until is not None:
            doc["iu"] = self.imported_until
        if self.open is not None:
            o = self.open
            doc["oi"] = [
                at(o.at),
                {segment: at(since) for segment, since in o.members.items()},
                o.primary,
                list(o.trigger),
                at(o.when),
            ]
        return orjson.dumps(doc)

    @classmethod
    def from_json(cls, raw: bytes | str) -> CustomerState:
        """Inverse of :meth:`to_json` (also reads the former formats).

        Raises:
            StateDecodeError: ``raw`` is not a state this version can read (corrupt, written by
                hand or by a newer version); callers skip such a customer and count it.
        """
        try:
            state = cls._decoded(orjson.loads(raw))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateDecodeError(f"unreadable customer state: {exc!r}") from exc
        for value in (state.revenue, state.orders, state.events):
            if type(value) not in (int, float):
                raise StateDecodeError(f"unreadable customer state: a count of {value!r}")
        return state

    @classmethod
    def _decoded(cls, doc: dict[str, Any]) -> CustomerState:
        """The state of a parsed document (see :meth:`from_json`)."""
        base = doc.get("tb")
        at = _as_stored if base is None else _instant_decoder(base)
        named: dict[str, list[float]] = doc.get("n", {})
        members: dict[str, float] = doc.get("m", {})
        if base is not None:
            for entry in named.values():
                entry[1] = at(entry[1])
                entry[2] = at(entry[2])
            for segment, since in members.items():
                members[segment] = at(since)
        return cls(
            customer_id=doc["id"],
            traits=doc.get("t", {}),
            consent=doc.get("c", {}),
            first_seen=at(doc.get("fs")),
            last_seen=at(doc.get("ls")),
            events=doc.get("e", 0),
            orders=doc.get("o", 0),
            revenue=doc.get("rv", 0.0),
            first_revenue=doc.get("fr"),
            named=named,
            series=_series(doc, at),
            members=members,
            primary=doc.get("p"),
            sequence=doc.get("q", 0),
            recent=_digests(doc["h"]) if "h" in doc else _legacy_digests(doc.get("r", "")),
            due=at(doc.get("d")),
            aliases=doc.get("al", []),
            merged_into=doc.get("mi"),
            handing_over=bool(doc.get("ho")),
            evaluated_under=doc.get("ev"),
            evaluated_at=at(doc.get("ea")),
            open=_open_instant(doc["oi"], at) if "oi" in doc else None,
            imported_until=doc.get("iu"),
        )


def _series(doc: dict[str, Any], at: Callable[[Any], Any]) -> dict[str, SeriesState]:
    """The window series: ``"x"`` holds entries timed like every other instant; ``"s"`` (the
    former bucketed format) holds absolute bucket starts, read as entry times."""
    if "x" in doc:
        series = {}
        for sid, (props, entries) in doc["x"].items():
            for entry in entries:
                entry[0] = at(entry[0])
            series[sid] = SeriesState(props, entries)
        return series
    return {sid: SeriesState(props, buckets) for sid, (props, buckets) in doc.get("s", {}).items()}


def _open_instant(stored: list[Any], at: Callable[[Any], Any]) -> OpenInstant:
    """An :class:`OpenInstant` from its stored form (see :meth:`CustomerState.to_json`)."""
    instant, members, primary, trigger, when = stored
    kind, message_id, event = trigger
    return OpenInstant(
        at=at(instant),
        members={segment: at(since) for segment, since in members.items()},
        primary=primary,
        trigger=(kind, message_id, event),
        when=at(when),
    )


def _millis(instant: float) -> int | None:
    """``instant`` in whole milliseconds, when ``ms / 1000`` gives back exactly ``instant``.

    Only for ``|ms| < 2**53`` (any epoch instant of the next 285,000 years), so that the
    relative values fit a JSON integer everywhere.
    """
    scaled = instant * 1000
    if not -_MAX_MS < scaled < _MAX_MS:
        return None
    ms = math.floor(scaled + 0.5)
    return ms if ms / 1000 == instant else None


def _time_base(*instants: float | None) -> int | None:
    """The time base of a state: the first of ``instants`` that is whole milliseconds."""
    for instant in instants:
        if instant is not None and (ms := _millis(instant)) is not None:
            return ms
    return None


def _as_stored(value: Any) -> Any:
    """Instants with no time base: written and read as they are."""
    return value


def _instant_encoder(base: int) -> Callable[[float], float | int]:
    """Stored form of an instant: ms relative to ``base`` (an int) when exact, else a float.

    Instants often repeat within a state (first and last seen, entry times of segments entered
    together), so each distinct one is converted once.
    """
    stored: dict[float, float | int] = {}

    def encode(instant: float) -> float | int:
        value = stored.get(instant)
        if value is None:
            ms = _millis(instant)
            value = stored[instant] = float(instant) if ms is None else ms - base
        return value

    return encode


def _instant_decoder(base: int) -> Callable[[Any], Any]:
    """Inverse of :func:`_instant_encoder`: integers are ms relative to ``base``."""

    def decode(stored: Any) -> Any:
        return (base + stored) / 1000 if type(stored) is int else stored

    return decode


def _digests(packed: str) -> list[str]:
    """The duplicate ring from its stored form (base85 digests concatenated into one string)."""
    return [packed[i : i + DIGEST_CHARS] for i in range(0, len(packed), DIGEST_CHARS)]


def _legacy_digests(packed: str | list[str]) -> list[str]:
    """The duplicate ring from its former stored form: hex digests, concatenated or a list."""
    if isinstance(packed, str):
        packed = [
            packed[i : i + LEGACY_DIGEST_CHARS] for i in range(0, len(packed), LEGACY_DIGEST_CHARS)
        ]
    return [hex_to_digest(digest) for digest in packed]


def hex_to_digest(hex_digest: str) -> str:
    """A former hex messageId digest in the current base85 form."""
    return base64.b85encode(bytes.fromhex(hex_digest)).decode()


def _compact(value: float) -> float | int:
    """Integral numbers as ints: ``11`` takes fewer bytes in Redis than ``11.0``."""
    return int(value) if float(value).is_integer() else value
