"""BG/NBD (Fader, Hardie and Lee 2005, "Counting your customers the easy way") and Gamma-Gamma
(Fader, Hardie and Lee 2005, "RFM and CLV") in closed form (SciPy only for Gauss's
hypergeometric function).

A customer's summary: ``x`` repeat purchases (orders after the first), ``t_x`` the time of the
last purchase and ``T`` the customer's age, both measured from the first purchase, in days.

- BG/NBD: while alive, purchases come at rate ``lambda ~ Gamma(r, alpha)``; after each repeat
  purchase the customer drops out with probability ``p ~ Beta(a, b)``.
- Gamma-Gamma: a customer's order values average ``nu``-scaled gamma draws: ``z ~ Gamma(p, nu)``,
  ``nu ~ Gamma(q, gamma)``; independent of the purchase process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.special import hyp2f1


@dataclass(frozen=True, slots=True)
class BgNbd:
    """BG/NBD parameters (time unit: days)."""

    r: float
    alpha: float
    a: float
    b: float

    def log_likelihood(self, x: int, t_x: float, T: float) -> float:
        """One customer's log-likelihood (equation 6 of the paper)."""
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        a1 = math.lgamma(r + x) - math.lgamma(r) + r * math.log(alpha)
        a2 = math.lgamma(a + b) + math.lgamma(b + x) - math.lgamma(b) - math.lgamma(a + b + x)
        a3 = -(r + x) * math.log(alpha + T)
        if x == 0:
            return a1 + a2 + a3
        a4 = math.log(a) - math.log(b + x - 1) - (r + x) * math.log(alpha + t_x)
        top = max(a3, a4)
        return a1 + a2 + top + math.log(math.exp(a3 - top) + math.exp(a4 - top))

    def p_alive(self, x: int, t_x: float, T: float) -> float:
        """P(alive | x, t_x, T) (equation 10)."""
        if x == 0:
            return 1.0
        ratio = (self.alpha + T) / (self.alpha + t_x)
        return 1.0 / (1.0 + self.a / (self.b + x - 1) * float(ratio ** (self.r + x)))

    def expected_purchases(self, t: float, x: int, t_x: float, T: float) -> float:
        """E[Y(t) | x, t_x, T]: purchases expected in the next ``t`` days (equation 10)."""
        if t <= 0:
            return 0.0
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        if a == 1:  # the closed form's removable singularity
            a = 1 + 1e-9
        z = t / (alpha + T + t)
        hyp = float(hyp2f1(r + x, b + x, a + b + x - 1, z))
        head = (a + b + x - 1) / (a - 1)
        body = 1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp
        odds = a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x) if x > 0 else 0.0
        return float(head * body / (1 + odds))


@dataclass(frozen=True, slots=True)
class GammaGamma:
    """Gamma-Gamma parameters of order values."""

    p: float
    q: float
    v: float

    def log_likelihood(self, x: int, m: float) -> float:
        """One customer's log-likelihood of ``x`` orders averaging ``m`` (x >= 1, m > 0)."""
        p, q, v = self.p, self.q, self.v
        return (
            math.lgamma(p * x + q)
            - math.lgamma(p * x)
            - math.lgamma(q)
            + q * math.log(v)
            + (p * x - 1) * math.log(m)
            + p * x * math.log(x)
            - (p * x + q) * math.log(x * m + v)
        )

    def expected_value(self, x: int, m: float) -> float:
        """E[M | x, m]: the customer's expected order value (the population mean when x = 0)."""
        p, q, v = self.p, self.q, self.v
        if q <= 1:
            return math.inf
        if x <= 0:
            return p * v / (q - 1)
        return (v + m * x) * p / (p * x + q - 1)


def clv(
    model: BgNbd,
    spend: GammaGamma,
    x: int,
    t_x: float,
    T: float,
    mean_value: float,
    horizon_days: float,
    annual_discount: float,
) -> float:
    """Expected value of the next ``horizon_days``: the purchases expected over the horizon
    times the expected order value (Gamma-Gamma, given the ``x`` repeat orders averaging
    ``mean_value``), discounted at ``annual_discount`` a year to
    the horizon's midpoint (one evaluation of the BG/NBD expectation, cheap enough to be
    evaluated live)."""
    value = (
        spend.expected_value(x, mean_value)
        if x > 0 and mean_value > 0
        else (spend.expected_value(0, 0.0))
    )
    discount = float((1 + annual_discount) ** (horizon_days / 2 / 365))
    return model.expected_purchases(horizon_days, x, t_x, T) * value / discount
