"""How a batch tells time: an injected ``Clock`` and the two time modes.

Every instant here is canonical (whole milliseconds, :mod:`streams.engine.instants`).

A :class:`Watermark` is a bound *before which* everything has happened: every event of the
partition with an instant before it has been applied, so a timer due before it may fire. A timer
due exactly at the watermark waits: events at an instant are applied before timers due at that
instant (the watermark convention of Flink), so an order arriving exactly when a recency window
expires keeps the customer in, with no exit and re-entry.

* :class:`EventTime`: a partition's watermark is its latest event time minus the allowed
  lateness; an event is evaluated at its own time (or its customer's, when that is later).
* :class:`ProcessingTime`: one reading of the clock per batch (the batch's instant ``N``); an
  event is evaluated at ``N`` (or its customer's time, when later), whatever its timestamp;
  timers due before ``N`` fire before the batch's events, timers due at ``N`` after them, and
  every change of the batch is published when the batch ends.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Protocol

from streams.engine.instants import MS


class Clock(Protocol):
    """The wall clock, injected: tests pass a :class:`ManualClock` and advance it."""

    def now(self) -> float:
        """The current instant (canonical: whole milliseconds)."""
        ...


class WallClock:
    """The system clock, truncated to the millisecond."""

    def now(self) -> float:
        """``time.time()`` truncated to the millisecond."""
        return math.floor(time.time() * 1000) / 1000


@dataclass(slots=True)
class ManualClock:
    """A clock that moves only when told to (tests, replays)."""

    at: float = 0.0

    def now(self) -> float:
        """The instant the clock was last set to."""
        return self.at

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        self.at = round((self.at + seconds) * 1000) / 1000


@dataclass(frozen=True, slots=True)
class Watermark:
    """Everything before ``before`` has happened: timers due before it may fire."""

    before: float

    @classmethod
    def through(cls, instant: float) -> Watermark:
        """Everything up to and including ``instant`` has happened."""
        return cls(round((instant + MS) * 1000) / 1000)

    def passed(self, instant: float) -> bool:
        """Whether ``instant`` lies before the watermark."""
        return instant < self.before


NEVER = Watermark(float("-inf"))
"""A watermark before every instant: nothing may fire yet."""


class TimeMode(Protocol):
    """What ``SEGMENTER_CLOCK`` selects: how events are timed and when timers fire."""

    def evaluation_instant(self, batch_instant: float, event_ts: float, own: float | None) -> float:
        """The instant an event is evaluated at (``own``: its customer's latest instant)."""
        ...

    def watermark(self, batch_instant: float, clock: float | None) -> Watermark:
        """A partition's watermark during a batch (``clock``: its latest event time)."""
        ...

    def closing_watermark(self, batch_instant: float, clock: float | None) -> Watermark:
        """The watermark once the batch's events are applied."""
        ...

    def settled(self, batch_instant: float, clock: float | None) -> Watermark:
        """Before this, every instant of the partition's customers is over: all in-order events
        at those instants have been applied, so their changes can be published."""
        ...

    def due_reach(self, event_ts: float) -> float:
        """The latest due time an event at ``event_ts`` can make fire (to load timers)."""
        ...

    def timer_reach(self, batch_instant: float) -> float:
        """The latest due time the batch's clock reading can make fire (to load timers)."""
        ...


@dataclass(frozen=True, slots=True)
class EventTime:
    """Event-time mode: watermarks follow event times, less the allowed lateness."""

    lateness_s: float

    def evaluation_instant(self, batch_instant: float, event_ts: float, own: float | None) -> float:
        """The event's time, or its customer's when later (time never runs back for one)."""
        return event_ts if own is None or own < event_ts else own

    def watermark(self, batch_instant: float, clock: float | None) -> Watermark:
        """``clock - lateness``: later events of the partition are not older than that."""
        if clock is None:
            return NEVER
        return Watermark(round((clock - self.lateness_s) * 1000) / 1000)

    def closing_watermark(self, batch_instant: float, clock: float | None) -> Watermark:
        """The same as during the batch: only new events move it."""
        return self.watermark(batch_instant, clock)

    def settled(self, batch_instant: float, clock: float | None) -> Watermark:
        """Before the partition's latest event time: events come in time order per partition
        (a late one is judged at its customer's own, later, instant)."""
        return NEVER if clock is None else Watermark(clock)

    def due_reach(self, event_ts: float) -> float:
        """``event_ts``: the timers due by then include the open instants it settles."""
        return event_ts

    def timer_reach(self, batch_instant: float) -> float:
        """The wall clock does not move event time."""
        return float("-inf")


@dataclass(frozen=True, slots=True)
class ProcessingTime:
    """Processing-time mode: one clock reading per batch."""

    def evaluation_instant(self, batch_instant: float, event_ts: float, own: float | None) -> float:
        """The batch's instant (or the customer's, when later): never the event's own stamp,
        which a client's clock may have set ahead."""
        return batch_instant if own is None or own < batch_instant else own

    def watermark(self, batch_instant: float, clock: float | None) -> Watermark:
        """Before the batch's instant: timers due at it wait for the batch's events."""
        return Watermark(batch_instant)

    def closing_watermark(self, batch_instant: float, clock: float | None) -> Watermark:
        """Through the batch's instant."""
        return Watermark.through(batch_instant)

    def settled(self, batch_instant: float, clock: float | None) -> Watermark:
        """Through the batch's instant: its events have all been applied."""
        return Watermark.through(batch_instant)

    def due_reach(self, event_ts: float) -> float:
        """Events do not move processing time."""
        return float("-inf")

    def timer_reach(self, batch_instant: float) -> float:
        """The batch's instant."""
        return batch_instant


@dataclass(slots=True)
class QuietPartitions:
    """Event time: each partition's clock and the wall-clock instant it last moved.

    A customer's changes at the partition's latest instant are published once a later event
    arrives; on a partition that stays quiet they are published ``SEGMENTER_IDLE_SETTLE_S``
    after its clock last moved (as Flink's idle sources), so a live deployment does not hold
    them back indefinitely.
    """

    seen: dict[int, tuple[float, float]] = field(default_factory=dict)

    def observe(self, clocks: dict[int, float], wall: float) -> None:
        """Record the partitions' clocks after a batch."""
        for partition, clock in clocks.items():
            known = self.seen.get(partition)
            if known is None or known[0] != clock:
                self.seen[partition] = (clock, wall)

    def quiet(self, partitions: list[int], wall: float, after_s: float) -> dict[int, float]:
        """Partition -> its clock, for the partitions whose clock has not moved for
        ``after_s`` seconds of wall time."""
        found: dict[int, float] = {}
        for partition in partitions:
            known = self.seen.get(partition)
            if known is not None and wall - known[1] >= after_s:
                found[partition] = known[0]
        return found


class _Clocks(Protocol):
    async def clocks(self) -> dict[int, float]: ...


async def namespace_now(store: _Clocks, clock: str) -> float:
    """A namespace's now: in an event-clock namespace (``clock == "event"``) its clock, the
    latest event time any partition has applied (the wall clock while it has none); else the
    wall clock. Model fits, reports, explanations and predictions are made as of it."""
    if clock == "event":
        found = await store.clocks()
        if found:
            return max(found.values())
    return WallClock().now()


def time_mode(clock: str, lateness_s: float) -> TimeMode:
    """The mode ``SEGMENTER_CLOCK`` names (``event`` or ``processing``)."""
    return EventTime(lateness_s) if clock == "event" else ProcessingTime()


__all__ = [
    "NEVER",
    "Clock",
    "EventTime",
    "ManualClock",
    "ProcessingTime",
    "QuietPartitions",
    "TimeMode",
    "WallClock",
    "Watermark",
    "namespace_now",
    "time_mode",
]
