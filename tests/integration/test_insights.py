"""Funnels, retention, lifecycle and saved cohorts (issue 24) on populations whose answers are known.

Each test writes its own persons' person_events rows (and users with addresses and segments)
straight into Postgres, in a year of its own and with event types of its own (a random suffix), so
what other tests store cannot change its counts; then asks the API and checks every count. One
test (`test_events_sent_through_the_api_reach_the_funnel`) goes through POST /api/events/batch and
the worker instead: it passes once the worker fills person_events at ingestion.
"""
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import text

from shared.analytics.insights import funnels, periods
from shared.contracts.tables import Address, PersonEvent, User
from shared.infra.db import session_scope
from shared.infra.mongo import PROFILES
from shared.pipeline import data_version
from shared.pipeline.reference import country_by_code, resolve_city
from tests.conftest import TEST_ENV
from tests.fixtures import wait_for
from tests.helpers import finished_job, signup_body

pytestmark = pytest.mark.usefixtures("pipeline")


def at(text_: str) -> datetime:
    return datetime.fromisoformat(text_).replace(tzinfo=UTC)


def add_user(created_at: datetime, country: str = "UA", segment: str | None = None) -> int:
    suffix = uuid.uuid4().hex[:12]
    country_id = country_by_code(country)[0]
    with session_scope() as session:
        city_id = resolve_city(session, "Insightville", country_id)
        user = User(username=f"i_{suffix}", email=f"i.{suffix}@example.com", full_name="Insight Person",
                    segment=segment, created_at=created_at, address=Address(street="Main Street", city_id=city_id))
        session.add(user)
        session.flush()
        return user.id


def visitor() -> int:
    return -int(uuid.uuid4().int % 10**12 + 10**12)


def add_events(*events: tuple[int, str, datetime, dict]) -> None:
    with session_scope() as session:
        session.add_all(PersonEvent(person_id=person, event_id=uuid.uuid4().hex, event_type=kind, at=moment,
                                    properties=properties) for person, kind, moment, properties in events)
    data_version.bump()  # what the worker does after a batch's commit


def step(event_type: str, persons: int, previous: float | None, first: float | None, median: float | None) -> dict:
    return {"event_type": event_type, "persons": persons, "conversion_from_previous": previous,
            "conversion_from_first": first, "median_seconds_to_convert": median}


@pytest.fixture(scope="module")
def funnel_population(pipeline):
    """March 2011. view -> trial -> buy {price: 10}, window 7 days. Who does what:
    u1 (UA, VIP, signed up Mon 2011-02-28): all three steps (1 h, then 23 h);
    u2 (US, ACTIVE, Wed 2011-03-09): views twice; trials within a week of the second view only;
    u3 (UA, no segment, Tue 2011-03-01): buy, trial, view out of order, then a trial 1 h after the view;
    u4 (US, ACTIVE, 2011-03-09): a trial 10 days after the view (after the window);
    u8 (US, no segment, Mon 2011-03-14): view, trial after 1 h, a buy at price 10.5 (not 10);
    v1 (a visitor): all three steps, 30 min apart, buy price 10 as an int (u1's is 10.0);
    u5 views before `from`, u6 exactly at `to`: neither enters."""
    s = uuid.uuid4().hex[:8]
    view, trial, buy = f"view_{s}", f"trial_{s}", f"buy_{s}"
    u1 = add_user(at("2011-02-28T09:00:00"), "UA", "VIP")
    u2 = add_user(at("2011-03-09T09:00:00"), "US", "ACTIVE")
    u3 = add_user(at("2011-03-01T09:00:00"), "UA", None)
    u4 = add_user(at("2011-03-09T12:00:00"), "US", "ACTIVE")
    u5 = add_user(at("2011-02-01T09:00:00"), "UA", "VIP")
    u6 = add_user(at("2011-02-01T09:00:00"), "UA", "VIP")
    u8 = add_user(at("2011-03-14T00:00:00"), "US", None)
    v1 = visitor()
    add_events(
        (u1, view, at("2011-03-02T10:00:00"), {"plan": "pro"}),
        (u1, trial, at("2011-03-02T11:00:00"), {}),
        (u1, buy, at("2011-03-03T10:00:00"), {"price": 10.0, "plan": "pro"}),
        (u2, view, at("2011-03-05T00:00:00"), {}),
        (u2, view, at("2011-03-06T00:00:00"), {}),
        (u2, trial, at("2011-03-12T12:00:00"), {}),
        (u3, buy, at("2011-03-04T09:00:00"), {"price": 10}),
        (u3, trial, at("2011-03-04T10:00:00"), {}),
        (u3, view, at("2011-03-04T11:00:00"), {}),
        (u3, trial, at("2011-03-04T12:00:00"), {}),
        (u4, view, at("2011-03-10T00:00:00"), {}),
        (u4, trial, at("2011-03-20T00:00:00"), {}),
        (u8, view, at("2011-03-21T00:00:00"), {}),
        (u8, trial, at("2011-03-21T01:00:00"), {}),
        (u8, buy, at("2011-03-21T02:00:00"), {"price": 10.5}),
        (v1, view, at("2011-03-15T00:00:00"), {"plan": "pro"}),
        (v1, trial, at("2011-03-15T00:30:00"), {}),
        (v1, buy, at("2011-03-15T01:00:00"), {"price": 10, "plan": "pro"}),
        (u5, view, at("2011-02-28T23:59:59"), {}),
        (u5, trial, at("2011-03-01T00:00:00"), {}),
        (u6, view, at("2011-04-01T00:00:00"), {}),
    )
    body = {"steps": [{"event_type": view, "where": {}}, {"event_type": trial},
                      {"event_type": buy, "where": {"price": 10}}],
            "window_seconds": 7 * 86400, "from": "2011-03-01T00:00:00+00:00", "to": "2011-04-01T00:00:00Z"}
    return {"view": view, "trial": trial, "buy": buy, "body": body, "users": (u1, u2, u3, u4, u5, u6, u8), "v1": v1}


def test_funnel_counts_every_rule_exactly(client, funnel_population):
    p = funnel_population
    response = client.post("/api/analytics/funnels", json=p["body"])
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"steps": [
        step(p["view"], 6, 1.0, 1.0, None),
        step(p["trial"], 4, 0.6667, 0.6667, 3600.0),  # 1800, 3600, 3600, 3600
        step(p["buy"], 2, 0.5, 0.3333, 42300.0),  # 82800 and 1800
    ], "breakdown": None}
    # 10 (int) and 10.0 (float) are the same number to the where; 10.5 is not.
    as_float = {**p["body"], "steps": [*p["body"]["steps"][:2], {"event_type": p["buy"], "where": {"price": 10.0}}]}
    assert client.post("/api/analytics/funnels", json=as_float).get_json()["steps"][2]["persons"] == 2
    # The where of step 1 holds for u1 and v1 only: both go all the way.
    pro = {**p["body"], "steps": [{"event_type": p["view"], "where": {"plan": "pro"}}, *p["body"]["steps"][1:]]}
    assert [s["persons"] for s in client.post("/api/analytics/funnels", json=pro).get_json()["steps"]] == [2, 2, 2]
    # A string is not a number: "10" matches nobody's price.
    text_price = {**p["body"], "steps": [*p["body"]["steps"][:2], {"event_type": p["buy"], "where": {"price": "10"}}]}
    assert client.post("/api/analytics/funnels", json=text_price).get_json()["steps"][2]["persons"] == 0
    # A window of 1 hour (inclusive): every trial stays (each exactly 1 h or less after the entry), only v1's buy.
    hour = {**p["body"], "window_seconds": 3600}
    assert [s["persons"] for s in client.post("/api/analytics/funnels", json=hour).get_json()["steps"]] == [6, 4, 1]


@pytest.mark.parametrize("breakdown,expected", [
    ("country", {"(none)": [1, 1, 1], "UA": [2, 2, 1], "US": [3, 1, 0]}),
    ("segment", {"(none)": [3, 3, 1], "ACTIVE": [2, 0, 0], "VIP": [1, 1, 1]}),
    ("signup_week", {"(none)": [1, 1, 1], "2011-02-28": [2, 2, 1], "2011-03-07": [2, 0, 0], "2011-03-14": [1, 1, 0]}),
])
def test_funnel_breakdowns(client, funnel_population, breakdown, expected):
    body = {**funnel_population["body"], "breakdown": breakdown}
    answer = client.post("/api/analytics/funnels", json=body).get_json()
    assert [s["persons"] for s in answer["steps"]] == [6, 4, 2]
    assert {key: [s["persons"] for s in steps] for key, steps in answer["breakdown"].items()} == expected
    if breakdown == "segment":
        active = answer["breakdown"]["ACTIVE"]
        # Nobody reached step 2: step 3's conversion from it is undefined, its median too.
        assert [(s["conversion_from_previous"], s["median_seconds_to_convert"]) for s in active] == [
            (1.0, None), (0.0, None), (None, None)]


def test_funnel_reads_through_the_indexes(funnel_population):
    query = funnels.FunnelQuery(steps=[funnels.FunnelStep(funnel_population["view"]),
                                       funnels.FunnelStep(funnel_population["trial"]),
                                       funnels.FunnelStep(funnel_population["buy"], {"price": 10})],
                                window_seconds=86400, start=at("2011-03-01T00:00:00"), end=at("2011-04-01T00:00:00"))
    sql, params = funnels.paths_sql(query, "f_")
    with session_scope() as session:
        # A test table is small enough for a sequential scan to be cheapest: forbidding it shows
        # that every read can be served by an index, as it is at scale.
        session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(session.scalars(text(f"EXPLAIN {sql}"), params))
    assert "Seq Scan on person_events" not in plan, plan
    assert "ix_person_events_type_at" in plan and "ix_person_events_person_type_at" in plan, plan


def test_retention_signup_weeks_start_on_monday(client):
    """Weekly signup cohorts, 2012. Cohort 2012-01-02: a (Mon), b (Sun 01-08 23:00: still that week), c
    (never back); cohort 2012-01-09: d (Mon 00:00 exactly)."""
    s = uuid.uuid4().hex[:8]
    seen, other = f"seen_{s}", f"other_{s}"
    a = add_user(at("2012-01-02T10:00:00"))
    b = add_user(at("2012-01-08T23:00:00"))
    add_user(at("2012-01-04T10:00:00"))
    d = add_user(at("2012-01-09T00:00:00"))
    add_events(
        (a, seen, at("2012-01-03T00:00:00"), {}), (a, seen, at("2012-01-10T00:00:00"), {}),
        (a, other, at("2012-01-24T00:00:00"), {}),
        (b, seen, at("2012-01-09T00:30:00"), {}), (b, seen, at("2012-01-17T00:00:00"), {}),
        (d, seen, at("2012-01-16T00:00:00"), {}), (d, seen, at("2012-01-16T05:00:00"), {}),
        (d, other, at("2012-01-30T00:00:00"), {}),
    )
    query = "/api/analytics/retention?cohort=signup&period=week&periods=4&from=2012-01-02&to=2012-01-16"
    response = client.get(query)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"period": "week", "cohort_type": "signup", "event_type": None, "cohorts": [
        {"cohort": "2012-01-02", "size": 3, "active": [3, 2, 1, 1], "rates": [1.0, 0.667, 0.333, 0.333]},
        {"cohort": "2012-01-09", "size": 1, "active": [1, 1, 0, 1], "rates": [1.0, 1.0, 0.0, 1.0]},
    ]}
    typed = client.get(f"{query}&event_type={seen}").get_json()
    assert [c["active"] for c in typed["cohorts"]] == [[3, 2, 1, 0], [1, 1, 0, 0]]
    # from mid-week: the cohort of the week holding it is the first.
    assert [c["cohort"] for c in client.get(query.replace("2012-01-02", "2012-01-04")).get_json()["cohorts"]] == [
        "2012-01-02", "2012-01-09"]


def test_retention_signup_months(client):
    s = uuid.uuid4().hex[:8]
    jan = add_user(at("2013-01-31T23:30:00"))
    feb = add_user(at("2013-02-01T00:00:00"))
    add_events((jan, f"m_{s}", at("2013-02-28T23:59:59"), {}), (jan, f"m_{s}", at("2013-03-01T00:00:00"), {}),
               (feb, f"m_{s}", at("2013-03-01T00:00:00"), {}))
    answer = client.get("/api/analytics/retention?cohort=signup&period=month&periods=3&from=2013-01-01&to=2013-03-01")
    assert answer.get_json()["cohorts"] == [
        {"cohort": "2013-01-01", "size": 1, "active": [1, 1, 1], "rates": [1.0, 1.0, 1.0]},
        {"cohort": "2013-02-01", "size": 1, "active": [1, 1, 0], "rates": [1.0, 1.0, 0.0]},
    ]


def test_retention_first_event_days_with_visitors(client):
    """p1 (a visitor) first on 06-01, back on 06-02 and 06-04; p2 had its first before `from` (not in the
    cohort); p3 first at 23:59, back a minute later (the next day)."""
    kind = f"first_{uuid.uuid4().hex[:8]}"
    p1, p2, p3 = visitor(), add_user(at("2012-05-01T00:00:00")), add_user(at("2012-05-01T00:00:00"))
    add_events(
        (p1, kind, at("2012-06-01T10:00:00"), {}), (p1, kind, at("2012-06-02T10:00:00"), {}),
        (p1, kind, at("2012-06-04T10:00:00"), {}),
        (p2, kind, at("2012-05-31T10:00:00"), {}), (p2, kind, at("2012-06-01T10:00:00"), {}),
        (p3, kind, at("2012-06-01T23:59:00"), {}), (p3, kind, at("2012-06-02T00:00:00"), {}),
    )
    answer = client.get(f"/api/analytics/retention?cohort=first_event&event_type={kind}&period=day&periods=4"
                        "&from=2012-06-01&to=2012-06-02").get_json()
    assert answer["cohorts"] == [
        {"cohort": "2012-06-01", "size": 2, "active": [2, 2, 0, 1], "rates": [1.0, 1.0, 0.0, 0.5]}]


def test_retention_triangle_ends_at_now(client):
    """First events this week (q1), last week and this week (q2), two weeks ago (q3): periods that have
    not begun are absent."""
    kind = f"recent_{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    q1, q2, q3 = (add_user(now - timedelta(days=30)) for _ in range(3))
    add_events((q1, kind, now - timedelta(seconds=1), {}), (q2, kind, now - timedelta(days=7), {}),
               (q2, kind, now - timedelta(seconds=1), {}), (q3, kind, now - timedelta(days=14), {}))
    answer = client.get(f"/api/analytics/retention?cohort=first_event&event_type={kind}&period=week&periods=4")
    this_week = periods.floor(now.date(), "week")
    assert answer.get_json()["cohorts"] == [
        {"cohort": (this_week - timedelta(weeks=2)).isoformat(), "size": 1, "active": [1, 0, 0],
         "rates": [1.0, 0.0, 0.0]},
        {"cohort": (this_week - timedelta(weeks=1)).isoformat(), "size": 1, "active": [1, 1], "rates": [1.0, 1.0]},
        {"cohort": this_week.isoformat(), "size": 1, "active": [1], "rates": [1.0]},
    ]


def test_lifecycle_weeks(client):
    """2014, weekly from 01-06: L1 active 01-06, 01-13, 01-27; L2 01-13 only; L3 active in 2013-06 and 01-20;
    L4 active 2013-12-30 and 01-06."""
    kind = f"life_{uuid.uuid4().hex[:8]}"
    l1, l2, l3, l4 = visitor(), visitor(), visitor(), visitor()
    add_events(
        (l1, kind, at("2014-01-06T00:00:00"), {}), (l1, kind, at("2014-01-13T12:00:00"), {}),
        (l1, kind, at("2014-01-27T12:00:00"), {}),
        (l2, kind, at("2014-01-19T23:59:59"), {}),
        (l3, kind, at("2013-06-01T00:00:00"), {}), (l3, kind, at("2014-01-20T00:00:00"), {}),
        (l4, kind, at("2014-01-05T23:59:59"), {}), (l4, kind, at("2014-01-06T08:00:00"), {}),
    )
    expected = {"period": "week", "periods": [
        {"period": "2014-01-06", "new": 1, "returning": 1, "resurrecting": 0, "dormant": 0},
        {"period": "2014-01-13", "new": 1, "returning": 1, "resurrecting": 0, "dormant": -1},
        {"period": "2014-01-20", "new": 0, "returning": 0, "resurrecting": 1, "dormant": -2},
        {"period": "2014-01-27", "new": 0, "returning": 0, "resurrecting": 1, "dormant": -1},
    ]}
    typed = client.get(f"/api/analytics/lifecycle?period=week&from=2014-01-06&to=2014-02-03&event_type={kind}")
    assert typed.status_code == 200, typed.get_json()
    assert typed.get_json() == expected
    # Without an event type every type counts: in 2014 only these persons have events.
    assert client.get("/api/analytics/lifecycle?period=week&from=2014-01-06&to=2014-02-03").get_json() == expected


def test_lifecycle_months(client):
    kind = f"lifem_{uuid.uuid4().hex[:8]}"
    m1, m2 = visitor(), visitor()
    add_events((m1, kind, at("2015-01-31T23:00:00"), {}), (m1, kind, at("2015-02-01T00:00:00"), {}),
               (m2, kind, at("2015-02-15T00:00:00"), {}))
    answer = client.get(f"/api/analytics/lifecycle?period=month&from=2015-01-15&to=2015-03-02&event_type={kind}")
    assert answer.get_json()["periods"] == [
        {"period": "2015-01-01", "new": 1, "returning": 0, "resurrecting": 0, "dormant": 0},
        {"period": "2015-02-01", "new": 1, "returning": 1, "resurrecting": 0, "dormant": 0},
        {"period": "2015-03-01", "new": 0, "returning": 0, "resurrecting": 0, "dormant": -2},
    ]


def test_saved_cohorts_filter_funnels_users_and_retention(client, mongo, funnel_population):
    p = funnel_population
    u1, _, u3, *_ = p["users"]
    name = f"reached-{uuid.uuid4().hex[:8]}"
    funnel = {key: p["body"][key] for key in ("steps", "window_seconds", "from", "to")}
    definition = {"country": "UA", "reached_step": {"funnel": funnel, "step": 2}}
    created = client.put(f"/api/cohorts/{name}", json={"definition": definition})
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["persons"] == 2  # u1 and u3: UA and reached the trial; v1 reached it but is no user
    assert client.put(f"/api/cohorts/{name}", json={"definition": definition}).status_code == 200
    users = client.get(f"/api/users?cohort={name}").get_json()
    assert sorted(u["id"] for u in users["items"]) == sorted([u1, u3]) and users["total"] == 2
    answer = client.post("/api/analytics/funnels", json={**p["body"], "cohort": name}).get_json()
    assert [s["persons"] for s in answer["steps"]] == [2, 2, 1]
    listed = {c["name"]: c for c in client.get("/api/cohorts").get_json()["items"]}
    assert listed[name]["definition"]["country"] == "UA" and listed[name]["persons"] == 2
    signup = client.get(f"/api/analytics/retention?cohort=signup&period=week&periods=2&from=2011-02-28&to=2011-03-07"
                        f"&in_cohort={name}").get_json()
    assert signup["cohorts"] == [{"cohort": "2011-02-28", "size": 2, "active": [2, 0], "rates": [1.0, 0.0]}]

    # RFM codes come from the profile documents; "x" is any score.
    kind = f"rfm_{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    r1, r2, r3 = (add_user(now - timedelta(days=3)) for _ in range(3))
    add_events(*((r, kind, now - timedelta(hours=1), {}) for r in (r1, r2, r3)))
    for user_id, (r, f, m) in ((r1, (5, 4, 5)), (r2, (3, 4, 5)), (r3, (5, 1, 5))):
        mongo[PROFILES].replace_one({"_id": user_id}, {"_id": user_id, "rfm": {
            "recency": r, "frequency": f, "monetary": m, "code": f"{r}{f}{m}"}}, upsert=True)
    rfm = f"rfm-{uuid.uuid4().hex[:8]}"
    recent = {"event_type": kind, "days": 7}
    assert client.put(f"/api/cohorts/{rfm}", json={"definition": {"rfm_code": "5x5", "event_in_last_days": recent}}
                      ).get_json()["persons"] == 2
    assert client.put(f"/api/cohorts/{rfm}", json={"definition": {"rfm_code": "545", "event_in_last_days": recent}}
                      ).get_json()["persons"] == 1
    assert client.put(f"/api/cohorts/{rfm}", json={"definition": {"event_in_last_days": recent}}
                      ).get_json()["persons"] == 3
    assert client.delete(f"/api/cohorts/{rfm}").status_code == 204
    missing = client.get(f"/api/cohorts/{rfm}")
    assert missing.status_code == 404 and missing.get_json()["errors"][0]["field"] == "name"
    gone = client.post("/api/analytics/funnels", json={**p["body"], "cohort": rfm})
    assert gone.status_code == 404 and gone.get_json()["errors"][0]["field"] == "cohort"
    assert client.get(f"/api/users?cohort={rfm}").get_json()["errors"][0]["field"] == "cohort"
    lifecycle = client.get(f"/api/analytics/lifecycle?period=day&from=2011-03-01&to=2011-03-02&in_cohort={rfm}")
    assert lifecycle.status_code == 404 and lifecycle.get_json()["errors"][0]["field"] == "in_cohort"


def test_cache_answers_until_new_data(client):
    """A second ask is a HIT; a new batch (data version bumped) makes it a MISS with the new answer."""
    s = uuid.uuid4().hex[:8]
    first, second = f"c1_{s}", f"c2_{s}"
    person = visitor()
    add_events((person, first, at("2016-05-01T00:00:00"), {}), (person, second, at("2016-05-01T00:01:00"), {}))
    body = {"steps": [{"event_type": first}, {"event_type": second}], "window_seconds": 3600,
            "from": "2016-05-01T00:00:00Z", "to": "2016-05-02T00:00:00Z"}
    miss = client.post("/api/analytics/funnels", json=body)
    assert miss.headers["X-Cache"] == "MISS" and miss.get_json()["steps"][0]["persons"] == 1
    hit = client.post("/api/analytics/funnels", json=body)
    assert hit.headers["X-Cache"] == "HIT" and hit.get_json() == miss.get_json()
    add_events((visitor(), first, at("2016-05-01T12:00:00"), {}))
    fresh = client.post("/api/analytics/funnels", json=body)
    assert fresh.headers["X-Cache"] == "MISS"
    assert [s["persons"] for s in fresh.get_json()["steps"]] == [2, 1]


def test_prefer_respond_async_runs_the_query_as_a_job(client, funnel_population):
    body = {**funnel_population["body"], "window_seconds": 7 * 86400 - 1}  # not cached by another test
    inline = client.post("/api/analytics/funnels", json=body).get_json()
    response = client.post("/api/analytics/funnels", json=body, headers={"Prefer": "respond-async"})
    job = finished_job(client, response)
    assert job["status"] == "done" and job["kind"] == "funnel", job
    assert job["result"] == inline
    retention = client.get("/api/analytics/retention?cohort=signup&period=month&periods=3&from=2013-01-01"
                           "&to=2013-03-01", headers={"Prefer": "respond-async"})
    assert finished_job(client, retention)["kind"] == "retention"


def test_a_query_past_the_inline_limit_becomes_a_job(client, funnel_population, monkeypatch):
    """While another transaction holds person_events locked, the inline query reaches its
    statement_timeout: the answer is a 202 and the job, run by the analytics worker once the lock
    is gone, holds the exact answer."""
    from shared.contracts.settings import get_settings

    monkeypatch.setattr(get_settings(), "insight_inline_timeout_ms", 300)
    body = {**funnel_population["body"], "window_seconds": 7 * 86400 - 2}
    url = TEST_ENV["DATABASE_URL"].replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(url) as lock:
        lock.execute("LOCK TABLE person_events IN ACCESS EXCLUSIVE MODE")
        response = client.post("/api/analytics/funnels", json=body)
        assert response.status_code == 202, response.get_json()
        lock.rollback()
    job = finished_job(client, response)
    assert job["status"] == "done", job
    assert [s["persons"] for s in job["result"]["steps"]] == [6, 4, 2]
    # The job cached its answer: asked again, the API answers it at once.
    again = client.post("/api/analytics/funnels", json=body)
    assert again.status_code == 200 and again.headers["X-Cache"] == "HIT" and again.get_json() == job["result"]


def test_events_sent_through_the_api_reach_the_funnel(client):
    """End to end: a signup, events through POST /api/events/batch and the worker, then the funnel
    shows them (person_events is filled by the worker at ingestion)."""
    s = uuid.uuid4().hex[:8]
    user_id = client.post("/api/users/signup", json=signup_body()).get_json()["id"]
    now = datetime.now(UTC).replace(microsecond=0)
    events = [{"user_id": user_id, "event_type": f"e2e_view_{s}", "metadata": {"plan": "pro"},
               "timestamp": (now - timedelta(minutes=10)).isoformat()},
              {"user_id": user_id, "event_type": f"e2e_buy_{s}", "metadata": {"price": 12.5},
               "timestamp": (now - timedelta(minutes=5)).isoformat()}]
    assert client.post("/api/events/batch", json={"events": events}).status_code == 202
    body = {"steps": [{"event_type": f"e2e_view_{s}", "where": {"plan": "pro"}},
                      {"event_type": f"e2e_buy_{s}", "where": {"price": 12.5}}],
            "window_seconds": 3600, "from": (now - timedelta(days=1)).isoformat(),
            "to": (now + timedelta(days=1)).isoformat()}

    def converted():
        answer = client.post("/api/analytics/funnels", json=body).get_json()
        return [s["persons"] for s in answer["steps"]] == [1, 1] and answer

    answer = wait_for(converted, timeout=60, interval=0.5, what="the batch's events to reach the funnel")
    assert answer["steps"][1]["median_seconds_to_convert"] == 300.0


def test_every_period_bound_is_utc(client):
    """A `from` with an offset is the same moment in UTC: 2011-03-01T02:00+02:00 is midnight UTC."""
    s = uuid.uuid4().hex[:8]
    person = visitor()
    add_events((person, f"tz1_{s}", at("2011-03-01T00:00:00"), {}), (person, f"tz2_{s}", at("2011-03-01T00:00:01"), {}))
    body = {"steps": [{"event_type": f"tz1_{s}"}, {"event_type": f"tz2_{s}"}], "window_seconds": 1,
            "from": "2011-03-01T02:00:00+02:00", "to": "2011-03-01T02:00:01+02:00"}
    assert [s["persons"] for s in client.post("/api/analytics/funnels", json=body).get_json()["steps"]] == [1, 1]
