"""Attacks on the promises of issue 24's insights (docs/insights.md): an answer is never served from
the cache after what it reads changed, and a careless or hostile client gets a 4xx problem naming
the field, never a 500 nor another client's view.

Each test goes through the real API (the app on the run's Postgres, Redis and pipeline)."""
import pytest

from tests.helpers import signup_body

pytestmark = pytest.mark.usefixtures("pipeline")

TODAY_BY_SIGNUP = "/api/analytics/retention?cohort=signup&period=day&periods=1"


def _todays_cohort_size(client) -> tuple[int, str]:
    response = client.get(TODAY_BY_SIGNUP)
    assert response.status_code == 200, response.get_json()
    cohorts = response.get_json()["cohorts"]
    assert len(cohorts) == 1, cohorts
    return cohorts[0]["size"], response.headers["X-Cache"]


def test_a_signup_is_in_the_next_signup_retention_answer(client):
    """A retention `cohort=signup` answer counts users by users.created_at: a signup changes what it
    reads, so an answer cached before the signup must not be served after it. Signups made no new
    data version, and the new user was missing from today's cohort for INSIGHT_CACHE_SECONDS."""
    assert client.post("/api/users/signup", json=signup_body()).status_code == 201
    before, _ = _todays_cohort_size(client)
    again, cache = _todays_cohort_size(client)
    # Cached now, unless another test's batch bumped the version in between (then it is a MISS and
    # the same attack follows from this answer).
    assert again >= before, (before, again, cache)

    assert client.post("/api/users/signup", json=signup_body()).status_code == 201
    after, cache = _todays_cohort_size(client)
    assert after >= again + 1, f"today's signup cohort was {again}, still {after} after a signup (X-Cache {cache})"
