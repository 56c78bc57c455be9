"""The rolling-holdout history (`model_holdouts`, written by services.analytics.validation before
every scheduled refit), as the API, the metrics and the dashboard read it."""
from typing import Any

from sqlalchemy import desc, func, select
from sqlalchemy.orm import Session

from shared.contracts.tables import ModelHoldout


def describe(row: ModelHoldout) -> dict[str, Any]:
    detail = row.detail or {}
    return {
        "checked_at": row.checked_at.isoformat() if row.checked_at else None,
        "model_version": row.model_version,
        "model": row.model,
        "scoring": bool(detail.get("scoring")),
        "calibration_end": row.calibration_end.isoformat(),
        "holdout_end": row.holdout_end.isoformat(),
        "customers": row.customers,
        "weeks": round(row.weeks, 4),
        "actual_repeat_purchases": row.actual_repeat_purchases,
        "predicted_repeat_purchases": row.predicted_repeat_purchases,
        "mae": row.mae,
        "rmse": row.rmse,
        "by_calibration_frequency": detail.get("by_calibration_frequency", []),
        "weekly": detail.get("weekly", []),
    }


def history(session: Session, limit: int = 90) -> list[dict[str, Any]]:
    """The newest checks first."""
    rows = session.scalars(select(ModelHoldout).order_by(desc(ModelHoldout.checked_at), ModelHoldout.model)
                           .limit(limit)).all()
    return [describe(row) for row in rows]


def latest(session: Session) -> list[ModelHoldout]:
    """The newest check of each model (what the metrics export)."""
    newest = select(ModelHoldout.model, func.max(ModelHoldout.id).label("id")).group_by(ModelHoldout.model).subquery()
    return list(session.scalars(select(ModelHoldout).join(newest, newest.c.id == ModelHoldout.id)
                                .order_by(ModelHoldout.model)))
