"""The insights page (/dashboard/insights) in a real browser (Debian's chromium, headless, through its
chromedriver) against the API over HTTP with the real pipeline behind it: a population whose funnel,
retention triangle and lifecycle are worked out by hand below is sent as events, and the page, asked
through its forms, must draw exactly those numbers (bars, table cells, heat-map cells). Also, over
plain HTTP: the dashboard's session may ask a funnel (a POST) from its own pages only, and still
never writes; and a funnel answered as a job (202) is polled until done and drawn the same.

The population uses event types of this run's own (`i<run id>_visit`, `_trial`, `_buy`), so other
modules' events never enter its answers. Weeks are counted from W0, the Monday five weeks before this
one (W5 is the current week). Each person's events (days and hours after the start of a week):

    person  country  visit (A)                          trial (B)            buy (C)
    u1      UA       W0+0d10h, W1+0d10h, W2+0d10h       pro, A+1h            A+4h
    u2      UA       W0+1d10h, W1+1d10h                 pro, A+2h            A+3d (past the 2-day window)
    u3      PL       W0+2d10h, W3+2d10h                 free, A+1h (not pro)
    u4      PL       W0+1d10h                           pro, A+5h            A+1h (before the trial only)
    u5      UA       W0+3d10h                           pro, A+30min         A+1h
    v       (visitor) W0+4d10h, W2+3d10h                pro, A+1h            A+2h
    u6      PL       W0-1d+10h (W-1), W0+2d10h          pro, W0-1d+11h (before its entry)
    u7      UA       W1+1d10h, W2+1d10h
    u8      UA       W1+2d10h

Funnel A → B(plan=pro) → C within 2 days, entering in [W0, W0+7d): 7 enter (u1-u6, v; u6 at its
first visit in the range), 5 trial (u1, u2, u4, u5, v: after 3600, 7200, 18000, 1800, 3600 s; median
3600), 3 buy (u1, u5, v: after 10800, 1800, 3600 s; median 3600). By country: UA u1, u2, u5 → 3, 3, 2;
PL u3, u4, u6 → 3, 1, 0; the visitor under "(none)" → 1, 1, 1.

Retention by first visit, weekly, cohorts W0 and W1: W0 = u1-u5, v (u6's first visit is in W-1):
active 6, 2 (u1, u2), 2 (u1, v), 1 (u3), 0, 0; W1 = u7, u8: 2, 1 (u7), 0, 0, 0 (W6 has not begun).

Lifecycle of visits, weekly, W0..W4: new 6, 2, 0, 0, 0; returning 1 (u6, active in W-1), 2 (u1, u2),
2 (u1, u7), 0, 0; resurrecting 0, 0, 1 (v), 1 (u3), 0; dormant 0, -5 (u3, u4, u5, u6, v), -2 (u2,
u8), -3 (u1, u7, v), -1 (u3).
"""
import os
import re
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
import requests
from sqlalchemy import text

from scripts import browser as browsers
from shared.infra.db import session_scope
from tests.conftest import RUN_ID
from tests.fixtures import keyed_client, wait_for
from tests.helpers import serve, signup_body

pytestmark = pytest.mark.usefixtures("pipeline")

VISIT, TRIAL, BUY = (f"i{RUN_ID}_{name}" for name in ("visit", "trial", "buy"))
WINDOW_DAYS = 2


def week0() -> date:
    today = datetime.now(UTC).date()
    return today - timedelta(days=today.weekday(), weeks=5)


def plan(w0: datetime) -> list[tuple[str, str, datetime, dict]]:
    """The docstring's table: (person, event type, when, metadata)."""
    def at(week: int, days: float, hours: float = 10) -> datetime:
        return w0 + timedelta(weeks=week, days=days, hours=hours)

    hour = timedelta(hours=1)
    a = {"u1": at(0, 0), "u2": at(0, 1), "u3": at(0, 2), "u4": at(0, 1), "u5": at(0, 3), "v": at(0, 4)}
    return [
        ("u1", VISIT, a["u1"], {}), ("u1", TRIAL, a["u1"] + hour, {"plan": "pro"}),
        ("u1", BUY, a["u1"] + 4 * hour, {}), ("u1", VISIT, at(1, 0), {}), ("u1", VISIT, at(2, 0), {}),
        ("u2", VISIT, a["u2"], {}), ("u2", TRIAL, a["u2"] + 2 * hour, {"plan": "pro"}),
        ("u2", BUY, a["u2"] + timedelta(days=3), {}), ("u2", VISIT, at(1, 1), {}),
        ("u3", VISIT, a["u3"], {}), ("u3", TRIAL, a["u3"] + hour, {"plan": "free"}), ("u3", VISIT, at(3, 2), {}),
        ("u4", VISIT, a["u4"], {}), ("u4", BUY, a["u4"] + hour, {}), ("u4", TRIAL, a["u4"] + 5 * hour, {"plan": "pro"}),
        ("u5", VISIT, a["u5"], {}), ("u5", TRIAL, a["u5"] + hour / 2, {"plan": "pro"}), ("u5", BUY, a["u5"] + hour, {}),
        ("v", VISIT, a["v"], {}), ("v", TRIAL, a["v"] + hour, {"plan": "pro"}), ("v", BUY, a["v"] + 2 * hour, {}),
        ("v", VISIT, at(2, 3), {}),
        ("u6", VISIT, at(-1, 6), {}), ("u6", TRIAL, at(-1, 6, 11), {"plan": "pro"}), ("u6", VISIT, at(0, 2), {}),
        ("u7", VISIT, at(1, 1), {}), ("u7", VISIT, at(2, 1), {}),
        ("u8", VISIT, at(1, 2), {}),
    ]


@pytest.fixture(scope="module")
def server(app):
    with serve(app) as url:
        yield url


@pytest.fixture(scope="module")
def population(app):
    """The people of the docstring's table, their events sent through the API and stored."""
    client = keyed_client(app)
    w0 = datetime.combine(week0(), datetime.min.time(), UTC)
    countries = {"u1": "UA", "u2": "UA", "u3": "PL", "u4": "PL", "u5": "UA", "u6": "PL", "u7": "UA", "u8": "UA"}
    cities = {"UA": "Kyiv", "PL": "Warsaw"}
    ids = {}
    for name, country in countries.items():
        answer = client.post("/api/users/signup", json=signup_body(city=cities[country], country=country))
        assert answer.status_code == 201, answer.get_json()
        ids[name] = answer.get_json()["id"]
    events_planned = plan(w0)
    visitor = f"anon-{uuid.uuid4().hex}"
    events = [{"event_id": uuid.uuid4().hex, "event_type": kind, "timestamp": when.isoformat(), "metadata": metadata,
               **({"anonymous_id": visitor} if who == "v" else {"user_id": ids[who]})}
              for who, kind, when, metadata in events_planned]
    assert client.post("/api/events/batch", json={"events": events}).status_code == 202

    def stored() -> int:
        with session_scope() as session:
            return session.scalar(text("SELECT count(*) FROM person_events WHERE event_type = ANY(:types)"),
                                  {"types": [VISIT, TRIAL, BUY]})

    wait_for(lambda: stored() == len(events), timeout=90, what="every event of the population in person_events")
    return {"ids": ids, "w0": week0()}


# ------------------------------------------------------------------------------- over plain HTTP

def funnel_body(w0: date) -> dict:
    return {"steps": [{"event_type": VISIT, "where": {}}, {"event_type": TRIAL, "where": {"plan": "pro"}},
                      {"event_type": BUY, "where": {}}],
            "window_seconds": WINDOW_DAYS * 86400, "from": f"{w0.isoformat()}T00:00:00+00:00",
            "to": f"{(w0 + timedelta(days=7)).isoformat()}T00:00:00+00:00", "breakdown": None, "cohort": None}


def test_the_session_asks_a_funnel_from_its_own_pages_only(server, population):
    login = requests.post(f"{server}/dashboard/login", data={"key": os.environ["PULSE_API_KEY"]},
                          allow_redirects=False, timeout=10)
    jar = {"pulse_session": login.cookies["pulse_session"]}
    body = funnel_body(population["w0"])
    # As the page sends it (fetch adds Origin to every POST): answered, a job or at once.
    asked = requests.post(f"{server}/api/analytics/funnels", json=body, cookies=jar,
                          headers={"Origin": server}, timeout=30)
    assert asked.status_code in (200, 202), asked.text
    # Without Origin (not a browser's fetch), or from another site: the cookie counts for nothing.
    for headers in ({}, {"Origin": "https://evil.example"}):
        refused = requests.post(f"{server}/api/analytics/funnels", json=body, cookies=jar, headers=headers, timeout=30)
        assert refused.status_code == 401, (headers, refused.text)
    # A funnel is the one read a session may POST: an event still cannot be sent with it.
    event = {"user_id": population["ids"]["u1"], "event_type": VISIT}
    assert requests.post(f"{server}/api/events", json=event, cookies=jar, headers={"Origin": server},
                         timeout=30).status_code == 401


# ------------------------------------------------------------------------------- in the browser

@pytest.fixture(scope="module")
def page(browser, server, population):
    """The insights page, logged in, its first (default) answers drawn."""
    browsers.log_in(browser, server, "/dashboard/insights", os.environ["PULSE_API_KEY"])
    wait_for(lambda: browser.current_url.endswith("/dashboard/insights"), what="back at the insights page")
    wait_for(lambda: browsers.loaded(browser), timeout=60, what="the insights page's first answers")
    return browser





def fill(driver, values: dict[str, str]) -> None:
    """Form fields by id (date inputs and selects too, which typing cannot set the same in every locale)."""
    for field, value in values.items():
        driver.execute_script("const e = document.getElementById(arguments[0]); e.value = arguments[1];"
                              "e.dispatchEvent(new Event('input', {bubbles: true}));", field, value)


def run(driver, panel: str) -> str:
    """Submit the panel's form and wait for its answer to be drawn (or refused): its state."""
    runs = int(driver.find_element("id", panel).get_attribute("data-runs"))
    driver.find_element("id", f"{panel}-run").click()
    return wait_for(lambda: int(driver.find_element("id", panel).get_attribute("data-runs")) > runs
                    and driver.find_element("id", panel).get_attribute("data-state"),
                    timeout=120, what=f"the {panel} answer drawn")


def chart(driver, canvas: str) -> dict:
    return driver.execute_script(
        "const c = Chart.getChart(arguments[0]);"
        "return c && {labels: c.data.labels, series: c.data.datasets.map(d => [d.label, d.data]),"
        "             horizontal: c.options.indexAxis === 'y'};", canvas)


def rows(driver, selector: str) -> list[list[str]]:
    return [[cell.text for cell in row.find_elements("css selector", "th, td")]
            for row in driver.find_elements("css selector", selector)]


def field_error(driver, form: str, field: str) -> str:
    return driver.find_element("css selector", f'#{form} .field-error[data-for="{field}"]').get_attribute("textContent")


def set_steps(driver, trial_where: str = "plan=pro") -> None:
    """The funnel's steps: the page starts with three (login, page_view, user_purchase), made ours."""
    types = driver.find_elements("css selector", "#funnel-steps .event-type")
    wheres = driver.find_elements("css selector", "#funnel-steps .where")
    assert len(types) == len(wheres) == 3
    for i, (kind, where) in enumerate(((VISIT, ""), (TRIAL, trial_where), (BUY, ""))):
        driver.execute_script("arguments[0].value = arguments[1]; arguments[2].value = arguments[3]",
                              types[i], kind, wheres[i], where)


def test_the_funnel_draws_the_known_answer(page, population):
    w0 = population["w0"]
    set_steps(page)
    fill(page, {"funnel-window": str(WINDOW_DAYS), "funnel-window-unit": "86400", "funnel-from": w0.isoformat(),
                "funnel-to": (w0 + timedelta(days=7)).isoformat(), "funnel-breakdown": "", "funnel-cohort": "",
                "funnel-orientation": "y"})
    assert run(page, "funnel") == "done", page.find_element("css selector", "#funnel-form .form-error").text
    assert browsers.console_errors(page) == []
    labels = [f"1. {VISIT}", f"2. {TRIAL}", f"3. {BUY}"]
    assert chart(page, "funnel-chart") == {"labels": labels, "series": [["persons", [7, 5, 3]]], "horizontal": True}
    assert rows(page, "#funnel-table tbody tr") == [
        ["1", VISIT, "7", "100.00 %", "100.00 %", "–"],
        ["2", TRIAL, "5", "71.43 %", "71.43 %", "1.0 h"],  # 5/7 = 0.7143; median 3600 s
        ["3", BUY, "3", "60.00 %", "42.86 %", "1.0 h"],  # 3/5, 3/7 = 0.4286; median 3600 s
    ]
    assert not page.find_element("id", "funnel-by-value").is_displayed()

    # By country, bars side by side: the most entries first (ties by name), people of no country last.
    fill(page, {"funnel-breakdown": "country", "funnel-orientation": "x"})
    assert run(page, "funnel") == "done"
    assert chart(page, "funnel-chart") == {"labels": labels, "horizontal": False, "series": [
        ["PL", [3, 1, 0]], ["UA", [3, 3, 2]], ["(none)", [1, 1, 1]]]}
    assert rows(page, "#funnel-by-value tr") == [
        ["country", *labels],
        ["PL", "3", "1 (33.33 %)", "0 (0.00 %)"],
        ["UA", "3", "3 (100.00 %)", "2 (66.67 %)"],
        ["(none)", "1", "1 (100.00 %)", "1 (100.00 %)"],
    ]
    assert rows(page, "#funnel-table tbody tr")[2] == ["3", BUY, "3", "60.00 %", "42.86 %", "1.0 h"]


def test_a_funnel_answered_as_a_job_is_polled_until_done(page, population):
    """A long query answers 202 and a job; `Prefer: respond-async` makes any one do so. The page
    sends no such header of its own: the test adds it to the page's funnel requests."""
    w0 = population["w0"]
    set_steps(page)
    fill(page, {"funnel-window": str(WINDOW_DAYS), "funnel-window-unit": "86400", "funnel-from": w0.isoformat(),
                "funnel-to": (w0 + timedelta(days=7)).isoformat(), "funnel-breakdown": "", "funnel-cohort": ""})
    page.execute_script("""
        window.directFetch = window.fetch;
        window.fetch = (url, init) => window.directFetch(url, String(url) === "/api/analytics/funnels"
            ? {...init, headers: {...init.headers, Prefer: "respond-async"}} : init);""")
    try:
        assert run(page, "funnel") == "done", page.find_element("css selector", "#funnel-form .form-error").text
    finally:
        page.execute_script("window.fetch = window.directFetch")
    assert re.fullmatch(r"answered in [\d,]+ ms \(job [0-9a-f-]+\)", page.find_element("id", "funnel-note").text)
    assert [r[2:] for r in rows(page, "#funnel-table tbody tr")] == [
        ["7", "100.00 %", "100.00 %", "–"], ["5", "71.43 %", "71.43 %", "1.0 h"], ["3", "60.00 %", "42.86 %", "1.0 h"]]
    assert chart(page, "funnel-chart")["series"] == [["persons", [7, 5, 3]]]


def test_a_refused_funnel_says_why_at_the_field(page, population):
    w0 = population["w0"]
    set_steps(page)
    fill(page, {"funnel-from": w0.isoformat(), "funnel-to": (w0 + timedelta(days=7)).isoformat(),
                "funnel-breakdown": "", "funnel-window": str(WINDOW_DAYS), "funnel-window-unit": "86400",
                "funnel-cohort": ""})
    assert run(page, "funnel") == "done"
    drawn = rows(page, "#funnel-table tbody tr")
    fill(page, {"funnel-window": "0"})
    assert run(page, "funnel") == "error"
    assert field_error(page, "funnel-form", "window_seconds")  # 1..31536000: the API names the field
    assert "invalid" in page.find_element("id", "funnel-window").get_attribute("class")
    assert rows(page, "#funnel-table tbody tr") == drawn  # the last answer stays
    # An unknown saved cohort: 404, named at the cohort field; the window's complaint is gone.
    fill(page, {"funnel-window": str(WINDOW_DAYS), "funnel-cohort": f"nobody-{RUN_ID}"})
    assert run(page, "funnel") == "error"
    assert field_error(page, "funnel-form", "cohort")
    assert field_error(page, "funnel-form", "window_seconds") == ""
    # A where that is not key=value pairs is refused by the form itself, at its step.
    set_steps(page, trial_where="plan")
    fill(page, {"funnel-cohort": ""})
    assert run(page, "funnel") == "error"
    assert "key=value" in field_error(page, "funnel-form", "steps[1].where")
    set_steps(page)
    assert run(page, "funnel") == "done"
    assert rows(page, "#funnel-table tbody tr") == drawn


def test_the_retention_triangle_is_a_heat_map_of_the_known_answer(page, population):
    w0 = population["w0"]
    fill(page, {"retention-cohort": "first_event", "retention-period": "week", "retention-periods": "6",
                "retention-event-type": VISIT, "retention-from": w0.isoformat(),
                "retention-to": (w0 + timedelta(weeks=2)).isoformat(), "retention-in-cohort": ""})
    assert run(page, "retention") == "done", page.find_element("css selector", "#retention-form .form-error").text
    assert rows(page, "#retention-table tr") == [
        ["cohort", "size", *(f"week {k}" for k in range(6))],
        [w0.isoformat(), "6", "100.0 %", "33.3 %", "33.3 %", "16.7 %", "0.0 %", "0.0 %"],
        # The W1 cohort's sixth week has not begun: an empty cell, not a zero.
        [(w0 + timedelta(weeks=1)).isoformat(), "2", "100.0 %", "50.0 %", "0.0 %", "0.0 %", "0.0 %", ""],
    ]
    cells = page.find_elements("css selector", "#retention-table tbody td.cell")
    assert [c.get_attribute("data-active") for c in cells] == ["6", "2", "2", "1", "0", "0", "2", "1", "0", "0", "0"]
    assert len(page.find_elements("css selector", "#retention-table tbody td.future")) == 1

    # The colour says the rate: the more of the cohort came back, the more opaque the blue.
    def opacity(cell) -> float:
        found = re.fullmatch(r"rgba?\(37, 99, 235(?:, ([\d.]+))?\)", cell.value_of_css_property("background-color"))
        assert found, cell.value_of_css_property("background-color")
        return float(found.group(1) or 1)

    shades = {float(c.get_attribute("data-rate")): opacity(c) for c in cells}
    ordered = sorted(shades)
    assert ordered == [0.0, 0.167, 0.333, 0.5, 1.0]
    assert all(shades[low] < shades[high] for low, high in zip(ordered, ordered[1:], strict=False))


def test_the_lifecycle_stacks_the_known_answer(page, population):
    w0 = population["w0"]
    fill(page, {"lifecycle-period": "week", "lifecycle-from": w0.isoformat(),
                "lifecycle-to": (w0 + timedelta(weeks=5)).isoformat(), "lifecycle-event-type": VISIT,
                "lifecycle-in-cohort": ""})
    assert run(page, "lifecycle") == "done", page.find_element("css selector", "#lifecycle-form .form-error").text
    drawn = chart(page, "lifecycle-chart")
    assert drawn["labels"] == [(w0 + timedelta(weeks=k)).isoformat() for k in range(5)]
    assert drawn["series"] == [
        ["new", [6, 2, 0, 0, 0]],
        ["returning", [1, 2, 2, 0, 0]],
        ["resurrecting", [0, 0, 1, 1, 0]],
        ["dormant", [0, -5, -2, -3, -1]],
    ]
    stacked = page.execute_script("const s = Chart.getChart('lifecycle-chart').options.scales;"
                                  "return [s.x.stacked, s.y.stacked]")
    assert stacked == [True, True]
