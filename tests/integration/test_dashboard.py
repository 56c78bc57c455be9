"""The dashboard in a real browser (Debian's chromium, headless, through its chromedriver) against
the API served over HTTP, with the real pipeline behind it: the pages load without console errors,
every chart holds the numbers the API reports, and each page leaves a screenshot
(PULSE_SCREENSHOT_DIR, default var/screenshots). Also, over plain HTTP: the login, what the
cookie may and may not do, and the customer distributions against the customers' own profiles.
"""
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import requests
from sqlalchemy import text

from scripts import browser as browsers
from shared.contracts.topology import CUSTOMER_STATS as CUSTOMER_STATS_TASK
from shared.infra import api_keys
from shared.infra.db import session_scope
from shared.infra.mongo import CUSTOMER_STATS
from tests.fixtures import wait_for
from tests.helpers import finished_job, pipeline_busy, purchase, serve, signup_body, tasks_held

pytestmark = pytest.mark.usefixtures("pipeline")
SCREENSHOTS = Path(os.environ.get("PULSE_SCREENSHOT_DIR", Path(__file__).resolve().parents[2] / "var" / "screenshots"))


@pytest.fixture(scope="module")
def server(app):
    """The API over real HTTP on a free port (the browser needs a server, not a test client)."""
    with serve(app) as url:
        yield url


@pytest.fixture(scope="module")
def customers(client_module, mongo):
    """Five customers with purchases on several days, the models fitted on them, and the customer
    distributions computed with that model."""
    client = client_module
    today = datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0)
    ids = [client.post("/api/users/signup", json=signup_body()).get_json()["id"] for _ in range(5)]
    categories = ["Books", "Garden", "Music", "Toys"]
    events = [purchase(user_id, 15.0 + 10 * n + 7 * i, categories[(i + n) % 4],
                       timestamp=(today - timedelta(days=3 + 17 * n + 5 * i)).isoformat())
              for i, user_id in enumerate(ids) for n in range(i + 1)]
    assert client.post("/api/events/batch", json={"events": events}).status_code == 202
    wait_for(lambda: all(len(client.get(f"/api/users/{u}/purchases").get_json()["items"]) == i + 1
                         for i, u in enumerate(ids)), timeout=60, what="every purchase day summarised")
    fitted = finished_job(client, client.post("/api/analytics/models/fit", json={}))
    assert fitted["status"] == "done", fitted
    version = fitted["result"]["version"]
    stats = wait_for(lambda: (doc := mongo[CUSTOMER_STATS].find_one({"_id": "current"}))
                     and doc["model_version"] == version and doc, timeout=60,
                     what="the customer distributions computed with the new model")
    # The fit's rescoring of everyone, and any drain still due, done: segments and scores stay put
    # while a page and the API are compared.
    celery = client.application.extensions["celery"]

    wait_for(lambda: not pipeline_busy(client.get("/api/pipeline").get_json()) and not tasks_held(celery.control),
             timeout=90, what="the pipeline settled after the fit")
    return {"ids": ids, "version": version, "stats": stats}


@pytest.fixture(scope="module")
def client_module(app):
    from tests.fixtures import keyed_client

    return keyed_client(app)


def make_key(scopes: list[str]) -> tuple[str, str]:
    with session_scope() as session:
        row, key = api_keys.create(session, scopes, name="dashboard-test")
        row_id = row.id
    return row_id, key


# ------------------------------------------------------------------------------- over plain HTTP

def test_pages_ask_for_a_key_and_the_cookie_only_reads(server):
    page = requests.get(f"{server}/dashboard", allow_redirects=False, timeout=10)
    assert page.status_code == 303 and page.headers["Location"] == "/dashboard/login?next=/dashboard"
    assert requests.get(f"{server}/api/pipeline", timeout=10).status_code == 401

    _, ingest_only = make_key(["ingest"])
    refused = requests.post(f"{server}/dashboard/login", data={"key": ingest_only}, allow_redirects=False, timeout=10)
    assert refused.status_code == 403 and "lacks the read scope" in refused.text and "Set-Cookie" not in refused.headers
    assert requests.post(f"{server}/dashboard/login", data={"key": "pulse_000000000000_nope"},
                         allow_redirects=False, timeout=10).status_code == 401

    key_id, reader = make_key(["read"])
    # `next` may only lead back into the dashboard: no open redirect.
    login = requests.post(f"{server}/dashboard/login", data={"key": reader, "next": "https://evil.example/"},
                          allow_redirects=False, timeout=10)
    assert login.status_code == 303 and login.headers["Location"] == "/dashboard"
    cookie = login.cookies["pulse_session"]  # a session, not the key (tests/adversarial/test_dashboard_session.py)
    assert reader not in login.headers["Set-Cookie"]
    assert "HttpOnly" in login.headers["Set-Cookie"] and "SameSite=Strict" in login.headers["Set-Cookie"]
    jar = {"pulse_session": cookie}
    assert requests.get(f"{server}/dashboard", cookies=jar, allow_redirects=False, timeout=10).status_code == 200
    pipeline = requests.get(f"{server}/api/pipeline", cookies=jar, timeout=10)
    assert pipeline.status_code == 200
    assert {"pulse.users", "pulse.events", "pulse.email", "pulse.analytics", "pulse.dead_letter"} <= {
        q["name"] for q in pipeline.json()["queues"]}
    # The cookie never writes, and never reads beyond the read scope, even with a key that could.
    _, admin = make_key(list(api_keys.SCOPES))
    as_admin = {"pulse_session": requests.post(f"{server}/dashboard/login", data={"key": admin}, allow_redirects=False,
                                               timeout=10).cookies["pulse_session"]}
    event = purchase(1, 10.0, "Books")
    assert requests.post(f"{server}/api/events", json=event, cookies=as_admin, timeout=10).status_code == 401
    assert requests.get(f"{server}/api/keys", cookies=as_admin, timeout=10).status_code == 401
    assert requests.get(f"{server}/api/users/1/export", cookies=as_admin, timeout=10).status_code == 401
    assert requests.get(f"{server}/api/pipeline", cookies=as_admin, timeout=10).status_code == 200
    # A login form posted from another site is refused: no page elsewhere can log you in with its key.
    forged = requests.post(f"{server}/dashboard/login", data={"key": reader}, headers={"Origin": "https://evil.example"},
                           allow_redirects=False, timeout=10)
    assert forged.status_code == 403 and "Set-Cookie" not in forged.headers
    # A revoked key's session stops working (every process forgets it at once).
    headers = {"Authorization": f"Bearer {admin}"}
    assert requests.delete(f"{server}/api/keys/{key_id}", headers=headers, timeout=10).status_code == 204
    again = requests.get(f"{server}/dashboard", cookies=jar, allow_redirects=False, timeout=10)
    assert again.status_code == 303 and again.headers["Location"].startswith("/dashboard/login")


def test_customer_distributions_count_what_the_profiles_show(client, customers, mongo):
    stats = client.get("/api/analytics/customers")
    assert stats.status_code == 200
    body = stats.get_json()
    assert body["model_version"] == customers["version"]
    from sqlalchemy import select

    from shared.contracts.tables import CustomerSummary
    with session_scope() as session:
        everyone = list(session.scalars(select(CustomerSummary.user_id)))
    assert body["customers"] == len(everyone) >= 5
    # Recompute, so that the stats and the profiles below are computed with the same model, now.
    client.application.extensions["celery"].send_task(CUSTOMER_STATS_TASK)
    body = wait_for(lambda: (b := client.get("/api/analytics/customers").get_json())["computed_at"] != stats.get_json()[
        "computed_at"] and b, timeout=60, what="a fresh computation")
    profiles = [client.get(f"/api/users/{u}/profile").get_json() for u in everyone]
    for name, field in (("churn_risk", "churn_risk"), ("p_alive", "p_alive")):
        values = np.array([p[field] for p in profiles], dtype=float)
        edges = body[name]["edges"]
        expected, _ = np.histogram(values, bins=edges)
        assert body[name]["counts"] == expected.tolist(), name
    ltv = np.array([p["predicted_ltv"] for p in profiles if p["predicted_ltv"] is not None])
    assert sum(body["predicted_ltv"]["counts"]) == len(ltv)
    assert body["predicted_ltv"]["total"] == pytest.approx(ltv.sum(), rel=1e-3, abs=0.05)
    matrix = body["p_alive_matrix"]
    assert len(matrix["p_alive"]) == len(matrix["frequency"]) and all(
        len(row) == len(matrix["recency_weeks"]) for row in matrix["p_alive"])
    assert matrix["p_alive"][0] == [1.0] * len(matrix["recency_weeks"])  # no repeat purchase: alive
    # More repeat purchases, the last one long ago: less likely alive than the same, recently.
    assert matrix["p_alive"][-1][0] < matrix["p_alive"][-1][-1]


# ------------------------------------------------------------------------------- in the browser

def screenshot(driver, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / name))


def loaded(driver, what: str):
    wait_for(lambda: browsers.loaded(driver), timeout=60, what=what)


def chart(driver, canvas: str) -> dict:
    return driver.execute_script(
        "const c = Chart.getChart(arguments[0]);"
        "return c && {labels: c.data.labels, data: c.data.datasets.map(d => d.data)};", canvas)


def log_in(driver, server: str, path: str) -> None:
    driver.get(f"{server}{path}")
    assert "/dashboard/login" in driver.current_url  # no cookie yet: the form
    browsers.log_in(driver, server, path, os.environ["PULSE_API_KEY"])
    wait_for(lambda: driver.current_url.endswith(path), what=f"back at {path} after logging in")


def test_dashboard_draws_what_the_api_reports(browser, server, customers, client):
    for _ in range(2):  # the second read of a profile is a cache hit at the latest
        assert client.get(f"/api/users/{customers['ids'][0]}/profile").status_code == 200
    log_in(browser, server, "/dashboard")
    loaded(browser, "the dashboard's first pipeline and customer readings")
    screenshot(browser, "dashboard.png")
    assert browsers.console_errors(browser) == []  # a Content-Security-Policy violation would be one
    # The browser holds a session, never the key; its script cannot read the cookie at all.
    cookies = browser.get_cookies()
    assert [c["name"] for c in cookies] == ["pulse_session"]
    assert cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict"
    assert os.environ["PULSE_API_KEY"] not in cookies[0]["value"]
    assert browser.execute_script("return document.cookie") == ""

    segments = client.get("/api/analytics/segments").get_json()["items"]
    assert chart(browser, "segments-chart") == {"labels": [s["segment"] for s in segments],
                                                "data": [[s["users"] for s in segments]]}
    # This module's sales are counted (other modules of the run may sell more, so they need not be
    # in the top ten), and the chart is the API's top ten.
    with session_scope() as session:
        counted = set(session.scalars(text("SELECT category FROM category_sales WHERE category = ANY(:c)"),
                                      {"c": ["Books", "Garden", "Music", "Toys"]}))
    assert counted == {"Books", "Garden", "Music", "Toys"}
    categories = client.get("/api/analytics/categories/top?limit=10").get_json()["items"]
    assert chart(browser, "categories-chart") == {"labels": [c["category"] for c in categories],
                                                  "data": [[c["total_sales"] for c in categories]]}
    stats = client.get("/api/analytics/customers").get_json()
    for canvas, name in (("churn-chart", "churn_risk"), ("palive-chart", "p_alive"), ("ltv-chart", "predicted_ltv")):
        assert chart(browser, canvas)["data"] == [stats[name]["counts"]], canvas
    matrix = chart(browser, "matrix-chart")["data"][0]
    flat = [value for row in stats["p_alive_matrix"]["p_alive"] for value in row]
    assert [cell["v"] for cell in matrix] == flat
    model = client.get("/api/analytics/models/latest").get_json()
    facts = {e.get_attribute("data-field"): e.text for e in browser.find_elements("css selector", "#model-facts dd")}
    assert facts["version"] == str(model["version"]) == str(customers["version"])
    assert facts["BG/NBD r, α, a, b"].startswith(f"{model['bgnbd']['r']:.4f}, {model['bgnbd']['alpha']:.4f}")
    pipeline = client.get("/api/pipeline").get_json()
    assert browser.find_element("id", "dead-letters").text == f"{pipeline['dead_letters']:,.0f}"
    cache = pipeline["profile_cache"]
    assert cache["hits"] >= 1  # the fixture's reads went through the same API
    shown = browser.find_element("id", "cache-detail").text  # "<hits> hits of <reads> reads", as read then
    hits, reads = (float(n.replace(",", "")) for n in shown.split()[0:4:3])
    assert 0 < hits <= cache["hits"] and reads <= cache["hits"] + cache.get("misses", 0) + cache.get("bypassed", 0)
    ratio = browser.find_element("id", "cache-ratio").text
    assert ratio.endswith(" %") and float(ratio[:-2]) == pytest.approx(100 * hits / reads, abs=0.051)
    queues = chart(browser, "queues-chart")
    assert set(queues["labels"]) == {q["name"] for q in pipeline["queues"]}
    # The ingestion lag as the page read it (one reading: the tile and the chart agree with each
    # other, and with the histogram's buckets): the fixture's signups and purchases are measured.
    lag = chart(browser, "lag-chart")
    assert lag["labels"] == [f"≤ {b['le']} s" if b["le"] != "+Inf" else "> 60 s"
                             for b in pipeline["ingestion_lag"]["buckets"]]
    per_bucket = lag["data"][0]
    measured = sum(per_bucket)
    assert 20 <= measured <= pipeline["ingestion_lag"]["count"]  # 5 signups and 15 purchases at least
    detail = browser.find_element("id", "lag-detail").text  # "median ≤ <le> s, mean <s> s over <n> events"
    assert detail.endswith(f" over {measured:,.0f} events"), detail
    running, p95 = 0, None
    for label, count in zip(lag["labels"], per_bucket, strict=True):
        running += count
        if p95 is None and running >= 0.95 * measured:
            p95 = label
    assert browser.find_element("id", "lag-p95").text == p95
    top = client.get("/api/users/top?min_score=0&limit=10").get_json()["items"]
    links = [a.text for a in browser.find_elements("css selector", "#top-users a")]
    assert links == [str(u["id"]) for u in top]


def test_user_page_shows_the_profile_and_purchase_timeline(browser, server, customers, client):
    user_id = customers["ids"][-1]  # the customer with the most purchase days
    browser.get(f"{server}/dashboard/users/{user_id}")
    if "/dashboard/login" in browser.current_url:  # run alone: this test logs in itself
        log_in(browser, server, f"/dashboard/users/{user_id}")
    loaded(browser, "the user page")
    screenshot(browser, "dashboard-user.png")
    assert browsers.console_errors(browser) == []
    profile = client.get(f"/api/users/{user_id}/profile").get_json()
    purchases = client.get(f"/api/users/{user_id}/purchases").get_json()["items"]
    assert len(purchases) == 5
    timeline = chart(browser, "timeline-chart")
    assert timeline["labels"] == [d["day"] for d in purchases]
    assert timeline["data"][0] == [d["spent"] for d in purchases]
    assert timeline["data"][1][-1] == pytest.approx(profile["totals"]["total_spent"])
    assert browser.find_element("id", "p-segment").text == profile["segment"]
    assert browser.find_element("id", "p-churn").text == f"{profile['churn_risk']:.1f} %"
    assert browser.find_element("id", "p-alive").text == f"{profile['p_alive']:.3f}"
    assert profile["user"]["username"] in browser.find_element("id", "user-name").text
    facts = {e.get_attribute("data-field"): e.text for e in browser.find_elements("css selector", "#profile-facts dd")}
    # Of the five purchases (23 to 91 days ago) one is in the window; with the signup (now): two
    # one-event sessions of 0 minutes.
    assert profile["sessions"] == {"last_30_days": 2, "average_minutes_30d": 0.0}
    assert facts["sessions (30 days)"] == "2, 0.0 min on average"

    browser.get(f"{server}/dashboard/users/999999999")
    loaded(browser, "the page of nobody")
    assert browser.find_element("id", "user-missing").text == "No user with id 999999999."


def test_dashboard_draws_the_validation_and_the_rolling_holdout(browser, server, customers, client):
    today = datetime.now(UTC).date()
    validation = finished_job(client, client.post("/api/analytics/models/validate", json={
        "calibration_end": (today - timedelta(days=40)).isoformat(),
        "holdout_end": (today - timedelta(days=1)).isoformat()}))
    assert validation["status"] == "done", validation
    # A model fitted 30 days ago, then the scheduled refit (what beat sends), which first scores it
    # against the 29 complete days since.
    old = finished_job(client, client.post("/api/analytics/models/fit",
                                           json={"as_of": (today - timedelta(days=30)).isoformat()}))
    assert old["status"] == "done", old
    client.application.extensions["celery"].send_task("pulse.analytics.fit_models")
    checks = wait_for(lambda: [c for c in client.get("/api/analytics/models/holdout").get_json()["items"]
                               if c["model_version"] == old["result"]["version"]], timeout=120,
                      what="the rolling holdout of the model fitted 30 days ago")
    wait_for(lambda: client.get("/api/analytics/models/latest").get_json()["version"] > old["result"]["version"],
             timeout=120, what="the scheduled refit's model")
    wait_for(lambda: not pipeline_busy(client.get("/api/pipeline").get_json())
             and not tasks_held(client.application.extensions["celery"].control),
             timeout=90, what="the rescoring and distributions after the refit")
    browsers.console_errors(browser)  # read and forget what earlier pages logged (the user page of nobody's 404s)
    browser.get(f"{server}/dashboard")
    if "/dashboard/login" in browser.current_url:  # run alone: this test logs in itself
        log_in(browser, server, "/dashboard")
    loaded(browser, "the dashboard with a validation and a rolling holdout")
    screenshot(browser, "dashboard-model-check.png")
    assert browsers.console_errors(browser) == []

    result = validation["result"]
    blocks = {name: m["holdout"] for name, m in result["models"].items() if "holdout" in m}
    assert blocks
    first = next(iter(blocks.values()))
    tracking = chart(browser, "tracking-chart")
    assert tracking["labels"] == [w["week"] for w in first["weekly"]]
    assert tracking["data"] == [[w["actual_cumulative"] for w in first["weekly"]]] + [
        [w["predicted_cumulative"] for w in block["weekly"]] for block in blocks.values()]
    frequency = chart(browser, "frequency-chart")
    assert frequency["labels"] == [str(g["frequency"]) for g in first["by_calibration_frequency"]]
    assert frequency["data"][1:] == [[g["predicted_mean"] for g in block["by_calibration_frequency"]]
                                     for block in blocks.values()]
    table = [row.text for row in browser.find_elements("css selector", "#validation-table tbody tr")]
    assert len(table) == len(blocks) + 1 and table[-1].startswith("baseline: calibration_rate")

    history = client.get("/api/analytics/models/holdout?limit=300").get_json()["items"]
    scoring = [c for c in reversed(history) if c["scoring"]]
    rolling = chart(browser, "holdout-chart")
    assert rolling["data"] == [[c["actual_repeat_purchases"] for c in scoring],
                               [c["predicted_repeat_purchases"] for c in scoring]]
    newest = [c for c in history if c["checked_at"] == history[0]["checked_at"]]
    assert {c["model"] for c in newest} == {c["model"] for c in checks}
    assert chart(browser, "rolling-tracking-chart")["data"][0] == [w["actual_cumulative"] for w in newest[0]["weekly"]]
    assert chart(browser, "rolling-frequency-chart")["data"][1:] == [
        [g["predicted_mean"] for g in c["by_calibration_frequency"]] for c in newest]

    stats = client.get("/api/analytics/customers").get_json()
    split = chart(browser, "palive-split-chart")
    assert split["data"] == [stats["p_alive_by_buyers"]["one_time"]["counts"],
                             stats["p_alive_by_buyers"]["repeat"]["counts"]]
    assert [a + b for a, b in zip(*split["data"], strict=True)] == stats["p_alive"]["counts"]
    # The model card: every purchase model with its standard errors.
    model = client.get("/api/analytics/models/latest").get_json()
    facts = {e.get_attribute("data-field"): e.text for e in browser.find_elements("css selector", "#model-facts dd")}
    bg = model["models"]["bgnbd"]
    assert facts["BG/NBD ± s.e."].startswith(
        f"r {bg['parameters']['r']:.3f} ± {bg['standard_errors']['r']:.3f}") if bg.get("standard_errors", {}).get("r") \
        is not None else facts["BG/NBD ± s.e."].startswith(f"r {bg['parameters']['r']:.3f}")
    assert facts["scoring model"] == "BG/NBD"
