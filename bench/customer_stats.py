"""Benchmark: the dashboard's customer distributions (services/analytics/customer_stats.py) as
the population grows, against the population fit on the same customers.

Simulates customers from the CDNOW parameters (BG/NBD r=0.243, alpha=4.414, a=0.793, b=2.426;
Gamma-Gamma p=6.25, q=3.74, gamma=15.44; first purchases uniform over the last 364 days), lays
them out as the rows `customer_summaries` gives (first and last purchase day, purchase days,
spent, first day's spend, last purchase instant), and times `customer_stats.compute` on them at
10,000, 100,000 and 1,000,000 customers: churn risk, P(alive) and CLV of everyone, histograms and
the P(alive) matrix. The Postgres read (COPY of one row per customer) is the fit's and is timed by
bench/scale.py; here the rows are handed over in memory. Baseline, same run, same customers: the
BG/NBD + Gamma-Gamma fit (services/analytics/fitting.py's core), the batch job it runs beside.

Targets: cost per customer at 1,000,000 within 1.5x of that at 10,000 (linear), and at the
largest size at most 5% of one analytics process (the computation every CUSTOMER_STATS_SECONDS,
default 60, the fit daily; the ratio to the fit is printed for scale). Needs no stack: `python bench/customer_stats.py
[--sizes 10000,100000,1000000]`.
"""
from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.analytics import customer_stats  # noqa: E402
from shared.analytics.fitted_models import FittedModel  # noqa: E402
from shared.analytics.stats import (  # noqa: E402
    BGNBDParams,
    GammaGammaParams,
    fit_bgnbd,
    fit_gamma_gamma,
    simulate_bgnbd,
    simulate_gamma_gamma_spend,
)
from shared.contracts.event_time import EPOCH  # noqa: E402
from shared.contracts.settings import get_settings  # noqa: E402

TRUE_BG = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
TRUE_GG = {"p": 6.25, "q": 3.74, "gamma": 15.44}


def summaries(n: int, now: datetime, rng: np.random.Generator) -> tuple[np.ndarray, tuple]:
    """Rows as customer_summaries holds them, and (x, t_x, T, m) for the fit."""
    today = (now.date() - EPOCH).days
    age_days = rng.integers(1, 365, n)
    x, t_x, T = simulate_bgnbd(**TRUE_BG, T=age_days / 7.0, rng=rng, day_resolution=True)
    m = simulate_gamma_gamma_spend(**TRUE_GG, frequency=x, rng=rng)
    first = today - age_days
    last = first + np.round(t_x * 7.0)
    first_day_spent = rng.gamma(TRUE_GG["p"], 1.0 / 0.4, n)
    spent = first_day_spent + x * m
    last_purchase_at = (last * 86400.0) + rng.uniform(0, 86400, n)
    rows = np.column_stack([first, last, x + 1, spent, first_day_spent, last_purchase_at]).astype(np.float64)
    return rows, (x, t_x, T, m)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    now = datetime.now(UTC)
    rng = np.random.default_rng(args.seed)
    model = FittedModel(1, BGNBDParams(**TRUE_BG, log_likelihood=0.0, n_customers=0),
                  GammaGammaParams(**TRUE_GG, log_likelihood=0.0, n_customers=0), None, None)
    print(f"{'customers':>10}{'stats s':>10}{'µs/customer':>13}{'fit s':>9}{'stats/fit':>11}  histogram sums")
    per_customer, seconds = {}, {}
    for n in sizes:
        rows, (x, t_x, T, m) = summaries(n, now, rng)
        started = time.perf_counter()
        doc = customer_stats.compute(rows, model, now)  # the rows the COPY read would give, in memory
        stats_s = time.perf_counter() - started
        started = time.perf_counter()
        fit_bgnbd(x, t_x, T)
        fit_gamma_gamma(x, m)  # as services/analytics/fitting.py calls it (it keeps the repeat buyers)
        fit_s = time.perf_counter() - started
        sums = {k: sum(doc[k]["counts"]) for k in ("churn_risk", "p_alive", "predicted_ltv")}
        if set(sums.values()) != {n}:
            raise SystemExit(f"a histogram lost customers: {sums}")
        per_customer[n] = stats_s / n * 1e6
        seconds[n] = stats_s
        print(f"{n:>10,}{stats_s:>10.3f}{per_customer[n]:>13.2f}{fit_s:>9.3f}{stats_s / fit_s:>11.3f}  "
              f"{sums['churn_risk']:,} each")
    growth = per_customer[sizes[-1]] / per_customer[sizes[0]]
    print(f"\ncost per customer, {sizes[-1]:,} vs {sizes[0]:,}: {growth:.2f}x  [target <= 1.5x: "
          f"{'met' if growth <= 1.5 else 'NOT MET'}]")
    interval = get_settings().customer_stats_seconds
    share = seconds[sizes[-1]] / interval
    print(f"share of one analytics process at {sizes[-1]:,} customers, every {interval:.0f} s: {100 * share:.1f}%  "
          f"[target <= 5%: {'met' if share <= 0.05 else 'NOT MET'}]")


if __name__ == "__main__":
    main()
