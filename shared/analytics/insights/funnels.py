"""Funnels over person_events (issue 24).

A person (a user, or a visitor not yet identified) enters at their FIRST step-1 event matching its
`where` with start <= at < end; step k counts at the earliest matching event after step k-1's and
no later than entry + window_seconds. Step 1 is one range read of the (event_type, at, person_id)
index; every further step is, per person still in the funnel, one indexed lookup of
(person_id, event_type, at) ordered by time (a LATERAL subquery with LIMIT 1): the cost grows with
the persons who entered and the steps, never with the whole event log.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

Scalar = str | int | float | bool
NONE_KEY = "(none)"
COUNTRY, SEGMENT, SIGNUP_WEEK = "country", "segment", "signup_week"
BREAKDOWNS = (COUNTRY, SEGMENT, SIGNUP_WEEK)
_USER = "LEFT JOIN users bu ON bu.id = e.person_id"
# (joins from a funnel path `e` to what the key reads, the key): a visitor (negative id) joins no user.
_BREAKDOWN_SQL = {
    COUNTRY: (f"{_USER} LEFT JOIN addresses ba ON ba.id = bu.address_id LEFT JOIN cities bc ON bc.id = ba.city_id "
              "LEFT JOIN countries bco ON bco.id = bc.country_id", "bco.code"),
    SEGMENT: (_USER, "bu.segment"),
    SIGNUP_WEEK: (_USER, "to_char(date_trunc('week', bu.created_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD')"),
}


@dataclass(frozen=True)
class FunnelStep:
    event_type: str
    where: dict[str, Scalar] = field(default_factory=dict)


@dataclass(frozen=True)
class FunnelQuery:
    steps: list[FunnelStep]
    window_seconds: int
    start: datetime
    end: datetime
    breakdown: str | None = None
    cohort: str | None = None


def paths_sql(query: FunnelQuery, prefix: str, members: str | None = None) -> tuple[str, dict[str, Any]]:
    """SQL selecting (person_id, t1, ..., tN) of every person who entered the funnel (t_k null
    from the first step they did not reach), and its parameters (named with `prefix`). `members`:
    SQL selecting the person ids the funnel is restricted to (a saved cohort)."""
    params: dict[str, Any] = {f"{prefix}start": query.start, f"{prefix}end": query.end,
                              f"{prefix}window": query.window_seconds}

    def matches(alias: str, k: int, step: FunnelStep) -> str:
        params[f"{prefix}e{k}"] = step.event_type
        condition = f"{alias}.event_type = :{prefix}e{k}"
        if step.where:
            params[f"{prefix}w{k}"] = json.dumps(step.where)
            condition += f" AND {alias}.properties @> CAST(:{prefix}w{k} AS jsonb)"
        return condition

    entry = (f"SELECT s.person_id, min(s.at) AS t1 FROM person_events s WHERE {matches('s', 1, query.steps[0])} "  # nosec B608
             f"AND s.at >= :{prefix}start AND s.at < :{prefix}end")
    if members is not None:
        entry += f" AND s.person_id IN ({members})"
    entry += " GROUP BY s.person_id"
    columns, joins, previous = ["e.person_id", "e.t1"], [], "e.t1"
    for k, step in enumerate(query.steps[1:], start=2):
        joins.append(
            f"LEFT JOIN LATERAL (SELECT x.at AS t FROM person_events x WHERE x.person_id = e.person_id "  # nosec B608
            f"AND {matches('x', k, step)} AND x.at > {previous} "
            f"AND x.at <= e.t1 + CAST(:{prefix}window AS integer) * interval '1 second' "
            f"ORDER BY x.at LIMIT 1) s{k} ON true")
        columns.append(f"s{k}.t AS t{k}")
        previous = f"s{k}.t"
    return f"SELECT {', '.join(columns)} FROM ({entry}) e {' '.join(joins)}", params  # nosec B608


def funnel(session: Session, query: FunnelQuery) -> dict[str, Any]:
    """The funnel as POST /api/analytics/funnels answers it. Raises cohorts.UnknownCohort."""
    # Imported here: a saved cohort may itself be defined by a funnel (cohorts imports this module).
    from shared.analytics.insights import cohorts

    members = None
    params: dict[str, Any] = {}
    if query.cohort is not None:
        members, params = cohorts.members_of(session, query.cohort, "cohort")
    paths, path_params = paths_sql(query, "f_", members)
    params.update(path_params)
    n = len(query.steps)
    aggregates = [f"count(p.t{k}) AS n{k}" for k in range(1, n + 1)] + [
        f"percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM p.t{k} - p.t{k - 1})) AS m{k}"
        for k in range(2, n + 1)]
    if query.breakdown is None:
        row = session.execute(text(f"SELECT {', '.join(aggregates)} FROM ({paths}) p"), params).one()  # nosec B608
        return {"steps": _steps(query, row._mapping), "breakdown": None}
    joins, key = _BREAKDOWN_SQL[query.breakdown]
    keyed = f"SELECT COALESCE({key}, '{NONE_KEY}') AS bkey, e.* FROM ({paths}) e {joins}"  # nosec B608
    rows = session.execute(text(
        f"SELECT p.bkey, GROUPING(p.bkey) AS total, {', '.join(aggregates)} FROM ({keyed}) p "  # nosec B608
        "GROUP BY GROUPING SETS ((), (p.bkey))"), params).all()
    overall = next(row for row in rows if row.total == 1)
    return {"steps": _steps(query, overall._mapping),
            "breakdown": {row.bkey: _steps(query, row._mapping)
                          for row in sorted((r for r in rows if r.total == 0), key=lambda r: r.bkey)}}


def _ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def _steps(query: FunnelQuery, row: Any) -> list[dict[str, Any]]:
    first = int(row["n1"])
    out, previous = [], first
    for k, step in enumerate(query.steps, start=1):
        persons = int(row[f"n{k}"])
        median = row.get(f"m{k}")
        out.append({
            "event_type": step.event_type,
            "persons": persons,
            "conversion_from_previous": _ratio(persons, previous),
            "conversion_from_first": _ratio(persons, first),
            "median_seconds_to_convert": round(float(median), 3) if median is not None else None,
        })
        previous = persons
    return out


def to_params(query: FunnelQuery) -> dict[str, Any]:
    """The query as JSON (a job's params, a cache key, a saved cohort's reached_step)."""
    return {"steps": [{"event_type": s.event_type, "where": s.where} for s in query.steps],
            "window_seconds": query.window_seconds, "from": query.start.isoformat(), "to": query.end.isoformat(),
            "breakdown": query.breakdown, "cohort": query.cohort}


def from_params(params: dict[str, Any]) -> FunnelQuery:
    return FunnelQuery(
        steps=[FunnelStep(s["event_type"], dict(s.get("where") or {})) for s in params["steps"]],
        window_seconds=int(params["window_seconds"]), start=datetime.fromisoformat(params["from"]),
        end=datetime.fromisoformat(params["to"]), breakdown=params.get("breakdown"), cohort=params.get("cohort"))
