"""``Facts`` over a :class:`CustomerState` at one instant: what the rule engine reads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streams.engine.facts import MISSING
from streams.engine.instants import HALF_MS, ceil_instant
from streams.engine.rfm import RfmBoundaries
from streams.models.predictor import History, Predictor
from streams.state.customer import CustomerState

_PATHS: dict[str, tuple[str, ...] | str] = {}
"""Parsed trait paths (see ``_parse_path``), so each rule's path is parsed once."""
_MAX_PATHS = 4096
"""Paths kept in ``_PATHS`` at most (rule packs have far fewer)."""


def _parse_path(path: str) -> tuple[str, ...] | str:
    """A trait path as the keys to walk, or (a string) the category of a ``consent.`` path.

    ``a`` is ``("a",)``; ``a.b.c`` is ``("a", "b", "c")``; ``consent.x`` (any non-empty rest,
    dots included) is ``"x"``.
    """
    parts: tuple[str, ...] | str
    if "." not in path:
        parts = (path,)
    else:
        head, _, rest = path.partition(".")
        parts = rest if head == "consent" and rest else tuple(path.split("."))
    if len(_PATHS) < _MAX_PATHS:
        _PATHS[path] = parts
    return parts


class StateFacts:
    """Answers the engine's questions from one customer's state, seen at ``now``.

    ``rfm`` is the live RFM boundaries (None: the rule pack's fixed ones apply). ``now`` (the
    evaluation instant) is a plain attribute, not a property: the engine reads it often.
    """

    __slots__ = ("_now", "_predictor", "_rfm", "_state", "now")

    def __init__(
        self,
        state: CustomerState,
        now: float,
        rfm: RfmBoundaries | None = None,
        predictor: Predictor | None = None,
    ) -> None:
        self._state = state
        self._now = now
        self.now = now
        self._rfm = rfm
        self._predictor = predictor

    def _history(self) -> History | None:
        predictor = self._predictor
        if predictor is None:
            return None
        return History.of(self._state, predictor.event)

    def prediction(
        self, metric: str, horizon_s: float | None, at: float | None = None
    ) -> float | None:
        """The models' prediction for this customer at ``at`` (default now)."""
        history = self._history()
        if history is None or self._predictor is None:
            return None
        return self._predictor.value(metric, horizon_s, history, self._now if at is None else at)

    def prediction_due(
        self,
        metric: str,
        horizon_s: float | None,
        threshold: float,
        holds: Callable[[float], bool],
    ) -> float | None:
        """When ``holds(prediction)`` changes as the prediction falls through ``threshold``."""
        history = self._history()
        if history is None or self._predictor is None:
            return None
        due = self._predictor.due(metric, horizon_s, threshold, holds, history)
        return due if due is not None and due > self._now else None

    @property
    def state(self) -> CustomerState:
        """The customer state these facts read."""
        return self._state

    def member_since(self, segment_id: str) -> float | None:
        """When the customer entered the segment (as stored before this evaluation)."""
        return self._state.members.get(segment_id)

    def rfm_boundaries(self) -> RfmBoundaries | None:
        """The live RFM boundaries, if any."""
        return self._rfm

    def trait(self, path: str) -> Any:
        """A trait by dotted path; ``consent.<category>`` reads the consent record."""
        parts = _PATHS.get(path)
        if parts is None:
            parts = _parse_path(path)
        if type(parts) is str:
            return self._state.consent.get(parts, MISSING)
        value: Any = self._state.traits
        for part in parts:
            if not isinstance(value, dict) or part not in value:
                return MISSING
            value = value[part]
        return value

    def _in_window(self, series_id: str, seconds: float) -> list[list[float]]:
        """The series' entries with ``0 <= now - time < seconds`` (exact: canonical instants)."""
        series = self._state.series.get(series_id)
        if series is None:
            return []
        now = self._now
        after = now - seconds + HALF_MS
        until = now + HALF_MS
        return [e for e in series.buckets if after < e[0] < until]

    def window_count(self, series_id: str, seconds: float) -> int:
        """Events of the series in the window ``(now - seconds, now]``."""
        series = self._state.series.get(series_id)
        if series is None:
            return 0
        now = self._now
        after = now - seconds + HALF_MS
        until = now + HALF_MS
        return int(sum([e[1] for e in series.buckets if after < e[0] < until]))

    def window_sum(self, series_id: str, prop: str, seconds: float) -> float:
        """Sum of ``prop`` over the window (0 when the property is not summed)."""
        series = self._state.series.get(series_id)
        if series is None or prop not in series.props:
            return 0.0
        offset = series.props.index(prop) + 2
        return float(sum(e[offset] for e in self._in_window(series_id, seconds)))

    def window_counts(self, series_id: str, seconds: float) -> list[tuple[float, float]]:
        """``(time, events)`` of each entry in the window, oldest first."""
        return [(e[0], e[1]) for e in self._in_window(series_id, seconds)]

    def window_expiry(self, series_id: str, seconds: float) -> float | None:
        """When the oldest entry now inside the window leaves it: its time plus ``seconds``."""
        entries = self._in_window(series_id, seconds)
        if not entries:
            return None
        return ceil_instant(entries[0][0] + seconds)

    def last_time(self, event: str) -> float | None:
        """When ``event`` last happened."""
        entry = self._state.named.get(event)
        return entry[2] if entry else None

    def first_time(self, event: str) -> float | None:
        """When ``event`` first happened."""
        entry = self._state.named.get(event)
        return entry[1] if entry else None

    def metric(self, name: str) -> float | None:
        """A lifetime metric (see ``LIFETIME_METRICS``)."""
        state = self._state
        if name == "orders":
            return float(state.orders)
        if name == "revenue":
            return state.revenue
        if name == "average_order_value":
            return state.revenue / state.orders if state.orders else None
        if name == "events":
            return float(state.events)
        if name == "first_seen":
            return state.first_seen
        if name == "last_seen":
            return state.last_seen
        return None
