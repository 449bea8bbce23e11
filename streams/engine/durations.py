"""Durations in rule files: ``30s``, ``15m``, ``1h``, ``7d``, ``2w``, or a number of seconds
(``3600`` or ``"3600"``)."""

from __future__ import annotations

import math
import re
from typing import Final

from streams.engine.instants import MAX_DURATION_S

UNITS: Final[dict[str, float]] = {
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
"""Seconds per duration unit."""

_PATTERN: Final = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)\s*$")

DURATION_PATTERN: Final = r"^\s*[0-9]+(\.[0-9]+)?\s*[smhdw]?\s*$"
"""The JSON Schema pattern of a duration string."""


class DurationError(ValueError):
    """A duration that cannot be parsed or is not positive."""


def parse_duration(value: object) -> float:
    """Parse a duration into seconds.

    Accepts a string ``<number><unit>`` with unit one of ``s m h d w`` (``90m``, ``1.5h``), or an
    int/float meaning seconds. The result must be a finite number greater than zero; it is rounded
    to whole milliseconds (the precision of every instant, see :mod:`streams.engine.instants`).

    At most :data:`~streams.engine.instants.MAX_DURATION_S` (1,000 years).

    Raises:
        DurationError: the value is not a duration, not positive, or too long.
    """
    if isinstance(value, bool):
        raise DurationError(
            f"expected a duration like '30s', '15m', '1h', '7d', '2w', got {value!r}"
        )
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if match is None:
            raise DurationError(
                f"expected a duration like '30s', '15m', '1h', '7d', '2w' or a number of seconds,"
                f" got {_shown(value)}"
            )
        seconds = float(match.group(1)) * UNITS[match.group(2) or "s"]
    else:
        raise DurationError(
            f"expected a duration like '30s', '15m', '1h', '7d', '2w' or a number of seconds,"
            f" got {type(value).__name__}"
        )
    if math.isnan(seconds) or seconds <= 0:
        raise DurationError(f"expected a duration greater than zero, got {_shown(value)}")
    if seconds > MAX_DURATION_S:
        raise DurationError(
            f"expected a duration of at most 1000 years ({MAX_DURATION_S:.0f}s),"
            f" got {_shown(value)}"
        )
    ms = round(seconds * 1000)
    if ms < 1:
        raise DurationError(f"expected a duration of at least 1 ms, got {_shown(value)}")
    return ms / 1000


def _shown(value: object) -> str:
    """A value for an error message, cut short (a 5,000-digit number is not repeated)."""
    if isinstance(value, int) and value.bit_length() > 128:
        return f"a number of about {int(value.bit_length() * 0.30103)} digits"
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


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
