"""MBG/NBD model of repeat-purchase counts (Batislam, Denizel & Filiztekin 2007).

Batislam, E. P., Denizel, M. & Filiztekin, A. (2007), "Empirical validation and comparison of
models for customer base analysis", International Journal of Research in Marketing 24(3),
201-209. The same formulas as lifetimes' ``ModifiedBetaGeoFitter``; validated in
tests/unit/analytics/test_models_pareto_mbgnbd.py against that implementation's fit of the CDNOW
sample (r .5248, alpha 6.1830, a .8914, b 1.6140, LL -9582.13, run in bench/analytics.py's
separate lifetimes virtualenv), and against quadrature references.

Model: as BG/NBD (purchases at rate ``lambda ~ Gamma(r, alpha)`` while alive, drop-out
probability ``p ~ Beta(a, b)``), except that a customer may also drop out right after her FIRST
purchase, at time 0. So a one-time buyer is not certainly alive (BG/NBD gives every customer
with x = 0 P(alive) = 1, the spike at 1.0 of lifetimes issues #165 and #239):

    L = G(r+x) alpha^r / G(r) * B(a, b+x+1) / B(a, b)
        * [ (alpha+T)^-(r+x) + a/(b+x) (alpha+t_x)^-(r+x) ]          (for every x >= 0)
    P(alive) = 1 / (1 + a/(b+x) ((alpha+T)/(alpha+t_x))^(r+x))
    E[X(t)] = b/(a-1) [1 - (alpha/(alpha+t))^r 2F1(r, b+1; a+b; t/(alpha+t))]
    E[Y(t) | x, t_x, T] = (a+b+x)/(a-1) [1 - ((alpha+T)/(alpha+T+t))^(r+x)
                          2F1(r+x, b+x+1; a+b+x; t/(alpha+T+t))] * P(alive)

The expectations are BG/NBD's with ``b + 1`` in place of ``b`` (given the history, the posterior
of p is Beta(a, b+x+1) instead of Beta(a, b+x)); E[X(t)] carries the extra factor b/(a+b), the
chance of surviving the first purchase. They are evaluated with ``bgnbd.rate_factor``, which is
exact and fast whatever the parameters (Euler-transformed 2F1, or a quadrature where scipy's
2F1 fails, see there). The likelihood is in log space with an analytic gradient; the fit is
``bgnbd._maximise`` on log-parameters with time rescaled to max T = 10.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import special

from .bgnbd import (
    _maximise,
    _unique_pairs,
    _validate,
    beta_geometric_starts,
    beta_geometric_values,
    fit_population,
    fit_result,
    rate_factor,
)
from .params import Floats, fitted_params, names_of, unpack

__all__ = [
    "MBGNBDParams",
    "mbgnbd_log_likelihood",
    "fit_mbgnbd",
    "expected_purchases",
    "probability_alive",
    "conditional_expected_purchases",
]



@fitted_params
class MBGNBDParams:
    """Fitted MBG/NBD parameters and the maximised total log-likelihood."""

    r: float
    alpha: float
    a: float
    b: float


PARAMETER_NAMES = names_of(MBGNBDParams)

# A fit's result, or (r, alpha, a, b).
_Params = MBGNBDParams | npt.ArrayLike


def _unpack(params: _Params) -> tuple[float, ...]:
    return unpack(params, MBGNBDParams)


def _loglik_rows(params: Sequence[float], x: Floats, t_x: Floats, T: Floats) -> Floats:
    r, alpha, a, b = params
    rx = r + x
    A1 = special.gammaln(rx) - special.gammaln(r) + r * np.log(alpha)
    A2 = special.betaln(a, b + x + 1.0) - special.betaln(a, b)
    A3 = -rx * np.log(alpha + T)
    A4 = np.log(a) - np.log(b + x) - rx * np.log(alpha + t_x)
    rows: Floats = A1 + A2 + np.logaddexp(A3, A4)
    return rows


def mbgnbd_log_likelihood(params: _Params, frequency: npt.ArrayLike, recency: npt.ArrayLike,
                          T: npt.ArrayLike) -> np.ndarray:
    """Per-customer MBG/NBD log-likelihood for ``params`` (MBGNBDParams or r, alpha, a, b)."""
    x, t_x, T = _validate(frequency, recency, T)
    return _loglik_rows(_unpack(params), x, t_x, T)


class _Objective:
    """Mean negative log-likelihood and its analytic gradient over log-parameters.

    The gammaln/digamma terms depend on x only and are evaluated on its distinct values; the two
    branches (alive at T; dropped out right after t_x) are per row.
    """

    def __init__(self, x: Floats, t_x: Floats, T: Floats, w: Floats) -> None:
        self.ux, self.inv = np.unique(x, return_inverse=True)
        self.wx = np.bincount(self.inv, weights=w, minlength=self.ux.size)
        self.w_total = float(w.sum())
        self.x, self.t_x, self.T, self.w = x, t_x, T, w

    def __call__(self, theta: Floats) -> tuple[float, Floats]:
        r, alpha, a, b = np.exp(theta)
        ux, wx, W = self.ux, self.wx, self.w_total
        ab = a + b
        with np.errstate(all="ignore"):
            c_u = (special.gammaln(r + ux) - special.gammaln(r) + special.betaln(a, b + ux + 1.0)
                   - special.betaln(a, b))
            ll = np.dot(wx, c_u) + W * r * np.log(alpha)
            psi_abx = special.digamma(ab + ux + 1.0)
            g_r = np.dot(wx, special.digamma(r + ux)) - W * special.digamma(r) + W * np.log(alpha)
            g_alpha = W * r / alpha
            g_a = np.dot(wx, special.digamma(ab) - psi_abx)
            g_b = np.dot(wx, special.digamma(ab) + special.digamma(b + ux + 1.0)
                         - special.digamma(b) - psi_abx)
            rx = r + self.x
            ln_aT = np.log(alpha + self.T)
            ln_at = np.log(alpha + self.t_x)
            ln_bx_u = np.log(b + ux)
            A3 = -rx * ln_aT
            A4 = np.log(a) - ln_bx_u[self.inv] - rx * ln_at
            ll += np.dot(self.w, np.logaddexp(A3, A4))
            w4 = special.expit(A4 - A3) * self.w       # weight of the "dropped out" branch
            w3 = self.w - w4
            g_r -= np.dot(w3, ln_aT) + np.dot(w4, ln_at)
            g_alpha -= np.dot(w3, rx / (alpha + self.T)) + np.dot(w4, rx / (alpha + self.t_x))
            g_a += w4.sum() / a
            g_b -= np.dot(np.bincount(self.inv, weights=w4, minlength=ux.size), 1.0 / (b + ux))
        grad = np.array([g_r * r, g_alpha * alpha, g_a * a, g_b * b])
        val = -ll / W
        if not np.isfinite(val) or not np.all(np.isfinite(grad)):
            return 1e10, np.zeros_like(theta)
        return val, -grad / W


def fit_mbgnbd(frequency: npt.ArrayLike, recency: npt.ArrayLike, T: npt.ArrayLike, *,
               weights: npt.ArrayLike | None = None, initial_params: Sequence[float] | None = None) -> MBGNBDParams:
    """Maximum-likelihood MBG/NBD fit (BFGS + Newton polish on log-parameters).

    Raises ``UnidentifiedModel`` when nobody made a repeat purchase or every age is 0.
    """
    x, t_x, ages, w, n_customers, scale = fit_population("MBG/NBD", frequency, recency, T, weights)
    objective = _Objective(x, t_x * scale, ages * scale, w)
    optimum = _maximise(objective, beta_geometric_starts(initial_params, scale))
    r, alpha, a, b = beta_geometric_values(optimum, scale)
    values = (r, alpha, a, b)
    ll_total = float(np.dot(w, _loglik_rows(values, x, t_x, ages)))
    return fit_result(MBGNBDParams, values, ll_total, n_customers, objective, optimum, objective.w_total)


def probability_alive(params: _Params, frequency: npt.ArrayLike, recency: npt.ArrayLike,
                      T: npt.ArrayLike) -> np.ndarray:
    """P(alive | x, t_x, T) = 1 / (1 + a/(b+x) ((alpha+T)/(alpha+t_x))^(r+x)), for every x."""
    r, alpha, a, b = _unpack(params)
    x, t_x, T = _validate(frequency, recency, T)
    log_odds = (r + x) * (np.log(alpha + T) - np.log(alpha + t_x)) + np.log(a) - np.log(b + x)
    alive: np.ndarray = special.expit(-log_odds)
    return alive


def expected_purchases(params: _Params, t: npt.ArrayLike) -> np.ndarray:
    """E[X(t)] for a new customer (Batislam et al. 2007): b/(a+b) times BG/NBD's with b+1."""
    r, alpha, a, b = _unpack(params)
    t = np.asarray(t, dtype=np.float64)
    if np.any(t < 0):
        raise ValueError("t must be non-negative")
    shape = t.shape
    tt = t.ravel()
    out = b / (a + b) * rate_factor(r, alpha, a, b + 1.0, np.zeros_like(tt), np.zeros_like(tt), tt)
    return out.reshape(shape)


def conditional_expected_purchases(params: _Params, t: npt.ArrayLike, frequency: npt.ArrayLike,
                                   recency: npt.ArrayLike, T: npt.ArrayLike) -> np.ndarray:
    """E[Y(t) | x, t_x, T]: expected repeat purchases in (T, T+t].

    ``t`` broadcasts against the customers; a column of k horizons (shape (k, 1)) against n
    customers gives the (k, n) curve.
    """
    r, alpha, a, b = _unpack(params)
    t = np.asarray(t, dtype=np.float64)
    if np.any(t < 0):
        raise ValueError("t must be non-negative")
    x, t_x, T = _validate(frequency, recency, T)
    if t.ndim == 2 and t.shape[1] == 1 and x.ndim == 1:
        # a curve: k horizons (a column) for n customers -> (k, n), per distinct (x, T) each
        return np.stack([conditional_expected_purchases(params, float(tj), x, t_x, T) for tj in t[:, 0]])
    p_alive = probability_alive(params, x, t_x, T)
    if t.ndim == 0:
        # the rate factor depends on (x, T) only: evaluate it once per distinct pair
        ux, uT, inv = _unique_pairs(x, T)
        factor = rate_factor(r, alpha, a, b + 1.0, ux, uT, np.full(ux.shape, float(t)))[inv]
        expected: np.ndarray = factor.reshape(x.shape) * p_alive
        return expected
    xb, Tb, tb = np.broadcast_arrays(x, T, t)
    factor = rate_factor(r, alpha, a, b + 1.0, xb.ravel(), Tb.ravel(), tb.ravel()).reshape(xb.shape)
    expected = factor * np.broadcast_to(p_alive, xb.shape)
    return expected
