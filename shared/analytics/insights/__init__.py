"""Insight queries over person_events (issue 24): funnels, retention, lifecycle, saved cohorts.

`answer` is what the API and the analytics worker's job both call: the answer of a query (its
params as JSON, the form a job stores) from the Redis cache under (query, saved cohorts it names,
data version), else computed and cached for INSIGHT_CACHE_SECONDS. The version is read before
computing: a batch that commits meanwhile bumps it, so what was computed from older rows is never
served under the newer version.

The queries' SQL is composed (steps, breakdowns, cohort filters vary in number): only fixed fragments,
step numbers, parameter names and one of three period words are spliced in; every value a client
sends is a bound parameter. The `# nosec B608` marks bandit's string-built-SQL warnings on those lines.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import redis
from sqlalchemy.orm import Session

from shared.analytics.insights import cohorts, funnels, lifecycle, retention
from shared.contracts.settings import get_settings
from shared.infra.cache import get_redis, key
from shared.infra.logging import get_logger
from shared.pipeline import data_version

log = get_logger(__name__)
FUNNEL, RETENTION, LIFECYCLE = "funnel", "retention", "lifecycle"
KINDS = (FUNNEL, RETENTION, LIFECYCLE)
HIT, MISS, BYPASS = "HIT", "MISS", "BYPASS"
# The request field naming the saved cohort a query is restricted to.
COHORT_FIELD = {FUNNEL: "cohort", RETENTION: "in_cohort", LIFECYCLE: "in_cohort"}


def compute(session: Session, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """The answer of the query, computed now. Raises cohorts.UnknownCohort."""
    if kind == FUNNEL:
        return funnels.funnel(session, funnels.from_params(params))
    if kind == RETENTION:
        return retention.retention(session, retention.from_params(params))
    if kind == LIFECYCLE:
        return lifecycle.lifecycle(session, lifecycle.from_params(params))
    raise ValueError(f"unknown insight kind {kind!r}")


def cache_key(session: Session, kind: str, params: dict[str, Any], version: int) -> str:
    """The Redis key of the answer: the query, the definition of the saved cohort it names (a
    redefined cohort is another question) and the data version. Raises cohorts.UnknownCohort."""
    name = params.get(COHORT_FIELD[kind])
    saved = None
    if name is not None:
        saved = cohorts.definition(session, name)
        if saved is None:
            raise cohorts.UnknownCohort(name, COHORT_FIELD[kind])
    digest = hashlib.sha256(json.dumps({"kind": kind, "params": params, "cohort": saved}, sort_keys=True,
                                       default=str).encode()).hexdigest()
    return key("insights", "answer", version, digest)


def answer(session: Session, kind: str, params: dict[str, Any],
           run: Callable[[], dict[str, Any]] | None = None) -> tuple[dict[str, Any], str]:
    """(answer, HIT | MISS | BYPASS): cached, else `run()` (default: compute in `session`) and cached.
    BYPASS: Redis is unreachable, the answer is computed and not cached."""
    try:
        cache = get_redis()
        name = cache_key(session, kind, params, data_version.current())
        found = cache.get(name)
    except redis.RedisError as exc:
        log.warning("insight_cache_unreadable", error=type(exc).__name__)
        return (run or (lambda: compute(session, kind, params)))(), BYPASS
    if isinstance(found, bytes):
        return json.loads(found), HIT
    body = (run or (lambda: compute(session, kind, params)))()
    store(name, body)
    return body, MISS


def store(name: str, body: dict[str, Any]) -> None:
    try:
        get_redis().set(name, json.dumps(body), ex=get_settings().insight_cache_seconds)
    except redis.RedisError as exc:
        log.warning("insight_cache_unwritable", error=type(exc).__name__)
