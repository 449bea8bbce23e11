"""Maximum likelihood fits of BG/NBD and Gamma-Gamma (NumPy and SciPy).

The parameters are fitted on their logarithms (so they stay positive) with Nelder-Mead, from
several starting points; the best optimum wins. The log-likelihoods are the closed forms of
:mod:`streams.models.formulas`, vectorized.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import gammaln

from streams.models.formulas import BgNbd, GammaGamma

MIN_CUSTOMERS = 50
"""Fewer customers than this (with at least 10 repeat buyers) is too little data to fit."""
MIN_REPEAT = 10


class TooLittleData(ValueError):
    """The data cannot identify the model's parameters."""


@dataclass(frozen=True)
class Summary:
    """Purchase summaries: repeat purchases, last purchase and age (days), order count and value."""

    x: np.ndarray
    t_x: np.ndarray
    T: np.ndarray
    orders: np.ndarray
    mean_value: np.ndarray
    repeat_value: np.ndarray
    """The mean value of the repeat orders (0 without one): what Gamma-Gamma is fitted on."""

    @classmethod
    def of(cls, rows: Sequence[Sequence[float]]) -> Summary:
        """From ``(orders, days from first to last order, days since the first, revenue)``,
        with the revenue of the repeat orders as a fifth column (without it, the mean order's
        value stands for the repeat orders')."""
        width = len(rows[0]) if len(rows) else 5
        data = np.asarray(rows, dtype=float).reshape(-1, width)
        orders = data[:, 0]
        x = orders - 1
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(orders > 0, data[:, 3] / np.maximum(orders, 1), 0.0)
            repeat = data[:, 4] / np.maximum(x, 1) if width > 4 else mean
        return cls(x, data[:, 1], data[:, 2], orders, mean, np.where(x > 0, repeat, 0.0))

    def __len__(self) -> int:
        return len(self.x)


def bgnbd_log_likelihood(params: np.ndarray, s: Summary) -> float:
    """The total log-likelihood of ``s`` under ``(r, alpha, a, b)``."""
    r, alpha, a, b = params
    x, t_x, T = s.x, s.t_x, s.T
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        a4 = np.where(
            x > 0,
            np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + t_x),
            -np.inf,
        )
    return float(np.sum(a1 + a2 + np.logaddexp(a3, a4)))


def gamma_gamma_log_likelihood(params: np.ndarray, n: np.ndarray, m: np.ndarray) -> float:
    """The total log-likelihood of ``n`` orders averaging ``m`` under ``(p, q, v)``."""
    p, q, v = params
    return float(
        np.sum(
            gammaln(p * n + q)
            - gammaln(p * n)
            - gammaln(q)
            + q * np.log(v)
            + (p * n - 1) * np.log(m)
            + p * n * np.log(n)
            - (p * n + q) * np.log(n * m + v)
        )
    )


def _best(objective: object, starts: Sequence[Sequence[float]]) -> np.ndarray:
    best = None
    for start in starts:
        found = minimize(
            objective,
            np.log(np.asarray(start, dtype=float)),
            method="Nelder-Mead",
            options={"maxiter": 8000, "maxfev": 16000, "xatol": 1e-7, "fatol": 1e-9},
        )
        if best is None or found.fun < best.fun:
            best = found
    assert best is not None
    optimum: np.ndarray = np.exp(best.x)
    return optimum


def fit_bgnbd(s: Summary) -> BgNbd:
    """The maximum likelihood BG/NBD (a :class:`TooLittleData` when it cannot be fitted)."""
    if len(s) < MIN_CUSTOMERS or int(np.sum(s.x > 0)) < MIN_REPEAT:
        raise TooLittleData(
            f"BG/NBD needs at least {MIN_CUSTOMERS} customers with orders, {MIN_REPEAT} of them"
            f" with a repeat order; found {len(s)} and {int(np.sum(s.x > 0))}"
        )
    scale = float(np.mean(s.T)) or 1.0

    def objective(logs: np.ndarray) -> float:
        value = -bgnbd_log_likelihood(np.exp(logs), s)
        return value if np.isfinite(value) else 1e300

    r, alpha, a, b = _best(
        objective, [(1, scale, 1, 1), (0.5, scale / 4, 0.8, 3), (2, scale, 2, 2)]
    )
    return BgNbd(float(r), float(alpha), float(a), float(b))


def fit_gamma_gamma(s: Summary) -> GammaGamma:
    """The maximum likelihood Gamma-Gamma on the repeat orders: ``x`` orders after the first,
    averaging ``repeat_value`` (the model's definition, as lifetimes and PyMC-Marketing fit
    it: the first order is left out), for customers with a repeat order of some value."""
    keep = (s.x >= 1) & (s.repeat_value > 0)
    n, m = s.x[keep], s.repeat_value[keep]
    if len(n) < MIN_REPEAT:
        raise TooLittleData(
            f"Gamma-Gamma needs at least {MIN_REPEAT} customers with a repeat order of some value;"
            f" found {len(n)}"
        )
    mean = float(np.mean(m))

    def objective(logs: np.ndarray) -> float:
        value = -gamma_gamma_log_likelihood(np.exp(logs), n, m)
        return value if np.isfinite(value) else 1e300

    p, q, v = _best(objective, [(1, 2, mean), (5, 5, mean * 4), (0.5, 1.5, mean / 2)])
    return GammaGamma(float(p), float(q), float(v))
