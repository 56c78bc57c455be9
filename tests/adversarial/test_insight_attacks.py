"""Attacks on the promises of issue 24's insights (docs/insights.md): an answer is never served from
the cache after what it reads changed, and a careless or hostile client gets a 4xx problem naming
the field, never a 500 nor another client's view.

Each test goes through the real API (the app on the run's Postgres, Redis and pipeline)."""
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import psycopg
import pytest
import requests

from tests.conftest import TEST_ENV
from tests.fixtures import wait_for
from tests.helpers import serve, signup_body

pytestmark = pytest.mark.usefixtures("pipeline")

FUNNEL = {"steps": [{"event_type": "page_view"}, {"event_type": "user_purchase"}], "window_seconds": 3600,
          "from": "2020-01-01T00:00:00Z", "to": "2020-02-01T00:00:00Z"}
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


@pytest.fixture(scope="module")
def server(app):
    with serve(app) as url:
        yield url


def test_the_session_funnel_refuses_spoofed_origins(server):
    """The dashboard's cookie counts for POST /api/analytics/funnels only from the dashboard's own
    pages (Origin = Host). The scheme is deliberately not compared (TLS may end at a proxy that is
    not in TRUSTED_PROXIES; services.api.access._same_origin), so http/https of the same host pass;
    every other variant a browser could send is refused."""
    login = requests.post(f"{server}/dashboard/login", data={"key": os.environ["PULSE_API_KEY"]},
                          allow_redirects=False, timeout=10)
    jar = {"pulse_session": login.cookies["pulse_session"]}
    host = urlsplit(server).netloc
    assert requests.post(f"{server}/api/analytics/funnels", json=FUNNEL, cookies=jar, headers={"Origin": server},
                         timeout=30).status_code in (200, 202)
    for origin in ("null", f"http://{host}.evil.example", f"http://x@{host}", f"http://{host}:1",
                   f"http://{host}/", host, ""):
        refused = requests.post(f"{server}/api/analytics/funnels", json=FUNNEL, cookies=jar,
                                headers={"Origin": origin}, timeout=30)
        assert refused.status_code == 401, (origin, refused.status_code, refused.text)
    # No Origin but a Referer of the dashboard: not what a browser's POST sends, refused too.
    refused = requests.post(f"{server}/api/analytics/funnels", json=FUNNEL, cookies=jar,
                            headers={"Referer": f"{server}/dashboard/insights"}, timeout=30)
    assert refused.status_code == 401, refused.text


def test_a_visitor_identified_between_two_queries_is_one_person(client):
    """A funnel answered (and cached) while the person is a visitor, asked again after the identify:
    the person is counted once, first as the visitor, then as the user, never both and never zero,
    and the cached answer is not served once the merge moved the events."""
    s = uuid.uuid4().hex[:8]
    anon = f"anon-{s}"
    now = datetime.now(UTC).replace(microsecond=0)
    visits = [{"event_id": uuid.uuid4().hex, "anonymous_id": anon, "event_type": f"idv_{s}",
               "timestamp": (now - timedelta(minutes=10)).isoformat()},
              {"event_id": uuid.uuid4().hex, "anonymous_id": anon, "event_type": f"idb_{s}",
               "timestamp": (now - timedelta(minutes=5)).isoformat()}]
    assert client.post("/api/events/batch", json={"events": visits}).status_code == 202
    body = {"steps": [{"event_type": f"idv_{s}"}, {"event_type": f"idb_{s}"}], "window_seconds": 3600,
            "from": (now - timedelta(days=1)).isoformat(), "to": (now + timedelta(days=1)).isoformat(),
            "breakdown": "signup_week"}

    def asked() -> dict:
        response = client.post("/api/analytics/funnels", json=body)
        assert response.status_code == 200, response.get_json()
        answer = response.get_json()
        assert [step["persons"] for step in answer["steps"]] in ([0, 0], [1, 1]), answer
        return answer

    wait_for(lambda: asked()["breakdown"] == {"(none)": asked()["steps"]} and asked()["steps"][0]["persons"] == 1,
             timeout=60, interval=0.5, what="the visitor in the funnel")
    assert client.post("/api/analytics/funnels", json=body).headers["X-Cache"] == "HIT"

    user_id = client.post("/api/users/signup", json=signup_body(anonymous_id=anon)).get_json()["id"]
    assert user_id > 0
    week = (now.date() - timedelta(days=now.weekday())).isoformat()

    def as_the_user():
        answer = asked()
        assert answer["steps"][0]["persons"] == 1, answer  # the person never leaves, never doubles
        return set(answer["breakdown"]) == {week} and answer

    wait_for(as_the_user, timeout=90, interval=0.5, what="the merged person counted as the user")


def test_a_cohorts_member_count_is_bounded_by_the_inline_limit(client, monkeypatch):
    """A saved cohort's members are a query as costly as a funnel (reached_step) and are evaluated on
    every GET /api/cohorts, /api/cohorts/<name> and /api/users?cohort=: without the insight queries'
    statement_timeout a read-scope client held a web thread for as long as the count took (here:
    forever, while another transaction holds person_events). Past the limit the answer is now a 503
    problem with Retry-After, in about the limit."""
    from shared.contracts.settings import get_settings

    s = uuid.uuid4().hex[:8]
    name = f"slow-{s}"
    steps = [{"event_type": f"sv_{s}"}, {"event_type": f"sb_{s}"}]
    definition = {"reached_step": {"funnel": {**FUNNEL, "steps": steps}, "step": 2}}
    assert client.put(f"/api/cohorts/{name}", json={"definition": definition}).status_code == 201
    monkeypatch.setattr(get_settings(), "insight_inline_timeout_ms", 300)
    url = TEST_ENV["DATABASE_URL"].replace("postgresql+psycopg", "postgresql")
    for path in (f"/api/cohorts/{name}", "/api/cohorts", f"/api/users?cohort={name}"):
        with psycopg.connect(url) as lock, ThreadPoolExecutor(1) as pool:
            lock.execute("LOCK TABLE person_events IN ACCESS EXCLUSIVE MODE")
            asked = pool.submit(client.get, path)
            try:
                response = asked.result(timeout=15)
            except FutureTimeout:
                response = None
            finally:
                lock.rollback()
            if response is None:
                asked.result(timeout=60)
            assert response is not None, f"GET {path} still computing 15 s after the 0.3 s limit"
            assert response.status_code == 503, (path, response.status_code, response.get_json())
            assert response.mimetype == "application/problem+json" and "Retry-After" in response.headers
    # The limit was the transaction's own: the pooled connections answer in full again.
    assert client.get(f"/api/cohorts/{name}").get_json()["persons"] == 0
    assert client.delete(f"/api/cohorts/{name}").status_code == 204


def test_the_inline_limit_leaves_with_its_transaction(client, monkeypatch):
    """The inline statement_timeout is the request's transaction's only: after funnels answered at
    once, as jobs past the limit, and cohort reads, no pooled connection keeps it (a limit left on
    a connection would cancel the next user's long write or report)."""
    from shared.contracts.settings import get_settings
    from shared.infra.db import get_engine

    monkeypatch.setattr(get_settings(), "insight_inline_timeout_ms", 1234)
    url = TEST_ENV["DATABASE_URL"].replace("postgresql+psycopg", "postgresql")
    assert client.post("/api/analytics/funnels", json=FUNNEL).status_code == 200
    with psycopg.connect(url) as lock:
        lock.execute("LOCK TABLE person_events IN ACCESS EXCLUSIVE MODE")
        assert client.post("/api/analytics/funnels", json={**FUNNEL, "window_seconds": 3599}).status_code == 202
        assert client.get("/api/cohorts").status_code in (200, 503)
        lock.rollback()
    engine = get_engine()
    held = [engine.connect() for _ in range(engine.pool.checkedin() + 1)]
    try:
        limits = {connection.exec_driver_sql("SHOW statement_timeout").scalar_one() for connection in held}
    finally:
        for connection in held:
            connection.close()
    assert "1234ms" not in limits, limits


def _rows(*events: tuple[int, str, datetime]) -> None:
    """person_events rows as ingestion writes them, then the bump a batch's commit makes."""
    from shared.contracts.tables import PersonEvent
    from shared.infra.db import session_scope
    from shared.pipeline import data_version

    with session_scope() as session:
        session.add_all(PersonEvent(person_id=person, event_id=uuid.uuid4().hex, event_type=kind, at=moment,
                                    properties={}) for person, kind, moment in events)
    data_version.bump()


def test_funnel_edges_are_exact(client):
    """Visitors (negative ids, no user row needed for the query) at every edge of the rules: the
    same event never counts for two steps, a step at the same instant as the previous one does not
    count (strictly after), the window is inclusive to the microsecond, `from` is in and `to` out."""
    s = uuid.uuid4().hex[:8]
    a, b = f"ea_{s}", f"eb_{s}"
    t0 = datetime(2012, 6, 1, tzinfo=UTC)
    base = -(uuid.uuid4().int % 10**12 + 10**13)
    p = [base - k for k in range(8)]
    _rows(
        (p[0], a, t0),                                          # one a: steps a -> a reach 1 only
        (p[1], a, t0 + timedelta(hours=1)), (p[1], a, t0 + timedelta(hours=1)),  # two a's, same instant
        (p[2], a, t0 + timedelta(hours=2)), (p[2], b, t0 + timedelta(hours=2)),  # b at the entry's instant
        (p[3], a, t0 + timedelta(hours=3)), (p[3], b, t0 + timedelta(hours=4)),  # b at entry + window exactly
        (p[4], a, t0 + timedelta(hours=5)), (p[4], b, t0 + timedelta(hours=6, microseconds=1)),  # 1 µs late
        (p[5], a, t0 - timedelta(microseconds=1)),              # before `from`: never enters
        (p[6], a, t0 + timedelta(days=1)),                      # at `to`: never enters
        (p[7], b, t0 + timedelta(hours=7)), (p[7], a, t0 + timedelta(hours=8)),  # b before a: no conversion
    )
    window = {"window_seconds": 3600, "from": t0.isoformat(), "to": (t0 + timedelta(days=1)).isoformat()}

    def persons(*steps: str) -> list[int]:
        response = client.post("/api/analytics/funnels", json={"steps": [{"event_type": e} for e in steps], **window})
        assert response.status_code == 200, response.get_json()
        return [step["persons"] for step in response.get_json()["steps"]]

    assert persons(a, a) == [6, 0]
    assert persons(a, b) == [6, 1]  # p3 only
    assert persons(a, a, a) == [6, 0, 0]


def test_a_visitor_merged_over_several_pages_is_one_person_between_pages(client, mongo):
    """A visitor with more events than a merge page (services/worker/merge.py, MERGE_PAGE = 1000)
    has its documents moved one page per transaction. Were its person_events rows moved the same
    way, between two pages the user would hold the first page's events and the visitor the rest,
    and a funnel asked then would count two persons (here: one who did step 1 twice, two entrants).
    The first page moves every row of the visitor."""
    from sqlalchemy import text

    from services.worker.merge import batch_id, copies, merge_visitor
    from services.worker.storage import store_batch
    from services.worker.tasks import _schedule_rescore
    from shared.infra.db import session_scope

    s = uuid.uuid4().hex[:8]
    anon, kind = f"anon-{s}", f"mv_{s}"
    user_id = client.post("/api/users/signup", json=signup_body()).get_json()["id"]
    t0 = datetime(2013, 3, 1, tzinfo=UTC)
    visits = [{"event_id": f"{tag}-{s}", "anonymous_id": anon, "event_type": kind,
               "timestamp": (t0 + timedelta(minutes=minutes)).isoformat()} for tag, minutes in (("a", 0), ("b", 5))]
    assert client.post("/api/events/batch", json={"events": visits}).status_code == 202
    wait_for(lambda: mongo.events.count_documents({"anonymous_id": anon, "user_id": {"$lt": 0}}) == 2,
             what="the visits stored under the visitor")
    with session_scope() as session:  # the link as identify commits it, minus the merge's message
        visitor = int(session.scalar(text("SELECT id FROM visitors WHERE anonymous_id = :a"), {"a": anon}))
        session.execute(text("UPDATE visitors SET user_id = :u, linked_at = now() WHERE id = :v"),
                        {"u": user_id, "v": visitor})
    body = {"steps": [{"event_type": kind}, {"event_type": kind}], "window_seconds": 3600,
            "from": t0.isoformat(), "to": (t0 + timedelta(days=1)).isoformat()}
    wait_for(lambda: [st["persons"] for st in client.post("/api/analytics/funnels", json=body).get_json()["steps"]]
             == [1, 1], what="the visitor's funnel")
    # The merge's first page of one event, as merge_visitor(page_size=1) commits it.
    page = list(mongo.events.find({"user_id": -visitor}).sort("event_id", 1).limit(1))
    store_batch(mongo, batch_id(visitor, page), copies(page, user_id), _schedule_rescore,
                resolve_visitors=False, ingested=False, moved_from=-visitor)
    mongo.events.delete_many({"user_id": -visitor, "event_id": {"$in": [doc["event_id"] for doc in page]}})
    try:
        between = [st["persons"] for st in client.post("/api/analytics/funnels", json=body).get_json()["steps"]]
    finally:
        merge_visitor(mongo, visitor, user_id, _schedule_rescore, page_size=1)
    assert [st["persons"] for st in client.post("/api/analytics/funnels", json=body).get_json()["steps"]] == [1, 1]
    assert between == [1, 1], f"between two merge pages the funnel counted {between}"


def test_a_cohorts_users_are_pseudonymous_without_the_personal_scope(app, client):
    """GET /api/users?cohort= lists people: a read key without the `personal` scope sees neither
    their e-mail, name nor username, as on the unfiltered list."""
    from shared.infra import api_keys
    from shared.infra.db import session_scope

    body = signup_body(country="UA", full_name="Olena Cohortova")
    assert client.post("/api/users/signup", json=body).status_code == 201
    name = f"ua-{uuid.uuid4().hex[:8]}"
    assert client.put(f"/api/cohorts/{name}", json={"definition": {"country": "UA"}}).status_code == 201
    with session_scope() as session:
        _, key = api_keys.create(session, ["read"], name="cohort reader")
    reader = app.test_client()
    reader.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    total = reader.get(f"/api/users?cohort={name}&per_page=100").get_json()["total"]
    assert total >= 1
    # Ordered by id: the newest signup is on the last page.
    last = reader.get(f"/api/users?cohort={name}&per_page=100&page={(total - 1) // 100 + 1}")
    assert last.status_code == 200
    assert len(last.get_json()["items"]) >= 1
    text_ = last.get_data(as_text=True)
    # The same page to the development key (every scope): the person is on it, named.
    assert body["email"] in client.get(f"/api/users?cohort={name}&per_page=100&page={(total - 1) // 100 + 1}") \
        .get_data(as_text=True)
    for personal_value in (body["email"], body["username"], body["full_name"], body["address"]["street"]):
        assert personal_value not in text_, personal_value
    assert client.delete(f"/api/cohorts/{name}").status_code == 204
