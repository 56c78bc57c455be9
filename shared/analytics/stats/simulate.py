"""Exact, vectorised simulation of BG/NBD histories and Gamma-Gamma spends.

Used by the parameter-recovery tests and by ``bench/analytics.py``.

BG/NBD (Fader, Hardie & Lee 2005, section 3): ``lambda ~ Gamma(r, rate alpha)``,
``p ~ Beta(a, b)``; the first purchase is at time 0; after each REPEAT purchase the customer
drops out with probability ``p``.  Hence the number of repeat purchases the customer would make
before dropping out is ``J ~ Geometric(p)`` on {1, 2, ...} (dead right after the J-th), and with
``N ~ Poisson(lambda T)`` the number of arrivals of the uninterrupted process in (0, T]:

    x = min(J, N),   t_x = T * U_(x:N)  where U_(x:N) ~ Beta(x, N - x + 1)

(given N arrivals in (0, T] they are uniform order statistics; the x-th one is Beta).  This is an
exact draw of ``(x, t_x)`` without generating individual purchases.

With ``day_resolution=True`` times are in weeks on a daily grid: ``T`` should be a whole number
of days and ``t_x`` is rounded UP to the next whole day (a purchase during day d is recorded on
day d, so a repeat purchase is never on day 0); this mimics ``frequency_recency`` output and
makes many rows identical (same-day collisions are ignored: they are rare for realistic rates).

Gamma-Gamma (Fader & Hardie 2013): ``nu ~ Gamma(q, rate gamma)`` per customer, transactions
``z ~ Gamma(p, rate nu)``; the mean of ``x`` of them is ``Gamma(p x, rate x nu)``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["simulate_bgnbd", "simulate_gamma_gamma_spend", "simulate_mbgnbd", "simulate_pareto_nbd"]


def _on_day_grid(t_x: npt.NDArray[np.float64], T: npt.NDArray[np.float64],
                 has: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    """Round repeat-purchase times up to the next whole day (never day 0), within T."""
    t_x[has] = np.minimum(np.maximum(np.ceil(t_x[has] * 7.0 - 1e-9), 1.0), np.round(T[has] * 7.0)) / 7.0
    return t_x


def simulate_bgnbd(r: float, alpha: float, a: float, b: float, T: npt.ArrayLike, rng: np.random.Generator,
                   *, day_resolution: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``(x, t_x, T)`` for ``len(T)`` customers (``T`` in weeks)."""
    return _beta_geometric(r, alpha, a, b, T, rng, day_resolution, drops_at_first_purchase=False)


def _beta_geometric(r: float, alpha: float, a: float, b: float, T: npt.ArrayLike, rng: np.random.Generator,
                    day_resolution: bool,
                    drops_at_first_purchase: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BG/NBD, or MBG/NBD where the customer may drop out at the first purchase (time 0) too.
    The draws come in the same order for both (seeded simulations stay the same)."""
    T = np.asarray(T, dtype=np.float64).ravel()
    n = T.size
    lam = rng.gamma(r, 1.0 / alpha, n)
    p = np.clip(rng.beta(a, b, n), 1e-300, 1.0)
    N = rng.poisson(lam * T)
    J = rng.geometric(p) - int(drops_at_first_purchase)
    x = np.minimum(J, N).astype(np.int64)
    t_x = np.zeros(n)
    has = x > 0
    t_x[has] = T[has] * rng.beta(x[has], N[has] - x[has] + 1)
    if day_resolution:
        _on_day_grid(t_x, T, has)
    return x, t_x, T


def simulate_mbgnbd(r: float, alpha: float, a: float, b: float, T: npt.ArrayLike, rng: np.random.Generator,
                    *, day_resolution: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MBG/NBD (Batislam et al. 2007): as BG/NBD, but the customer may also drop out right after
    the first purchase at time 0, so the repeat purchases she would make before dropping out are
    ``J - 1`` with ``J ~ Geometric(p)`` on {1, 2, ...} (0 with probability p)."""
    return _beta_geometric(r, alpha, a, b, T, rng, day_resolution, drops_at_first_purchase=True)


def simulate_pareto_nbd(r: float, alpha: float, s: float, beta: float, T: npt.ArrayLike, rng: np.random.Generator,
                        *, day_resolution: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pareto/NBD (Schmittlein et al. 1987): ``lambda ~ Gamma(r, rate alpha)``, lifetime
    ``tau ~ Exponential(mu)``, ``mu ~ Gamma(s, rate beta)``. Purchases are Poisson(lambda) on
    (0, min(tau, T)]: ``x ~ Poisson(lambda w)`` with ``w = min(tau, T)``, and the last of x
    uniform times on (0, w] is ``w U^(1/x)``."""
    T = np.asarray(T, dtype=np.float64).ravel()
    n = T.size
    lam = rng.gamma(r, 1.0 / alpha, n)
    mu = rng.gamma(s, 1.0 / beta, n)
    with np.errstate(divide="ignore"):
        tau = rng.exponential(1.0, n) / mu
    w = np.minimum(tau, T)
    x = rng.poisson(lam * w).astype(np.int64)
    t_x = np.zeros(n)
    has = x > 0
    t_x[has] = w[has] * rng.random(int(has.sum())) ** (1.0 / x[has])
    if day_resolution:
        _on_day_grid(t_x, T, has)
    return x, t_x, T


def simulate_gamma_gamma_spend(p: float, q: float, gamma: float, frequency: npt.ArrayLike,
                               rng: np.random.Generator) -> np.ndarray:
    """Mean repeat-transaction value per customer (0 where ``frequency == 0``)."""
    x = np.asarray(frequency, dtype=np.float64).ravel()
    nu = rng.gamma(q, 1.0 / gamma, x.size)
    m = np.zeros(x.size)
    has = x > 0
    m[has] = rng.gamma(p * x[has], 1.0 / (x[has] * nu[has]))
    return m
