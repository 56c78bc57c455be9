"""Who may call what: the scope each endpoint needs, the key check, and the rate limits.

The table below is the whole access policy. An endpoint it does not name needs the admin scope,
so a route added without a thought here is closed, not open. The OpenAPI document is completed
from the same table (services.api.contract), so the spec and the checks cannot disagree.

Checked keys are remembered per process for API_KEY_CACHE_SECONDS (a key check is then a dict
lookup, not a Postgres query per request); expiry is compared on every request. A revocation is
announced in Redis (shared.infra.api_keys.announce_revocation: a new random token), and every request
compares that token with the one its process saw last: when it changed, the process forgets every
key it had checked, so a revoked key is refused everywhere from the next request on. Only while
Redis is unreachable does the time limit alone decide.

A key Postgres does not know is remembered as unknown (UNKNOWN_KEY_SECONDS, bounded), and each
lookup that finds nothing counts against its client (RATE_LIMIT_AUTH_FAILURES per IP address):
over it, a key this process does not already know is refused with a 429 before any lookup, so a
flood of made-up keys costs Postgres a bounded number of queries.

The dashboard's browser holds a session, not a key (services.api.dashboard): a random id in an
HttpOnly cookie, mapped in Redis to the id of the key that logged in. It stands for that key with
the read scope only, as long as the key is usable, and only for reads (`authorization`).
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
from cachetools import LRUCache, TTLCache
from flask import Flask, g, redirect, request, url_for
from werkzeug.http import parse_cookie

from services.api import proxies, rate_limits, segment
from services.api.problems import problem_response
from shared.contracts.settings import get_settings
from shared.infra import api_keys
from shared.infra.api_keys import ADMIN, INGEST, PERSONAL, READ, Principal
from shared.infra.cache import get_redis, reply
from shared.infra.cache import key as redis_key
from shared.infra.db import session_scope
from shared.infra.logging import get_logger
from shared.infra.retry import TRANSIENT_ERRORS

log = get_logger(__name__)

PUBLIC = "public"
SIGNUP = "users.signup"
REQUIRED_SCOPE: dict[str, str] = {
    SIGNUP: PUBLIC,  # rate limited per client IP instead
    "health.health": PUBLIC,
    "health.ready": PUBLIC,
    "metrics": PUBLIC,  # counts and timings, no personal data (services.api.metrics)
    "events.publish_event": INGEST,
    "events.publish_batch": INGEST,
    # Segment's tracking API (services.api.segment): the write key is an API key with the ingest scope.
    "segment.batch": INGEST,
    "segment.track": INGEST,
    "segment.page": INGEST,
    "segment.screen": INGEST,
    "segment.identify": INGEST,
    "segment.alias": INGEST,
    "segment.group": INGEST,
    "identify.identify": INGEST,
    "users.get_user": READ,
    "users.list_users": READ,
    "users.top_users": READ,
    "users.get_profile": READ,
    "users.purchase_timeline": READ,
    "analytics.top_categories": READ,
    "analytics.segments": READ,
    "analytics.country_stats": READ,
    "analytics.latest_model": READ,
    "analytics.customer_stats": READ,
    "analytics.get_job": READ,
    "analytics.list_validations": READ,
    "analytics.holdout_history": READ,
    # Insight queries read aggregates (counts, rates), no person; saving or deleting a cohort changes
    # what every reader's queries mean.
    "insights.funnels_view": READ,
    "insights.retention_view": READ,
    "insights.lifecycle_view": READ,
    "insights.list_cohorts": READ,
    "insights.get_cohort": READ,
    "pipeline.pipeline": READ,
    "tracking_plan.get_plan": READ,
    "tracking_plan.get_entry": READ,
    "tracking_plan.list_violations": READ,
    # The dashboard's pages need what its charts read; its login form and its scripts are open.
    "dashboard.index": READ,
    "dashboard.user_page": READ,
    "dashboard.insights": READ,
    "dashboard.login": PUBLIC,
    "dashboard.logout": PUBLIC,
    "dashboard.static": PUBLIC,
    "analytics.fit_models": ADMIN,
    "analytics.validate_models": ADMIN,
    "analytics.cache_stats": ADMIN,
    "privacy.erase_user": ADMIN,
    "privacy.export_user": ADMIN,
    "keys.create_key": ADMIN,
    "keys.list_keys": ADMIN,
    "keys.revoke_key": ADMIN,
    "tracking_plan.put_entry": ADMIN,
    "tracking_plan.delete_entry": ADMIN,
    "insights.put_cohort": ADMIN,
    "insights.delete_cohort": ADMIN,
}
# Endpoints whose answer is a person's data as a whole need the personal scope as well as their own
# (shared.contracts.personal); the reads of people above leave the personal fields out without it.
ALSO_REQUIRED: dict[str, str] = {"privacy.export_user": PERSONAL}
# Endpoints answering people, whose personal fields need the personal scope (the OpenAPI document says so).
PERSONAL_FIELDS = frozenset({"users.get_user", "users.list_users", "users.top_users", "users.get_profile"})
# The OpenAPI document and Swagger UI (flask-openapi3's blueprints) describe the API to anyone.
PUBLIC_BLUEPRINTS = {"openapi", "swagger"}
SECURITY_SCHEME = "apiKey"
# The WSGI environ key under which services.api.profile_hits hands its decision to Flask.
DECIDED = "pulse.access_decision"
# The dashboard's session id (services.api.dashboard); it counts for reads only.
SESSION_COOKIE = "pulse_session"
# Where the dashboard kept the key itself before sessions: deleted at login, never read.
OLD_KEY_COOKIE = "pulse_key"
SESSION_SCHEME = "session"
SAFE_METHODS = ("GET", "HEAD")
# Reads whose question is too structured for a query string (a funnel's steps), so they are a POST:
# the dashboard's session may ask them too, by path (the contract fixes the path, whatever the view
# is called), and only from the dashboard's own pages (`_same_origin`).
READS_BY_POST = frozenset({"/api/analytics/funnels"})
# A made-up key is not made up less a minute later: keys are created with a random secret, so one
# no one has been given cannot start to exist. The bound is memory (and a Postgres restored from a
# backup, where a key could come back).
UNKNOWN_KEY_SECONDS = 60.0
FAILURES = "auth_failures"


def required_scope(endpoint: str) -> str:
    if endpoint.split(".", 1)[0] in PUBLIC_BLUEPRINTS:
        return PUBLIC
    return REQUIRED_SCOPE.get(endpoint, ADMIN)


def limit_for(scope: str) -> str | None:
    settings = get_settings()
    return {INGEST: settings.rate_limit_ingest, READ: settings.rate_limit_read}.get(scope)


def rate_limited(endpoint: str) -> bool:
    return endpoint == SIGNUP or limit_for(required_scope(endpoint)) is not None


# Checked keys by their digest, and by "id:<key id>" for dashboard sessions.
_checked: TTLCache[str, Principal] = TTLCache(maxsize=10_000, ttl=get_settings().api_key_cache_seconds)
# What each key was at its last check, for when Postgres cannot be asked (below).
_last_known: LRUCache[str, Principal] = LRUCache(maxsize=10_000)
_unknown: TTLCache[str, bool] = TTLCache(maxsize=10_000, ttl=UNKNOWN_KEY_SECONDS)
_checked_lock = threading.Lock()  # the server's threads share these; cachetools' caches are not thread-safe
_revocations = [0]  # bumped by `forget`: a check that raced a revocation is not remembered
_NOT_SEEN = object()
_announced: list[Any] = [_NOT_SEEN]  # the revocation token this process saw last
# `announced` not read by the caller: `_follow_revocations` reads it. (The cached-profile fast path
# reads it with the profile, in one round trip: services.api.profile_hits.)
UNREAD = object()


class TooManyFailures(Exception):
    """The client is over RATE_LIMIT_AUTH_FAILURES: no lookup for it now."""

    def __init__(self, verdict: rate_limits.Verdict) -> None:
        super().__init__("too many failed key checks")
        self.verdict = verdict


def revocations_key() -> str:
    return redis_key(*api_keys.REVOCATIONS)


def _follow_revocations(announced=UNREAD) -> None:
    """Forget every checked key when a revocation was announced since this process last looked
    (`announced`: the token, when the caller has read it already). With Redis unreachable the keys
    checked keep their API_KEY_CACHE_SECONDS."""
    token = announced
    if token is UNREAD:
        try:
            token = get_redis().get(revocations_key())
        except redis.RedisError as exc:
            log.warning("revocations_unreadable", error=type(exc).__name__)
            return
    with _checked_lock:
        if token != _announced[0]:
            # Also the keys kept for a Postgres outage: which one was revoked is not known here.
            _announced[0] = token
            _revocations[0] += 1
            _checked.clear()
            _last_known.clear()


def _remembered(name: str, look_up) -> Principal | None:
    """A principal from memory (checked within API_KEY_CACHE_SECONDS, no revocation since), else
    `look_up(session)` in Postgres. While Postgres is unreachable, a key this process has checked
    before keeps the standing it had then (what needs no Postgres goes on answering, as in the
    degraded modes); a key it has never seen gets the 503 of the outage."""
    with _checked_lock:
        found = _checked.get(name)
        revocations = _revocations[0]
    if found is not None:
        return found
    try:
        with session_scope() as session:
            found = look_up(session)
    except TRANSIENT_ERRORS:
        with _checked_lock:
            found = _last_known.get(name)
        if found is None:
            raise
        return found
    if found is not None:
        with _checked_lock:
            if _revocations[0] == revocations:
                _checked[name] = found
                _last_known[name] = found
    return found


def principal(key: str, client_ip: str | None = None, announced=UNREAD) -> Principal | None:
    """The key's principal, or None for a key that does not exist (see the module's docstring for
    what is remembered). Raises TooManyFailures when `client_ip` is over its failed-lookup limit
    and the key would need a lookup."""
    _follow_revocations(announced)
    fingerprint = api_keys.digest(key)
    with _checked_lock:
        found = _checked.get(fingerprint)
        unknown = fingerprint in _unknown
    if found is not None:
        return found
    if unknown or api_keys.KEY_FORMAT.fullmatch(key) is None:
        return None  # known to be unknown, or not even the shape of a key: no lookup
    limit, who = get_settings().rate_limit_auth_failures, client_ip or "unknown"
    if (refusal := rate_limits.refused(limit, FAILURES, who)) is not None:
        raise TooManyFailures(refusal)
    found = _remembered(fingerprint, lambda session: api_keys.lookup(session, key))
    if found is None:
        with _checked_lock:
            _unknown[fingerprint] = True
        rate_limits.check(limit, FAILURES, who)
    return found


def session_principal(session_id: str, announced=UNREAD) -> Principal | None:
    """The dashboard session's principal: the key that logged in, with its read and personal scopes
    only (None: no such session, or it ended). Personal stays because the dashboard's user pages
    show who a person is when, and only when, the key that logged in may see it."""
    _follow_revocations(announced)
    key_id = reply(get_redis().get(session_key(session_id)))
    if key_id is None:
        return None
    found = _remembered(f"id:{key_id.decode()}", lambda session: api_keys.lookup_id(session, key_id.decode()))
    return None if found is None else as_session(found)


# What a dashboard session may do of what the key that logged in may (`session_principal`).
SESSION_SCOPES = frozenset({READ, PERSONAL})


def as_session(found: Principal) -> Principal:
    """The key that logged in, as its dashboard session stands for it: its read and personal
    scopes only, with its expiry and revocation."""
    return Principal(found.key_id, found.scopes & SESSION_SCOPES, found.expires_at, found.revoked)


def session_key(session_id: str) -> str:
    # Stored by its hash: what Redis holds (a dump, a replica) does not log anyone in.
    return redis_key("dashboard", "session", hashlib.sha256(session_id.encode()).hexdigest())


def forget(key_id: str) -> None:
    """Drop a revoked key from this process's memory at once."""
    with _checked_lock:
        _revocations[0] += 1
        for cache in (_checked, _last_known):
            for fingerprint, known in list(cache.items()):
                if known.key_id == key_id:
                    del cache[fingerprint]


@dataclass(frozen=True)
class Decision:
    status: int  # 200: go on
    detail: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    principal: Principal | None = None


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, credentials = authorization.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


def authorization(environ: dict[str, Any], endpoint: str) -> str | None:
    """The request's credentials: its Authorization header, or for a GET or HEAD of a page or an
    endpoint that needs the read scope (or a read asked by POST, `_reads`) the dashboard's session
    cookie (as "session <id>"). A cookie rides along on requests a browser makes, so it may only
    read what the dashboard reads: never write, never an admin read (an export, the keys), whichever
    key logged in (the session holds the read scope only; SameSite=Strict also keeps other sites
    from sending it at all)."""
    header = environ.get("HTTP_AUTHORIZATION")
    if header or not _reads(environ) or "HTTP_COOKIE" not in environ \
            or required_scope(endpoint) not in (READ, PUBLIC):
        return header
    session_id = parse_cookie(environ).get(SESSION_COOKIE)
    return f"{SESSION_SCHEME} {session_id}" if session_id else None


def _reads(environ: dict[str, Any]) -> bool:
    """A GET or HEAD, or a POST of a read in READS_BY_POST sent by a page of this server: a browser
    sends Origin with every POST, so one without it, or from another site, is not the dashboard's
    (SameSite=Strict already keeps other sites' requests from carrying the cookie; this does not
    rely on the browser alone)."""
    method = environ.get("REQUEST_METHOD")
    if method in SAFE_METHODS:
        return True
    return method == "POST" and environ.get("PATH_INFO") in READS_BY_POST and _same_origin(environ)


def _same_origin(environ: dict[str, Any]) -> bool:
    origin, host = environ.get("HTTP_ORIGIN") or "", environ.get("HTTP_HOST") or ""
    return bool(host) and origin.partition("://")[2] == host


def _unauthorized(detail: str, error: str | None = None) -> Decision:
    challenge = f'Bearer realm="pulse", error="{error}"' if error else 'Bearer realm="pulse"'
    return Decision(401, detail, {"WWW-Authenticate": challenge})


def _session_id(authorization: str | None) -> str | None:
    scheme, _, session_id = (authorization or "").partition(" ")
    return session_id.strip() if scheme == SESSION_SCHEME and session_id.strip() else None


KEY = "key"


def standing(endpoint: str, credentials: str | None, known: Principal | None,
             now: datetime | None = None) -> Decision | None:
    """The table's answer for a request to an endpoint that is not public, once its credentials
    (None, KEY or SESSION_SCHEME) were looked up as `known` (None: no such key, or the session
    ended): 401 (none, unknown, revoked, expired), 403 (a scope the endpoint needs is missing),
    or None, when it may go on to its rate limit."""
    scope = required_scope(endpoint)
    if credentials is None:
        return _unauthorized(f"This endpoint needs an API key with the {scope} scope: "
                             "send `Authorization: Bearer <key>`")
    if known is None and credentials == SESSION_SCHEME:
        return _unauthorized("The dashboard session has ended: log in again", "invalid_token")
    if known is None:
        return _unauthorized("Unknown API key", "invalid_token")
    if known.revoked:
        return _unauthorized(f"API key {known.key_id} has been revoked", "invalid_token")
    if not known.usable(now):
        return _unauthorized(f"API key {known.key_id} has expired", "invalid_token")
    for needed in (scope, ALSO_REQUIRED.get(endpoint)):
        if needed is not None and needed not in known.scopes:
            return Decision(403, f"API key {known.key_id} lacks the {needed} scope this endpoint needs "
                            f"(it has {', '.join(sorted(known.scopes))})", principal=known)
    return None


def decide(endpoint: str, authorization: str | None, client_ip: str | None, announced=UNREAD) -> Decision:
    """May this request go on? 401 (no usable key), 403 (a key without the scope), 429 (over its
    limit, or its client over the failed-lookup limit), or 200 with the rate-limit headers to send."""
    try:
        return _decide(endpoint, authorization, client_ip, announced)
    except TooManyFailures as refused:
        return Decision(429, "Too many unknown API keys from this address; retry later", refused.verdict.headers)


def _decide(endpoint: str, authorization: str | None, client_ip: str | None, announced) -> Decision:
    scope = required_scope(endpoint)
    key = bearer(authorization)
    if scope == PUBLIC:
        if endpoint != SIGNUP:
            return Decision(200)
        known = principal(key, client_ip, announced) if key else None
        if known is not None and known.usable() and known.unlimited:
            return Decision(200, principal=known)
        verdict = rate_limits.check(get_settings().rate_limit_signup, "signup", client_ip or "unknown")
        return Decision(200 if verdict.allowed else 429, "Too many signups from this address; retry later",
                        verdict.headers)
    session_id = _session_id(authorization)
    credentials = None if key is None and session_id is None else SESSION_SCHEME if key is None else KEY
    known = None
    if key is not None:
        known = principal(key, client_ip, announced)
    elif session_id is not None:
        known = session_principal(session_id, announced)
    refused = standing(endpoint, credentials, known)
    if refused is not None:
        return refused
    assert known is not None  # standing() refuses every request without a known principal
    limit = limit_for(scope)
    if known.unlimited or limit is None:
        return Decision(200, principal=known)
    verdict = rate_limits.check(limit, scope, known.key_id)
    return Decision(200 if verdict.allowed else 429, f"API key {known.key_id} is over its {scope} limit ({limit})",
                    verdict.headers, known)


def init_access(app: Flask) -> None:
    @app.before_request
    def _authorize():
        if request.endpoint is None:
            return None  # 404 or 405: nothing to protect
        # Segment's SDKs send the key as the Basic user name or as `writeKey` in the body.
        credentials = segment.credentials() if request.blueprint == segment.BLUEPRINT \
            else authorization(request.environ, request.endpoint)
        decision = request.environ.get(DECIDED) or decide(
            request.endpoint, credentials, proxies.client_address(request))
        if decision.status == 401 and request.blueprint == "dashboard":
            # A person at a browser: to the login form, and back here after it.
            return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")), code=303)
        if decision.status != 200:
            response = problem_response(decision.status, decision.detail)
            response.headers.update(decision.headers)
            return response
        g.principal = decision.principal
        g.limit_headers = decision.headers
        return None

    @app.after_request
    def _limit_headers(response):
        for name, value in (g.get("limit_headers") or {}).items():
            response.headers.setdefault(name, value)
        return response
