"""BG/NBD and Gamma-Gamma: parameter recovery on simulated data, closed forms by hand.

The simulations draw from the models' own generative stories (Fader, Hardie and Lee 2005) with
NumPy; the closed-form checks recompute the paper's equations here with SciPy's ``hyp2f1`` and
``betaln``, independently of :mod:`streams.models.formulas`.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import betaln, gammaln
from scipy.special import hyp2f1 as scipy_hyp2f1

from streams.models.fitting import Summary, TooLittleData, fit_bgnbd, fit_gamma_gamma
from streams.models.formulas import BgNbd, GammaGamma, clv

TRUE_BG = BgNbd(r=0.6, alpha=25.0, a=0.8, b=2.5)  # days
TRUE_GG = GammaGamma(p=6.0, q=4.0, v=15.0)


def simulate(n: int, seed: int) -> list[tuple[int, float, float, float, float]]:
    """``(orders, t_x, T, revenue, repeat revenue)`` of ``n`` customers drawn from BG/NBD and
    Gamma-Gamma."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        age = rng.uniform(60, 540)
        rate = rng.gamma(TRUE_BG.r, 1 / TRUE_BG.alpha)
        drop = rng.beta(TRUE_BG.a, TRUE_BG.b)
        nu = rng.gamma(TRUE_GG.q, 1 / TRUE_GG.v)
        times = [0.0]
        t = 0.0
        while True:
            t += rng.exponential(1 / rate)
            if t > age:
                break
            times.append(t)
            if rng.random() < drop:
                break
        values = rng.gamma(TRUE_GG.p, 1 / nu, size=len(times))
        rows.append((len(times), times[-1], age, float(values.sum()), float(values[1:].sum())))
    return rows


@pytest.fixture(scope="module")
def simulated() -> Summary:
    return Summary.of(simulate(6000, seed=11))


def test_bgnbd_recovers_its_parameters(simulated: Summary) -> None:
    fitted = fit_bgnbd(simulated)
    # Stated tolerances: within 25% for each parameter with 6,000 customers.
    for name in ("r", "alpha", "a", "b"):
        assert getattr(fitted, name) == pytest.approx(getattr(TRUE_BG, name), rel=0.25), name


def test_gamma_gamma_recovers_its_parameters(simulated: Summary) -> None:
    fitted = fit_gamma_gamma(simulated)
    # p is well identified; q and v trade off, but the mean spend p v / (q - 1) is identified.
    assert fitted.p == pytest.approx(TRUE_GG.p, rel=0.25)
    true_mean = TRUE_GG.p * TRUE_GG.v / (TRUE_GG.q - 1)
    assert fitted.p * fitted.v / (fitted.q - 1) == pytest.approx(true_mean, rel=0.1)


def test_the_fitted_optimum_is_a_maximum(simulated: Summary) -> None:
    fitted = fit_bgnbd(simulated)
    best = sum(
        fitted.log_likelihood(int(x), t, T)
        for x, t, T in zip(simulated.x, simulated.t_x, simulated.T, strict=True)
    )
    for name in ("r", "alpha", "a", "b"):
        for factor in (0.95, 1.05):
            moved = BgNbd(**{**_params(fitted), name: getattr(fitted, name) * factor})
            other = sum(
                moved.log_likelihood(int(x), t, T)
                for x, t, T in zip(simulated.x, simulated.t_x, simulated.T, strict=True)
            )
            assert other < best


def _params(model: BgNbd) -> dict[str, float]:
    return {"r": model.r, "alpha": model.alpha, "a": model.a, "b": model.b}


CASES = [(0, 0.0, 30.0), (1, 10.0, 60.0), (4, 80.0, 90.0), (12, 300.0, 365.0), (3, 5.0, 400.0)]


@pytest.mark.parametrize(("x", "t_x", "T"), CASES)
def test_closed_forms_match_the_papers_equations(x: int, t_x: float, T: float) -> None:
    r, alpha, a, b = 0.243, 4.414, 0.793, 2.426  # the paper's CDNOW estimates (weeks)
    model = BgNbd(r, alpha, a, b)
    # Equation (6): the likelihood.
    lik = math.exp(
        betaln(a, b + x)
        - betaln(a, b)
        + gammaln(r + x)
        - gammaln(r)
        + r * math.log(alpha)
        - (r + x) * math.log(alpha + T)
    )
    if x > 0:
        lik += math.exp(
            betaln(a + 1, b + x - 1)
            - betaln(a, b)
            + gammaln(r + x)
            - gammaln(r)
            + r * math.log(alpha)
            - (r + x) * math.log(alpha + t_x)
        )
    assert model.log_likelihood(x, t_x, T) == pytest.approx(math.log(lik), rel=1e-10)
    # P(alive) and the conditional expectation (equation 10), with SciPy's hyp2f1.
    odds = a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x) if x > 0 else 0.0
    assert model.p_alive(x, t_x, T) == pytest.approx(1 / (1 + odds), rel=1e-12)
    for t in (1.0, 13.0, 52.0):
        expected = (
            (a + b + x - 1)
            / (a - 1)
            * (
                1
                - ((alpha + T) / (alpha + T + t)) ** (r + x)
                * scipy_hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + T + t))
            )
            / (1 + odds)
        )
        assert model.expected_purchases(t, x, t_x, T) == pytest.approx(expected, rel=1e-9)


def test_the_paper_worked_example() -> None:
    # The paper's worked example (section 6): x=2, t_x=30.43, T=38.86 weeks: E[Y(39)] = 1.226.
    model = BgNbd(0.243, 4.414, 0.793, 2.426)
    assert model.expected_purchases(39, 2, 30.43, 38.86) == pytest.approx(1.226, abs=0.001)


def test_gamma_gamma_expected_value_by_hand() -> None:
    model = GammaGamma(6.25, 3.74, 15.44)  # the paper's estimates
    # E[M | x, m] = (v + m x) p / (p x + q - 1)
    assert model.expected_value(3, 40.0) == pytest.approx((15.44 + 120) * 6.25 / (18.75 + 2.74))
    assert model.expected_value(0, 0.0) == pytest.approx(6.25 * 15.44 / 2.74)


def test_clv_is_expected_purchases_times_value_discounted_to_mid_horizon() -> None:
    model, spend = BgNbd(0.6, 25.0, 0.8, 2.5), GammaGamma(6.0, 4.0, 15.0)
    value = spend.expected_value(2, 50.0)  # two repeat orders averaging 50
    undiscounted = clv(model, spend, 2, 100.0, 200.0, 50.0, 365, 0.0)
    assert undiscounted == pytest.approx(model.expected_purchases(365, 2, 100.0, 200.0) * value)
    assert clv(model, spend, 2, 100.0, 200.0, 50.0, 365, 0.1) == pytest.approx(
        undiscounted / 1.1**0.5
    )


def test_too_little_data_is_a_clear_error() -> None:
    with pytest.raises(TooLittleData, match="at least 50 customers"):
        fit_bgnbd(Summary.of([(1, 0.0, 30.0, 10.0)] * 20))
