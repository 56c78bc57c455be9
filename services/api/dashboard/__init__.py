"""The dashboard: `/dashboard` (the pipeline live and the customers) and `/dashboard/users/<id>`.

The pages are small HTML shells; their script reads the API's own JSON (`/api/pipeline`,
`/api/analytics/...`, a user's profile and purchases) and draws it with Chart.js, served from
`static/vendor` (no CDN: the dashboard works on a machine without internet).

A browser cannot send `Authorization: Bearer` when it follows a link, so the dashboard's login
form takes a key with the read scope and keeps it in an HttpOnly, SameSite=Strict cookie. The
access check (services.api.access.authorization) accepts that cookie for GET and HEAD of the
pages and the read-scope endpoints only, so the cookie can read what the dashboard reads and
nothing else, whatever the key may do; the key itself is checked on every request as a header
key is (revoked or expired, it stops working at once). The forms refuse posts from other sites.
"""
from urllib.parse import urlsplit

from flask import Blueprint, make_response, redirect, render_template, request, url_for

from services.api import access, proxies

dashboard_bp = Blueprint("dashboard", __name__, url_prefix="/dashboard", template_folder="templates",
                         static_folder="static")
COOKIE_MAX_AGE = 12 * 3600  # a working day; then the key is asked for again


@dashboard_bp.get("")
def index():
    return render_template("dashboard/index.html")


@dashboard_bp.get("/users/<int:user_id>")
def user_page(user_id: int):
    return render_template("dashboard/user.html", user_id=user_id)


def _local(target: str | None) -> str:
    """Where to go after logging in: only a dashboard page of this server (no open redirect)."""
    if target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and parts.path.startswith("/dashboard") \
                and not target.startswith("//"):
            return target
    return url_for("dashboard.index")


def _cross_site():
    """A form posted from another site (browsers send Origin with every POST) is refused, so no
    page elsewhere can log a visitor in with its own key, or out: the refusal, or None."""
    origin = request.headers.get("Origin")
    if origin is None or origin == request.host_url.rstrip("/"):
        return None
    target = _local(request.values.get("next"))
    return render_template("dashboard/login.html", next=target, error="This form was sent from another site"), 403


@dashboard_bp.route("/login", methods=["GET", "POST"])
def login():
    target = _local(request.values.get("next"))
    if request.method == "GET":
        return render_template("dashboard/login.html", next=target, error=None)
    if refused := _cross_site():
        return refused
    key = (request.form.get("key") or "").strip()
    decision = access.decide("dashboard.index", f"Bearer {key}" if key else None,
                            proxies.client_address(request))
    if decision.status != 200:
        detail = decision.detail if key else "Paste an API key with the read scope"
        return render_template("dashboard/login.html", next=target, error=detail), decision.status
    response = make_response(redirect(target, code=303))
    response.set_cookie(access.DASHBOARD_COOKIE, key, max_age=COOKIE_MAX_AGE, httponly=True, samesite="Strict",
                        secure=request.is_secure, path="/")
    return response


@dashboard_bp.post("/logout")
def logout():
    if refused := _cross_site():
        return refused
    response = make_response(redirect(url_for("dashboard.login"), code=303))
    response.delete_cookie(access.DASHBOARD_COOKIE, path="/", samesite="Strict", httponly=True)
    return response
