"""Retention (issue 24): the cohort x period matrix, exact for every cohort.

signup: a cohort is the users who signed up in a period (users.created_at, UTC); period 0 is that
period and counts everyone (active[0] = size); a later period counts the users with an event (of
event_type, or of any type) in it. first_event: a cohort is the persons (visitors not yet identified
included) whose first event of event_type falls in the period; "active" is an event of that type.

Reads: the cohort's members (users by created_at, or the event type's events in the cohort range
through the (event_type, at, person_id) index plus, per candidate, one lookup for an earlier such
event), then per member one range read of (person_id, event_type, at) over the N periods that
follow: the cost grows with the cohorts' persons and their events in those periods. person_events
rather than activity_days: the same rows answer every question (visitors included, an event type
or not) with the same clock-corrected times the funnels use; per person the index range is as
short as the rollup's.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.analytics.insights import cohorts, periods

SIGNUP, FIRST_EVENT = "signup", "first_event"
COHORT_TYPES = (SIGNUP, FIRST_EVENT)


@dataclass(frozen=True)
class RetentionQuery:
    cohort: str
    period: str
    periods: int
    event_type: str | None = None
    start: date | None = None
    end: date | None = None
    in_cohort: str | None = None


def resolved(query: RetentionQuery, today: date | None = None) -> RetentionQuery:
    """The query with its default range: the `periods` cohorts up to today's (from = the period
    start `periods - 1` periods before today's, to = tomorrow)."""
    today = today or datetime.now(UTC).date()
    start = query.start or periods.add(periods.floor(today, query.period), query.period, 1 - query.periods)
    end = query.end or date.fromordinal(today.toordinal() + 1)
    return RetentionQuery(query.cohort, query.period, query.periods, query.event_type, start, end, query.in_cohort)


def retention(session: Session, query: RetentionQuery, today: date | None = None) -> dict[str, Any]:
    """The matrix as GET /api/analytics/retention answers it. Raises cohorts.UnknownCohort."""
    today = today or datetime.now(UTC).date()
    query = resolved(query, today)
    assert query.start is not None and query.end is not None  # resolved() fills both
    unit = query.period
    # Cohort periods whose start is in [floor(start), end): members joined from lo to hi.
    lo = periods.floor(query.start, unit)
    hi = periods.ceil(query.end, unit)
    params: dict[str, Any] = {"lo": datetime(lo.year, lo.month, lo.day, tzinfo=UTC),
                              "hi": datetime(hi.year, hi.month, hi.day, tzinfo=UTC),
                              "span": f"{query.periods} {unit}", "event_type": query.event_type}
    restrict = ""
    if query.in_cohort is not None:
        members, member_params = cohorts.members_of(session, query.in_cohort, "in_cohort")
        params.update(member_params)
        restrict = f" AND {{id}} IN ({members})"
    typed = " AND pe.event_type = :event_type" if query.event_type is not None else ""
    if query.cohort == SIGNUP:
        members_cte = (
            f"SELECT CAST(u.id AS bigint) AS person_id, {periods.bucket_sql('u.created_at', unit)} AS cohort "  # nosec B608
            "FROM users u WHERE u.created_at >= :lo AND u.created_at < :hi" + restrict.format(id="u.id"))
    else:
        members_cte = (
            f"SELECT c.person_id, {periods.bucket_sql('c.first_at', unit)} AS cohort FROM ("  # nosec B608
            "SELECT person_id, min(at) AS first_at FROM person_events WHERE event_type = :event_type "
            "AND at >= :lo AND at < :hi GROUP BY person_id) c "
            "WHERE NOT EXISTS (SELECT 1 FROM person_events x WHERE x.person_id = c.person_id "
            "AND x.event_type = :event_type AND x.at < :lo)" + restrict.format(id="c.person_id"))
    index = periods.index_sql("pe.at", "m.cohort", unit)
    rows = session.execute(text(
        f"WITH members AS ({members_cte}) "  # nosec B608
        "SELECT m.cohort, 0 AS p, count(*) AS persons FROM members m GROUP BY m.cohort "
        "UNION ALL "
        "SELECT m.cohort, a.p, count(*) FROM members m CROSS JOIN LATERAL ("
        f"SELECT DISTINCT {index} AS p FROM person_events pe WHERE pe.person_id = m.person_id{typed} "
        f"AND pe.at >= {periods.utc_sql('m.cohort')} "
        f"AND pe.at < (CAST(m.cohort AS timestamp) + CAST(:span AS interval)) AT TIME ZONE 'UTC') a "
        "WHERE a.p > 0 GROUP BY m.cohort, a.p"), params).all()
    active: dict[date, dict[int, int]] = {}
    for row in rows:
        active.setdefault(row.cohort, {})[int(row.p)] = int(row.persons)
    matrix = []
    for cohort in sorted(active):
        size = active[cohort][0]
        # A triangle: only the periods that have begun by today.
        begun = min(query.periods, periods.between(cohort, periods.floor(today, unit), unit) + 1)
        counts = [size] + [active[cohort].get(p, 0) for p in range(1, begun)]
        matrix.append({"cohort": cohort.isoformat(), "size": size, "active": counts,
                       "rates": [round(n / size, 3) for n in counts]})
    return {"period": unit, "cohort_type": query.cohort, "event_type": query.event_type, "cohorts": matrix}


def to_params(query: RetentionQuery) -> dict[str, Any]:
    return {"cohort": query.cohort, "period": query.period, "periods": query.periods, "event_type": query.event_type,
            "from": query.start.isoformat() if query.start else None,
            "to": query.end.isoformat() if query.end else None, "in_cohort": query.in_cohort}


def from_params(params: dict[str, Any]) -> RetentionQuery:
    return RetentionQuery(
        cohort=params["cohort"], period=params["period"], periods=int(params["periods"]),
        event_type=params.get("event_type"),
        start=date.fromisoformat(params["from"]) if params.get("from") else None,
        end=date.fromisoformat(params["to"]) if params.get("to") else None, in_cohort=params.get("in_cohort"))
