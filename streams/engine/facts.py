"""What the rule engine may ask about a customer: the ``Facts`` protocol.

The engine is pure: it never reads Redis or Kafka. The state layer implements ``Facts`` over one
customer's state at one instant (``now``), and the engine's compiled closures call it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from streams.engine.rfm_boundaries import RfmBoundaries


class _Missing:
    """Sentinel type for a trait that is not set (distinct from a trait set to ``null``)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()

LIFETIME_METRICS: Final = (
    "orders",
    "revenue",
    "average_order_value",
    "events",
    "first_seen",
    "last_seen",
)
"""Raw lifetime metrics a ``Facts`` provides (``first_seen``/``last_seen`` are epoch seconds)."""


@dataclass(frozen=True, slots=True)
class SeriesSpec:
    """A series of timed entries the state must keep for window conditions.

    One series per (event name, property filter). Every matching event is kept as an entry
    ``[time, count, sum_1, ..., sum_n]`` at its exact instant (events at the same instant share
    one entry), with each property in ``sum_props`` (when numeric) summed. An entry is dropped
    once ``horizon_s`` (the longest window over the series) has passed since its time. A window of
    ``W`` seconds at ``now`` holds the entries with ``0 <= now - time < W``, exactly to the ms.
    A series holding more than ``max_entries`` instants is compacted (see
    :func:`streams.state.apply.compact`).
    """

    id: str
    event: str
    where: Callable[[Mapping[str, Any]], bool]
    sum_props: tuple[str, ...]
    horizon_s: float
    max_entries: int = 32


class Facts(Protocol):
    """One customer's state seen at one instant, as the rule engine reads it."""

    @property
    def now(self) -> float:
        """The evaluation instant, epoch seconds."""
        ...

    def trait(self, path: str) -> Any:
        """A trait by dotted path (``address.country``), or ``MISSING``.

        ``consent.<category>`` reads the consent given for that category (a bool).
        """
        ...

    def window_count(self, series_id: str, seconds: float) -> int:
        """Events of the series in the window of ``seconds`` ending at ``now``."""
        ...

    def window_sum(self, series_id: str, prop: str, seconds: float) -> float:
        """Sum of ``prop`` over the series' events in the window."""
        ...

    def window_expiry(self, series_id: str, seconds: float) -> float | None:
        """The instant the oldest entry in the window leaves it (its time + ``seconds``)."""
        ...

    def window_counts(self, series_id: str, seconds: float) -> list[tuple[float, float]]:
        """``(time, events)`` of each instant of the series in the window, oldest first."""
        ...

    def last_time(self, event: str) -> float | None:
        """When the customer last did ``event`` (epoch seconds), or None if never."""
        ...

    def first_time(self, event: str) -> float | None:
        """When the customer first did ``event``, or None if never."""
        ...

    def metric(self, name: str) -> float | None:
        """A lifetime metric from ``LIFETIME_METRICS``, or None when it has no value yet."""
        ...

    def member_since(self, segment_id: str) -> float | None:
        """When the customer entered ``segment_id`` (epoch seconds), or None if not a member.

        The membership as it stood before this evaluation (what the store holds). Read only for
        segments with ``stay_condition`` or ``min_dwell``.
        """
        ...

    def rfm_boundaries(self) -> RfmBoundaries | None:
        """The live RFM quintile boundaries, or None to use the rule pack's fixed ones.

        Read only when the pack's ``rfm`` file says ``boundaries: live``.
        """
        ...

    def prediction(
        self, metric: str, horizon_s: float | None, at: float | None = None
    ) -> float | None:
        """A model prediction at ``at`` (default ``now``), the purchases so far held fixed:
        ``p_alive``, ``expected_orders`` within ``horizon_s``, or ``clv`` over ``horizon_s``.
        None without a published model or before the first conversion."""
        ...

    def prediction_due(
        self,
        metric: str,
        horizon_s: float | None,
        threshold: float,
        holds: Callable[[float], bool],
    ) -> float | None:
        """The first canonical instant after ``now`` at which ``holds(prediction)`` changes as
        the prediction falls through ``threshold`` with no new conversion, or None."""
        ...
