"""Size over time from the hourly migration counts (``Store.history``).

A segment's size at the end of hour ``h`` is the base (the hours retention dropped) plus every
retained hour up to ``h``: entered minus exited, counted by migration time. Days are UTC days.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from streams.store.base import SizeHistory

Granularity = Literal["hour", "day"]
HOUR = 3600


@dataclass(frozen=True, slots=True)
class Point:
    """One bucket of a segment's history."""

    start: int
    """Epoch seconds of the bucket's start."""
    entered: int
    exited: int
    size: int
    """Members at the end of the bucket."""

    def as_dict(self, granularity: Granularity) -> dict[str, object]:
        """The JSON shape of the API."""
        length = HOUR if granularity == "hour" else 24 * HOUR
        return {
            "start": _iso(self.start),
            "end": _iso(self.start + length),
            "entered": self.entered,
            "exited": self.exited,
            "size": self.size,
        }


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _counts(fields: dict[str, int], segment: str) -> tuple[int, int]:
    return fields.get(f"{segment}|in", 0), fields.get(f"{segment}|out", 0)


def hourly(history: SizeHistory, segment: str) -> list[Point]:
    """Every hour from the oldest retained to the newest, gaps filled (no change)."""
    if not history.hours:
        return []
    entered, exited = _counts(history.base, segment)
    size = entered - exited
    out: list[Point] = []
    for hour in range(min(history.hours), max(history.hours) + 1):
        came, left = _counts(history.hours.get(hour, {}), segment)
        size += came - left
        out.append(Point(hour * HOUR, came, left, size))
    return out


def daily(points: list[Point]) -> list[Point]:
    """Hours summed into UTC days; the size is the day's last hour's (a partial first day
    starts at its first retained hour)."""
    days: dict[int, Point] = {}
    for p in points:
        day = p.start - p.start % (24 * HOUR)
        seen = days.get(day)
        if seen is None:
            days[day] = Point(day, p.entered, p.exited, p.size)
        else:
            days[day] = Point(day, seen.entered + p.entered, seen.exited + p.exited, p.size)
    return list(days.values())


def size_at(points: list[Point], epoch: float) -> int | None:
    """The size at the end of the hour holding ``epoch`` (None before the retained hours);
    after the newest hour, the newest size."""
    if not points:
        return None
    hour = int(epoch // HOUR) * HOUR
    if hour < points[0].start:
        return None
    index = min((hour - points[0].start) // HOUR, len(points) - 1)
    return points[index].size


def growth(points: list[Point], days: int) -> float | None:
    """Relative change of the size over the last ``days`` days of the history (None when the
    history does not reach back that far, or the size then was 0)."""
    if not points:
        return None
    now = points[-1]
    then = size_at(points, now.start - days * 24 * HOUR)
    if then is None or then == 0:
        return None
    return (now.size - then) / then
