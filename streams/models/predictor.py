"""Predictions for one customer at any instant, and when they cross a threshold.

A prediction depends on the purchases so far (``x``, ``t_x``, first purchase) and on the
customer's age, which grows with time: with no new purchase, ``p_alive``, expected orders and
CLV only fall. ``p_alive`` crosses a threshold at a closed-form age; the others are found by
bisection to the millisecond. Crossings are cached per purchase history, so a customer's
evaluations between purchases reuse them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from streams.models.formulas import clv
from streams.models.published import ANNUAL_DISCOUNT, CLV_HORIZON_DAYS, FittedModels

DAY = 86400.0
SEARCH_DAYS = 3650.0
"""Crossings further than this (ten years) are treated as never."""
CACHE_SIZE = 100_000


@dataclass(frozen=True, slots=True)
class History:
    """What the models read of a customer: conversions, first and last one, their value."""

    orders: int
    first: float
    last: float
    revenue: float


@dataclass
class Predictor:
    """The published models, for the conversion event of the rule pack."""

    models: FittedModels
    event: str
    _crossings: dict[tuple[object, ...], float | None] = field(default_factory=dict)

    @property
    def version(self) -> str:
        """The models' version."""
        return self.models.version

    def value(self, metric: str, horizon_s: float | None, h: History, at: float) -> float | None:
        """The prediction at ``at`` (None when the model cannot give it)."""
        x = h.orders - 1
        t_x = (h.last - h.first) / DAY
        age = max(t_x, (at - h.first) / DAY)
        model = self.models.bgnbd
        if metric == "p_alive":
            return model.p_alive(x, t_x, age)
        if metric == "expected_orders":
            return model.expected_purchases((horizon_s or 0.0) / DAY, x, t_x, age)
        spend = self.models.spend
        if spend is None:
            return None
        horizon = (horizon_s or CLV_HORIZON_DAYS * DAY) / DAY
        return clv(model, spend, x, t_x, age, h.revenue / h.orders, horizon, ANNUAL_DISCOUNT)

    def crossing(
        self, metric: str, horizon_s: float | None, threshold: float, h: History, now: float
    ) -> float | None:
        """The first time after ``now`` at which the prediction is at most ``threshold``."""
        key = (metric, horizon_s, threshold, h)
        if key in self._crossings:
            found = self._crossings[key]
        else:
            found = self._solve(metric, horizon_s, threshold, h)
            if len(self._crossings) >= CACHE_SIZE:
                self._crossings.clear()
            self._crossings[key] = found
        if found is None or found <= now:
            return None
        return found

    def _solve(
        self, metric: str, horizon_s: float | None, threshold: float, h: History
    ) -> float | None:
        x = h.orders - 1
        if metric == "p_alive":
            if x == 0 or not 0 < threshold < 1:
                return None
            model = self.models.bgnbd
            t_x = (h.last - h.first) / DAY
            odds = (1 / threshold - 1) / (model.a / (model.b + x - 1))
            age = (model.alpha + t_x) * float(odds ** (1 / (model.r + x))) - model.alpha
            return h.first + max(age, t_x) * DAY
        low, high = h.last, h.last + SEARCH_DAYS * DAY
        start = self.value(metric, horizon_s, h, low)
        end = self.value(metric, horizon_s, h, high)
        if start is None or end is None or math.isnan(start) or start <= threshold:
            return h.last if start is not None and start <= threshold else None
        if end > threshold:
            return None
        while high - low > 0.0005:
            mid = (low + high) / 2
            v = self.value(metric, horizon_s, h, mid)
            if v is not None and v > threshold:
                low = mid
            else:
                high = mid
        return high
