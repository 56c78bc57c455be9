"""Who may call what: the scope each endpoint needs, the key check, and the rate limits.

The table below is the whole access policy. An endpoint it does not name needs the admin scope,
so a route added without a thought here is closed, not open. The OpenAPI document is completed
from the same table (services.api.contract), so the spec and the checks cannot disagree.

Checked keys are remembered per process for API_KEY_CACHE_SECONDS (a key check is then a dict
lookup, not a Postgres query per request); expiry is compared on every request, and the process
that revokes a key forgets it at once.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from cachetools import LRUCache, TTLCache
from flask import Flask, g, redirect, request, url_for
from werkzeug.http import parse_cookie

from services.api import rate_limits
from services.api.problems import problem_response
from shared import api_keys
from shared.api_keys import ADMIN, INGEST, READ, Principal
from shared.db import session_scope
from shared.retry import TRANSIENT_ERRORS
from shared.settings import get_settings

PUBLIC = "public"
SIGNUP = "users.signup"
REQUIRED_SCOPE: dict[str, str] = {
    SIGNUP: PUBLIC,  # rate limited per client IP instead
    "health.health": PUBLIC,
    "health.ready": PUBLIC,
    "metrics": PUBLIC,  # counts and timings, no personal data (services.api.metrics)
    "events.publish_event": INGEST,
    "events.publish_batch": INGEST,
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
    "pipeline.pipeline": READ,
    # The dashboard's pages need what its charts read; its login form and its scripts are open.
    "dashboard.index": READ,
    "dashboard.user_page": READ,
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
}
# The OpenAPI document and Swagger UI (flask-openapi3's blueprints) describe the API to anyone.
PUBLIC_BLUEPRINTS = {"openapi", "swagger"}
SECURITY_SCHEME = "apiKey"
# The WSGI environ key under which services.api.profile_hits hands its decision to Flask.
DECIDED = "pulse.access_decision"
# The dashboard's login keeps the key in this cookie (services.api.dashboard); it counts for reads only.
DASHBOARD_COOKIE = "pulse_key"
SAFE_METHODS = ("GET", "HEAD")


def required_scope(endpoint: str) -> str:
    if endpoint.split(".", 1)[0] in PUBLIC_BLUEPRINTS:
        return PUBLIC
    return REQUIRED_SCOPE.get(endpoint, ADMIN)


def limit_for(scope: str) -> str | None:
    settings = get_settings()
    return {INGEST: settings.rate_limit_ingest, READ: settings.rate_limit_read}.get(scope)


def rate_limited(endpoint: str) -> bool:
    return endpoint == SIGNUP or limit_for(required_scope(endpoint)) is not None


_checked: TTLCache[str, Principal] = TTLCache(maxsize=10_000, ttl=get_settings().api_key_cache_seconds)
# What each key was at its last check, for when Postgres cannot be asked (below).
_last_known: LRUCache[str, Principal] = LRUCache(maxsize=10_000)
_checked_lock = threading.Lock()  # the server's threads share these; cachetools' caches are not thread-safe
_revocations = [0]  # bumped by `forget`: a check that raced a revocation is not remembered


def principal(key: str) -> Principal | None:
    """The key's principal: from memory when checked within API_KEY_CACHE_SECONDS, else from
    Postgres. While Postgres is unreachable, a key this process has checked before keeps the
    standing it had then (cached profiles stay readable, as in the degraded modes); a key it has
    never seen gets the 503 of the outage."""
    fingerprint = api_keys.digest(key)
    with _checked_lock:
        found = _checked.get(fingerprint)
        revocations = _revocations[0]
    if found is not None:
        return found
    try:
        with session_scope() as session:
            found = api_keys.lookup(session, key)
    except TRANSIENT_ERRORS:
        with _checked_lock:
            found = _last_known.get(fingerprint)
        if found is None:
            raise
        return found
    if found is not None:
        with _checked_lock:
            if _revocations[0] == revocations:
                _checked[fingerprint] = found
                _last_known[fingerprint] = found
    return found


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


def authorization(environ: dict, endpoint: str) -> str | None:
    """The request's credentials: its Authorization header, or for a GET or HEAD of a page or an
    endpoint that needs the read scope the dashboard's cookie as a bearer key. A cookie rides along
    on requests a browser makes, so it may only read what the dashboard reads: never write, never
    an admin read (an export, the keys), whichever key was pasted into the login form
    (SameSite=Strict also keeps other sites from sending it at all)."""
    header = environ.get("HTTP_AUTHORIZATION")
    if header or environ.get("REQUEST_METHOD") not in SAFE_METHODS or "HTTP_COOKIE" not in environ \
            or required_scope(endpoint) not in (READ, PUBLIC):
        return header
    key = parse_cookie(environ).get(DASHBOARD_COOKIE)
    return f"Bearer {key}" if key else None


def _unauthorized(detail: str, error: str | None = None) -> Decision:
    challenge = f'Bearer realm="pulse", error="{error}"' if error else 'Bearer realm="pulse"'
    return Decision(401, detail, {"WWW-Authenticate": challenge})


def decide(endpoint: str, authorization: str | None, client_ip: str | None) -> Decision:
    """May this request go on? 401 (no usable key), 403 (a key without the scope), 429 (over its
    limit), or 200 with the rate-limit headers to send."""
    scope = required_scope(endpoint)
    key = bearer(authorization)
    if scope == PUBLIC:
        if endpoint != SIGNUP:
            return Decision(200)
        known = principal(key) if key else None
        if known is not None and known.usable() and known.unlimited:
            return Decision(200, principal=known)
        verdict = rate_limits.check(get_settings().rate_limit_signup, "signup", client_ip or "unknown")
        return Decision(200 if verdict.allowed else 429, "Too many signups from this address; retry later",
                        verdict.headers)
    if key is None:
        return _unauthorized(f"This endpoint needs an API key with the {scope} scope: "
                             "send `Authorization: Bearer <key>`")
    known = principal(key)
    if known is None:
        return _unauthorized("Unknown API key", "invalid_token")
    if known.revoked:
        return _unauthorized(f"API key {known.key_id} has been revoked", "invalid_token")
    if not known.usable():
        return _unauthorized(f"API key {known.key_id} has expired", "invalid_token")
    if scope not in known.scopes:
        return Decision(403, f"API key {known.key_id} lacks the {scope} scope this endpoint needs "
                        f"(it has {', '.join(sorted(known.scopes))})", principal=known)
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
        decision = request.environ.get(DECIDED) or decide(
            request.endpoint, authorization(request.environ, request.endpoint), request.remote_addr)
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
