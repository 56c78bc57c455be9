"""Fitting the population model from the customer summaries (never the raw event log).

One fit computes, together, everything scoring a customer needs about the others: every purchase
model (BG/NBD, Pareto/NBD, MBG/NBD) and Gamma-Gamma on the summaries as of `as_of` (the end of the observation period),
the RFM quintile
breakpoints and the co-purchase weights of the recommendations over the customers as they are
now. It reads one row per customer (plus, for a past `as_of`, the purchase days of the customers
who bought since) and one row per customer and category, so its cost grows with the number of
customers, not of purchases.
"""
import io
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.analytics import fitted_models
from shared.analytics.profiles import model_inputs
from shared.analytics.stats import (
    CoPurchases,
    fit_co_purchases,
    fit_gamma_gamma,
    quintile_breakpoints,
)
from shared.analytics.stats.registry import MODELS as PURCHASE_MODELS
from shared.contracts.event_time import EPOCH
from shared.contracts.settings import get_settings
from shared.infra.logging import get_logger

log = get_logger("pulse.analytics.fit")

_SUMMARIES = """
    SELECT user_id, first_day - DATE '1970-01-01', last_day - DATE '1970-01-01', purchase_days,
           CAST(spent AS float8), CAST(first_day_spent AS float8)
    FROM customer_summaries ORDER BY user_id"""

# Customers who bought after `as_of`: their summary as of that day, from their purchase days.
_SUMMARIES_AS_OF = """
    SELECT p.user_id, min(p.day) - DATE '1970-01-01', max(p.day) - DATE '1970-01-01', count(*),
           CAST(sum(p.spent) AS float8), CAST(sum(p.spent) FILTER (WHERE p.day = s.first_day) AS float8)
    FROM purchase_days p JOIN customer_summaries s USING (user_id)
    WHERE s.last_day > CAST({as_of} AS date) AND s.first_day <= CAST({as_of} AS date)
      AND p.day <= CAST({as_of} AS date)
    GROUP BY p.user_id ORDER BY p.user_id"""

_CATEGORIES = "SELECT DISTINCT category FROM customer_categories"

_BASKETS = """
    SELECT c.user_id, k.code - 1 FROM customer_categories c
    JOIN unnest(CAST({categories} AS text[])) WITH ORDINALITY AS k(category, code) USING (category)"""


def query_numbers(session: Session, query: str, columns: int, literals: dict | None = None) -> np.ndarray:
    """A numeric query's rows as a float64 array, through COPY: reading a million rows as Python
    tuples costs seconds, parsing COPY's text with numpy a fraction of that. `literals` fill the
    query's {name} fields (COPY takes no parameters)."""
    raw = session.connection().connection.driver_connection
    assert raw is not None  # None only once a pooled connection is invalidated; this one is checked out
    statement = sql.SQL("COPY ({}) TO STDOUT").format(
        sql.SQL(query).format(**{k: sql.Literal(v) for k, v in (literals or {}).items()}))
    buffer = io.BytesIO()
    with raw.cursor() as cursor:
        with cursor.copy(statement) as copy:
            for block in copy:
                buffer.write(block)
    data = buffer.getvalue()
    if not data:
        return np.zeros((0, columns))
    values = np.array(data.replace(b"\\N", b"nan").split(), dtype=np.float64)
    return values.reshape(-1, columns)


def population_statistics(session: Session, summaries: np.ndarray) -> dict[str, Any]:
    """RFM breakpoints over every customer now, and the co-purchase weights."""
    _, _, last, purchase_days, spent, _ = summaries.T if summaries.size else np.zeros((6, 0))
    categories = sorted(row[0] for row in session.execute(text(_CATEGORIES)))
    baskets = query_numbers(session, _BASKETS, 2, {"categories": categories}).astype(np.int64)
    co = fit_co_purchases(baskets[:, 0], baskets[:, 1]) if baskets.size else fit_co_purchases([], [])
    names = np.asarray(categories, dtype=object)
    co = CoPurchases(names[co.items.astype(np.int64)] if co.items.size else co.items, co.popularity, co.weights)
    return {
        "customers": int(summaries.shape[0]),
        "categories": len(categories),
        "rfm": {
            "recency": quintile_breakpoints(last),
            "frequency": quintile_breakpoints(purchase_days),
            "monetary": quintile_breakpoints(spent),
        },
        "co_purchases": co.to_document(),
    }


def fit_purchase_models(x, t_x, T) -> dict[str, Any]:
    """Every purchase model of the registry fitted on (x, t_x, T): name -> params, or the reason
    the data do not identify it (a string), so that one model the data cannot fit does not stop
    the others."""
    fitted: dict[str, Any] = {}
    for name in sorted(PURCHASE_MODELS):
        try:
            fitted[name] = PURCHASE_MODELS[name].fit(x, t_x, T)
        except ValueError as exc:  # UnidentifiedModel among them: no repeat buyers, every T = 0, ...
            fitted[name] = str(exc) or type(exc).__name__
        except (ArithmeticError, np.linalg.LinAlgError) as exc:
            # An optimiser that ran off to infinity on awkward data: that model has no fit here,
            # said as such; the others (and the scoring model, if it is another) still serve.
            log.warning("purchase_model_not_fitted", model=name, customers=int(np.size(x)),
                        error=f"{type(exc).__name__}: {exc}")
            fitted[name] = f"the {name} fit failed numerically ({type(exc).__name__}: {exc})"
    return fitted


def last_complete_day(now: datetime | None = None) -> date:
    """The scheduled refit's end of observation: yesterday (UTC). Today is only partly observed (at
    03:00, three hours of it), and counting it as a whole day biases the young customers' rates and
    P(alive) down."""
    now = now or datetime.now(UTC)
    return now.astimezone(UTC).date() - timedelta(days=1)


@dataclass(frozen=True)
class PurchaseFit:
    """The models fitted on the customers' purchases up to a day, and what was read for them."""

    models: dict[str, Any]  # name -> params, or why it could not be fitted
    # GammaGammaParams or None; Any because its fit report (converged, at_bounds, ...) is added at run
    # time by stats.params.fitted_params, which mypy cannot see.
    gamma_gamma: Any
    current: np.ndarray  # every customer's summary as it is now (the population statistics read it)
    read_at: float
    as_of_read_at: float
    fitted_at: float


def fit_purchases(session: Session, as_of: date, scoring: str) -> PurchaseFit:
    """Every purchase model and Gamma-Gamma on every customer's purchases up to and including
    `as_of` (ValueError when there are too few customers, or the scoring model cannot be fitted)."""
    current = query_numbers(session, _SUMMARIES, 6)
    read = time.perf_counter()
    cutoff = (as_of - EPOCH).days
    rows = current[current[:, 1] <= cutoff] if current.size else current
    bought_since = rows[:, 2] > cutoff if rows.size else np.zeros(0, dtype=bool)
    if bought_since.any():
        earlier = query_numbers(session, _SUMMARIES_AS_OF, 6, {"as_of": as_of})
        rows = np.concatenate([rows[~bought_since], earlier])
    if rows.shape[0] < 2:
        raise ValueError(f"need purchases of at least 2 customers up to {as_of}, found {rows.shape[0]}")
    _, first, last, purchase_days, spent, first_day_spent = rows.T
    x, t_x, T, m = model_inputs(first, last, purchase_days, spent, first_day_spent, cutoff)
    as_of_read = time.perf_counter()
    models = fit_purchase_models(x, t_x, T)
    if isinstance(models[scoring], str):
        raise ValueError(f"the scoring model {scoring} cannot be fitted on the purchases up to {as_of}: "
                         f"{models[scoring]}")
    gamma_gamma = fit_gamma_gamma(x, m) if int(((x > 0) & (m > 0)).sum()) >= 2 else None
    return PurchaseFit(models, gamma_gamma, current, read, as_of_read, time.perf_counter())


def fit_population(db, session: Session, as_of: date) -> dict[str, Any]:
    """Fit every purchase model and Gamma-Gamma on every customer's purchases up to and including
    `as_of`, with the population statistics, and store them as the next model version (SCORING_MODEL
    names the purchase model profiles use; it must be fitted, the others may fail with a reason)."""
    started = time.perf_counter()
    scoring = get_settings().scoring_model
    fit = fit_purchases(session, as_of, scoring)
    models, gamma_gamma, current = fit.models, fit.gamma_gamma, fit.current
    read, as_of_read, fitted = fit.read_at, fit.as_of_read_at, fit.fitted_at
    population = population_statistics(session, current)
    done = time.perf_counter()
    timings = {
        "read_summaries": round((as_of_read - started) * 1000, 1),
        "fit": round((fitted - as_of_read) * 1000, 1),
        "population_statistics": round((done - fitted) * 1000, 1),
        "total": round((done - started) * 1000, 1),
    }
    model = fitted_models.save(db, as_of, models, scoring, gamma_gamma, population, timings)
    bgnbd = models[scoring]
    log.info(
        "models_fitted", version=model["version"], as_of=model["as_of"], customers=bgnbd.n_customers,
        scoring_model=scoring, bgnbd_converged=bgnbd.converged, bgnbd_at_bounds=list(bgnbd.at_bounds),
        not_fitted={name: reason for name, reason in models.items() if isinstance(reason, str)},
        gamma_gamma_converged=gamma_gamma.converged if gamma_gamma else None,
        gamma_gamma_at_bounds=list(gamma_gamma.at_bounds) if gamma_gamma else None,
        summaries_read_ms=round((read - started) * 1000, 1), **{f"{k}_ms": v for k, v in timings.items()},
    )
    return model
