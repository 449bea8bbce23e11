"""Instants to the millisecond: how the segmenter keeps ``t - t0 < D`` exact.

Instants are epoch seconds held as floats, but every instant the pipeline stores or compares is
*canonical*: a whole number of milliseconds divided by 1000 (``ms / 1000``). Durations in rule
files are whole milliseconds too. A float difference of two canonical instants is within a few
ten-millionths of a second of the true difference, far less than half a millisecond, so

* ``t - t0 < D`` (exact, in whole ms) is ``t - t0 < D - HALF_MS`` on the floats, and
* ``t0 <= t`` is ``t0 - t < HALF_MS``,

with no rounding case left. Due times computed by adding floats (``last + window``) are made
canonical again with :func:`ceil_instant` before they are stored or compared for equality.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Final

MS: Final = 0.001
"""One millisecond, in seconds."""
HALF_MS: Final = 0.0005
"""Half a millisecond: the margin that makes float comparisons of canonical instants exact."""
_SLACK_MS: Final = 0.01
"""How far (in ms) a computed instant may lie above a whole ms and still be that ms: float sums
and products of epoch instants are off by well under a thousandth of a millisecond."""


EARLIEST: Final = 0.0
"""The earliest instant an event may carry: 1970-01-01T00:00:00Z."""
LATEST: Final = 32503680000.0
"""The first instant an event may no longer carry: 3000-01-01T00:00:00Z. With rule durations of
at most :data:`MAX_DURATION_S`, every due time stays far inside what a date can represent
(year 9999), so formatting one can never fail."""
MAX_DURATION_S: Final = 1000 * 365.25 * 86400.0
"""The longest duration a rule may use: 1,000 years (31,557,600,000 s)."""


def in_range(instant: float) -> bool:
    """True when ``instant`` lies in ``[EARLIEST, LATEST)``, the instants events may carry."""
    return EARLIEST <= instant < LATEST


def instant_of(moment: datetime) -> float:
    """An aware datetime as a canonical instant, truncated to the millisecond (exact).

    ``timestamp() * 1000`` is within a thousandth of a millisecond of the true value for any
    date of the next millennia, and a datetime's sub-millisecond part is a whole number of
    microseconds, so adding half a microsecond (in ms) before the floor gives the exact
    truncation.
    """
    return math.floor(moment.timestamp() * 1000 + 0.0005) / 1000


def to_instant(seconds: float) -> float:
    """The canonical instant nearest to ``seconds``."""
    return round(seconds * 1000) / 1000


def ceil_instant(seconds: float) -> float:
    """The first canonical instant at or after ``seconds`` (float noise below 0.01 ms ignored).

    For due times: a change computed to happen at ``seconds`` has happened by then.
    """
    return math.ceil(seconds * 1000 - _SLACK_MS) / 1000


def to_ms(seconds: float) -> int:
    """A canonical instant (or a whole-ms duration) as integer milliseconds."""
    return round(seconds * 1000)


__all__ = [
    "EARLIEST",
    "HALF_MS",
    "LATEST",
    "MAX_DURATION_S",
    "MS",
    "ceil_instant",
    "in_range",
    "instant_of",
    "to_instant",
    "to_ms",
]
