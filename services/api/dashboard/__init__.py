"""The dashboard: `/dashboard` (the pipeline live and the customers), `/dashboard/users/<id>` and
`/dashboard/insights` (a funnel, the retention triangle and the lifecycle, each from a form).

The pages are small HTML shells; their script reads the API's own JSON (`/api/pipeline`,
`/api/analytics/...`, a user's profile and purchases) and draws it with Chart.js, served from
`static/vendor` (no CDN: the dashboard works on a machine without internet).

A browser cannot send `Authorization: Bearer` when it follows a link, so the login form takes a
key with the read scope, checks it, and exchanges it for a session: a random id (256 bits) in an
HttpOnly, SameSite=Strict cookie (Secure when the request came over HTTPS, as a trusted proxy
says: services.api.proxies), kept in Redis under its hash with the id of the key, expiring after
DASHBOARD_SESSION_SECONDS. The key itself is never sent back to the browser. The session stands
for the key with the read scope only, for GET and HEAD of the pages and the read endpoints (and the
funnel's POST from this origin, a read whose question is a body: services.api.access.authorization),
and only while the key is usable: a revoked or expired key
ends its sessions at once. Logging out deletes the session in Redis, so the cookie is worthless
even if it was copied. The forms refuse posts from other sites.

Every dashboard answer carries a Content-Security-Policy allowing this origin's scripts, styles
and requests only (no inline script: each page names itself in `<body data-page>`), no framing
(`frame-ancestors 'none'`, X-Frame-Options: DENY), nosniff and no referrer to other sites.
"""
import secrets
from urllib.parse import urlsplit

import redis
from flask import Blueprint, make_response, redirect, render_template, request, url_for

from services.api import access, proxies
from shared.contracts.settings import get_settings
from shared.infra.cache import get_redis
from shared.infra.logging import get_logger

log = get_logger(__name__)
dashboard_bp = Blueprint("dashboard", __name__, url_prefix="/dashboard", template_folder="templates",
                         static_folder="static")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: with it, browsers send `Origin: null` on the forms' own POSTs, which the
    # cross-site check (below) must refuse. same-origin sends nothing to other sites.
    "Referrer-Policy": "same-origin",
}


@dashboard_bp.after_request
def _security_headers(response):
    # Also on the login redirects that services.api.access answers for the dashboard's pages.
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


@dashboard_bp.get("")
def index():
    return render_template("dashboard/index.html")


@dashboard_bp.get("/users/<int:user_id>")
def user_page(user_id: int):
    return render_template("dashboard/user.html", user_id=user_id)


@dashboard_bp.get("/insights")
def insights():
    return render_template("dashboard/insights.html")


def _local(target: str | None) -> str:
    """Where to go after logging in: only a dashboard page of this server (no open redirect)."""
    if target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and parts.path.startswith("/dashboard") \
                and not target.startswith("//") and "\\" not in target:
            return target
    return url_for("dashboard.index")


def _form(target: str, error: str | None, status: int = 200):
    hours = get_settings().dashboard_session_seconds // 3600
    return render_template("dashboard/login.html", next=target, error=error, hours=hours), status


def _cross_site():
    """A form posted from another site (browsers send Origin with every POST) is refused, so no
    page elsewhere can log a visitor in with its own key, or out: the refusal, or None."""
    origin = request.headers.get("Origin")
    if origin is None or origin == request.host_url.rstrip("/"):
        return None
    return _form(_local(request.values.get("next")), "This form was sent from another site", 403)


@dashboard_bp.route("/login", methods=["GET", "POST"])
def login():
    target = _local(request.values.get("next"))
    if request.method == "GET":
        return _form(target, None)
    if refused := _cross_site():
        return refused
    key = (request.form.get("key") or "").strip()
    forwarded = proxies.forwarded(request.environ)
    decision = access.decide("dashboard.index", f"Bearer {key}" if key else None, forwarded.client)
    if decision.status != 200:
        detail = decision.detail if key else "Paste an API key with the read scope"
        return _form(target, detail, decision.status)
    # A 200 for an endpoint that needs a key names the key's principal (access._decide).
    assert decision.principal is not None
    session_id = secrets.token_urlsafe(32)
    ttl = get_settings().dashboard_session_seconds
    try:
        get_redis().set(access.session_key(session_id), decision.principal.key_id, ex=ttl)
    except redis.RedisError as exc:
        log.warning("dashboard_session_unavailable", error=type(exc).__name__)
        return _form(target, "Sessions are kept in Redis, which is unreachable: retry in a moment", 503)
    response = make_response(redirect(target, code=303))
    response.set_cookie(access.SESSION_COOKIE, session_id, max_age=ttl, httponly=True, samesite="Strict",
                        secure=forwarded.scheme == "https", path="/")
    # A browser logged in before sessions holds the key itself in this cookie: take it back.
    response.delete_cookie(access.OLD_KEY_COOKIE, path="/", samesite="Strict", httponly=True)
    return response


@dashboard_bp.post("/logout")
def logout():
    if refused := _cross_site():
        return refused
    session_id = request.cookies.get(access.SESSION_COOKIE)
    if session_id:
        try:
            get_redis().delete(access.session_key(session_id))
        except redis.RedisError as exc:
            # The cookie goes below all the same; the session then ends when it expires.
            log.warning("dashboard_logout_unrecorded", error=type(exc).__name__)
    response = make_response(redirect(url_for("dashboard.login"), code=303))
    secure = proxies.forwarded(request.environ).scheme == "https"
    response.delete_cookie(access.SESSION_COOKIE, path="/", samesite="Strict", httponly=True, secure=secure)
    response.delete_cookie(access.OLD_KEY_COOKIE, path="/", samesite="Strict", httponly=True)
    return response
