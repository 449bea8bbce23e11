"""Tests and intervals for comparing two groups (pure Python, no SciPy).

- Rates (a share of customers who converted): the two-proportion z-test with the pooled
  proportion for the p-value, and the unpooled (Wald) 95% interval of the difference.
- Means (revenue per customer, zeros included): Welch's t-test (unequal variances,
  Welch-Satterthwaite degrees of freedom) and its 95% interval.

``lift`` is the relative difference of the first group over the second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z_95 = 1.959963984540054
"""The 97.5th percentile of the standard normal distribution."""


@dataclass(frozen=True, slots=True)
class Comparison:
    """Group A against group B."""

    a: float
    b: float
    difference: float
    low: float
    """Lower end of the 95% interval of ``difference``."""
    high: float
    p_value: float
    lift: float | None
    """``a / b - 1`` (None when ``b`` is 0)."""
    test: str

    @property
    def significant(self) -> bool:
        """Whether the difference is significant at 95% (two-sided)."""
        return self.p_value < 0.05

    def as_dict(self) -> dict[str, object]:
        """The JSON shape of the API."""
        return {
            "a": self.a,
            "b": self.b,
            "difference": self.difference,
            "ci95": [self.low, self.high],
            "p_value": self.p_value,
            "lift": self.lift,
            "significant": self.significant,
            "test": self.test,
        }


def _lift(a: float, b: float) -> float | None:
    return a / b - 1 if b else None


def two_proportions(x1: int, n1: int, x2: int, n2: int) -> Comparison | None:
    """``x1`` of ``n1`` against ``x2`` of ``n2`` (None when a group is empty)."""
    if n1 <= 0 or n2 <= 0:
        return None
    p1, p2 = x1 / n1, x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    diff = p1 - p2
    if se_pooled == 0:
        p_value = 1.0 if diff == 0 else 0.0
    else:
        p_value = math.erfc(abs(diff / se_pooled) / math.sqrt(2))
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    return Comparison(
        p1, p2, diff, diff - Z_95 * se, diff + Z_95 * se, p_value, _lift(p1, p2), "two-proportion z"
    )


@dataclass(frozen=True, slots=True)
class Sample:
    """Count, sum and sum of squares of one group's values."""

    n: int = 0
    total: float = 0.0
    squares: float = 0.0

    def add(self, value: float) -> Sample:
        """This sample with one more value."""
        return Sample(self.n + 1, self.total + value, self.squares + value * value)

    @property
    def mean(self) -> float:
        """The mean (0 when empty)."""
        return self.total / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        """The unbiased sample variance (0 with fewer than two values)."""
        if self.n < 2:
            return 0.0
        return max(0.0, (self.squares - self.total * self.total / self.n) / (self.n - 1))


def welch(a: Sample, b: Sample) -> Comparison | None:
    """Welch's t-test of the means of ``a`` and ``b`` (None with fewer than 2 values a group)."""
    if a.n < 2 or b.n < 2:
        return None
    va, vb = a.variance / a.n, b.variance / b.n
    diff = a.mean - b.mean
    se = math.sqrt(va + vb)
    if se == 0:
        p_value = 1.0 if diff == 0 else 0.0
        return Comparison(
            a.mean, b.mean, diff, diff, diff, p_value, _lift(a.mean, b.mean), "welch t"
        )
    df = (va + vb) ** 2 / (va * va / (a.n - 1) + vb * vb / (b.n - 1))
    t = diff / se
    p_value = 2 * t_sf(abs(t), df)
    margin = t_quantile(0.975, df) * se
    return Comparison(
        a.mean,
        b.mean,
        diff,
        diff - margin,
        diff + margin,
        p_value,
        _lift(a.mean, b.mean),
        "welch t",
    )


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1) / (a + b + 2):
        return front * _beta_fraction(a, b, x) / a
    return 1 - front * _beta_fraction(b, a, 1 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom (t >= 0)."""
    return 0.5 * incomplete_beta(df / 2, 0.5, df / (df + t * t))


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile (p > 0.5) of Student's t, by bisection on :func:`t_sf`."""
    low, high = 0.0, 1.0
    while t_sf(high, df) > 1 - p:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        if t_sf(mid, df) > 1 - p:
            low = mid
        else:
            high = mid
    return (low + high) / 2
