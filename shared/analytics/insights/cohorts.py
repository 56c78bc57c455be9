"""Saved cohorts (issue 24): a named filter over persons, evaluated when a query uses it.

A definition ANDs any of: `segment` (users.segment), `country` (ISO alpha-2 of the user's
address), `rfm_code` ("545", "x" for any digit: the RFM scores of the user's MongoDB profile),
`reached_step` ({"funnel": <funnel body>, "step": k}: persons who reached step k of that funnel)
and `event_in_last_days` ({"event_type", "days"}: persons with such an event since now - days).
Each filter is a set of person ids in SQL and the cohort is their INTERSECT, so a query restricted
to a cohort reads the same indexes as the filters themselves.

RFM codes live in the profile documents (shared.analytics.profiles writes `rfm` with each
rescoring), not in Postgres: the members are read from MongoDB by their scores (one find on
`profiles`, ids only) and handed to Postgres as an array. Copying the scores into users would
need a new column kept by every rescoring, for a filter that is used now and then.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from shared.analytics.insights import funnels
from shared.contracts.tables import Cohort

FILTERS = ("segment", "country", "rfm_code", "reached_step", "event_in_last_days")
RFM_PARTS = ("recency", "frequency", "monetary")


class UnknownCohort(Exception):
    """A query names a cohort that is not saved: `field` is the request field naming it."""

    def __init__(self, name: str, field: str) -> None:
        super().__init__(f"No saved cohort {name!r}: PUT /api/cohorts/<name> saves one")
        self.name = name
        self.field = field


def definition(session: Session, name: str) -> dict[str, Any] | None:
    return session.scalar(select(Cohort.definition).where(Cohort.name == name))


def rfm_filter(code: str) -> dict[str, Any]:
    """The MongoDB filter of profiles with this RFM code ("x": any score, but scored)."""
    wanted = {f"rfm.{part}": int(digit) for part, digit in zip(RFM_PARTS, code, strict=True) if digit != "x"}
    return wanted or {"rfm.recency": {"$gte": 1}}


def _rfm_members(code: str) -> list[int]:
    from shared.infra.mongo import PROFILES, get_database

    return [int(doc["_id"]) for doc in get_database()[PROFILES].find(rfm_filter(code), projection={"_id": 1})]


def members_sql(definition: dict[str, Any], prefix: str = "c_") -> tuple[str, dict[str, Any]]:
    """SQL selecting the person ids of the definition, and its parameters (named with `prefix`)."""
    parts: list[str] = []
    params: dict[str, Any] = {}
    if "segment" in definition:
        params[f"{prefix}segment"] = definition["segment"]
        parts.append(f"SELECT CAST(id AS bigint) AS person_id FROM users WHERE segment = :{prefix}segment")  # nosec B608
    if "country" in definition:
        params[f"{prefix}country"] = definition["country"]
        parts.append(
            "SELECT CAST(u.id AS bigint) AS person_id FROM users u JOIN addresses a ON a.id = u.address_id "  # nosec B608
            "JOIN cities c ON c.id = a.city_id JOIN countries co ON co.id = c.country_id "
            f"WHERE co.code = :{prefix}country")
    if "rfm_code" in definition:
        params[f"{prefix}rfm"] = _rfm_members(definition["rfm_code"])
        parts.append(f"SELECT unnest(CAST(:{prefix}rfm AS bigint[])) AS person_id")
    if "reached_step" in definition:
        reached = definition["reached_step"]
        query = funnels.from_params({**reached["funnel"], "breakdown": None, "cohort": None})
        paths, path_params = funnels.paths_sql(query, f"{prefix}r_")
        params.update(path_params)
        parts.append(f"SELECT r.person_id FROM ({paths}) r WHERE r.t{int(reached['step'])} IS NOT NULL")  # nosec B608
    if "event_in_last_days" in definition:
        recent = definition["event_in_last_days"]
        params[f"{prefix}recent_type"] = recent["event_type"]
        params[f"{prefix}recent_days"] = int(recent["days"])
        parts.append(
            f"SELECT DISTINCT person_id FROM person_events WHERE event_type = :{prefix}recent_type "  # nosec B608
            f"AND at >= now() - CAST(:{prefix}recent_days AS integer) * interval '1 day'")
    if not parts:
        raise ValueError("a cohort definition needs at least one filter")
    return " INTERSECT ".join(f"({part})" for part in parts), params


def members_of(session: Session, name: str, field: str, prefix: str = "c_") -> tuple[str, dict[str, Any]]:
    """members_sql of the saved cohort `name`; UnknownCohort (naming `field`) when none is saved."""
    found = definition(session, name)
    if found is None:
        raise UnknownCohort(name, field)
    return members_sql(found, prefix)


def count(session: Session, definition: dict[str, Any]) -> int:
    sql, params = members_sql(definition)
    return int(session.execute(text(f"SELECT count(*) FROM ({sql}) m"), params).scalar_one())  # nosec B608
