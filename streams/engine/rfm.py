"""RFM scoring: recency, frequency and monetary scores from 1 to 5.

- **R** from the days since the last ``Order Completed`` (fewer days, higher score);
- **F** from the lifetime number of orders (``metric("orders")``);
- **M** from the lifetime revenue (``metric("revenue")``).

Each score uses four ascending cut points ``c1 <= c2 <= c3 <= c4``. A value ``v`` falls in
interval ``i`` = the number of cut points strictly below it (0..4): ``v <= c1`` is interval 0,
``c1 < v <= c2`` interval 1, ..., ``v > c4`` interval 4 (right-closed intervals, like
``pandas.qcut``). F and M score ``1 + i``; R scores ``5 - i``.

Cut points are fixed (the pack's ``rfm`` file) or live: the 20/40/60/80th percentiles of the
customer population (``quintile_boundaries``), which the state layer hands over through
``Facts.rfm_boundaries()``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

from streams.engine.facts import Facts
from streams.engine.rfm_boundaries import Cuts, RfmBoundaries

__all__ = ["Cuts", "RfmBoundaries", "RfmConfig"]

DAY = 86400.0
ORDER_EVENT = "Order Completed"
"""The event whose last occurrence gives recency."""

_EPSILON = 1e-3
"""Added to a cut-point instant: R changes once days-since-last-order exceeds the cut point."""


@dataclass(frozen=True, slots=True)
class RfmConfig:
    """The pack's RFM configuration (its ``rfm`` file).

    ``live``: the pipeline should compute population quintiles and serve them through
    ``Facts.rfm_boundaries()``; ``fixed`` is used otherwise and until live ones exist.
    """

    live: bool
    fixed: RfmBoundaries
    file: str = ""


def score(value: float, cuts: Sequence[float], higher_is_better: bool) -> int:
    """The score 1..5 of ``value`` against four ascending cut points.

    ``i`` = number of cut points strictly below ``value``; the score is ``1 + i`` when higher
    values are better (F, M) and ``5 - i`` otherwise (R). A value equal to a cut point falls in
    the lower interval.
    """
    below = bisect.bisect_left(cuts, value)
    return 1 + below if higher_is_better else 5 - below


def quintile_boundaries(values: Sequence[float]) -> Cuts:
    """The 20th, 40th, 60th and 80th percentiles of ``values``, linearly interpolated.

    The same as ``numpy.quantile(values, [.2, .4, .6, .8], method="linear")`` and
    ``statistics.quantiles(values, n=5, method="inclusive")``: with the values sorted
    ``x[0..n-1]``, the p-th quantile is at position ``h = (n - 1) p``, that is
    ``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``. One value gives four
    copies of it.

    Raises:
        ValueError: ``values`` is empty or has a non-finite number.
    """
    data = sorted(float(v) for v in values)
    if not data:
        raise ValueError("quintile_boundaries needs at least one value")
    if not all(math.isfinite(v) for v in data):
        raise ValueError("quintile_boundaries needs finite values")
    span = len(data) - 1
    cuts: list[float] = []
    for i in range(1, 5):
        j, delta = divmod(i * span, 5)  # h = (i * span) / 5 = j + delta / 5, exactly
        if delta == 0:
            cuts.append(data[j])
        else:
            cuts.append(data[j] + (data[j + 1] - data[j]) * delta / 5)
    return cuts[0], cuts[1], cuts[2], cuts[3]


def boundaries_for(facts: Facts, config: RfmConfig) -> RfmBoundaries:
    """The live boundaries when the config wants them and the facts have them, else fixed."""
    if config.live:
        live = facts.rfm_boundaries()
        if live is not None:
            return live
    return config.fixed


def days_since_last_order(facts: Facts) -> float | None:
    """Fractional days since the last ``Order Completed``, or None if never."""
    last = facts.last_time(ORDER_EVENT)
    return None if last is None else (facts.now - last) / DAY


def rfm_scores(facts: Facts, boundaries: RfmBoundaries) -> tuple[int, int, int] | None:
    """(R, F, M) of the customer, or None when the customer has no order."""
    orders = facts.metric("orders")
    days = days_since_last_order(facts)
    if orders is None or orders < 1 or days is None:
        return None
    revenue = facts.metric("revenue") or 0.0
    return (
        score(days, boundaries.recency_days, higher_is_better=False),
        score(orders, boundaries.frequency, higher_is_better=True),
        score(revenue, boundaries.monetary, higher_is_better=True),
    )


def next_rfm_change(facts: Facts, boundaries: RfmBoundaries) -> float | None:
    """The earliest instant after ``now`` at which R changes with no new event, or None.

    R drops when the days since the last order exceed the next cut point: the result is that
    instant (``last + cut days``, plus a millisecond so the comparison has flipped). F and M
    change only with new orders. None for a customer with no order or already at R = 1.
    """
    last = facts.last_time(ORDER_EVENT)
    orders = facts.metric("orders")
    if last is None or orders is None or orders < 1:
        return None
    now = facts.now
    for cut in boundaries.recency_days:
        at = last + cut * DAY + _EPSILON
        if at > now:
            return at
    return None


__all__ = [
    "ORDER_EVENT",
    "RfmBoundaries",
    "RfmConfig",
    "boundaries_for",
    "days_since_last_order",
    "next_rfm_change",
    "quintile_boundaries",
    "rfm_scores",
    "score",
]
