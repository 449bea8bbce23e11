"""Predictions for one customer at any instant, and when they cross a threshold.

A prediction depends on the purchases so far (``x``, ``t_x``, first purchase) and on the
customer's age, which grows with time: with no new purchase, ``p_alive``, expected orders and
CLV only fall. ``p_alive`` crosses a threshold at a closed-form age; the others are found by
bisection to the millisecond. Crossings are cached per purchase history, so a customer's
evaluations between purchases reuse them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streams.engine.instants import ceil_instant
from streams.models.formulas import clv
from streams.models.published import (
    ANNUAL_DISCOUNT,
    CLV_HORIZON_DAYS,
    PREDICTION_DAYS,
    FittedModels,
)
from streams.state.customer import CustomerState

DAY = 86400.0
SEARCH_DAYS = 3650.0
"""Crossings further than this (ten years) are treated as never."""
CACHE_SIZE = 100_000
MS = 0.001


@dataclass(frozen=True, slots=True)
class History:
    """What the models read of a customer: conversions, first and last one, their value."""

    orders: int
    first: float
    last: float
    revenue: float
    first_revenue: float | None = None
    """The first order's value (None when the state does not know it)."""

    @classmethod
    def of(cls, state: CustomerState, event: str) -> History | None:
        """The customer's history of ``event`` (None before the first one)."""
        named = state.named.get(event)
        if not named or named[0] < 1:
            return None
        return cls(int(named[0]), named[1], named[2], state.revenue, state.first_revenue)

    @property
    def repeat_revenue(self) -> float:
        """The value of the orders after the first (when the first's value is not known, the
        mean order's times the repeat orders)."""
        if self.orders <= 1:
            return 0.0
        if self.first_revenue is not None:
            return max(0.0, self.revenue - self.first_revenue)
        return self.revenue * (self.orders - 1) / self.orders


@dataclass
class Predictor:
    """The published models, for the conversion event of the rule pack."""

    models: FittedModels
    event: str
    _crossings: dict[tuple[object, ...], float | None] = field(default_factory=dict)
    """Due instants by (metric, horizon, threshold, comparison, purchase history)."""

    @property
    def version(self) -> str:
        """The models' version."""
        return self.models.version

    def predictions(self, h: History, now: float) -> dict[str, Any]:
        """What ``GET /v1/customers/{id}`` shows: P(alive), expected orders, CLV, version."""
        found: dict[str, Any] = {
            "model_version": self.version,
            "p_alive": self.value("p_alive", None, h, now),
            f"expected_orders_{PREDICTION_DAYS:g}d": self.value(
                "expected_orders", PREDICTION_DAYS * DAY, h, now
            ),
        }
        if self.models.spend is not None:
            found[f"clv_{CLV_HORIZON_DAYS:g}d"] = self.value("clv", None, h, now)
        return found

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
        repeat = h.repeat_revenue / x if x > 0 else 0.0
        return clv(model, spend, x, t_x, age, repeat, horizon, ANNUAL_DISCOUNT)

    def due(
        self,
        metric: str,
        horizon_s: float | None,
        threshold: float,
        holds: Callable[[float], bool],
        h: History,
    ) -> float | None:
        """The first canonical instant at which ``holds(prediction)`` changes as the
        prediction falls through ``threshold`` (cached per purchase history), or None."""
        key = (metric, horizon_s, threshold, holds, h)
        if key in self._crossings:
            return self._crossings[key]
        found = self._due(metric, horizon_s, threshold, holds, h)
        if len(self._crossings) >= CACHE_SIZE:
            self._crossings.clear()
        self._crossings[key] = found
        return found

    def _due(
        self,
        metric: str,
        horizon_s: float | None,
        threshold: float,
        holds: Callable[[float], bool],
        h: History,
    ) -> float | None:
        above = holds(threshold + abs(threshold) * 1e-9 + 1e-12)
        if holds(threshold - abs(threshold) * 1e-9 - 1e-12) == above:
            return None  # this threshold does not decide the comparison
        crossing = self._solve(metric, horizon_s, threshold, h)
        if crossing is None:
            return None
        instant = ceil_instant(crossing)
        value = self.value(metric, horizon_s, h, instant)
        if value is not None and holds(value) == above:
            instant = round(instant + MS, 3)
        return instant

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
        f_low, f_high = start - threshold, end - threshold
        step, side = 0, 0
        while high - low > 0.0005:
            step += 1
            # Regula falsi (Illinois), with a plain halving every eighth step to bound it.
            mid = high - f_high * (high - low) / (f_high - f_low) if step % 8 else 0.0
            if not low < mid < high:
                mid = (low + high) / 2
            v = self.value(metric, horizon_s, h, mid)
            f_mid = (v if v is not None else -math.inf) - threshold
            if f_mid > 0:
                low, f_low = mid, f_mid
                if side == 1:
                    f_high /= 2
                side = 1
            else:
                high, f_high = mid, f_mid
                if side == -1:
                    f_low /= 2
                side = -1
        return high
