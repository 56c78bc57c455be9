"""Whatever a client sends the insight endpoints, the answer is a 4xx problem naming the field, or
a correct answer: never a 500, never a control character or a lone surrogate reaching Postgres."""
import uuid
from urllib.parse import quote

import pytest

FUNNEL = {"steps": [{"event_type": "page_view"}, {"event_type": "user_purchase"}], "window_seconds": 3600,
          "from": "2020-01-01T00:00:00Z", "to": "2020-02-01T00:00:00Z"}


def steps_with(**step) -> list[dict]:
    return [{"event_type": "page_view", **step}, {"event_type": "user_purchase"}]


@pytest.mark.parametrize("change,field", [
    ({"steps": [{"event_type": "page_view"}]}, "steps"),
    ({"steps": [{"event_type": "page_view"}] * 11}, "steps"),
    ({"steps": "page_view"}, "steps"),
    ({"steps": steps_with(event_type="Page_View")}, "steps[0].event_type"),
    ({"steps": steps_with(event_type="page\x00view")}, "steps[0].event_type"),
    ({"steps": steps_with(event_type="a" * 65)}, "steps[0].event_type"),
    ({"steps": steps_with(where={"a.b": 1})}, "steps[0].where"),
    ({"steps": steps_with(where={"$gt": 1})}, "steps[0].where"),
    ({"steps": steps_with(where={"k\x00": 1})}, "steps[0].where"),
    ({"steps": steps_with(where={"k\udfff": 1})}, "steps[0].where"),
    ({"steps": steps_with(where={"plan": {"nested": 1}})}, "steps[0].where.plan"),
    ({"steps": steps_with(where={"plan": [1]})}, "steps[0].where.plan"),
    ({"steps": steps_with(where={"plan": None})}, "steps[0].where.plan"),
    ({"steps": steps_with(where={"plan": "x" * 201})}, "steps[0].where.plan"),
    ({"steps": steps_with(where={"plan": "a\x00b"})}, "steps[0].where.plan"),
    ({"steps": steps_with(where={"plan": "a\nb"})}, "steps[0].where.plan"),
    ({"steps": steps_with(where={"plan": "\udfff"})}, "steps[0].where.plan"),
    ({"steps": steps_with(where={f"k{i}": i for i in range(21)})}, "steps[0].where"),
    ({"steps": steps_with(other=1)}, "steps[0].other"),
    ({"window_seconds": 0}, "window_seconds"),
    ({"window_seconds": 31_536_001}, "window_seconds"),
    ({"window_seconds": "60"}, "window_seconds"),
    ({"window_seconds": 1.5}, "window_seconds"),
    ({"window_seconds": True}, "window_seconds"),
    ({"from": "2020-02-01T00:00:00Z"}, "to"),
    ({"to": "2019-12-31T23:59:59+00:00"}, "to"),
    ({"from": "2020-01-01T00:00:00"}, "from"),
    ({"from": 1577836800}, "from"),
    ({"from": "0001-01-01T00:00:00+14:00"}, "from"),
    ({"to": "9999-12-31T23:59:59-14:00"}, "to"),
    ({"from": "yesterday"}, "from"),
    ({"breakdown": "city"}, "breakdown"),
    ({"cohort": "Not A Name"}, "cohort"),
    ({"cohort": "a\x00"}, "cohort"),
    ({"unexpected": 1}, "unexpected"),
])
def test_funnel_refuses_naming_the_field(client, change, field):
    response = client.post("/api/analytics/funnels", json={**FUNNEL, **change})
    assert response.status_code == 422, (change, response.get_json())
    assert response.mimetype == "application/problem+json"
    assert any(e["field"].startswith(field) for e in response.get_json()["errors"]), response.get_json()


def test_funnel_body_that_is_no_object(client):
    for body in ([], "x", 1, None):
        response = client.post("/api/analytics/funnels", json=body)
        assert response.status_code in (400, 415, 422), (body, response.status_code)
        assert response.mimetype == "application/problem+json"


def test_unknown_cohorts_are_404_naming_the_field(client):
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"
    for response, field in (
        (client.post("/api/analytics/funnels", json={**FUNNEL, "cohort": ghost}), "cohort"),
        (client.post("/api/analytics/funnels", json={**FUNNEL, "cohort": ghost}, headers={"Prefer": "respond-async"}),
         "cohort"),
        (client.get(f"/api/analytics/retention?cohort=signup&period=week&periods=4&in_cohort={ghost}"), "in_cohort"),
        (client.get(f"/api/analytics/lifecycle?period=week&from=2020-01-01&to=2020-02-01&in_cohort={ghost}"),
         "in_cohort"),
        (client.get(f"/api/users?cohort={ghost}"), "cohort"),
        (client.get(f"/api/cohorts/{ghost}"), "name"),
        (client.delete(f"/api/cohorts/{ghost}"), "name"),
    ):
        assert response.status_code == 404, (field, response.get_json())
        assert response.get_json()["errors"][0]["field"] == field


RETENTION = "/api/analytics/retention?cohort=signup&period=week&periods=4"


@pytest.mark.parametrize("query,field", [
    ("cohort=weekly&period=week&periods=4", "cohort"),
    ("cohort=signup&period=year&periods=4", "period"),
    ("cohort=signup&period=week&periods=0", "periods"),
    ("cohort=signup&period=week&periods=105", "periods"),
    ("cohort=signup&period=month&periods=37", "periods"),
    ("cohort=signup&period=day&periods=401", "periods"),
    ("cohort=signup&period=week&periods=x", "periods"),
    ("cohort=signup&period=week", "periods"),
    ("cohort=first_event&period=week&periods=4", "event_type"),
    ("cohort=signup&period=week&periods=4&event_type=Bad", "event_type"),
    ("cohort=signup&period=week&periods=4&event_type=" + quote("a\x00"), "event_type"),
    ("cohort=signup&period=week&periods=4&from=2020-02-01&to=2020-01-01", "to"),
    ("cohort=signup&period=week&periods=4&from=2020-01-01&to=2020-01-01", "to"),
    ("cohort=signup&period=week&periods=4&from=2020-02-30", "from"),
    ("cohort=signup&period=week&periods=4&from=0001-01-01", "from"),
    ("cohort=signup&period=week&periods=4&to=9999-12-31", "to"),
    ("cohort=signup&period=day&periods=4&from=2000-01-01&to=2010-01-01", "to"),
    ("cohort=signup&period=day&periods=4&from=1980-01-01", "from"),
    ("cohort=signup&period=week&periods=4&in_cohort=" + quote("Bad Name"), "in_cohort"),
])
def test_retention_refuses_naming_the_field(client, query, field):
    response = client.get(f"/api/analytics/retention?{query}")
    assert response.status_code == 422, (query, response.get_json())
    assert any(e["field"] == field for e in response.get_json()["errors"]), response.get_json()


@pytest.mark.parametrize("query,field", [
    ("period=week&to=2020-02-01", "from"),
    ("period=week&from=2020-01-01", "to"),
    ("period=hour&from=2020-01-01&to=2020-02-01", "period"),
    ("period=week&from=2020-02-01&to=2020-01-01", "to"),
    ("period=month&from=2000-01-01&to=2010-01-01", "to"),
    ("period=week&from=2020-01-01&to=2020-02-01&event_type=" + quote("x\n"), "event_type"),
])
def test_lifecycle_refuses_naming_the_field(client, query, field):
    response = client.get(f"/api/analytics/lifecycle?{query}")
    assert response.status_code == 422, (query, response.get_json())
    assert any(e["field"] == field for e in response.get_json()["errors"]), response.get_json()


FUNNEL_DEF = {key: FUNNEL[key] for key in ("steps", "window_seconds", "from", "to")}


@pytest.mark.parametrize("definition,field", [
    ({}, "definition"),
    ({"country": "ZZ"}, "definition.country"),
    ({"country": "ua"}, "definition.country"),
    ({"segment": "vip\x00"}, "definition.segment"),
    ({"rfm_code": "655"}, "definition.rfm_code"),
    ({"rfm_code": "5555"}, "definition.rfm_code"),
    ({"reached_step": {"funnel": FUNNEL_DEF, "step": 3}}, "definition.reached_step.step"),
    ({"reached_step": {"funnel": {**FUNNEL_DEF, "breakdown": "country"}, "step": 1}},
     "definition.reached_step.funnel.breakdown"),
    ({"reached_step": {"funnel": {**FUNNEL_DEF, "window_seconds": 0}, "step": 1}},
     "definition.reached_step.funnel.window_seconds"),
    ({"event_in_last_days": {"event_type": "login", "days": 0}}, "definition.event_in_last_days.days"),
    ({"event_in_last_days": {"event_type": "login"}}, "definition.event_in_last_days.days"),
    ({"city": "Kyiv"}, "definition.city"),
])
def test_cohort_definitions_are_checked(client, definition, field):
    response = client.put(f"/api/cohorts/c-{uuid.uuid4().hex[:8]}", json={"definition": definition})
    assert response.status_code == 422, (definition, response.get_json())
    assert any(e["field"] == field for e in response.get_json()["errors"]), response.get_json()


@pytest.mark.parametrize("name", ["Capital", "1digit", "a" * 65, quote("a\x00b"), quote("a b"), quote("é")])
def test_cohort_names_are_checked_before_any_query(client, name):
    for response in (client.put(f"/api/cohorts/{name}", json={"definition": {"segment": "VIP"}}),
                     client.get(f"/api/cohorts/{name}"), client.delete(f"/api/cohorts/{name}")):
        assert response.status_code == 422, (name, response.status_code)
        assert response.get_json()["errors"][0]["field"] == "name"
    assert client.get(f"/api/users?cohort={name}").status_code == 422


def test_saving_cohorts_needs_the_admin_scope(app):
    from shared.infra import api_keys
    from shared.infra.db import session_scope

    with session_scope() as session:
        _, key = api_keys.create(session, ["read"], name="insight reader")
    reader = app.test_client()
    reader.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    assert reader.put("/api/cohorts/readers", json={"definition": {"segment": "VIP"}}).status_code == 403
    assert reader.delete("/api/cohorts/readers").status_code == 403
    assert reader.get("/api/cohorts").status_code == 200
    assert reader.post("/api/analytics/funnels", json=FUNNEL).status_code == 200
