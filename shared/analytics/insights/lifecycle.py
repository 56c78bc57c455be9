"""Lifecycle (issue 24), PostHog's definitions, per period:

* new: the person's first ever active period (first event, of event_type when given) is this one;
* returning: active this period and the previous one;
* resurrecting: active this period, not the previous one, and not new;
* dormant: active the previous period and not this one (answered as a negative count).

Reads the events of the range plus one period before it through the (event_type, at, person_id)
index (without an event type, for each type present: the types are found by a skip scan of that
index, one probe per type), and per person active in the range one probe of (person_id, ...) for
an event before their first period in the range: the cost grows with the range's events.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.analytics.insights import cohorts, periods

# The event types present, one index probe each (a loose index scan of (event_type, at, person_id)).
EVENT_TYPES_SQL = (
    "WITH RECURSIVE types(event_type) AS ("
    "(SELECT event_type FROM person_events ORDER BY event_type LIMIT 1) UNION ALL "
    "SELECT (SELECT x.event_type FROM person_events x WHERE x.event_type > t.event_type "
    "ORDER BY x.event_type LIMIT 1) FROM types t WHERE t.event_type IS NOT NULL) "
    "SELECT event_type FROM types WHERE event_type IS NOT NULL")


@dataclass(frozen=True)
class LifecycleQuery:
    period: str
    start: date
    end: date
    event_type: str | None = None
    in_cohort: str | None = None


def lifecycle(session: Session, query: LifecycleQuery) -> dict[str, Any]:
    """The chart as GET /api/analytics/lifecycle answers it: every period whose start is in
    [floor(start), end). Raises cohorts.UnknownCohort."""
    unit = query.period
    shown = periods.starts(query.start, query.end, unit)
    if not shown:
        return {"period": unit, "periods": []}
    before = periods.add(shown[0], unit, -1)
    after = periods.add(shown[-1], unit, 1)
    params: dict[str, Any] = {"lo": datetime(before.year, before.month, before.day, tzinfo=UTC),
                              "hi": datetime(after.year, after.month, after.day, tzinfo=UTC),
                              "event_type": query.event_type, "step": periods.interval(unit)}
    if query.event_type is not None:
        types = "e.event_type = :event_type"
        earlier_type = " AND x.event_type = :event_type"
    else:
        params["types"] = list(session.scalars(text(EVENT_TYPES_SQL)))
        types = "e.event_type = ANY(CAST(:types AS varchar[]))"
        earlier_type = ""
    restrict = ""
    if query.in_cohort is not None:
        members, member_params = cohorts.members_of(session, query.in_cohort, "in_cohort")
        params.update(member_params)
        restrict = f" AND e.person_id IN ({members})"
    rows = session.execute(text(
        f"WITH act AS (SELECT DISTINCT e.person_id, {periods.bucket_sql('e.at', unit)} AS p FROM person_events e "  # nosec B608
        f"WHERE {types} AND e.at >= :lo AND e.at < :hi{restrict}), "
        "firsts AS (SELECT person_id, min(p) AS p FROM act GROUP BY person_id), "
        "news AS (SELECT f.person_id, f.p FROM firsts f WHERE NOT EXISTS (SELECT 1 FROM person_events x "
        f"WHERE x.person_id = f.person_id{earlier_type} AND x.at < {periods.utc_sql('f.p')})), "
        "marked AS (SELECT a.p, n.person_id IS NOT NULL AS is_new, "
        "EXISTS (SELECT 1 FROM act b WHERE b.person_id = a.person_id "
        "AND b.p = CAST(a.p - CAST(:step AS interval) AS date)) AS was_active "
        "FROM act a LEFT JOIN news n ON n.person_id = a.person_id AND n.p = a.p) "
        "SELECT p, count(*) FILTER (WHERE is_new) AS \"new\", count(*) FILTER (WHERE was_active) AS \"returning\", "
        "count(*) FILTER (WHERE NOT is_new AND NOT was_active) AS resurrecting, 0 AS dormant "
        "FROM marked GROUP BY p "
        "UNION ALL "
        "SELECT CAST(a.p + CAST(:step AS interval) AS date), 0, 0, 0, count(*) FROM act a "
        "WHERE NOT EXISTS (SELECT 1 FROM act b WHERE b.person_id = a.person_id "
        "AND b.p = CAST(a.p + CAST(:step AS interval) AS date)) GROUP BY 1"), params).all()
    counts = {start: {"new": 0, "returning": 0, "resurrecting": 0, "dormant": 0} for start in shown}
    for row in rows:
        if row.p in counts:
            for name in ("new", "returning", "resurrecting"):
                counts[row.p][name] += int(row._mapping[name])
            counts[row.p]["dormant"] -= int(row.dormant)
    return {"period": unit, "periods": [{"period": start.isoformat(), **counts[start]} for start in shown]}


def to_params(query: LifecycleQuery) -> dict[str, Any]:
    return {"period": query.period, "from": query.start.isoformat(), "to": query.end.isoformat(),
            "event_type": query.event_type, "in_cohort": query.in_cohort}


def from_params(params: dict[str, Any]) -> LifecycleQuery:
    return LifecycleQuery(period=params["period"], start=date.fromisoformat(params["from"]),
                          end=date.fromisoformat(params["to"]), event_type=params.get("event_type"),
                          in_cohort=params.get("in_cohort"))
