"""BG/NBD model of repeat-purchase counts (Fader, Hardie & Lee 2005).

Fader, P. S., Hardie, B. G. S. & Lee, K. L. (2005), "Counting Your Customers the Easy Way: An
Alternative to the Pareto/NBD Model", Marketing Science 24(2), 275-284 (below "FHL").  P(alive)
follows Fader, Hardie & Lee (2008), "Computing P(alive) Using the BG/NBD Model" (Hardie's note 021).

Model: while alive a customer buys as a Poisson process of rate ``lambda ~ Gamma(r, alpha)``;
after every repeat purchase she drops out with probability ``p ~ Beta(a, b)``.  A customer is
summarised by ``x`` (repeat purchases), ``t_x`` (time of the last one) and ``T`` (age), time in
the unit of the data (weeks in this project).

Numerics
--------
* The likelihood (FHL eq. 6) is evaluated in log space with ``gammaln``/``betaln`` and
  ``logaddexp``, so histories with thousands of purchases, ages of a day, or ``x = 0`` never
  overflow.  Its analytic gradient is used by BFGS on log-parameters (positivity for free),
  followed by a Newton polish (Hessian from differences of the analytic gradient).  The
  special functions depend on ``x`` only and are evaluated on its distinct values.
* Identical ``(x, t_x, T)`` rows are compressed to one row with a weight (day-granular data
  compresses very well), which does not change the likelihood.
* Expectations need the Gauss hypergeometric function.  FHL eqs. 9 and 10 use
  ``2F1(r+x, b+x; a+b+x-1; z)`` whose first two parameters grow with ``x``: for large ``x`` the
  series terms grow enormously and ``scipy.special.hyp2f1`` overflows / loses accuracy (this is
  why lifetimes needs a fallback).  We always apply Euler's transformation
  ``2F1(A, B; C; z) = (1-z)^(C-A-B) 2F1(C-A, C-B; C; z)``, which turns the product
  ``(1-z)^(r+x) 2F1(r+x, b+x; a+b+x-1; z)`` appearing in the formulas into
  ``(1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z)``: the upper parameters no longer depend on ``x``
  and the lower one grows with it, so the series converges faster the larger ``x`` is.  It is
  evaluated with ``scipy.special.hyp2f1``; where scipy fails on the transformed form but not on
  the untransformed one (large ``a``), the untransformed form is used.  Where both fail (z near
  1 with a large lower parameter: small alpha against the horizon, a young customer, large b;
  the Gauss series there needs ~1/(1-z) terms, i.e. seconds or NaN), the expectation is computed
  as the integral over the drop-out probability p that it is, by a trapezoidal rule in logit(p)
  (see ``rate_factor`` and ``_quadrature_rate``): milliseconds whatever the parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import numpy as np
import numpy.typing as npt
from scipy import optimize, special

from .errors import require_repeat_information
from .params import Floats, fitted_params, names_of, unpack

_Fit = TypeVar("_Fit")

__all__ = [
    "BGNBDParams",
    "bgnbd_log_likelihood",
    "fit_bgnbd",
    "expected_purchases",
    "conditional_expected_purchases",
    "probability_alive",
    "compress_rows",
    "standard_errors_at",
    "fit_weights",
]



@fitted_params
class BGNBDParams:
    """Fitted BG/NBD parameters and the maximised total log-likelihood."""

    r: float
    alpha: float
    a: float
    b: float


PARAMETER_NAMES = names_of(BGNBDParams)

# A fit's result, or (r, alpha, a, b).
_Params = BGNBDParams | npt.ArrayLike
# What a fit minimises: log-parameters -> (mean negative log-likelihood, its gradient).
Objective = Callable[[Floats], tuple[float, Floats]]


def _validate(frequency: npt.ArrayLike, recency: npt.ArrayLike, T: npt.ArrayLike
              ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    x = np.asarray(frequency, dtype=np.float64)
    t_x = np.asarray(recency, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    x, t_x, T = np.broadcast_arrays(x, t_x, T)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(t_x)) and np.all(np.isfinite(T))):
        raise ValueError("frequency, recency and T must be finite")
    if np.any(x < 0) or np.any(x != np.floor(x)):
        raise ValueError("frequency must be a non-negative integer")
    if np.any(t_x < 0) or np.any(t_x > T * (1 + 1e-12) + 1e-12):
        raise ValueError("recency must satisfy 0 <= recency <= T")
    if np.any((x == 0) & (t_x != 0)):
        raise ValueError("recency must be 0 when frequency is 0")
    return x, t_x, T


def fit_weights(weights: npt.ArrayLike | None, x: np.ndarray) -> np.ndarray:
    """The rows' multiplicities for a fit: ones, or ``weights`` checked (aligned, finite, >= 0)."""
    if weights is None:
        return np.ones_like(x)
    w = np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != x.shape:
        raise ValueError("weights must align with frequency")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and non-negative")
    return w


def compress_rows(*columns: np.ndarray, weights: np.ndarray | None = None
                  ) -> tuple[list[np.ndarray], np.ndarray]:
    """Collapse identical rows of the given aligned columns.

    Returns the unique rows (one array per column) and the total weight of each (the row count
    when ``weights`` is None), using one ``np.lexsort`` and a boundary scan (cheaper than
    ``np.unique(axis=0)``).  The likelihood is a weighted sum over rows, so this is exact.
    """
    cols = [np.ascontiguousarray(c, dtype=np.float64).ravel() for c in columns]
    n = cols[0].size
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if n == 0:
        return cols, np.zeros(0, dtype=np.float64)
    order = np.lexsort(cols[::-1])
    sorted_cols = [c[order] for c in cols]
    boundary = np.zeros(n, dtype=bool)
    boundary[0] = True
    for c in sorted_cols:
        boundary[1:] |= c[1:] != c[:-1]
    starts = np.flatnonzero(boundary)
    return [c[starts] for c in sorted_cols], np.add.reduceat(w[order], starts)


def _loglik_terms(log_params: Floats, x: Floats, t_x: Floats, T: Floats) -> tuple[Floats, Floats]:
    """Per-row log-likelihood (FHL eq. 6 in log form) and its gradient wrt log-parameters.

    ln L = A1 + A2 + ln(exp(A3) + [x>0] exp(A4)), with
      A1 = lnG(r+x) - lnG(r) + r ln(alpha)
      A2 = ln B(a, b+x) - ln B(a, b)
      A3 = -(r+x) ln(alpha+T)
      A4 = ln(a) - ln(b+x-1) - (r+x) ln(alpha+t_x)        (B(a+1,b+x-1)/B(a,b+x) = a/(b+x-1))
    """
    r, alpha, a, b = np.exp(log_params)
    has = x > 0
    rx = r + x
    ln_aT = np.log(alpha + T)
    ln_at = np.log(alpha + t_x)
    A1 = special.gammaln(rx) - special.gammaln(r) + r * np.log(alpha)
    A2 = special.betaln(a, b + x) - special.betaln(a, b)
    A3 = -rx * ln_aT
    bx1 = np.where(has, b + x - 1.0, 1.0)
    A4 = np.where(has, np.log(a) - np.log(bx1) - rx * ln_at, -np.inf)
    ll = A1 + A2 + np.logaddexp(A3, A4)
    # w4 = share of the "dropped out after the last purchase" branch; w3 = 1 - w4.
    w4 = np.where(has, special.expit(A4 - A3), 0.0)
    w3 = 1.0 - w4
    psi_ab = special.digamma(a + b)
    psi_abx = special.digamma(a + b + x)
    d_r = special.digamma(rx) - special.digamma(r) + np.log(alpha) - w3 * ln_aT - w4 * ln_at
    d_alpha = r / alpha - w3 * rx / (alpha + T) - w4 * rx / (alpha + t_x)
    d_a = psi_ab - psi_abx + w4 / a
    d_b = psi_ab + special.digamma(b + x) - special.digamma(b) - psi_abx - w4 / bx1
    grad = np.stack([d_r * r, d_alpha * alpha, d_a * a, d_b * b])
    return ll, grad


def bgnbd_log_likelihood(params: _Params, frequency: npt.ArrayLike, recency: npt.ArrayLike,
                         T: npt.ArrayLike) -> np.ndarray:
    """Per-customer BG/NBD log-likelihood (FHL eq. 6) for ``params`` (BGNBDParams or r,alpha,a,b)."""
    if isinstance(params, BGNBDParams):
        params = (params.r, params.alpha, params.a, params.b)
    x, t_x, T = _validate(frequency, recency, T)
    ll, _ = _loglik_terms(np.log(np.asarray(params, dtype=np.float64)), x, t_x, T)
    return ll


class _Objective:
    """Mean negative log-likelihood and gradient over prepared (compressed) data.

    Everything that depends on ``x`` only -- the ``gammaln``/``digamma`` terms of A1, A2 and
    ``ln(b+x-1)`` -- is evaluated on the distinct values of ``x`` (a few hundred at most) and
    combined with the per-``x`` total weights; only the logs and the two-branch ``logaddexp``
    are per row.  Rows with ``x = 0`` have a single branch and are kept apart.
    """

    def __init__(self, x: Floats, t_x: Floats, T: Floats, w: Floats) -> None:
        self.ux, inv = np.unique(x, return_inverse=True)
        self.wx = np.bincount(inv, weights=w, minlength=self.ux.size)
        self.w_total = float(w.sum())
        pos = x > 0
        self.T0, self.w0 = T[~pos], w[~pos]
        self.x1, self.tx1, self.T1, self.w1 = x[pos], t_x[pos], T[pos], w[pos]
        self.inv1 = inv[pos]

    def __call__(self, theta: Floats) -> tuple[float, Floats]:
        r, alpha, a, b = np.exp(theta)
        ux, wx = self.ux, self.wx
        # x-only terms (A1 + A2 without r*ln(alpha)), on distinct x
        rx_u = r + ux
        ab = a + b
        c_u = (special.gammaln(rx_u) - special.gammaln(r) + special.betaln(a, b + ux)
               - special.betaln(a, b))
        ll = np.dot(wx, c_u) + self.w_total * r * np.log(alpha)
        psi_abx = special.digamma(ab + ux)
        g_r = np.dot(wx, special.digamma(rx_u)) - self.w_total * special.digamma(r) \
            + self.w_total * np.log(alpha)
        g_alpha = self.w_total * r / alpha
        g_a = np.dot(wx, special.digamma(ab) - psi_abx)
        g_b = np.dot(wx, special.digamma(ab) + special.digamma(b + ux) - special.digamma(b)
                     - psi_abx)
        # x = 0 rows: only the "alive" branch A3 = -r ln(alpha + T)
        if self.T0.size:
            ln_aT0 = np.log(alpha + self.T0)
            ll -= r * np.dot(self.w0, ln_aT0)
            g_r -= np.dot(self.w0, ln_aT0)
            g_alpha -= r * np.dot(self.w0, 1.0 / (alpha + self.T0))
        if self.x1.size:
            rx = r + self.x1
            ln_aT = np.log(alpha + self.T1)
            ln_at = np.log(alpha + self.tx1)
            ln_bx1_u = np.log(np.where(ux > 0, b + ux - 1.0, 1.0))
            A3 = -rx * ln_aT
            A4 = np.log(a) - ln_bx1_u[self.inv1] - rx * ln_at
            ll += np.dot(self.w1, np.logaddexp(A3, A4))
            w4 = special.expit(A4 - A3) * self.w1
            w3 = self.w1 - w4
            g_r -= np.dot(w3, ln_aT) + np.dot(w4, ln_at)
            g_alpha -= np.dot(w3, rx / (alpha + self.T1)) + np.dot(w4, rx / (alpha + self.tx1))
            w4_sum = w4.sum()
            g_a += w4_sum / a
            g_b -= np.dot(np.bincount(self.inv1, weights=w4, minlength=ux.size)[ux > 0],
                          1.0 / (b + ux[ux > 0] - 1.0))
        grad = np.array([g_r * r, g_alpha * alpha, g_a * a, g_b * b])
        val = -ll / self.w_total
        if not np.isfinite(val) or not np.all(np.isfinite(grad)):
            return 1e10, np.zeros_like(theta)
        return val, -grad / self.w_total


# Every parameter of the rescaled problems (time scaled so that max T = 10, spend scaled to a
# mean of 1) is kept within [1e-4, 1e4]. Well-identified fits lie far inside (CDNOW: r 0.24,
# scaled alpha 1.1, a 0.79, b 2.4; p 6.3, q 3.7, scaled gamma 0.4). A fit that reaches a bound
# is one the data do not identify (e.g. nobody has dropped out yet, so a -> 0 and b -> inf fit
# equally well): it is reported as such instead of drifting to 1e-6 or 1e8.
LOG_PARAM_BOUND = float(np.log(1e4))
_GRADIENT_TOLERANCE = 1e-5  # on the mean negative log-likelihood per customer


@dataclass(frozen=True)
class Optimum:
    """Where ``_maximise`` stopped: log-parameters, objective, and how it got there."""

    theta: np.ndarray
    value: float
    converged: bool
    at_bounds: tuple[int, ...]  # indices of parameters held at a bound
    iterations: int
    message: str


def _pinned(objective: Objective, theta: Floats, free: npt.NDArray[Any]) -> Objective:
    """The objective over the free coordinates, the others held at their values in ``theta``."""
    def sub(u: Floats) -> tuple[float, Floats]:
        full = theta.copy()
        full[free] = u
        f, g = objective(full)
        return f, g[free]
    return sub


class _Watch(Protocol):
    """A BFGS callback: scipy calls it with each iterate, by the name `xk`."""

    def __call__(self, xk: Floats) -> None: ...


# Any: scipy's OptimizeResult is a dict read as attributes (x, fun, nit, ...), which its stub does not declare.
def _bfgs(fun: Objective, u0: Floats, callback: _Watch | None = None) -> Any:
    return optimize.minimize(fun, u0, jac=True, method="BFGS", callback=callback,
                             options={"maxiter": 1000, "gtol": 1e-7})


def _maximise(objective: Objective, starts: Sequence[Floats], bound: float = LOG_PARAM_BOUND,
              hold: tuple[int, ...] = (),
              newton_only: bool = False) -> Optimum:
    """Minimise ``objective`` (mean negative log-likelihood over log-parameters) within the box
    ``[-bound, bound]``.

    BFGS from each start (stop at the first that converges). A coordinate that leaves the box is
    held at the bound it crossed and the others are optimised again (an active set: a held
    coordinate whose gradient points back inside is released). BFGS rather than L-BFGS-B: since
    scipy 1.15 L-BFGS-B's C core calls BLAS on 4-vectors, which with a multi-threaded OpenBLAS
    costs milliseconds per iteration (measured: 10x slower fits on 2 cores).

    Then a Newton polish of the free coordinates, with a Hessian from central differences of the
    analytic gradient and step halving; it converges quadratically, so the optimum is found to
    near machine precision in 1-3 steps instead of many more quasi-Newton iterations.
    ``converged`` means the gradient of the free coordinates vanished (to 1e-5 per customer) at
    the point returned.

    ``hold``: coordinates that start held at their (bound) values in the starts, e.g. where a
    caller already knows the fit runs off to a bound (Pareto/NBD's s, beta -> inf); they are
    released like the others if the gradient there points back inside. ``newton_only``: the
    first start is already close to the optimum of the free coordinates (the caller knows), so
    only the Newton polish runs (no BFGS, no active-set passes); check ``converged``.
    """
    best = None
    iterations = 0
    k = len(starts[0])
    held = np.zeros(k, dtype=bool)
    held[list(hold)] = True
    for theta0 in ([] if newton_only else starts):
        theta0 = np.asarray(theta0, dtype=np.float64)
        if held.any():
            free0 = np.flatnonzero(~held)
            res = _bfgs(_pinned(objective, theta0, free0), theta0[free0])
            full = theta0.copy()
            full[free0] = res.x
            res.x = full
        else:
            res = _bfgs(objective, theta0)
        iterations += res.nit
        if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
            best = res
        if best is not None and best.success:
            break
    if newton_only:
        theta = np.asarray(starts[0], dtype=np.float64).copy()
        message = "Newton polish only"
    elif best is None:
        raise RuntimeError("maximum likelihood fit did not converge")
    else:
        theta = best.x.copy()
        message = str(best.message)
    for _ in range(0 if newton_only else 2 * k):
        outside = ~held & (np.abs(theta) > bound)
        _, g = objective(np.clip(theta, -bound, bound))
        # Held at the upper bound, the objective still wants to grow the parameter when g < 0.
        release = held & (np.sign(theta) * g > 0)
        if not outside.any() and not release.any():
            break
        held = (held | outside) & ~release
        theta = np.clip(theta, -bound, bound)
        free = np.flatnonzero(~held)
        if free.size == 0:
            break
        res = _bfgs(_pinned(objective, theta, free), theta[free])
        iterations += res.nit
        theta[free] = res.x
        message = str(res.message)
    theta = np.clip(theta, -bound, bound)
    free = np.flatnonzero(~held)
    f, g = objective(theta)
    for _ in range(8):
        if free.size == 0:
            break
        H = _gradient_differences(objective, theta, free, 1e-5)
        H = 0.5 * (H + H.T)
        try:
            if np.any(np.linalg.eigvalsh(H) <= 0):
                break
            step = -np.linalg.solve(H, g[free])
        except np.linalg.LinAlgError:
            break
        lam = 1.0
        improved = False
        while lam > 1e-4:
            cand = theta.copy()
            cand[free] = np.clip(theta[free] + lam * step, -bound, bound)
            fc, gc = objective(cand)
            if fc <= f:
                theta, f, g, improved = cand, fc, gc, True
                break
            lam *= 0.5
        if not improved or np.max(np.abs(lam * step)) < 1e-10:
            break
    # A free coordinate may have been polished onto the bound: it is held there too.
    held |= np.abs(theta) >= bound * (1 - 1e-9)
    free = np.flatnonzero(~held)
    converged = bool(np.isfinite(f) and (free.size == 0 or np.max(np.abs(g[free])) < _GRADIENT_TOLERANCE))
    return Optimum(theta, float(f), converged, tuple(int(i) for i in np.flatnonzero(held)), iterations,
                   message)


def _gradient_differences(objective: Objective, theta: np.ndarray, free: np.ndarray, h: float) -> np.ndarray:
    """The Hessian over the free coordinates by central differences of the gradient (step h),
    not yet symmetrised."""
    H = np.empty((free.size, free.size))
    for j, i in enumerate(free):
        e = np.zeros(theta.size)
        e[i] = h
        H[:, j] = (objective(theta + e)[1][free] - objective(theta - e)[1][free]) / (2 * h)
    return H


def standard_errors_at(objective: Objective, optimum: Optimum, n_total: float, names: Sequence[str],
                       values: Sequence[float]) -> dict[str, float]:
    """Standard errors from the observed information at the optimum, in the natural parameters.

    ``objective`` is the mean negative log-likelihood over log-parameters (value, gradient), so
    the total's Hessian there is ``n_total * H``; it is taken by central differences of the
    gradient over the free coordinates. At a maximum the gradient vanishes, so with
    ``theta = ln(phi)`` the covariance of ``phi`` is ``D Cov(theta) D`` (``D = diag(phi)``): the
    standard error of ``phi_i`` is ``phi_i * se(theta_i)``, whatever the internal rescaling of
    time (it multiplies a parameter, which leaves ``se(ln phi)`` unchanged). A parameter held at
    a bound gets NaN (its information is not that of an interior maximum), and so does every
    parameter when the Hessian is not positive definite (no interior maximum).
    """
    theta = optimum.theta
    k = theta.size
    free = np.array([i for i in range(k) if i not in optimum.at_bounds], dtype=int)
    se = np.full(k, np.nan)
    if free.size:
        H = _gradient_differences(objective, theta, free, 1e-4)
        H = 0.5 * (H + H.T) * n_total
        try:
            if np.all(np.isfinite(H)) and np.all(np.linalg.eigvalsh(H) > 0):
                cov = np.linalg.inv(H)
                se[free] = np.sqrt(np.maximum(np.diag(cov), 0.0)) * np.asarray(values)[free]
        except np.linalg.LinAlgError:
            pass
    return {name: float(v) for name, v in zip(names, se, strict=True)}


def fit_bgnbd(frequency: npt.ArrayLike, recency: npt.ArrayLike, T: npt.ArrayLike, *,
              weights: npt.ArrayLike | None = None, initial_params: Sequence[float] | None = None,
              compress: bool = True) -> BGNBDParams:
    """Maximum-likelihood BG/NBD fit.

    Maximises the sum over customers of FHL eq. 6 (times optional ``weights``) over
    ``log(r, alpha, a, b)`` with BFGS and the analytic gradient, then polishes with Newton
    steps (see ``_maximise``).  Time is rescaled internally so that ``max(T) = 10`` (only
    ``alpha`` depends on the time unit; it is scaled back), which keeps the problem well
    conditioned whatever the unit.

    Parameters
    ----------
    frequency, recency, T : array_like, ``x``, ``t_x`` and ``T`` per customer (same time unit).
    weights : optional multiplicities of the rows.
    initial_params : optional starting ``(r, alpha, a, b)`` in the original time unit.
    compress : collapse identical rows before fitting (exact; faster on day-granular data).
    """
    # Without a repeat purchase a and b vanish from the likelihood (B(a, b+0)/B(a, b) = 1) and
    # BFGS "converges" at its start a = b = 1, where every expectation is 0/0: refused.
    x, t_x, T, w, n_customers, scale = fit_population("BG/NBD", frequency, recency, T, weights, compress)
    objective = _Objective(x, t_x * scale, T * scale, w)

    optimum = _maximise(objective, beta_geometric_starts(initial_params, scale))
    r, alpha, a, b = beta_geometric_values(optimum, scale)
    # Log-likelihood in the original time unit: rescaling t by c adds x*ln(c) per customer.
    ll_total = float(np.dot(w, _loglik_terms(np.log([r, alpha, a, b]), x, t_x, T)[0]))
    values = (r, alpha, a, b)
    return fit_result(BGNBDParams, values, ll_total, n_customers, objective, optimum, objective.w_total)


def beta_geometric_starts(initial_params: Sequence[float] | None, scale: float) -> list[np.ndarray]:
    """Where a BG/NBD or MBG/NBD fit over log(r, alpha * scale, a, b) starts: the caller's
    parameters (in the original time unit) then the origin, or the origin then a typical point."""
    if initial_params is None:
        return [np.zeros(4), np.log([0.5, 2.0, 0.8, 2.5])]
    r0, al0, a0, b0 = initial_params
    return [np.log([r0, al0 * scale, a0, b0]), np.zeros(4)]


def beta_geometric_values(optimum: Optimum, scale: float) -> tuple[float, float, float, float]:
    """(r, alpha, a, b) at the optimum, alpha back in the original time unit."""
    r, alpha_s, a, b = np.exp(optimum.theta)
    return float(r), float(alpha_s / scale), float(a), float(b)


def fit_population(model: str, frequency: npt.ArrayLike, recency: npt.ArrayLike, T: npt.ArrayLike,
                   weights: npt.ArrayLike | None, compress: bool = True
                   ) -> tuple[Floats, Floats, Floats, Floats, int, float]:
    """What a purchase-model fit works on: the rows validated and flattened, their weights, the
    population's size in customers, the rows collapsed where identical (exact), and the time
    scale that makes max T = 10. Refuses an empty population, and one without the repeat
    purchases that identify the model (errors.require_repeat_information)."""
    x, t_x, T = _validate(frequency, recency, T)
    x, t_x, T = x.ravel(), t_x.ravel(), T.ravel()
    w = fit_weights(weights, x)
    if x.size == 0 or w.sum() <= 0:
        raise ValueError(f"cannot fit {model} on an empty population")
    require_repeat_information(model, x, T, w)
    n_customers = int(round(w.sum()))
    if compress and x.size > 1:
        (x, t_x, T), w = compress_rows(x, t_x, T, weights=w)
    t_max = float(T.max())
    scale = 10.0 / t_max if t_max > 0 else 1.0
    return x, t_x, T, w, n_customers, scale


def fit_result(cls: type[_Fit], values: tuple[float, ...], log_likelihood: float, n_customers: int,
               objective: Objective, optimum: Optimum, n_total: float, **extra: Any) -> _Fit:
    """The fitted params of `cls` (stats.params.fitted_params) from the optimum: how it ended, and
    the standard errors from the objective's curvature there over `n_total` weighted rows."""
    names = names_of(cls)
    # The constructor is made by fitted_params at import time, out of mypy's sight.
    make: Any = cls
    return cast(_Fit, make(*values, log_likelihood, n_customers, converged=optimum.converged,
               at_bounds=tuple(names[i] for i in optimum.at_bounds), iterations=optimum.iterations,
               standard_errors=standard_errors_at(objective, optimum, n_total, names, values), **extra))


def _unpack(params: _Params) -> tuple[float, ...]:
    return unpack(params, BGNBDParams)


def _quadrature_rate(a: npt.ArrayLike, B: npt.ArrayLike, rho: npt.ArrayLike, theta: npt.ArrayLike) -> Floats:
    """int_0^1 Beta(p; a, B) (1 - (1 + p theta)^-rho) / p dp, by the trapezoidal rule in logit(p).

    This is E[Y(t) | alive] of BG/NBD (FHL eq. 10 without P(alive); B = b+x, rho = r+x,
    theta = t/(alpha+T)): given alive, lambda ~ Gamma(r+x, alpha+T) and p ~ Beta(a, b+x), and
    E[Y(t) | lambda, p] = (1 - e^{-lambda p t})/p (FHL eq. 7). Used where scipy's 2F1 gives no
    finite value on either form (z = t/(alpha+T+t) near 1 with a large lower parameter: the Gauss
    series there needs ~1/(1-z) terms, 2.2 s for one customer of the issue's example) and where
    a is so close to 1 that (a+b+x-1)/(a-1) [1 - bracket] is 0/0.

    With v = logit(p) the integrand is p^a (1-p)^B h(p) / B(a, B), smooth and analytic in a strip
    around the real axis (h(p) = (1 - (1+p theta)^-rho)/p falls from rho theta to ~1/p around
    p = 1/theta, a smooth step in v), so the trapezoidal rule converges geometrically. The step is
    a quarter of the posterior's width sqrt(1/a + 1/B) in v (at most 0.25); the range stops where
    the integrand is e^-50 below its scale (log-concavity of the Beta weight) or where p or 1-p
    is ~1e-10 small, beyond which the integrand is ~ p^a and (1-p)^B and the rule's nodes are
    summed in closed form.
    Agrees with 40-digit references to ~1e-12 (tests); at most a few hundred nodes per row.
    """
    a, B, rho, theta = (np.ascontiguousarray(v, dtype=np.float64).ravel()
                        for v in np.broadcast_arrays(a, B, rho, theta))
    out = np.empty_like(theta)
    sigma = np.sqrt(1.0 / a + 1.0 / B)
    mode = np.log(a) - np.log(B)
    p_lo = 1e-10 / (1.0 + B + (rho + 1.0) * theta)
    v_lo = np.log(p_lo) - np.log1p(-p_lo)
    v_lo = np.where(a > 2.0, np.maximum(v_lo, mode - 12.0 * sigma - 50.0 / np.maximum(a - 1.0, 1e-300)),
                    v_lo)
    q_hi = 1e-10 / (1.0 + a + rho)
    v_hi = np.minimum(np.log1p(-q_hi) - np.log(q_hi), mode + 12.0 * sigma + 50.0 / B)
    v_hi = np.maximum(v_hi, v_lo + 1.0)
    step = np.minimum(0.25, sigma / 4.0)
    n_nodes = np.ceil((v_hi - v_lo) / step).astype(np.int64) + 1
    log_norm = special.betaln(a, B)
    order = np.argsort(n_nodes)          # similar node counts share a block
    chunk = 4096
    for s in range(0, order.size, chunk):
        rows = order[s:s + chunk]
        n = int(n_nodes[rows].max())
        u = np.linspace(0.0, 1.0, n)
        lo, hi = v_lo[rows, None], v_hi[rows, None]
        v = lo + (hi - lo) * u[None, :]
        log_p = -np.logaddexp(0.0, -v)
        log_q = -np.logaddexp(0.0, v)
        p = np.exp(log_p)
        with np.errstate(divide="ignore"):
            log_h = np.log(-np.expm1(-rho[rows, None] * np.log1p(p * theta[rows, None]))) - log_p
        g = a[rows, None] * log_p + B[rows, None] * log_q + log_h - log_norm[rows, None]
        # The trapezoidal sum over the whole line: beyond the ends the integrand is ~ p^a = e^(av)
        # and ~ (1-p)^B = e^(-Bv), so the nodes out there add geometric series, folded into the
        # end weights h / (1 - e^(-a h)) and h / (1 - e^(-B h)). (Exact tail integrals instead
        # leave the rule's O(h^2) end error, 5e-7 for a = 0.3.)
        h = (hi - lo) / (n - 1)
        wts = np.repeat(h, n, axis=1)
        wts[:, :1] = h / -np.expm1(-a[rows, None] * h)
        wts[:, -1:] = h / -np.expm1(-B[rows, None] * h)
        out[rows] = np.exp(special.logsumexp(g, axis=1, b=wts))
    return out


def rate_factor(r: float, alpha: float, a: float, b: float, x: Floats, T: Floats, t: Floats) -> np.ndarray:
    """E[Y(t) | x, T, alive] = (a+b+x-1)/(a-1) [1 - ((alpha+T)/(alpha+T+t))^(r+x)
    2F1(r+x, b+x; a+b+x-1; z)], z = t/(alpha+T+t) (FHL eq. 10 without its P(alive) denominator;
    with x = T = 0 it is E[X(t)], eq. 9). Arrays ``x``, ``T``, ``t`` of one shape.

    The product (1-z)^(r+x) 2F1(...) is Euler-transformed into (1-z)^(a-1) 2F1(a+b-1-r, a-1;
    a+b+x-1; z), whose upper parameters do not grow with x (see the module docstring), and
    evaluated with ``scipy.special.hyp2f1``; where that is not finite, the untransformed form
    (finite for large a, e.g. a ~ 1e3, b ~ 1e4, where the transformed one is NaN); where both fail
    (z near 1 with a large lower parameter: small alpha against the horizon, T ~ 0, large b), and
    where |a - 1| < 1e-3 (the prefactor's 0/0), the integral over p, ``_quadrature_rate``. Each
    path costs microseconds to a millisecond per row whatever the parameters (the Gauss series
    this replaced needed ~1/(1-z) terms: seconds, or NaN after 200,000).
    """
    x = np.asarray(x, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    c = a + b + x - 1.0
    z = t / (alpha + T + t)
    A_, B_ = a + b - 1.0 - r, a - 1.0
    with np.errstate(all="ignore"):
        bracket = np.exp(B_ * np.log1p(-z)) * np.asarray(special.hyp2f1(A_, B_, c, z), dtype=np.float64)
        bad = ~np.isfinite(bracket)
        if np.any(bad):
            rx, bx = r + x[bad], b + x[bad]
            bracket[bad] = np.exp(rx * np.log1p(-z[bad])) * special.hyp2f1(rx, bx, c[bad], z[bad])
        out = c / (a - 1.0) * (1.0 - bracket)
    quad = ~np.isfinite(out) | (abs(a - 1.0) < 1e-3)
    quad = np.broadcast_to(quad, out.shape)
    if np.any(quad):
        out = np.array(out, copy=True)
        out[quad] = _quadrature_rate(a, b + x[quad], r + x[quad], t[quad] / (alpha + T[quad]))
    return np.where(t > 0, out, 0.0)


def _unique_pairs(u: npt.ArrayLike, v: npt.ArrayLike
                  ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.intp]]:
    """Distinct (u, v) pairs and the inverse index, via one lexsort (for scoring dedup)."""
    u = np.ascontiguousarray(u, dtype=np.float64).ravel()
    v = np.ascontiguousarray(v, dtype=np.float64).ravel()
    order = np.lexsort((v, u))
    us, vs = u[order], v[order]
    boundary = np.ones(u.size, dtype=bool)
    boundary[1:] = (us[1:] != us[:-1]) | (vs[1:] != vs[:-1])
    inverse = np.empty(u.size, dtype=np.intp)
    inverse[order] = np.cumsum(boundary) - 1
    return us[boundary], vs[boundary], inverse


class _ConditionalCurve:
    """t -> E[Y(t) | x, t_x, T] for fixed customers, reusable across many horizons ``t``.

    The rate factor depends on (x, T) only, so it is evaluated once per distinct (x, T) pair
    (day-granular data has few) and broadcast back; P(alive) is computed once.
    """

    def __init__(self, params: BGNBDParams, frequency: npt.ArrayLike, recency: npt.ArrayLike,
                 T: npt.ArrayLike) -> None:
        self.params = params
        x, t_x, T = _validate(frequency, recency, T)
        self.shape = x.shape
        self.p_alive = probability_alive(params, x, t_x, T).ravel()
        self.ux, self.uT, self.inv = _unique_pairs(x, T)

    def __call__(self, t: float) -> np.ndarray:
        r, alpha, a, b = _unpack(self.params)
        if t < 0:
            raise ValueError("t must be non-negative")
        factor = rate_factor(r, alpha, a, b, self.ux, self.uT, np.full(self.ux.shape, float(t)))
        expected: np.ndarray = (self.p_alive * factor[self.inv]).reshape(self.shape)
        return expected


def expected_purchases(params: BGNBDParams, t: npt.ArrayLike) -> np.ndarray:
    """Unconditional E[X(t)] for a randomly chosen (new) customer, FHL eq. 9.

    E[X(t)] = (a+b-1)/(a-1) * [1 - (alpha/(alpha+t))^r 2F1(r, b; a+b-1; t/(alpha+t))],
    computed through the Euler-transformed bracket (see module docstring).
    """
    r, alpha, a, b = _unpack(params)
    t = np.asarray(t, dtype=np.float64)
    if np.any(t < 0):
        raise ValueError("t must be non-negative")
    tt = t.ravel()
    zeros = np.zeros_like(tt)
    return rate_factor(r, alpha, a, b, zeros, zeros, tt).reshape(t.shape)


def probability_alive(params: BGNBDParams, frequency: npt.ArrayLike, recency: npt.ArrayLike,
                      T: npt.ArrayLike) -> np.ndarray:
    """P(alive | x, t_x, T) (Fader, Hardie & Lee 2008, eq. 1 of note 021).

    P = 1 / (1 + [x>0] a/(b+x-1) * ((alpha+T)/(alpha+t_x))^(r+x)); evaluated as a logistic of
    the log-odds, so it is exact in the tails.  Customers with ``x = 0`` are alive with
    probability 1 (the model lets customers drop out only after a repeat purchase).
    """
    r, alpha, a, b = _unpack(params)
    x, t_x, T = _validate(frequency, recency, T)
    has = x > 0
    log_odds = (r + x) * (np.log(alpha + T) - np.log(alpha + t_x)) + np.log(a) \
        - np.log(np.where(has, b + x - 1.0, 1.0))
    return np.where(has, special.expit(-log_odds), 1.0)


def conditional_expected_purchases(params: BGNBDParams, t: npt.ArrayLike, frequency: npt.ArrayLike,
                                   recency: npt.ArrayLike, T: npt.ArrayLike) -> np.ndarray:
    """E[Y(t) | x, t_x, T]: expected repeat purchases in (T, T+t], FHL eq. 10.

    E = (a+b+x-1)/(a-1) * [1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; z)]
        / (1 + [x>0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)),   z = t/(alpha+T+t).
    The denominator is 1/P(alive) and is applied as ``probability_alive``; the hypergeometric
    product is evaluated in Euler-transformed form, stable for any ``x`` (see ``rate_factor``).
    ``t`` broadcasts against the customers; a column of k horizons (shape (k, 1)) against n
    customers gives the (k, n) curve, evaluated per distinct (x, T) at each horizon.
    """
    t = np.asarray(t, dtype=np.float64)
    if np.any(t < 0):
        raise ValueError("t must be non-negative")
    if t.ndim == 0:
        # one horizon for everyone: evaluate the hypergeometric term per distinct (x, T)
        return _ConditionalCurve(params, frequency, recency, T)(float(t))
    if t.ndim == 2 and t.shape[1] == 1 and np.ndim(frequency) == 1:
        curve = _ConditionalCurve(params, frequency, recency, T)
        return np.stack([curve(float(tj)) for tj in t[:, 0]])
    r, alpha, a, b = _unpack(params)
    x, t_x, T = _validate(frequency, recency, T)
    p_alive = probability_alive(params, x, t_x, T)
    xb, Tb, tb = np.broadcast_arrays(x, T, t)
    factor = rate_factor(r, alpha, a, b, xb.ravel(), Tb.ravel(), tb.ravel()).reshape(xb.shape)
    expected: np.ndarray = factor * p_alive
    return expected
