"""Durations in rule files: ``30s``, ``15m``, ``1h``, ``7d``, ``2w``, or a number of seconds."""

from __future__ import annotations

import math
import re
from typing import Final

UNITS: Final[dict[str, float]] = {
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
"""Seconds per duration unit."""

_PATTERN: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")

DURATION_PATTERN: Final = r"^\s*\d+(\.\d+)?\s*[smhdw]\s*$"
"""The JSON Schema pattern of a duration string."""


class DurationError(ValueError):
    """A duration that cannot be parsed or is not positive."""


def parse_duration(value: object) -> float:
    """Parse a duration into seconds.

    Accepts a string ``<number><unit>`` with unit one of ``s m h d w`` (``90m``, ``1.5h``), or an
    int/float meaning seconds. The result must be a finite number greater than zero; it is rounded
    to whole milliseconds (the precision of every instant, see :mod:`streams.engine.instants`).

    Raises:
        DurationError: the value is not a duration or not positive.
    """
    if isinstance(value, bool):
        raise DurationError(
            f"expected a duration like '30s', '15m', '1h', '7d', '2w', got {value!r}"
        )
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if match is None:
            raise DurationError(
                f"expected a duration like '30s', '15m', '1h', '7d', '2w' or a number of seconds,"
                f" got {value!r}"
            )
        seconds = float(match.group(1)) * UNITS[match.group(2)]
    else:
        raise DurationError(
            f"expected a duration like '30s', '15m', '1h', '7d', '2w' or a number of seconds,"
            f" got {type(value).__name__}"
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise DurationError(f"expected a duration greater than zero, got {value!r}")
    ms = round(seconds * 1000)
    if ms < 1:
        raise DurationError(f"expected a duration of at least 1 ms, got {value!r}")
    return ms / 1000


def format_duration(seconds: float) -> str:
    """The shortest exact text of a duration: 86400 -> ``1d``, 5400 -> ``90m``, 1.5 -> ``1.5s``.

    Days are preferred over weeks (``7d`` rather than ``1w``) as analysts think in days.
    """
    for unit in ("d", "h", "m"):
        size = UNITS[unit]
        count = seconds / size
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:g}s"
