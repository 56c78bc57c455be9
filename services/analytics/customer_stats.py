"""The customer distributions the dashboard draws, computed as one batch over the summaries.

Churn risk, P(alive) and predicted lifetime value of every customer, as histograms, and the
P(alive) matrix of the current BG/NBD fit (lifetimes' `plot_probability_alive_matrix`: frequency ×
recency for a customer as old as the oldest). One row per customer is read from
`customer_summaries` (never the event log) and scored vectorised exactly as a profile is
(shared.analytics.profiles), so a histogram counts the values the customers' profiles show. The
result is one MongoDB document, replaced every CUSTOMER_STATS_SECONDS by beat and after each fit:
a dashboard refresh reads that document, whatever the population.
"""
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from services.analytics.fitting import query_numbers
from shared.analytics.fitted_models import FittedModel
from shared.analytics.profiles import count_ahead_as_now, model_inputs, predict
from shared.analytics.stats import churn_risks
from shared.analytics.stats.registry import MODELS as PURCHASE_MODELS
from shared.contracts.event_time import EPOCH
from shared.infra.mongo import CUSTOMER_STATS

# A customer's churn risk and P(alive) in tenths; predicted LTV on a roughly logarithmic scale
# (most customers are worth little, a few a lot), the last bin open-ended.
CHURN_EDGES = [float(v) for v in range(0, 101, 10)]
P_ALIVE_EDGES = [round(v / 10, 1) for v in range(11)]
LTV_EDGES = [0.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0]
MATRIX_MAX_FREQUENCY = 30  # rows: repeat purchase days 0..this (or the largest seen, when fewer)
MATRIX_RECENCY_STEPS = 24  # columns: recency from 0 to the oldest customer's age, in this many steps

_SUMMARIES = """
    SELECT first_day - DATE '1970-01-01', last_day - DATE '1970-01-01', purchase_days,
           CAST(spent AS float8), CAST(first_day_spent AS float8), extract(epoch FROM last_purchase_at)
    FROM customer_summaries"""


def histogram(values: np.ndarray, edges: list[float], open_ended: bool = False) -> dict[str, Any]:
    """Counts per bin [edges[i], edges[i+1]); the last bin is closed ([.., 100] for a percentage),
    or, `open_ended`, takes everything above the last edge too."""
    values = values[np.isfinite(values)]
    bins = np.array(edges + ([np.inf] if open_ended else []), dtype=np.float64)
    counts, _ = np.histogram(np.clip(values, bins[0], None), bins=bins)
    return {"edges": edges, "counts": [int(c) for c in counts], "open_ended": open_ended}


def _summary(values: np.ndarray) -> dict[str, Any]:
    values = values[np.isfinite(values)]
    if not values.size:
        return {"mean": None, "median": None, "p90": None, "total": None}
    return {"mean": round(float(values.mean()), 2), "median": round(float(np.median(values)), 2),
            "p90": round(float(np.quantile(values, 0.9)), 2), "total": round(float(values.sum()), 2)}


def p_alive_matrix(model: FittedModel, max_frequency: int, max_age_weeks: float) -> dict[str, Any]:
    frequency = np.arange(max_frequency + 1, dtype=np.float64)
    recency = np.linspace(0.0, max_age_weeks, MATRIX_RECENCY_STEPS + 1)
    x, t_x = np.meshgrid(frequency, recency, indexing="ij")
    # Without a repeat purchase there is no recency (BG/NBD: P(alive) is 1 on that row).
    t_x = np.where(x == 0, 0.0, t_x)
    values = PURCHASE_MODELS[model.scoring_model].probability_alive(
        model.purchase, x.ravel(), t_x.ravel(), np.full(x.size, max_age_weeks))
    return {
        "frequency": [int(f) for f in frequency],
        "recency_weeks": [round(float(r), 2) for r in recency],
        "age_weeks": round(float(max_age_weeks), 2),
        "p_alive": [[round(float(v), 4) for v in row] for row in values.reshape(x.shape)],
    }


def read_summaries(session: Session) -> np.ndarray:
    """One row per customer: first and last purchase day (days since 1970), purchase days, spent,
    the first day's spend, the last purchase instant (seconds since 1970)."""
    return query_numbers(session, _SUMMARIES, 6)


def compute(rows: np.ndarray, model: FittedModel | None, now: datetime | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    first, last, purchase_days, spent, first_day_spent, last_purchase_at = (
        rows.T if rows.size else np.zeros((6, 0)))
    # Events may be stamped up to a day ahead (shared.contracts.schemas): such a purchase counts as made now,
    # here as in a profile (shared.analytics.profiles.count_ahead_as_now, the one rule for both).
    today = (now.date() - EPOCH).days
    first, last, last_purchase_at = count_ahead_as_now(first, last, last_purchase_at, now)
    # As a profile counts them: whole days since the last purchase instant; the models' inputs
    # as everywhere (shared.analytics.profiles.model_inputs).
    days = np.floor((now.timestamp() - last_purchase_at) / 86400.0)
    x, t_x, T, m = model_inputs(first, last, purchase_days, spent, first_day_spent, today)
    doc: dict[str, Any] = {
        "computed_at": now,
        "customers": int(rows.shape[0]),
        "churn_risk": histogram(np.round(churn_risks(days), 1), CHURN_EDGES),
        "model_version": None,
        "scoring_model": None,
        "p_alive": None,
        "p_alive_by_buyers": None,
        "predicted_ltv": None,
        "p_alive_matrix": None,
    }
    if model is not None and model.purchase is not None and rows.size:
        # Rounded as a profile shows them (shared.analytics.profiles._number): a value at a bin
        # edge falls in the bin its profile's number does.
        scores = {name: np.round(values, 4) for name, values in predict(model, x, t_x, T, m).items()}
        doc["model_version"] = model.version
        doc["scoring_model"] = model.scoring_model
        doc["p_alive"] = histogram(scores["p_alive"], P_ALIVE_EDGES)
        # One-time buyers apart: BG/NBD gives every one of them P(alive) = 1 (a customer drops out
        # only after a repeat purchase), the spike at 1.0 of the histogram above.
        doc["p_alive_by_buyers"] = {"one_time": histogram(scores["p_alive"][x == 0], P_ALIVE_EDGES),
                                    "repeat": histogram(scores["p_alive"][x > 0], P_ALIVE_EDGES)}
        if np.isfinite(scores["clv"]).any():
            doc["predicted_ltv"] = histogram(scores["clv"], LTV_EDGES, open_ended=True) | _summary(scores["clv"])
        doc["p_alive_matrix"] = p_alive_matrix(model, int(min(x.max(), MATRIX_MAX_FREQUENCY)), float(T.max()))
    doc["compute_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return doc


def store(db, doc: dict[str, Any]) -> None:
    db[CUSTOMER_STATS].replace_one({"_id": "current"}, {"_id": "current", **doc}, upsert=True)
