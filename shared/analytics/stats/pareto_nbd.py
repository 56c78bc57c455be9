"""Pareto/NBD model of repeat-purchase counts (Schmittlein, Morrison & Colombo 1987).

References: Fader & Hardie (2005), "A Note on Deriving the Pareto/NBD Model and Related
Expressions" (Hardie's note 009: likelihood, P(alive), expectations) and Fader, Hardie & Lee
(2005), "Counting Your Customers the Easy Way", whose CDNOW estimates (r .553, alpha 10.578,
s .606, beta 11.669, LL -9594.98) the unit tests reproduce.

Model: while alive a customer buys as a Poisson process of rate ``lambda ~ Gamma(r, alpha)``;
her lifetime is exponential with rate ``mu ~ Gamma(s, beta)``. A customer is summarised by
``x`` (repeat purchases), ``t_x`` (time of the last one) and ``T`` (age).

Numerics
--------
The individual likelihood is ``lambda^x e^{-(lambda+mu)T} + lambda^x int_{t_x}^T mu
e^{-(lambda+mu)tau} dtau``. Integrating out lambda and mu and writing the first term as an
integral of its derivative over (T, inf) turns the population likelihood into a sum of two
POSITIVE tail integrals (no difference of two hypergeometric terms, so no cancellation when t_x
is near T, which the textbook A0 = F(t_x) - F(T) form suffers):

    L = G(r+x) alpha^r beta^s / G(r) * [ (r+x) K(T; r+x+1, s) + s K(t_x; r+x, s+1) ]
    K(tau0; p, q) = int_{tau0}^inf (alpha+tau)^-p (beta+tau)^-q dtau

With ``A = alpha+tau0 >= B = beta+tau0`` (else the roles swap), substituting ``v = 1/(A+sigma)``
gives ``K = A^-p B^(1-q) / R * 2F1(p, 1; p+q; z)``, ``R = p+q-1``, ``z = (A-B)/A``: this is
note 009's 2F1(r+s+x, s+1; r+s+x+1; .) after Euler's transformation, whose series has positive,
decreasing terms bounded by z^k (no overflow, no cancellation; the alpha >= beta / alpha < beta
cases of the note are the swap). It is summed directly for ``z <= 0.9`` (at most ~370 terms);
for ``z`` nearer 1 (one of alpha, beta tiny against the other and a young customer) the series
would need ~37/(1-z) terms, so K is integrated instead: ``sigma = e^v`` makes the integrand a
smooth, doubly exponentially decaying bump in ``v`` whose width grows only with log(A/B), and
the trapezoidal rule (step 0.3) on it converges geometrically; the far tails beyond
``e^25`` times the scales are added in closed form. Everything is in log space.

Expectations (note 009): E[X(t)] = r beta / (alpha (s-1)) [1 - (beta/(beta+t))^(s-1)] and
E[Y(t) | x, t_x, T] = (r+x)(beta+T) / ((alpha+T)(s-1)) [1 - ((beta+T)/(beta+T+t))^(s-1)]
* P(alive), evaluated as ``log1p * exprel`` so that s = 1 (where the bracket / (s-1) becomes a
logarithm) is exact, not 0/0.

The fit maximises the likelihood over log-parameters with ``bgnbd._maximise`` (BFGS + Newton
polish) with the analytic gradient (the series and the quadrature are differentiated term by
term); the hypergeometric terms are evaluated once per distinct (x, T) and (x, t_x) pair.
Trial steps that overflow a parameter are rejected (the objective answers a large value), never
evaluated. When the customers look as if they shared one dropout rate, the likelihood rises
forever along s, beta -> inf with s/beta fixed (Gamma(s, beta) shrinking to a point mass), each
step slower (alpha/beta far from 1 needs the quadrature): a watch on the first BFGS run
(``_RunOff``) sees that, the fit jumps along the ridge to beta's bound and polishes r, alpha, s
there, and the result says ``limit="common_dropout_rate"`` with beta in ``at_bounds``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field

import numpy as np
from scipy import special

from .bgnbd import (
    _GRADIENT_TOLERANCE,
    LOG_PARAM_BOUND,
    _bfgs,
    _maximise,
    _unique_pairs,
    _validate,
    fit_population,
    fit_result,
)
from .params import fitted_params, names_of, unpack

__all__ = [
    "ParetoNBDParams",
    "pareto_nbd_log_likelihood",
    "fit_pareto_nbd",
    "expected_purchases",
    "probability_alive",
    "conditional_expected_purchases",
]



@fitted_params
class ParetoNBDParams:
    """Fitted Pareto/NBD parameters and the maximised total log-likelihood."""

    r: float
    alpha: float
    s: float
    beta: float
    # "common_dropout_rate" when the fit ran off along s, beta -> inf with s/beta fixed (every
    # customer has the same dropout rate s/beta; beta is then held at its bound and in at_bounds)
    limit: str = field(default="", compare=False)


PARAMETER_NAMES = names_of(ParetoNBDParams)


def _unpack(params):
    return unpack(params, ParetoNBDParams)


# ----------------------------------------------------------------------------- K(tau0; p, q)
_SERIES_MAX_Z = 0.9
_QUAD_STEP = 0.3
_TAIL = 25.0          # the closed-form tails start e^25 beyond the integrand's scales
_CHUNK = 8192          # rows per quadrature block (memory: rows x nodes floats)


def _log_2f1_p1(P, Q, z):
    """log 2F1(P, 1; P+Q; z) for 0 <= z <= 0.9 and its derivatives in P, Q and z.

    The Gauss series: t_k = prod_{j<k} c_j z^k with c_j = (P+j)/(P+Q+j) < 1, positive terms
    bounded by z^k. Derivatives term by term: d t_k/dP = t_k sum_{j<k} (1/(P+j) - 1/(P+Q+j)),
    d t_k/dQ = -t_k sum_{j<k} 1/(P+Q+j), d t_k/dz = k t_k / z (carried as k q_k, q_k = t_k / z,
    so z = 0 is fine).
    """
    n = z.size
    res = np.empty((4, n))
    idx = np.arange(n)
    F, FP, FQ, Fz = np.ones(n), np.zeros(n), np.zeros(n), np.zeros(n)
    q = np.ones(n)               # q_k = t_k / z
    sP = np.zeros(n)             # sum_{j<k} (1/(P+j) - 1/(P+Q+j))
    sQ = np.zeros(n)             # -sum_{j<k} 1/(P+Q+j)
    P, Q, z = P.copy(), Q.copy(), z.copy()
    k = 0
    while idx.size:
        PQk = P + Q + k
        q = (q * z if k else q) * ((P + k) / PQk)
        sP += 1.0 / (P + k) - 1.0 / PQk
        sQ -= 1.0 / PQk
        t = q * z
        F += t
        FP += t * sP
        FQ += t * sQ
        dz = (k + 1) * q
        Fz += dz
        k += 1
        # successive terms shrink by <= z <= 0.9 (times (k+2)/(k+1) for the z-derivative)
        keep = ((t > 1e-17 * F) | (dz > 1e-17 * Fz)) & (z > 0)
        if not keep.all():
            done = ~keep
            res[:, idx[done]] = F[done], FP[done], FQ[done], Fz[done]
            # work on the unfinished rows only (contiguous arrays: no fancy indexing per term)
            idx, P, Q, z, q, sP, sQ, F, FP, FQ, Fz = (
                a[keep] for a in (idx, P, Q, z, q, sP, sQ, F, FP, FQ, Fz))
    F, FP, FQ, Fz = res
    return np.log(F), FP / F, FQ / F, Fz / F


def _log_tail_quadrature(P, Q, log_A, log_B):
    """log int_0^inf (A+sigma)^-P (B+sigma)^-Q dsigma by the trapezoidal rule in v = ln sigma,
    and its derivatives in P, Q, A and B.

    The integrand e^v (A+e^v)^-P (B+e^v)^-Q grows like e^v below min(A, B), decays like
    e^(-Rv) above max(A, B) (R = P+Q-1) and is analytic in a strip around the real axis, so the
    trapezoidal rule over the whole line converges geometrically in 1/step (0.3 gives ~1e-14
    against mpmath). Beyond ``v_lo`` and ``v_hi`` the integrand is e^v A^-P B^-Q and e^(-Rv) to
    within e^-25, and the rule's nodes out there are summed in closed form. The derivatives are the integrals of the
    integrand's
    log-derivatives (-ln(A+e^v), -ln(B+e^v), -P/(A+e^v), -Q/(B+e^v)) under it, by the same rule.
    """
    n_rows = P.size
    out = [np.empty(n_rows) for _ in range(5)]
    R = P + Q - 1.0
    lo_all = np.minimum(log_A, log_B) - np.log1p(P + Q) - _TAIL
    hi_all = np.maximum(log_A, log_B) + _TAIL
    for s in range(0, n_rows, _CHUNK):
        sl = slice(s, s + _CHUNK)
        lo, hi = lo_all[sl], hi_all[sl]
        n = int(np.ceil(np.max(hi - lo) / _QUAD_STEP)) + 1
        u = np.linspace(0.0, 1.0, n)
        v = lo[:, None] + (hi - lo)[:, None] * u[None, :]
        lA = np.logaddexp(log_A[sl, None], v)
        lB = np.logaddexp(log_B[sl, None], v)
        g = v - P[sl, None] * lA - Q[sl, None] * lB
        # The trapezoidal sum over the whole line, not only [lo, hi]: beyond hi the integrand is
        # c e^(-Rv) and below lo c e^v (to within e^-25), so the nodes there add geometric series,
        # folded into the end weights: h / (1 - e^(-Rh)) and h / (1 - e^(-h)). (An exact tail
        # integral instead would leave the rule's O(h^2) end error: 1e-8 for R = 0.5.)
        h = ((hi - lo) / (n - 1))[:, None]
        w = np.repeat(h, n, axis=1)
        w[:, :1] = h / -np.expm1(-h)
        w[:, -1:] = h / -np.expm1(-R[sl, None] * h)
        log_k = special.logsumexp(g, axis=1, b=w)
        weight = w * np.exp(g - log_k[:, None])       # sums to 1
        out[0][sl] = log_k
        out[1][sl] = -np.sum(weight * lA, axis=1)
        out[2][sl] = -np.sum(weight * lB, axis=1)
        out[3][sl] = -P[sl] * np.sum(weight * np.exp(-lA), axis=1)
        out[4][sl] = -Q[sl] * np.sum(weight * np.exp(-lB), axis=1)
        # the right end weight depends on R = P + Q - 1
        with np.errstate(over="ignore"):     # huge R: the weight is constant, d_end = -0
            d_end = -h[:, 0] / np.expm1(R[sl] * h[:, 0])
        out[1][sl] += weight[:, -1] * d_end
        out[2][sl] += weight[:, -1] * d_end
    return out


def _log_K(p, q, A, B):
    """log K = log int_0^inf (A+sigma)^-p (B+sigma)^-q dsigma  (p, q > 0, p + q > 1), vectorised,
    and its derivatives d/dp, d/dq, d/dA, d/dB.

    A = alpha + tau0 and B = beta + tau0. See the module docstring for the two evaluations.
    """
    p, q, A, B = (np.ascontiguousarray(v, dtype=np.float64).ravel()
                  for v in np.broadcast_arrays(p, q, A, B))
    # An optimiser's trial step can overflow a parameter (exp(theta) = inf or 0): such rows have
    # no finite K, so they answer NaN (the objective rejects the step) instead of sizing a
    # quadrature grid from an infinite log-ratio (OverflowError) or a huge one (memory).
    ok = (np.isfinite(p) & np.isfinite(q) & np.isfinite(A) & np.isfinite(B) & (A > 0) & (B > 0)
          & (p > 0) & (q > 0))
    if not ok.all():
        out = [np.full(p.shape, np.nan) for _ in range(5)]
        if ok.any():
            for o, v in zip(out, _log_K(p[ok], q[ok], A[ok], B[ok]), strict=True):
                o[ok] = v
        return tuple(out)
    swap = A < B                       # make the first shift the larger one (z >= 0)
    P = np.where(swap, q, p)
    Q = np.where(swap, p, q)
    big = np.maximum(A, B)
    small = np.minimum(A, B)
    z = (big - small) / big
    log_big, log_small = np.log(big), np.log(small)
    val, dP, dQ, dbig, dsmall = (np.empty_like(p) for _ in range(5))
    near = z > _SERIES_MAX_Z
    far = ~near
    if far.any():
        Pf, Qf, bf, sf = P[far], Q[far], big[far], small[far]
        Rf = Pf + Qf - 1.0
        lF, FP, FQ, Fz = _log_2f1_p1(Pf, Qf, z[far])
        val[far] = -Pf * log_big[far] + (1.0 - Qf) * log_small[far] - np.log(Rf) + lF
        dP[far] = -log_big[far] - 1.0 / Rf + FP
        dQ[far] = -log_small[far] - 1.0 / Rf + FQ
        dbig[far] = -Pf / bf + Fz * sf / bf ** 2          # dz/dbig = small / big^2
        dsmall[far] = (1.0 - Qf) / sf - Fz / bf           # dz/dsmall = -1 / big
    if near.any():
        val[near], dP[near], dQ[near], dbig[near], dsmall[near] = _log_tail_quadrature(
            P[near], Q[near], log_big[near], log_small[near])
    dp = np.where(swap, dQ, dP)
    dq = np.where(swap, dP, dQ)
    dA = np.where(swap, dsmall, dbig)
    dB = np.where(swap, dbig, dsmall)
    return val, dp, dq, dA, dB


# ----------------------------------------------------------------------------- likelihood
def _log_brackets(r, alpha, s, beta, ux, uT, uxt, utx, grad=False):
    """Per distinct (x, T): log of (r+x) K(T; r+x+1, s); per distinct (x, t_x): log s K(t_x; r+x, s+1).

    With ``grad``, also their derivatives in (r, alpha, s, beta), as (4, n) arrays.
    """
    k1 = _log_K(r + ux + 1.0, s, alpha + uT, beta + uT)
    k2 = _log_K(r + uxt, s + 1.0, alpha + utx, beta + utx)
    first = np.log(r + ux) + k1[0]
    second = np.log(s) + k2[0]
    if not grad:
        return first, second
    d_first = np.stack([1.0 / (r + ux) + k1[1], k1[3], k1[2], k1[4]])
    d_second = np.stack([k2[1], k2[3], 1.0 / s + k2[2], k2[4]])
    return first, second, d_first, d_second


def _log_likelihood_rows(params, x, t_x, T):
    r, alpha, s, beta = params
    ux, uT, inv_T = _unique_pairs(x, T)
    uxt, utx, inv_t = _unique_pairs(x, t_x)
    first, second = _log_brackets(r, alpha, s, beta, ux, uT, uxt, utx)
    return (special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha) + s * np.log(beta)
            + np.logaddexp(first[inv_T], second[inv_t]))


def pareto_nbd_log_likelihood(params, frequency, recency, T) -> np.ndarray:
    """Per-customer Pareto/NBD log-likelihood for ``params`` (ParetoNBDParams or r, alpha, s, beta)."""
    x, t_x, T = _validate(frequency, recency, T)
    shape = x.shape
    return _log_likelihood_rows(_unpack(params), x.ravel(), t_x.ravel(), T.ravel()).reshape(shape)


_THETA_REJECT = 4.0 * LOG_PARAM_BOUND   # parameters beyond 1e16 / below 1e-16


class _Objective:
    """Mean negative log-likelihood over compressed rows and its analytic gradient.

    The rows' distinct (x, T) and (x, t_x) pairs are found once; one evaluation costs one
    hypergeometric term (and its derivatives) per pair; x-only terms are on distinct x.
    """

    def __init__(self, x, t_x, T, w):
        self.ux, self.uT, self.inv_T = _unique_pairs(x, T)
        self.uxt, self.utx, self.inv_t = _unique_pairs(x, t_x)
        self.x_u, inv_x = np.unique(x, return_inverse=True)
        self.w_x = np.bincount(inv_x, weights=w, minlength=self.x_u.size)
        self.w = w
        self.w_total = float(w.sum())

    def __call__(self, theta):
        # Trial points far outside the box _maximise keeps (|theta| <= ln 1e4) are rejected
        # before evaluation: there exp(theta) over/underflows and the quadrature grid, sized by
        # log(alpha/beta), would grow without limit. The line search then backtracks.
        if not np.all(np.isfinite(theta)) or np.max(np.abs(theta)) > _THETA_REJECT:
            return 1e10, np.zeros_like(theta)
        r, alpha, s, beta = np.exp(theta)
        W = self.w_total
        with np.errstate(all="ignore"):
            first, second, d1, d2 = _log_brackets(r, alpha, s, beta, self.ux, self.uT, self.uxt,
                                                  self.utx, grad=True)
            f_rows, s_rows = first[self.inv_T], second[self.inv_t]
            ll = (np.dot(self.w_x, special.gammaln(r + self.x_u)) - W * special.gammaln(r)
                  + W * (r * np.log(alpha) + s * np.log(beta))
                  + np.dot(self.w, np.logaddexp(f_rows, s_rows)))
            w1 = special.expit(f_rows - s_rows) * self.w      # share of the "alive at T" branch
            w2 = self.w - w1
            g1 = np.bincount(self.inv_T, weights=w1, minlength=first.size)
            g2 = np.bincount(self.inv_t, weights=w2, minlength=second.size)
            grad = d1 @ g1 + d2 @ g2
            grad[0] += (np.dot(self.w_x, special.digamma(r + self.x_u)) - W * special.digamma(r)
                        + W * np.log(alpha))
            grad[1] += W * r / alpha
            grad[2] += W * np.log(beta)
            grad[3] += W * s / beta
            grad *= np.array([r, alpha, s, beta])
        val = -ll / W
        if not np.isfinite(val) or not np.all(np.isfinite(grad)):
            return 1e10, np.zeros_like(theta)
        return val, -grad / W


def fit_pareto_nbd(frequency, recency, T, *, weights=None, initial_params=None) -> ParetoNBDParams:
    """Maximum-likelihood Pareto/NBD fit (time rescaled internally so that max T = 10).

    Raises ``UnidentifiedModel`` when nobody made a repeat purchase or every age is 0 (the
    likelihood is then flat in the parameters that describe repeat buying).
    """
    x, t_x, T, w, n_customers, scale = fit_population("Pareto/NBD", frequency, recency, T, weights)
    objective = _Objective(x, t_x * scale, T * scale, w)
    if initial_params is None:
        starts = [np.log([0.5, 1.0, 0.5, 1.0]), np.zeros(4)]
    else:
        r0, a0, s0, b0 = initial_params
        starts = [np.log([r0, a0 * scale, s0, b0 * scale]), np.log([0.5, 1.0, 0.5, 1.0])]
    limit = ""
    # A first BFGS run watched for the run-off along s, beta -> inf (see _RunOff); when it is
    # seen, the fit jumps along that ridge to beta's bound and optimises r, alpha, s there
    # (what the unwatched run would reach after ~100 slow iterations). Otherwise its end point
    # is the first start of the ordinary fit (which then converges in a few iterations).
    watch = _RunOff()
    first = _bfgs(objective, starts[0], callback=watch)
    if watch.ridge is not None:
        theta = watch.ridge.copy()
        shift = LOG_PARAM_BOUND - theta[3]
        theta[2] += shift
        theta[3] = LOG_PARAM_BOUND
        if theta[2] <= LOG_PARAM_BOUND:
            # r, alpha and s/beta had settled on the ridge: Newton converges in a few steps
            # (BFGS there needs ~60 evaluations of a likelihood that now needs the quadrature)
            optimum = _maximise(objective, [theta], hold=(3,), newton_only=True)
            if not optimum.converged:
                optimum = _maximise(objective, [optimum.theta], hold=(3,))
            limit = "common_dropout_rate"
            if objective(optimum.theta)[1][3] > _GRADIENT_TOLERANCE:
                # the likelihood clearly wants beta back inside (beyond the convergence
                # tolerance: along the ridge the slope is ~1e-7 either way): not the limit after
                # all, a false alarm of the watch; the ordinary fit from where it stopped decides
                optimum = _maximise(objective, [watch.ridge] + starts)
                limit = ""
        else:   # s would pass its bound first: no jump, the ordinary active set handles it
            optimum = _maximise(objective, [watch.ridge] + starts)
        optimum = dataclasses.replace(optimum, iterations=optimum.iterations + first.nit)
    else:
        x0 = first.x if np.isfinite(first.fun) else starts[0]
        optimum = _maximise(objective, [x0] + starts[1:])
        optimum = dataclasses.replace(optimum, iterations=optimum.iterations + first.nit)
    if limit and 3 not in optimum.at_bounds:
        limit = ""      # beta was released: the optimum is interior after all
    r, alpha_s, s, beta_s = np.exp(optimum.theta)
    alpha, beta = alpha_s / scale, beta_s / scale
    ll_total = float(np.dot(w, _log_likelihood_rows((r, alpha, s, beta), x, t_x, T)))
    values = (float(r), float(alpha), float(s), float(beta))
    return fit_result(ParetoNBDParams, values, ll_total, n_customers, objective, optimum, objective.w_total,
                      limit=limit)


class _RunOff:
    """BFGS callback: stops the run when s and beta grow together with s/beta, r and alpha
    settled, i.e. the fit is walking toward the common-dropout-rate limit (Gamma(s, beta) with a
    fixed mean s/beta and a vanishing variance s/beta^2), on which the likelihood keeps rising
    ever more slowly and each step costs more (alpha/beta far from 1 needs the quadrature).

    The test is over the last ``_WINDOW`` iterates: log beta beyond ln 100 (scaled time: no
    well-identified fit comes near, CDNOW's is 2.2), log s and log beta both increasing at every
    step by a total of at least 0.5, while log(s/beta), log r and log alpha moved less than 0.01.
    """

    _WINDOW = 4

    def __init__(self) -> None:
        self.history = []
        self.ridge = None

    def __call__(self, xk):
        self.history.append(np.array(xk, dtype=np.float64))
        h = self.history[-self._WINDOW:]
        if len(h) < self._WINDOW:
            return
        th = np.array(h)
        ls, lb = th[:, 2], th[:, 3]
        if (lb[-1] > np.log(100.0) and np.all(np.diff(ls) > 0) and np.all(np.diff(lb) > 0)
                and lb[-1] - lb[0] >= 0.5
                and np.ptp(ls - lb) < 0.01 and np.ptp(th[:, 0]) < 0.01 and np.ptp(th[:, 1]) < 0.01):
            self.ridge = th[-1]
            raise StopIteration


# ----------------------------------------------------------------------------- scoring
def _log_growth(s, L):
    """log of (1 - e^{-(s-1) L}) / (s-1) for L = log(1 + t/beta') >= 0: L * exprel(-(s-1) L).

    Exact at s = 1 (the limit L) and without cancellation near it.
    """
    return np.log(L) + np.log(special.exprel(-(s - 1.0) * L))


def expected_purchases(params, t) -> np.ndarray:
    """E[X(t)] for a new customer: r beta / (alpha (s-1)) [1 - (beta/(beta+t))^(s-1)]."""
    r, alpha, s, beta = _unpack(params)
    t = np.asarray(t, dtype=np.float64)
    if np.any(t < 0):
        raise ValueError("t must be non-negative")
    L = np.log1p(t / beta)
    with np.errstate(divide="ignore"):
        out = r * beta / alpha * np.exp(_log_growth(s, L))
    return np.where(t > 0, out, 0.0)


def _log_p_alive(params, x, t_x, T):
    r, alpha, s, beta = _unpack(params)
    ux, uT, inv_T = _unique_pairs(x, T)
    uxt, utx, inv_t = _unique_pairs(x, t_x)
    first, second = _log_brackets(r, alpha, s, beta, ux, uT, uxt, utx)
    log_alive = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)
    return log_alive - np.logaddexp(first[inv_T], second[inv_t])


def probability_alive(params, frequency, recency, T) -> np.ndarray:
    """P(alive | x, t_x, T) = (alpha+T)^-(r+x) (beta+T)^-s / [the bracket of the likelihood]."""
    x, t_x, T = _validate(frequency, recency, T)
    shape = x.shape
    lp = _log_p_alive(params, x.ravel(), t_x.ravel(), T.ravel())
    return np.minimum(np.exp(lp), 1.0).reshape(shape)


def conditional_expected_purchases(params, t, frequency, recency, T) -> np.ndarray:
    """E[Y(t) | x, t_x, T]: expected repeat purchases in (T, T+t] (note 009, eq. 22).

    ``t`` broadcasts against the customers (a column of k horizons against n customers gives the
    (k, n) curve); P(alive), the costly part, is computed once.
    """
    r, alpha, s, beta = _unpack(params)
    t = np.asarray(t, dtype=np.float64)
    if np.any(t < 0):
        raise ValueError("t must be non-negative")
    x, t_x, T = _validate(frequency, recency, T)
    shape = np.broadcast(x, t).shape
    p_alive = probability_alive(params, x, t_x, T)
    L = np.log1p(t / (beta + T))
    with np.errstate(divide="ignore"):
        rate = (r + x) * (beta + T) / (alpha + T) * np.exp(_log_growth(s, L))
    return np.broadcast_to(np.where(t > 0, rate * p_alive, 0.0), shape).copy()
