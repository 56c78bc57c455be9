"""Gamma-Gamma model of average transaction value (Fader & Hardie 2013).

Fader, P. S. & Hardie, B. G. S. (2013), "The Gamma-Gamma Model of Monetary Value" (Hardie's
note 025; the model of Colombo & Jiang 1999 as used in Fader, Hardie & Lee 2005b).

Model: a customer's transaction values are i.i.d. ``Gamma(p, nu)``; across customers
``nu ~ Gamma(q, gamma)``.  Given ``x`` repeat transactions with mean ``m`` (z-bar), the
marginal density of ``m`` is (note 025, eq. 1a / lifetimes' likelihood)

    f(m | p, q, gamma, x) = G(px+q) / (G(px) G(q)) * gamma^q m^(px-1) x^(px) / (gamma + m x)^(px+q)

The model is fitted on repeat buyers only (``x > 0``; for ``x = 0`` there is no observed repeat
spend) and with positive ``m`` (the density is zero at ``m <= 0``, such rows are excluded and
not counted in ``n_customers``).  The conditional expectation of a customer's mean spend is
note 025 eq. 5, a credibility-weighted average of the population mean ``p gamma / (q - 1)`` and
the customer's own ``m``.

Fitting maximises the summed log-density over ``log(p, q, gamma)`` with BFGS and the
analytic gradient (digamma terms, evaluated on the distinct values of ``x``), then a Newton
polish; monetary values are rescaled
internally by their mean (``gamma`` is a scale parameter and is scaled back), which keeps the
problem well conditioned whatever the currency unit.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import special

from .bgnbd import _maximise, fit_result
from .params import Floats, fitted_params

__all__ = [
    "GammaGammaParams",
    "fit_gamma_gamma",
    "gamma_gamma_log_likelihood",
    "conditional_expected_average_spend",
]




@fitted_params
class GammaGammaParams:
    """Fitted Gamma-Gamma parameters (``gamma`` is the papers' scale ``gamma``, lifetimes' ``v``)."""

    p: float
    q: float
    gamma: float

    @property
    def population_mean(self) -> float:
        """E[Z] = p * gamma / (q - 1); infinite when q <= 1 (the prior mean does not exist)."""
        return self.p * self.gamma / (self.q - 1.0) if self.q > 1.0 else float("inf")


def _terms(log_params: Floats, x: Floats, m: Floats) -> tuple[Floats, Floats]:
    """Per-row log-density (note 025 eq. 1a) and gradient wrt log-parameters."""
    p, q, g = np.exp(log_params)
    px = p * x
    ln_m = np.log(m)
    ln_x = np.log(x)
    ln_den = np.log(g + m * x)
    ll = (special.gammaln(px + q) - special.gammaln(px) - special.gammaln(q) + q * np.log(g)
          + (px - 1.0) * ln_m + px * ln_x - (px + q) * ln_den)
    psi_pxq = special.digamma(px + q)
    d_p = x * (psi_pxq - special.digamma(px) + ln_m + ln_x - ln_den)
    d_q = psi_pxq - special.digamma(q) + np.log(g) - ln_den
    d_g = q / g - (px + q) / (g + m * x)
    return ll, np.stack([d_p * p, d_q * q, d_g * g])


def _repeat_rows(frequency: npt.ArrayLike, monetary_value: npt.ArrayLike) -> tuple[Floats, Floats]:
    x = np.asarray(frequency, dtype=np.float64).ravel()
    m = np.asarray(monetary_value, dtype=np.float64).ravel()
    if x.shape != m.shape:
        raise ValueError("frequency and monetary_value must have the same length")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(m))):
        raise ValueError("frequency and monetary_value must be finite")
    keep = (x > 0) & (m > 0)
    return x[keep], m[keep]


def gamma_gamma_log_likelihood(params: GammaGammaParams | npt.ArrayLike, frequency: npt.ArrayLike,
                               monetary_value: npt.ArrayLike) -> float:
    """Total log-likelihood of the repeat buyers (``x > 0``, ``m > 0``) under ``params``."""
    if isinstance(params, GammaGammaParams):
        params = (params.p, params.q, params.gamma)
    x, m = _repeat_rows(frequency, monetary_value)
    return float(_terms(np.log(np.asarray(params, dtype=np.float64)), x, m)[0].sum())


class _Objective:
    """Mean negative log-likelihood and gradient; ``x``-only special functions on distinct x."""

    def __init__(self, x: Floats, m: Floats) -> None:
        self.ux, self.inv = np.unique(x, return_inverse=True)
        self.nx = np.bincount(self.inv, minlength=self.ux.size).astype(np.float64)
        self.n = float(x.size)
        self.x, self.m = x, m
        self.xm = x * m
        ln_m, ln_x = np.log(m), np.log(x)
        # sum over rows of x*(ln m + ln x) and of ln m: the parameter-free parts
        self.sum_x_lnm_lnx = float(np.dot(x, ln_m + ln_x))
        self.sum_lnm = float(ln_m.sum())

    def __call__(self, theta: Floats) -> tuple[float, Floats]:
        p, q, g = np.exp(theta)
        ux, nx = self.ux, self.nx
        pux = p * ux
        ll = (np.dot(nx, special.gammaln(pux + q) - special.gammaln(pux))
              - self.n * special.gammaln(q) + self.n * q * np.log(g)
              + p * self.sum_x_lnm_lnx - self.sum_lnm)
        ln_den = np.log(g + self.xm)
        pxq = p * self.x + q
        ll -= np.dot(pxq, ln_den)
        psi_pxq_u = special.digamma(pux + q)
        d_p = (np.dot(nx * ux, psi_pxq_u - special.digamma(pux)) + self.sum_x_lnm_lnx
               - np.dot(self.x, ln_den))
        d_q = np.dot(nx, psi_pxq_u) - self.n * special.digamma(q) + self.n * np.log(g) \
            - ln_den.sum()
        d_g = self.n * q / g - np.dot(pxq, 1.0 / (g + self.xm))
        grad = np.array([d_p * p, d_q * q, d_g * g])
        val = -ll / self.n
        if not np.isfinite(val) or not np.all(np.isfinite(grad)):
            return 1e10, np.zeros_like(theta)
        return val, -grad / self.n


def fit_gamma_gamma(frequency: npt.ArrayLike, monetary_value: npt.ArrayLike, *,
                    initial_params: tuple[float, float, float] | None = None) -> GammaGammaParams:
    """Maximum-likelihood Gamma-Gamma fit on repeat buyers (rows with ``x > 0`` and ``m > 0``).

    Rows with ``x == 0`` are ignored (they carry no repeat-spend information), so the whole
    customer table can be passed.  Returns the parameters in the input currency unit.
    Optimiser: BFGS on log-parameters with the analytic gradient, then Newton polish
    (``bgnbd._maximise``).
    """
    x, m = _repeat_rows(frequency, monetary_value)
    if x.size < 2:
        raise ValueError("need at least two repeat buyers with positive spend to fit Gamma-Gamma")
    scale = 1.0 / float(np.mean(m))
    objective = _Objective(x, m * scale)
    if initial_params is None:
        starts = [np.zeros(3), np.log([2.0, 3.0, 1.0])]
    else:
        p0, q0, g0 = initial_params
        starts = [np.log([p0, q0, g0 * scale]), np.zeros(3)]
    optimum = _maximise(objective, starts)
    p, q, g_s = np.exp(optimum.theta)
    g = g_s / scale
    ll = float(_terms(np.log([p, q, g]), x, m)[0].sum())
    values = (float(p), float(q), float(g))
    return fit_result(GammaGammaParams, values, ll, int(x.size), objective, optimum, objective.n)


def conditional_expected_average_spend(params: GammaGammaParams, frequency: npt.ArrayLike,
                                       monetary_value: npt.ArrayLike) -> np.ndarray:
    """E[M | p, q, gamma, m, x], note 025 eq. 5 (lifetimes' ``conditional_expected_average_profit``).

        E = (q-1)/(px+q-1) * p gamma/(q-1) + px/(px+q-1) * m  =  p (gamma + m x) / (p x + q - 1)

    The right-hand form is used: it is the posterior mean of p/nu given x transactions of mean m
    (nu | x, m ~ Gamma(px+q, gamma+mx)), which exists whenever p x + q > 1, also for a fitted
    q <= 1 where the population mean p gamma/(q-1) does not (the left form, and this function
    before, gave inf to everyone then: p 2, q .8, gamma 10, x 1, m 10 gives 22.22). It is NaN
    only where the posterior mean is undefined, p x + q <= 1 (for x = 0: q <= 1).
    """
    p, q, gamma = params.p, params.q, params.gamma
    x = np.asarray(frequency, dtype=np.float64)
    m = np.asarray(monetary_value, dtype=np.float64)
    px = p * x
    den = px + q - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        spend = p * (gamma + np.where(x > 0, m, 0.0) * x) / den
    return np.where(den > 0, spend, np.nan)
