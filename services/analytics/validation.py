"""Calibration/holdout validation of the purchase models, on request and before every scheduled refit.

`validate(session, calibration_end, holdout_end)` fits every purchase model of the registry on the
customers' purchases up to `calibration_end` and compares what each predicts for the holdout
(`calibration_end`, `holdout_end`] with what the customers did: the total (Fader, Hardie & Lee's
sum of conditional expectations), the comparison by repeat purchases in calibration (their Figure
4: 0, 1, ..., 7+), the weekly cumulative tracking, and the per-customer MAE and RMSE, beside a
naive baseline (each customer's calibration rate of repeat purchase days carried on).

`rolling_check(db, session, end)` scores the stored model in use the same way against what its
customers did between its `as_of` and `end` (the last complete day), with the parameters it was
fitted with: the scheduled refit runs it first, so the history of how well each model predicted
is kept (`model_holdouts`), exported as `pulse_model_holdout_*` and drawn by the dashboard.

Both read one row per customer from `customer_summaries` and, for the customers who bought after
`calibration_end`, their purchase days after it (an index range of `purchase_days` per customer),
never the event log: the cost grows with the customers and the holdout's purchase days.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from services.analytics.fitting import fit_purchase_models, query_numbers
from shared.analytics import fitted_models, holdouts
from shared.analytics.stats.registry import MODELS as PURCHASE_MODELS
from shared.contracts.event_time import EPOCH
from shared.contracts.tables import ModelHoldout
from shared.infra.logging import get_logger

log = get_logger("pulse.analytics.validation")
FREQUENCY_GROUPS = 7  # by_calibration_frequency: 0, 1, ..., 6 and "7+" (Fader, Hardie & Lee's Figure 4)
BASELINE = "calibration_rate"

# Each customer whose first purchase is on or before the calibration end: first day, last day and
# purchase days as of the calibration end, and purchase days in the holdout. The summary row is
# the answer for a customer who has not bought since; only the others' later days are read.
_CUSTOMERS = """
    SELECT s.user_id, s.first_day - DATE '1970-01-01',
           CASE WHEN s.last_day <= CAST({cal} AS date) THEN s.last_day
                ELSE (SELECT max(p.day) FROM purchase_days p
                      WHERE p.user_id = s.user_id AND p.day <= CAST({cal} AS date)) END - DATE '1970-01-01',
           s.purchase_days - coalesce(later.days, 0), coalesce(later.holdout, 0)
    FROM customer_summaries s
    LEFT JOIN LATERAL (
        SELECT count(*) AS days, count(*) FILTER (WHERE p.day <= CAST({end} AS date)) AS holdout
        FROM purchase_days p
        WHERE s.last_day > CAST({cal} AS date) AND p.user_id = s.user_id AND p.day > CAST({cal} AS date)
    ) later ON true
    WHERE s.first_day <= CAST({cal} AS date)
    ORDER BY s.user_id"""

# The holdout's purchase days by week since the calibration end (0 = its first seven days).
_WEEKLY = """
    SELECT (p.day - CAST({cal} AS date) - 1) / 7, count(*)
    FROM customer_summaries s JOIN purchase_days p ON p.user_id = s.user_id
    WHERE s.first_day <= CAST({cal} AS date) AND s.last_day > CAST({cal} AS date)
      AND p.day > CAST({cal} AS date) AND p.day <= CAST({end} AS date)
    GROUP BY 1"""


class ValidationRefused(ValueError):
    """The request cannot be answered on these data; `field` names the request field it is about."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Split:
    calibration_end: date
    holdout_end: date
    x: np.ndarray  # repeat purchase days up to calibration_end
    t_x: np.ndarray  # weeks from the first purchase day to the last, up to calibration_end
    T: np.ndarray  # weeks from the first purchase day to calibration_end
    actual: np.ndarray  # purchase days in the holdout
    weekly_actual: np.ndarray  # holdout purchase days of everyone, per week of the holdout

    @property
    def days(self) -> int:
        return (self.holdout_end - self.calibration_end).days

    @property
    def weeks(self) -> float:
        return self.days / 7.0

    def week_ends(self) -> np.ndarray:
        """Weeks since the calibration end at the end of each week of the holdout (the last one
        possibly partial)."""
        return np.minimum(np.arange(1, self.weekly_actual.size + 1) * 7, self.days) / 7.0


def read_split(session: Session, calibration_end: date, holdout_end: date) -> Split:
    literals = {"cal": calibration_end, "end": holdout_end}
    rows = query_numbers(session, _CUSTOMERS, 5, literals)
    weekly = query_numbers(session, _WEEKLY, 2, literals)
    _, first, last, purchase_days, holdout = rows.T if rows.size else np.zeros((5, 0))
    cutoff = (calibration_end - EPOCH).days
    weeks = math.ceil((holdout_end - calibration_end).days / 7)
    weekly_actual = np.zeros(weeks, dtype=np.int64)
    if weekly.size:
        np.add.at(weekly_actual, weekly[:, 0].astype(np.int64), weekly[:, 1].astype(np.int64))
    return Split(calibration_end, holdout_end, x=purchase_days - 1, t_x=(last - first) / 7.0,
                 T=(cutoff - first) / 7.0, actual=holdout, weekly_actual=weekly_actual)


def _round(value: float, digits: int = 4) -> float:
    return round(float(value), digits)


def _errors(actual: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    difference = actual - predicted
    return {"mae": _round(np.abs(difference).mean()), "rmse": _round(np.sqrt(np.mean(difference ** 2)))}


def holdout_block(name: str, params, split: Split) -> dict[str, Any]:
    """What `params` of the model `name` predict for the split's holdout, beside what happened."""
    spec = PURCHASE_MODELS[name]
    # Customers with the same (x, t_x, T) have the same expectations: computed once per distinct
    # history (day-granular data has far fewer than customers), then counted or spread back.
    distinct, inverse = np.unique(np.column_stack([split.x, split.t_x, split.T]), axis=0, return_inverse=True)
    inverse = inverse.ravel()
    x, t_x, T = distinct.T
    weight = np.bincount(inverse, minlength=distinct.shape[0]).astype(np.float64)
    predicted = np.asarray(spec.conditional_expected_purchases(params, split.weeks, x, t_x, T), dtype=np.float64)
    if not np.isfinite(predicted).all():
        bad = int(weight[~np.isfinite(predicted)].sum())
        raise ValueError(f"{name} gives no finite expectation for {bad} customer(s)")
    predicted = predicted[inverse]
    # Every week's horizon at once (a column against the customers): the models evaluate their
    # per-(x, T) terms once for the whole curve.
    curve = np.asarray(spec.conditional_expected_purchases(params, split.week_ends()[:, None], x, t_x, T),
                       dtype=np.float64)
    cumulative = [float(v) for v in curve @ weight]
    group = np.minimum(split.x, FREQUENCY_GROUPS).astype(np.int64)
    by_frequency = []
    for g in range(FREQUENCY_GROUPS + 1):
        members = group == g
        count = int(members.sum())
        by_frequency.append({
            "frequency": f"{FREQUENCY_GROUPS}+" if g == FREQUENCY_GROUPS else g,
            "customers": count,
            "actual_mean": _round(split.actual[members].mean()) if count else None,
            "predicted_mean": _round(predicted[members].mean()) if count else None,
        })
    actual_cumulative = np.cumsum(split.weekly_actual)
    return {
        "predicted_repeat_purchases": _round(predicted.sum(), 2),
        "by_calibration_frequency": by_frequency,
        "weekly": [{"week": k + 1, "actual_cumulative": int(actual_cumulative[k]),
                    "predicted_cumulative": _round(cumulative[k], 2)} for k in range(len(cumulative))],
        **_errors(split.actual, predicted),
    }


def fit_document(name: str, params) -> dict[str, Any]:
    """A fitted model as a validation, the fit answer and the stored model show it."""
    names = PURCHASE_MODELS[name].parameter_names
    standard_errors = getattr(params, "standard_errors", None) or {}
    return {
        "parameters": {p: float(getattr(params, p)) for p in names},
        "standard_errors": {p: (float(standard_errors[p]) if p in standard_errors
                                and math.isfinite(standard_errors[p]) else None) for p in names},
        "log_likelihood": float(params.log_likelihood),
        "converged": bool(params.converged),
        "at_bounds": list(params.at_bounds),
    }


def baseline(split: Split) -> dict[str, Any]:
    """Each customer's repeat purchase days per week of calibration age, carried over the holdout
    (none for a customer first seen on the calibration end)."""
    rate = np.divide(split.x, split.T, out=np.zeros_like(split.x, dtype=np.float64), where=split.T > 0)
    predicted = rate * split.weeks
    return {"name": BASELINE, "predicted_repeat_purchases": _round(predicted.sum(), 2),
            **_errors(split.actual, predicted)}


def validate(session: Session, calibration_end: date, holdout_end: date) -> dict[str, Any]:
    started = time.perf_counter()
    if holdout_end <= calibration_end:
        raise ValidationRefused("holdout_end must be after calibration_end", "holdout_end")
    split = read_split(session, calibration_end, holdout_end)
    read = time.perf_counter()
    if split.x.size < 2:
        raise ValidationRefused(f"need purchases of at least 2 customers up to {calibration_end}, "
                                f"found {split.x.size}", "calibration_end")
    fitted = fit_purchase_models(split.x, split.t_x, split.T)
    fit_done = time.perf_counter()
    models: dict[str, Any] = {}
    for name, params in fitted.items():
        if isinstance(params, str):
            models[name] = {"error": params}
            continue
        try:
            models[name] = fit_document(name, params) | {"holdout": holdout_block(name, params, split)}
        except ValueError as exc:
            models[name] = {"error": str(exc)}
    if all("error" in m for m in models.values()):
        reasons = "; ".join(f"{name}: {m['error']}" for name, m in sorted(models.items()))
        raise ValidationRefused(f"no model can be fitted on the purchases up to {calibration_end} ({reasons})",
                                "calibration_end")
    done = time.perf_counter()
    return {
        "calibration_end": calibration_end.isoformat(),
        "holdout_end": holdout_end.isoformat(),
        "holdout": {"customers": int(split.x.size), "weeks": _round(split.weeks),
                    "actual_repeat_purchases": int(split.actual.sum())},
        "models": models,
        "baseline": baseline(split),
        "timings_ms": {"read": round((read - started) * 1000, 1), "fit": round((fit_done - read) * 1000, 1),
                       "predict": round((done - fit_done) * 1000, 1), "total": round((done - started) * 1000, 1)},
    }


# ----------------------------------------------------------------------------- the rolling holdout


def rolling_check(db, session: Session, end: date) -> list[dict[str, Any]]:
    """Score the stored model in use against its customers' purchases from its `as_of` to `end`,
    with every purchase model it stored, and keep the result (one `model_holdouts` row per model).
    Nothing to check (no model yet, or no complete day since it was fitted): []."""
    doc = fitted_models.latest(db)
    if doc is None:
        return []
    calibration_end = date.fromisoformat(doc["as_of"])
    if end <= calibration_end:
        return []
    model = fitted_models.decode(doc)
    split = read_split(session, calibration_end, end)
    if split.x.size == 0:
        return []
    checked = []
    now = datetime.now(UTC)
    for name, params in sorted(model.models.items()):
        try:
            block = holdout_block(name, params, split)
        except ValueError as exc:
            log.warning("holdout_not_scored", model=name, version=model.version, reason=str(exc))
            continue
        row = ModelHoldout(
            checked_at=now, model_version=model.version, model=name, calibration_end=calibration_end,
            holdout_end=end, customers=int(split.x.size), weeks=split.weeks,
            actual_repeat_purchases=int(split.actual.sum()),
            predicted_repeat_purchases=block["predicted_repeat_purchases"], mae=block["mae"], rmse=block["rmse"],
            detail={"by_calibration_frequency": block["by_calibration_frequency"], "weekly": block["weekly"],
                    "scoring": name == model.scoring_model},
        )
        session.add(row)
        checked.append(holdouts.describe(row))
    session.flush()
    log.info("rolling_holdout_checked", version=model.version, calibration_end=calibration_end.isoformat(),
             holdout_end=end.isoformat(), models=[c["model"] for c in checked])
    return checked
