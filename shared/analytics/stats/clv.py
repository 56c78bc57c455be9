"""Customer lifetime value from BG/NBD (counts) and Gamma-Gamma (spend).

Same discounted-cash-flow method as ``lifetimes``' ``GammaGammaFitter.customer_lifetime_value``
(``lifetimes.utils._customer_lifetime_value``) with ``freq="W"``, i.e. time in WEEKS:

    CLV = sum_{k=1..H} E[M] * (E[Y(k*f) | x,t_x,T] - E[Y((k-1)*f) | x,t_x,T]) / (1 + d)^k

where ``f = 4.345`` weeks per month (lifetimes' constant for ``freq="W"``), ``H`` is the horizon
in months (default 12, lifetimes' default ``time=12``), ``d`` the MONTHLY discount rate (default
0.01, lifetimes' default ``discount_rate=0.01``), ``E[Y]`` is FHL (2005) eq. 10 and ``E[M]`` the
Gamma-Gamma conditional expected average spend (Fader & Hardie 2013, eq. 5).

Vectorised over customers; the only loop is over the H months (12 by default).  P(alive) is
common to every month and computed once; the hypergeometric factor depends on (x, T) only and
is evaluated per distinct (x, T) pair.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .bgnbd import BGNBDParams, _ConditionalCurve, _validate
from .gamma_gamma import GammaGammaParams, conditional_expected_average_spend

__all__ = ["customer_lifetime_value", "WEEKS_PER_MONTH"]

WEEKS_PER_MONTH = 4.345


def customer_lifetime_value(
    bgnbd: BGNBDParams,
    gg: GammaGammaParams,
    frequency: npt.ArrayLike,
    recency: npt.ArrayLike,
    T: npt.ArrayLike,
    monetary_value: npt.ArrayLike,
    horizon_months: int = 12,
    monthly_discount_rate: float = 0.01,
) -> np.ndarray:
    """Discounted expected revenue per customer over ``horizon_months`` (time unit: weeks)."""
    if horizon_months < 0 or int(horizon_months) != horizon_months:
        raise ValueError("horizon_months must be a non-negative integer")
    if monthly_discount_rate <= -1:
        raise ValueError("monthly_discount_rate must be > -1")
    x, t_x, T = _validate(frequency, recency, T)
    spend = conditional_expected_average_spend(gg, x, monetary_value)
    curve = _ConditionalCurve(bgnbd, x, t_x, T)   # E[Y(t) | history], reused for every month

    clv = np.zeros(curve.shape, dtype=np.float64)
    prev = np.zeros_like(clv)
    for k in range(1, int(horizon_months) + 1):
        cur = curve(k * WEEKS_PER_MONTH)
        clv += spend * (cur - prev) / (1.0 + monthly_discount_rate) ** k
        prev = cur
    return clv
