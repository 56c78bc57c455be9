"""No NaN/inf for extreme histories; hypergeometric evaluation agrees with the direct form."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import integrate, special

from shared.analytics.stats import (
    BGNBDParams,
    GammaGammaParams,
    bgnbd_log_likelihood,
    conditional_expected_average_spend,
    conditional_expected_purchases,
    customer_lifetime_value,
    expected_purchases,
    fit_bgnbd,
    fit_gamma_gamma,
    probability_alive,
)

CDNOW = BGNBDParams(r=0.2426, alpha=4.4135, a=0.7929, b=2.4258, log_likelihood=0.0,
                    n_customers=0)
DAY = 1 / 7

# x, t_x, T (weeks): 5000 purchases, one-day-old customers, x = 0, T = 0, old dormant buyer
X = np.array([5000, 5000, 5000, 0, 0, 1, 1, 0, 3000, 12])
TX = np.array([520.0, 1.0, DAY, 0.0, 0.0, DAY, DAY, 0.0, 10.0, 2.0])
TT = np.array([520.0, 520.0, DAY, DAY, 0.0, DAY, 520.0, 1040.0, 520.0, 520.0])


def reference_conditional_expectation(params, t, x, t_x, T):
    """E[Y(t) | x, t_x, T] by quadrature, independent of any hypergeometric function.

    Given alive with (lambda, p), E[Y(t)] = (1 - exp(-lambda p t)) / p (FHL 2005, eq. 7); given
    the history and being alive, lambda ~ Gamma(r+x, alpha+T) and p ~ Beta(a, b+x) independently,
    so E = P(alive) * int_0^1 Beta(p; a, b+x) (1 - ((alpha+T)/(alpha+T+p t))^(r+x)) / p dp.
    The substitution p = u^(1/a) removes the p^(a-1) singularity; the range is split where the
    posterior of p lives (~ 1/(b+x)).  Accurate to ~1e-7 relative for a >~ 0.5.
    """
    r, al, a, b = params.r, params.alpha, params.a, params.b
    pa = float(probability_alive(params, x, t_x, T))
    ln_beta = special.betaln(a, b + x)

    def h(u):
        p = u ** (1.0 / a)
        if p == 0.0:
            return (r + x) * t / (al + T) * np.exp(-ln_beta) / a
        return (-np.expm1((r + x) * (np.log(al + T) - np.log(al + T + p * t)))) / p \
            * np.exp((b + x - 1) * np.log1p(-p) - ln_beta) / a

    scale = 1.0 / (b + x)
    edges = np.unique(np.r_[0.0, np.minimum([scale * k for k in (0.1, 1, 5, 20, 60)], 1.0) ** a,
                            1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        total = sum(integrate.quad(h, lo, hi, epsabs=0, epsrel=1e-10, limit=500)[0]
                    for lo, hi in zip(edges[:-1], edges[1:], strict=True))
    return pa * total


def mpmath_conditional_expectation(params, t, x, t_x, T) -> float:
    """FHL eq. 10 evaluated with mpmath at 60 digits (dev-only: the caller skips without mpmath)."""
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 60
    r, al, a, b = (mp.mpf(v) for v in (params.r, params.alpha, params.a, params.b))
    x_, tx, T_, tt = (mp.mpf(float(v)) for v in (x, t_x, T, t))
    z = tt / (al + T_ + tt)
    if params.a < 100:
        h = mp.hyp2f1(r + x_, b + x_, a + b + x_ - 1, z)
    else:  # mpmath's transformations give up there (after a minute): sum the series, |z| < 1
        h = term = mp.mpf(1)
        k = 0
        while True:
            ratio = (r + x_ + k) * (b + x_ + k) / ((a + b + x_ - 1 + k) * (k + 1)) * z
            term *= ratio
            h += term
            k += 1
            if ratio < 1 and abs(term) < mp.mpf(10) ** -40 * abs(h):
                break
    num = (a + b + x_ - 1) / (a - 1) * (1 - ((al + T_) / (al + T_ + tt)) ** (r + x_) * h)
    den = 1 + (a / (b + x_ - 1) * ((al + T_) / (al + tx)) ** (r + x_) if x > 0 else 0)
    return float(num / den)


@pytest.mark.parametrize("params", [
    CDNOW,
    BGNBDParams(5.0, 0.5, 3.0, 0.3, 0.0, 0),     # a > 1, b < 1
    BGNBDParams(0.05, 50.0, 0.2, 40.0, 0.0, 0),
])
def test_scoring_is_finite_for_extreme_histories(params):
    ll = bgnbd_log_likelihood(params, X, TX, TT)
    pa = probability_alive(params, X, TX, TT)
    e = conditional_expected_purchases(params, 90 / 7, X, TX, TT)
    gg = GammaGammaParams(6.25, 3.74, 15.44, 0.0, 0)
    clv = customer_lifetime_value(params, gg, X, TX, TT, np.full(X.size, 25.0))
    for arr in (ll, pa, e, clv):
        assert np.all(np.isfinite(arr)), arr
    assert np.all((pa >= 0) & (pa <= 1)) and np.all(e >= 0) and np.all(clv >= 0)
    assert pa[3] == pa[4] == pa[7] == 1.0            # x = 0: alive by construction
    assert ll[4] == pytest.approx(0.0, abs=1e-12)     # T = 0: no information
    # 5000 purchases then 519 silent weeks: certainly gone
    assert pa[1] < 1e-12 and e[1] < 1e-9
    if params.a > 0.5:   # the quadrature reference is accurate there (see its docstring)
        for i in (0, 2, 3, 5, 6, 9):
            ref = reference_conditional_expectation(params, 90 / 7, X[i], TX[i], TT[i])
            assert e[i] == pytest.approx(ref, rel=1e-6), i


# A fit with little heterogeneity in drop-out (a ~ 1e3, b at its bound): scipy returns NaN for
# the transformed 2F1 at most ages, and its Gauss series needs thousands of terms.
LOW_HETEROGENEITY = BGNBDParams(0.7405823, 2.1342213, 1044.0298, 1e4, 0.0, 0)


@pytest.mark.parametrize("params", [
    CDNOW,
    BGNBDParams(5.0, 0.5, 3.0, 0.3, 0.0, 0),
    BGNBDParams(0.05, 50.0, 0.2, 40.0, 0.0, 0),
    LOW_HETEROGENEITY,
])
def test_conditional_expectation_against_60_digit_reference(params):
    """FHL eq. 10 evaluated with mpmath at 60 digits (dev-only; skipped without mpmath)."""
    pytest.importorskip("mpmath")
    t = 90 / 7
    got = conditional_expected_purchases(params, t, X, TX, TT)
    for i in range(X.size):
        ref = mpmath_conditional_expectation(params, t, X[i], TX[i], TT[i])
        assert got[i] == pytest.approx(ref, rel=1e-10, abs=1e-300), i


def test_transformed_hypergeometric_matches_direct_form_where_both_are_stable():
    r, alpha, a, b = CDNOW.r, CDNOW.alpha, CDNOW.a, CDNOW.b
    x = np.array([0, 1, 2, 5, 10, 20])
    T = np.array([38.86, 10.0, 30.0, 38.0, 20.0, 50.0])
    t_x = np.minimum(T, np.array([0.0, 5.0, 28.0, 30.0, 19.0, 49.0]))
    t = 39.0
    z = t / (alpha + T + t)
    direct = ((a + b + x - 1) / (a - 1)
              * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x)
                 * special.hyp2f1(r + x, b + x, a + b + x - 1, z))
              * probability_alive(CDNOW, x, t_x, T))
    np.testing.assert_allclose(conditional_expected_purchases(CDNOW, t, x, t_x, T), direct,
                               rtol=1e-9)
    tt = np.array([0.5, 10.0, 100.0])
    direct_u = (a + b - 1) / (a - 1) * (1 - (alpha / (alpha + tt)) ** r
                                        * special.hyp2f1(r, b, a + b - 1, tt / (alpha + tt)))
    np.testing.assert_allclose(expected_purchases(CDNOW, tt), direct_u, rtol=1e-9)
    assert expected_purchases(CDNOW, 0.0) == 0.0


def test_direct_form_overflows_where_ours_does_not():
    # The untransformed 2F1(r+x, b+x; a+b+x-1; z) is useless at x = 5000 over a long horizon.
    r, alpha, a, b = CDNOW.r, CDNOW.alpha, CDNOW.a, CDNOW.b
    x, T, t = 5000.0, 520.0, 520.0
    with np.errstate(all="ignore"):
        raw = special.hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + T + t))
    assert not np.isfinite(raw) or raw > 1e300
    e = conditional_expected_purchases(CDNOW, t, x, 520.0, T)
    assert e == pytest.approx(reference_conditional_expectation(CDNOW, t, x, 520.0, T), rel=1e-6)


def test_series_fallback_where_scipy_hyp2f1_returns_inf():
    # scipy.special.hyp2f1 returns inf/nan for a large lower parameter with z near 1 when a > 1;
    # a heavy buyer (x = 200) over 10 years under such parameters goes through the series.
    params = BGNBDParams(5.0, 0.5, 3.0, 0.3, 0.0, 0)
    a, b, r = params.a, params.b, params.r
    assert not np.isfinite(special.hyp2f1(a + b - 1 - r, a - 1, a + b + 200 - 1, 0.99))
    for t, x, t_x, T in [(520.0, 200, 100.0, 100.0), (90 / 7, 5000, DAY, DAY), (39.0, 2, 30.0, 38.0)]:
        got = conditional_expected_purchases(params, t, x, t_x, T)
        assert got == pytest.approx(reference_conditional_expectation(params, t, x, t_x, T),
                                    rel=1e-6)


def test_low_heterogeneity_models_score_without_the_long_series(monkeypatch):
    """Where the transformed form fails, the untransformed one (still scipy) answers: the slow
    series is not needed, and one customer's CLV costs what it costs under any other model."""
    from shared.analytics.stats import bgnbd

    a, b, r = LOW_HETEROGENEITY.a, LOW_HETEROGENEITY.b, LOW_HETEROGENEITY.r
    assert not np.isfinite(special.hyp2f1(a + b - 1 - r, a - 1, a + b + 2 - 1, 0.8))
    calls = []
    monkeypatch.setattr(bgnbd, "_quadrature_rate", lambda *args, **kw: calls.append(args))
    gg = GammaGammaParams(6.25, 3.74, 15.44, 0.0, 0)
    x, t_x, T = np.array([0.0, 2.0, 10.0, 60.0]), np.array([0.0, 8.0, 8.0, 9.0]), np.array([10.0, 10.0, 10.0, 10.0])
    clv = customer_lifetime_value(LOW_HETEROGENEITY, gg, x, t_x, T, np.array([0.0, 30.0, 30.0, 30.0]))
    assert np.all(np.isfinite(clv)) and calls == []
    got = conditional_expected_purchases(LOW_HETEROGENEITY, 90 / 7, x, t_x, T)
    for i in range(x.size):
        assert got[i] == pytest.approx(mpmath_conditional_expectation(LOW_HETEROGENEITY, 90 / 7, x[i], t_x[i], T[i]),
                                       rel=1e-10)


def test_fit_on_extreme_population_is_finite():
    rng = np.random.default_rng(1)
    x = np.r_[X, rng.integers(0, 5, 500)]
    T = np.r_[TT, np.full(500, 52.0)]
    t_x = np.r_[TX, np.where(x[X.size:] > 0, rng.uniform(0, 52, 500), 0.0)]
    fit = fit_bgnbd(x, t_x, T)
    assert all(np.isfinite([fit.r, fit.alpha, fit.a, fit.b, fit.log_likelihood]))


def test_gamma_gamma_extremes_and_input_rules():
    x = np.array([0, 1, 5000, 3, 2])
    m = np.array([0.0, 1e-3, 1e5, 25.0, -5.0])           # the negative row is excluded
    gg = GammaGammaParams(6.25, 3.74, 15.44, 0.0, 0)
    spend = conditional_expected_average_spend(gg, x, m)
    assert np.all(np.isfinite(spend[:4]))
    assert spend[0] == pytest.approx(6.25 * 15.44 / 2.74)
    assert spend[2] == pytest.approx(1e5, rel=1e-3)       # 5000 observations dominate the prior
    fit = fit_gamma_gamma(np.r_[x, 1, 2, 4], np.r_[m, 10.0, 30.0, 12.0])
    assert fit.n_customers == 6                            # x>0 and m>0 only
    assert np.isfinite(fit.log_likelihood)
    with pytest.raises(ValueError):
        fit_gamma_gamma([0, 0, 1], [0.0, 0.0, 5.0])


def test_invalid_histories_are_rejected():
    with pytest.raises(ValueError):
        probability_alive(CDNOW, [1], [5.0], [4.0])        # t_x > T
    with pytest.raises(ValueError):
        probability_alive(CDNOW, [0], [1.0], [4.0])        # x = 0 needs t_x = 0
    with pytest.raises(ValueError):
        fit_bgnbd([1.5], [1.0], [2.0])                     # non-integer frequency
    with pytest.raises(ValueError):
        expected_purchases(CDNOW, -1.0)


def test_parameters_at_the_fits_bounds_score_quickly_and_correctly():
    """A fit that runs to its bounds (a and b in the millions: no heterogeneity in dropout) once
    sent the hypergeometric series through all its terms on overflowed values, so one profile
    took minutes. Such rows now leave the series at once and go to the direct form."""
    pytest.importorskip("mpmath")
    a = 429862.478469
    params = BGNBDParams(0.6, 5.0, a, 10082041.658034 - a, 0.0, 0)
    x, t_x, T = np.array([0, 1, 3, 6, 20]), np.array([0.0, 10.0, 30.0, 60.0, 90.0]), np.array([100.0, 120.0, 150.0,
                                                                                               150.0, 100.0])
    t = 90 / 7
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        got = conditional_expected_purchases(params, t, x, t_x, T)
        clv = customer_lifetime_value(params, GammaGammaParams(6.25, 3.74, 15.44, 0.0, 0), x, t_x, T,
                                      np.full(x.size, 25.0))
    assert np.all(np.isfinite(clv)) and np.all(clv > 0)
    for i in range(x.size):
        ref = mpmath_conditional_expectation(params, t, x[i], t_x[i], T[i])
        assert got[i] == pytest.approx(ref, rel=1e-6), i
