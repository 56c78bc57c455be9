"""services.api.access: the access table as pure decisions, every endpoint against every set of
scopes, for a key and for a dashboard session, and the keys that are unknown, revoked or expired.

The table is written out again below on purpose: a change to who may call what has to change this
file too, in the same commit, where a reviewer sees it."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import combinations

import pytest

from services.api import access
from services.api.access import KEY, SESSION_COOKIE, SESSION_SCHEME, as_session, authorization, standing
from shared.contracts import personal
from shared.infra.api_keys import ADMIN, INGEST, PERSONAL, READ, SCOPES, Principal

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PUBLIC = access.PUBLIC

# Every endpoint the module names, with every scope it needs.
NEEDS: dict[str, frozenset[str]] = {
    **{e: frozenset() for e in ("users.signup", "health.health", "health.ready", "metrics", "dashboard.login",
                                "dashboard.logout", "dashboard.static", "openapi.openapi_json", "swagger.swagger")},
    **{e: frozenset({INGEST}) for e in ("events.publish_event", "events.publish_batch",
                                                    "identify.identify")},
    # Segment's tracking API: the SDKs' write key is a key with the ingest scope.
    **{f"segment.{kind}": frozenset({INGEST})
       for kind in ("batch", "track", "page", "screen", "identify", "alias", "group")},
    **{e: frozenset({READ}) for e in (
        "users.get_user", "users.list_users", "users.top_users", "users.get_profile", "users.purchase_timeline",
        "analytics.top_categories", "analytics.segments", "analytics.country_stats", "analytics.latest_model",
        "analytics.customer_stats", "analytics.get_job", "analytics.list_validations", "analytics.holdout_history",
        "pipeline.pipeline", "dashboard.index", "dashboard.user_page",
        "tracking_plan.get_plan", "tracking_plan.get_entry", "tracking_plan.list_violations",
        "insights.funnels_view", "insights.retention_view", "insights.lifecycle_view", "insights.list_cohorts",
        "insights.get_cohort")},
    "dashboard.insights": frozenset({READ}),
    **{e: frozenset({ADMIN}) for e in (
        "analytics.fit_models", "analytics.validate_models", "analytics.cache_stats", "privacy.erase_user",
        "keys.create_key", "keys.list_keys", "keys.revoke_key",
        "tracking_plan.put_entry", "tracking_plan.delete_entry", "insights.put_cohort", "insights.delete_cohort",
        # Not in the table: a route added without a thought there is closed.
        "users.some_new_route", "nobody.knows")},
    # A person's data as a whole: the personal scope as well as admin.
    "privacy.export_user": frozenset({ADMIN, PERSONAL}),
}
PROTECTED = sorted(e for e, needed in NEEDS.items() if needed)
ALL_SCOPE_SETS = [frozenset(c) for n in range(len(SCOPES) + 1) for c in combinations(SCOPES, n)]


def key(scopes, expires_at=None, revoked=False) -> Principal:
    return Principal("k1", frozenset(scopes), expires_at, revoked)


def test_the_table_names_every_endpoint_and_nothing_else():
    named = {e for e in NEEDS if e not in ("users.some_new_route", "nobody.knows")}
    assert set(access.REQUIRED_SCOPE) == named - {"openapi.openapi_json", "swagger.swagger"}


@pytest.mark.parametrize("endpoint", sorted(NEEDS))
def test_each_endpoint_needs_its_scope(endpoint):
    needed = NEEDS[endpoint]
    own = access.required_scope(endpoint)
    assert (own == PUBLIC) == (not needed)
    assert {own, access.ALSO_REQUIRED.get(endpoint)} - {PUBLIC, None} == needed


@pytest.mark.parametrize("credentials", [KEY, SESSION_SCHEME])
@pytest.mark.parametrize("endpoint", PROTECTED)
def test_every_set_of_scopes_on_every_protected_endpoint(endpoint, credentials):
    for scopes in ALL_SCOPE_SETS:
        decision = standing(endpoint, credentials, key(scopes), NOW)
        if NEEDS[endpoint] <= scopes:
            assert decision is None, (endpoint, scopes)
            continue
        assert decision is not None and decision.status == 403, (endpoint, scopes, decision)
        # The first scope missing, in the order own scope then the additional one, is named.
        missing = [s for s in (access.required_scope(endpoint), access.ALSO_REQUIRED.get(endpoint))
                   if s is not None and s not in scopes][0]
        assert f"lacks the {missing} scope" in decision.detail
        assert decision.principal == key(scopes)


@pytest.mark.parametrize("endpoint", PROTECTED)
def test_no_credentials_is_a_401_naming_the_scope_without_an_error_code(endpoint):
    decision = standing(endpoint, None, None, NOW)
    assert decision.status == 401 and decision.principal is None
    assert f"with the {access.required_scope(endpoint)} scope" in decision.detail
    assert decision.headers == {"WWW-Authenticate": 'Bearer realm="pulse"'}


@pytest.mark.parametrize("credentials, detail", [(KEY, "Unknown API key"),
                                                 (SESSION_SCHEME, "The dashboard session has ended: log in again")])
def test_an_unknown_key_or_an_ended_session_is_a_401(credentials, detail):
    decision = standing("users.get_user", credentials, None, NOW)
    assert (decision.status, decision.detail) == (401, detail)
    assert decision.headers == {"WWW-Authenticate": 'Bearer realm="pulse", error="invalid_token"'}


@pytest.mark.parametrize("credentials", [KEY, SESSION_SCHEME])
@pytest.mark.parametrize("endpoint", PROTECTED)
def test_revoked_and_expired_keys_are_refused_whatever_their_scopes(endpoint, credentials):
    every = frozenset(SCOPES)
    revoked = standing(endpoint, credentials, key(every, revoked=True), NOW)
    assert (revoked.status, revoked.detail) == (401, "API key k1 has been revoked")
    # Revoked is said even of a key that has expired as well.
    both = standing(endpoint, credentials, key(every, NOW - timedelta(days=1), revoked=True), NOW)
    assert both.detail == "API key k1 has been revoked"
    for expires_at in (NOW, NOW - timedelta(seconds=1), NOW - timedelta(days=400)):
        expired = standing(endpoint, credentials, key(every, expires_at), NOW)
        assert (expired.status, expired.detail) == (401, "API key k1 has expired"), expires_at
        assert 'error="invalid_token"' in expired.headers["WWW-Authenticate"]
    # Usable until the instant it expires, and forever without an expiry.
    assert standing(endpoint, credentials, key(every, NOW + timedelta(microseconds=1)), NOW) is None
    assert standing(endpoint, credentials, key(every, None), NOW) is None


@pytest.mark.parametrize("endpoint", PROTECTED)
def test_unusable_beats_missing_scope(endpoint):
    # A revoked or expired key learns nothing about which scopes it would need.
    assert standing(endpoint, KEY, key(set(), revoked=True), NOW).status == 401
    assert standing(endpoint, KEY, key(set(), NOW), NOW).status == 401


# --- a dashboard session stands for the key that logged in, for reads only ---------------------

@pytest.mark.parametrize("scopes", ALL_SCOPE_SETS)
def test_a_session_keeps_read_and_personal_only(scopes):
    expires_at = NOW + timedelta(days=1)
    session = as_session(key(scopes, expires_at, revoked=False))
    assert session.scopes == scopes & {READ, PERSONAL}
    assert (session.key_id, session.expires_at, session.revoked) == ("k1", expires_at, False)
    assert not session.unlimited  # never the admin's freedom from rate limits
    assert as_session(key(scopes, revoked=True)).revoked


@pytest.mark.parametrize("endpoint", PROTECTED)
def test_an_admin_key_logged_in_to_the_dashboard_only_reads(endpoint):
    admin = key(SCOPES)
    as_key = standing(endpoint, KEY, admin, NOW)
    through_session = standing(endpoint, SESSION_SCHEME, as_session(admin), NOW)
    assert as_key is None
    assert (through_session is None) == (NEEDS[endpoint] <= {READ, PERSONAL}), through_session


def environ(method="GET", header=None, cookie=None) -> dict:
    env = {"REQUEST_METHOD": method}
    if header is not None:
        env["HTTP_AUTHORIZATION"] = header
    if cookie is not None:
        env["HTTP_COOKIE"] = cookie
    return env


COOKIE = f"{SESSION_COOKIE}=abc123"


@pytest.mark.parametrize("endpoint", sorted(NEEDS))
@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
def test_the_session_cookie_counts_only_for_reads_of_reading_endpoints(endpoint, method):
    got = authorization(environ(method, cookie=COOKIE), endpoint)
    reads = method in ("GET", "HEAD") and NEEDS[endpoint] <= {READ}
    assert got == (f"{SESSION_SCHEME} abc123" if reads else None)


def test_the_session_may_post_a_funnel_from_this_origin_only():
    """A funnel's question is a body, so the dashboard POSTs it: the one read by POST the cookie counts
    for (READS_BY_POST), and only when the browser says the page is this server's (Origin = Host)."""
    def posted(path, origin, host="127.0.0.1:8000", endpoint="analytics.segments"):
        env = {**environ("POST", cookie=COOKIE), "PATH_INFO": path, "HTTP_HOST": host}
        if origin is not None:
            env["HTTP_ORIGIN"] = origin
        return authorization(env, endpoint)

    funnels = next(iter(access.READS_BY_POST))
    assert posted(funnels, "http://127.0.0.1:8000") == f"{SESSION_SCHEME} abc123"
    assert posted(funnels, "https://127.0.0.1:8000") == f"{SESSION_SCHEME} abc123"  # TLS ended at a proxy
    for origin in (None, "null", "https://evil.example", "http://127.0.0.1:8001", "http://127.0.0.1:8000.evil.example"):
        assert posted(funnels, origin) is None, origin
    assert posted("/api/events", "http://127.0.0.1:8000", endpoint="events.publish_event") is None
    assert posted(funnels, "http://127.0.0.1:8000", endpoint="analytics.fit_models") is None  # not a read


@pytest.mark.parametrize("endpoint", sorted(NEEDS))
def test_an_authorization_header_wins_over_the_cookie(endpoint):
    for method in ("GET", "POST"):
        assert authorization(environ(method, "Bearer pulse_x", COOKIE), endpoint) == "Bearer pulse_x"
        assert authorization(environ(method, "Bearer pulse_x"), endpoint) == "Bearer pulse_x"


def test_no_session_id_in_the_cookie_is_no_credentials():
    assert authorization(environ(cookie="other=1"), "users.get_user") is None
    assert authorization(environ(cookie=f"{SESSION_COOKIE}="), "users.get_user") is None
    assert authorization(environ(), "users.get_user") is None


@pytest.mark.parametrize("header, expected", [
    ("Bearer pulse_abc", "pulse_abc"), ("bearer  pulse_abc ", "pulse_abc"), ("BEARER pulse_abc", "pulse_abc"),
    ("Bearer ", None), ("Bearer", None), ("Basic dXNlcjpwYXNz", None), ("session abc", None), ("", None), (None, None),
])
def test_only_a_bearer_header_carries_a_key(header, expected):
    assert access.bearer(header) == expected


# --- personal fields: hidden without the personal scope, on the reads that answer people --------

def test_the_reads_of_people_need_read_only_so_without_personal_they_answer_pseudonymously():
    assert access.PERSONAL_FIELDS <= {e for e, needed in NEEDS.items() if needed == {READ}}
    for endpoint in access.PERSONAL_FIELDS:
        assert standing(endpoint, KEY, key({READ}), NOW) is None


@pytest.mark.parametrize("scopes", ALL_SCOPE_SETS)
def test_personal_fields_are_shown_exactly_with_the_personal_scope(scopes):
    user = {"id": 7, "username": "ivan", "email": "i@example.com", "full_name": "Ivan I",
            "profile_score": 3.5, "address": {"street": "Khreshchatyk 1", "city": "Kyiv"}}
    shown = personal.may_see(scopes)
    assert shown == (PERSONAL in scopes)
    view = personal.user_view(user, shown)
    if shown:
        assert view == user
    else:
        assert view == {"id": 7, "profile_score": 3.5, "address": {"city": "Kyiv"}}
    # A session shows them exactly when the key that logged in may see them.
    assert personal.may_see(as_session(key(scopes)).scopes) == shown


def test_no_principal_sees_no_personal_fields():
    assert not personal.may_see(None) and not personal.may_see(frozenset())
