"""`make demo`: replay the companion guide's scenarios against the running stack.

Start the stack first (`make dev`), then run `make demo` (or `.venv/bin/pulse demo`).
Everything goes through the public HTTP API at PULSE_API (default http://127.0.0.1:8000), with one
exception explained at scenario [6]. The script is safe to re-run: users that exist already are
looked up instead of created, and every event carries a deterministic `event_id`, so a second run
stores nothing twice.

Steps:
  1. sign up the guide's two users (Ivan Ivanov, Mariya Petrova) and ~200 generated users in Kyiv,
     Kharkiv (UA) and Warsaw (PL) from a fixed seed;
  2. POST a few thousand events (purchases over the last ~120 days so that every segment shows up,
     page views, logins) through POST /api/events/batch;
  3. wait until the worker has stored them and analytics has rescored the users, fit the population
     models (POST /api/analytics/models/fit: a job, polled at its Location) and wait until the profiles carry the model
     version;
  4. print the guide's scenarios [1]..[7] from the live API;
  5. [8] a visitor browses and buys as a guest (`anonymous_id`), then signs up with the same id: the
     profile shows the visits, the sessions and the purchase (issue 23's open event model);
  6. [9] a funnel of the demo's own events (login → page_view → user_purchase within 7 days, over its
     whole history), beside the same funnel counted here from what the demo sent, and [10] the weekly
     retention triangle of first page views (issue 24). Weeks, not days: the history reaches 120 days
     back, so its first page views fall over some 17 weeks (a triangle of 19 calendar weeks).
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import requests
from tqdm import tqdm

from scripts.stack_client import API, StackError, answer, call, key_file, require_stack, run_job

SEED = 20240808
N_GENERATED = 200
BATCH = 1000
EVENT_PREFIX = "demo1"  # part of every event_id: bump it to load a fresh history
LINE = "=" * 80

CATEGORIES = {
    # category: (min price, max price)
    "electronics": (60, 900),
    "books": (8, 45),
    "clothing": (15, 160),
    "home": (20, 300),
    "sports": (15, 250),
    "toys": (10, 90),
    "beauty": (8, 70),
    "garden": (12, 200),
}
CITIES = [  # (city, country code, how many generated users, streets)
    ("Kyiv", "UA", 90, ["Khreschatyk Street", "Volodymyrska Street", "Sahaidachnoho Street",
                        "Lesi Ukrainky Boulevard", "Velyka Vasylkivska Street", "Antonovycha Street"]),
    ("Kharkiv", "UA", 60, ["Sumska Street", "Pushkinska Street", "Nauky Avenue", "Poltavskyi Shliakh"]),
    ("Warsaw", "PL", 50, ["Marszalkowska", "Nowy Swiat", "Krakowskie Przedmiescie", "Aleje Jerozolimskie"]),
]
FIRST = ["Oleksandr", "Andrii", "Dmytro", "Olena", "Iryna", "Taras", "Sofiia", "Bohdan", "Kateryna",
         "Yurii", "Nataliia", "Maksym", "Anna", "Serhii", "Oksana", "Piotr", "Agnieszka", "Tomasz",
         "Magdalena", "Krzysztof"]
LAST = ["Shevchenko", "Kovalenko", "Bondarenko", "Tkachenko", "Kravchenko", "Melnyk", "Boiko",
        "Moroz", "Lysenko", "Savchenko", "Nowak", "Kowalski", "Wisniewski", "Wojcik", "Kaminski"]


class DemoError(StackError):
    pass


@dataclass
class Person:
    username: str
    email: str
    full_name: str
    street: str
    city: str
    country_code: str
    kind: str  # the purchase behaviour generated for this user
    id: int | None = None
    events: list[dict] = field(default_factory=list)

    @property
    def purchases(self) -> int:
        return sum(1 for e in self.events if e["event_type"] == "user_purchase")




def wait_for(what: str, probe, timeout: float, interval: float = 1.0):
    """Poll `probe()` until it returns a truthy value; fail clearly at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        result, last = probe()
        if result:
            return result
        time.sleep(interval)
    raise DemoError(f"Timed out after {timeout:.0f}s waiting for {what} (last state: {last})")


# --------------------------------------------------------------------------- sample data

def people() -> list[Person]:
    rng = random.Random(SEED)
    result = [
        Person("ivan_data", "ivan.data@example.com", "Ivan Ivanov", "Khreschatyk Street", "Kyiv", "UA", "ivan"),
        Person("maria_ml", "mariya.ml@example.com", "Mariya Petrova", "Pushkin Street", "Kyiv", "UA", "mariya"),
    ]
    kinds = ["power"] * 6 + ["vip"] * 14 + ["active"] * 70 + ["at_risk"] * 40 + ["dormant"] * 40 + ["browser"] * 30
    rng.shuffle(kinds)
    n = 0
    for city, code, count, streets in CITIES:
        for _ in range(count):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            username = f"{first}.{last}.{n:03d}".lower()
            result.append(Person(username, f"{username}@example.com", f"{first} {last}",
                                 f"{rng.choice(streets)} {rng.randint(1, 120)}", city, code, kinds[n % len(kinds)]))
            n += 1
    return result


def plan_events(person: Person, now: datetime, rng: random.Random) -> list[dict]:
    """The user's history: purchases shaped by `kind` so that every segment appears, plus activity."""
    kind = person.kind
    # (number of purchases, days-ago range of purchases, price scale, most recent purchase days ago)
    if kind == "ivan":
        purchases = [(3, "electronics", 189.99), (17, "books", 24.50), (35, "clothing", 59.90),
                     (48, "books", 18.00), (66, "home", 74.25), (95, "sports", 42.00)]
        page_views, logins = 25, 8
    elif kind == "mariya":
        purchases = [(1, "electronics", 649.00), (9, "books", 32.00), (20, "electronics", 399.00),
                     (33, "beauty", 45.50), (51, "home", 210.00), (70, "books", 27.90), (102, "toys", 35.00)]
        page_views, logins = 40, 12
    else:
        spec = {
            "power": (rng.randint(18, 26), (0, 40), 1.0, 20, 60),
            "vip": (rng.randint(8, 14), (2, 85), 1.6, 10, 4),
            "active": (rng.randint(2, 7), (5, 88), 0.5, 8, 3),
            "at_risk": (1, (1, 28), 0.0, 4, 2),
            "dormant": (rng.randint(1, 4), (92, 120), 0.5, 1, 0),
            "browser": (0, (0, 0), 0.0, 6, 3),
        }[kind]
        count, (lo, hi), scale, page_views, logins = spec
        purchases = []
        for _ in range(count):
            if kind == "at_risk":
                category = rng.choice(["books", "toys", "beauty"])
                price = round(rng.uniform(8, 40), 2)
            else:
                category = rng.choice(list(CATEGORIES))
                if kind in ("power", "vip") and rng.random() < 0.5:
                    category = "electronics"
                low, high = CATEGORIES[category]
                price = round(rng.uniform(low, high) * (0.7 + scale * rng.random()), 2)
            purchases.append((rng.uniform(lo, hi), category, price))
        if kind == "power":
            page_views = rng.randint(45, 60)
    events = []
    for days_ago, category, price in purchases:
        product = f"{category[:3].upper()}-{rng.randint(100, 999)}"
        events.append({
            "event_type": "user_purchase",
            "timestamp": now - timedelta(days=days_ago, minutes=rng.randint(0, 600)),
            "metadata": {"product_id": product, "price": price, "category": category},
        })
    # Activity: power users browse in the last 30 days, the others across the whole period.
    window = 28 if person.kind in ("power", "ivan", "mariya") else 120
    if person.kind == "dormant":
        window = 0  # dormant users only browse around their old purchases
    for _ in range(page_views):
        days_ago = rng.uniform(0, window) if window else rng.uniform(92, 120)
        events.append({
            "event_type": "page_view",
            "timestamp": now - timedelta(days=days_ago),
            "metadata": {"page": rng.choice(["/", "/catalog", "/cart", "/deals", "/product"])},
        })
    for _ in range(logins):
        days_ago = rng.uniform(0, window) if window else rng.uniform(92, 120)
        events.append({"event_type": "login", "timestamp": now - timedelta(days=days_ago), "metadata": {}})
    for i, event in enumerate(events):
        event["event_id"] = f"{EVENT_PREFIX}-{person.username}-{i}"
        event["user_id"] = person.id
        event["timestamp"] = event["timestamp"].isoformat()
        event["geo"] = {"country": person.country_code, "city": person.city}
    return events


# --------------------------------------------------------------------------- loading

def existing_users() -> dict[str, dict]:
    """Every user in the demo's cities, by lower-cased username (GET /api/users pages)."""
    found: dict[str, dict] = {}
    for city, code, _, _ in CITIES:
        page = 1
        while True:
            body = call("GET", "/api/users", params={"country": code, "city": city, "page": page,
                                                      "per_page": 500}).json()
            for user in body["items"]:
                found[user["username"].lower()] = user
            if page * body["per_page"] >= body["total"] or not body["items"]:
                break
            page += 1
    return found


def load_users(persons: list[Person]) -> tuple[int, int]:
    known = existing_users()
    to_create = [p for p in persons if p.username.lower() not in known]
    for p in persons:
        if p.username.lower() in known:
            p.id = known[p.username.lower()]["id"]

    def signup(p: Person) -> tuple[Person, requests.Response]:
        return p, call("POST", "/api/users/signup", expect=(201, 409), json={
            "username": p.username, "email": p.email, "full_name": p.full_name,
            "address": {"street": p.street, "city": p.city, "country_code": p.country_code},
        })

    conflicts = []

    def record(p: Person, response: requests.Response) -> None:
        if response.status_code == 201:
            p.id = response.json()["id"]
        else:
            conflicts.append(p)

    # The guide's two users first and in order (they lead the lists of [1] and [2]), then the rest.
    guide = [p for p in to_create if p.kind in ("ivan", "mariya")]
    rest = [p for p in to_create if p not in guide]
    for p in guide:
        record(*signup(p))
    with ThreadPoolExecutor(8) as pool:
        for p, response in tqdm(pool.map(signup, rest), total=len(rest), desc="signups", unit="user",
                                disable=not rest):
            record(p, response)
    if conflicts:  # taken meanwhile (or by a run that used another city): look them up again
        known = existing_users()
        for p in conflicts:
            if p.username.lower() not in known:
                raise DemoError(f"{p.username} or {p.email} is taken by a user outside the demo's cities")
            p.id = known[p.username.lower()]["id"]
    return len(to_create) - len(conflicts), len(persons) - len(to_create) + len(conflicts)


def send_events(persons: list[Person]) -> list[dict]:
    now = datetime.now(UTC).replace(microsecond=0)
    rng = random.Random(SEED + 1)
    events = []
    for p in persons:
        p.events = plan_events(p, now, rng)
        events.extend(p.events)
    random.Random(SEED + 2).shuffle(events)
    with tqdm(total=len(events), desc="events", unit="ev") as bar:
        for start in range(0, len(events), BATCH):
            chunk = events[start:start + BATCH]
            call("POST", "/api/events/batch", expect=(202,), json={"events": chunk}, timeout=60)
            bar.update(len(chunk))
    return events


def profile(user_id: int) -> requests.Response:
    return call("GET", f"/api/users/{user_id}/profile")


def wait_until_processed(persons: list[Person], events: list[dict]) -> None:
    sent = Counter(e["metadata"]["category"] for e in events if e["event_type"] == "user_purchase")

    # 1. The worker stored every purchase: each category counts at least what we sent (the demo's
    #    ids are deterministic, so on a re-run the counts are the same), twice in a row.
    previous = {}

    def stored():
        nonlocal previous
        items = call("GET", "/api/analytics/categories/top", params={"limit": 100}).json()["items"]
        counts = {i["category"]: i["transactions"] for i in items}
        done = all(counts.get(c, 0) >= n for c, n in sent.items()) and counts == previous
        previous = counts
        return done, {c: f"{counts.get(c, 0)}/{n}" for c, n in sent.items()}

    wait_for("the worker to store the purchases", stored, timeout=180)

    # 2. Every user's profile counts all of that user's purchases (a read after an event was stored
    #    always includes it: the worker invalidates the cache before it acknowledges).
    def profiles_complete(group):
        def probe():
            with ThreadPoolExecutor(8) as pool:
                totals = list(pool.map(lambda p: profile(p.id).json()["totals"]["purchases"], group))
            behind = [p.username for p, t in zip(group, totals, strict=True) if t < p.purchases]
            return not behind, f"{len(behind)} users behind, e.g. {behind[:3]}"
        return probe

    wait_for("the profiles to include every purchase", profiles_complete(persons), timeout=180, interval=2)


def fit_and_wait(persons: list[Person]) -> dict:
    # A fit is a job: 202 with its Location, polled until done.
    fitted = run_job("/api/analytics/models/fit", {}, timeout=320)
    version = fitted["version"]

    # The fit task queues a rescoring of every user on the analytics worker, which stores the
    # profiles (and users.profile_score, which [3] and [4] read) and rewrites the cached entries.
    def rescored():
        with ThreadPoolExecutor(8) as pool:
            versions = list(pool.map(lambda p: profile(p.id).json()["model_version"], persons))
        behind = sum(1 for v in versions if v is None or v < version)
        return behind == 0, f"{behind} profiles before model v{version}"

    wait_for(f"the profiles to use model v{version}", rescored, timeout=300, interval=2)
    # users.profile_score is written in the same analytics task, after the profile documents:
    # give its transaction a moment on top of the observed cache writes.
    time.sleep(1.0)
    return fitted


# --------------------------------------------------------------------------- scenarios

def show_users(title: str, params: dict, with_address: bool, limit: int = 10) -> None:
    body = call("GET", "/api/users", params={**params, "per_page": limit}).json()
    print(f"\n{title}")
    for user in body["items"]:
        if with_address:
            print(f"  - {user['full_name']} ({user['email']})")
            print(f"    Address: {user['address']['street']}, {user['address']['city']}")
        else:
            print(f"  - {user['full_name']}")
    if body["total"] > len(body["items"]):
        print(f"  ... and {body['total'] - len(body['items'])} more ({body['total']} in all)")


def timed_profile(user_id: int) -> tuple[float, str, dict]:
    start = time.perf_counter()
    response = profile(user_id)
    return (time.perf_counter() - start) * 1000, response.headers.get("X-Cache", "?"), response.json()


def force_miss(user_id: int) -> str:
    """Make the next profile read of `user_id` a cache miss.

    Reading "a user never read before" does not work here: the analytics worker writes every profile
    it computes into Redis, so every user's profile is already cached by the time the events are
    processed. Sending an event works, but only during the short window between the worker's
    invalidation and the analytics rescoring, which makes the demo racy. So the demo does exactly
    what the worker does when events arrive, and nothing more: it bumps the user's cache version
    (shared.pipeline.profile_cache.invalidate: a new version in Postgres, the stack's DATABASE_URL).
    The next read then misses, computes from Postgres + MongoDB and caches; the read after it hits.
    """
    try:
        from shared.pipeline import profile_cache

        profile_cache.invalidate([user_id])
        return "cache version bumped in Postgres"
    except Exception as exc:  # Postgres not reachable from here: fall back to the event route
        call("POST", "/api/events", expect=(202,), json={"user_id": user_id, "event_type": "page_view",
                                                         "metadata": {"page": "/demo"}})
        return f"page_view sent (Redis not reachable from the demo: {type(exc).__name__})"


def scenarios(persons: list[Person], fitted: dict) -> None:
    ivan = next(p for p in persons if p.username == "ivan_data")
    print(f"\n{LINE}\nPulse — the companion guide's scenarios against {API}\n{LINE}")

    show_users("[1] Users living in Ukraine:", {"country": "UA"}, with_address=True)
    show_users("[2] Users in Kyiv:", {"country": "UA", "city": "Kyiv"}, with_address=False)

    print("\n[3] Top users by score (profile_score > 80):")
    top = call("GET", "/api/users/top", params={"min_score": 80, "limit": 10}).json()["items"]
    if not top:
        print("  nobody scores above 80 yet")
    for user in top:
        print(f"  - {user['username']} ({user['full_name']}, {user['address']['city']}): "
              f"{user['profile_score']:.2f}")

    print("\n[4] Users per country:")
    for row in call("GET", "/api/stats/countries").json()["items"]:
        print(f"  {row['country']}: {row['users']} користувачів, avg score: {row['avg_score']:.2f}")

    print("\n[5] Top-5 categories by sales:")
    for item in call("GET", "/api/analytics/categories/top", params={"limit": 5}).json()["items"]:
        print(f"  {item['category']}: ${item['total_sales']:.2f} total, {item['transactions']} transactions, "
              f"${item['avg_price']:.2f} avg")

    print(f"\n[6] Profile cache (Redis, cache-aside) for {ivan.username}:")
    how = force_miss(ivan.id)
    miss_ms, miss_header, _ = timed_profile(ivan.id)
    hit_ms, hit_header, _ = timed_profile(ivan.id)
    print(f"  Invalidated first ({how}).")
    print(f"  First read:  {miss_ms:7.2f}ms  (X-Cache: {miss_header})")
    print(f"  Second read: {hit_ms:7.2f}ms  (X-Cache: {hit_header})")
    print(f"  Speedup: {miss_ms / hit_ms:.1f}x")
    misses, hits = [], []
    for _ in range(5):
        force_miss(ivan.id)
        m, mh, _ = timed_profile(ivan.id)
        h, hh, _ = timed_profile(ivan.id)
        if mh == "MISS" and hh == "HIT":
            misses.append(m)
            hits.append(h)
    if misses:
        print(f"  Median of {len(misses)} more pairs: miss {statistics.median(misses):.2f}ms, "
              f"hit {statistics.median(hits):.2f}ms, "
              f"speedup {statistics.median(misses) / statistics.median(hits):.1f}x")

    print("\n[7] Processing User Data & Generating Profiles")
    for person in (ivan, next(p for p in persons if p.username == "maria_ml")):
        data = profile(person.id).json()
        print(f"\n  User: {person.username}")
        print(f"    Segment: {data['segment'].lower()}")
        print(f"    Engagement: {data['engagement']:.2f}/100")
        print(f"    Churn Risk: {data['churn_risk']:.1f}%")
        print(f"    Predicted LTV: {money(data['predicted_ltv'])}")
        print(f"    P(alive): {pct(data['p_alive'])}")
        print(f"    Expected purchases (90d): {num(data['expected_purchases_90d'])}")
        if data.get("rfm"):
            print(f"    RFM: {data['rfm']['code']}")
        totals = data["totals"]
        print(f"    Totals: ${totals['total_spent']:.2f} over {totals['purchases']} purchases, "
              f"{totals['events']} events, last purchase {totals['days_since_last_purchase']} days ago")
        print(f"    Recommendations: {', '.join(data['recommendations']) or '(none)'}")
        print(f"    Model version: {data['model_version']}")

    print("\n  Segments across all profiles:")
    for row in call("GET", "/api/analytics/segments").json()["items"]:
        print(f"    {row['segment']}: {row['users']} users")
    gg = fitted["gamma_gamma"]
    print(f"\n  Population models v{fitted['version']} (as of {fitted['as_of']}, {fitted['n_customers']} customers; "
          f"profiles scored by {fitted['scoring_model']}):")
    for name, model in fitted["models"].items():
        if "error" in model:
            print(f"    {name}: not fitted ({model['error']})")
            continue
        errors = model["standard_errors"]
        shown = " ".join(f"{k}={v:.3f}" + (f"±{errors[k]:.3f}" if errors.get(k) is not None else "")
                         for k, v in model["parameters"].items())
        print(f"    {name} {shown} LL={model['log_likelihood']:.1f} ({fit_state(model)})")
    if gg:
        print(f"    Gamma-Gamma p={gg['p']:.3f} q={gg['q']:.3f} gamma={gg['gamma']:.3f} ({fit_state(gg)})")
    print(f"    fitted from the customer summaries in {fitted['timings_ms']['total']:.0f} ms")


VISITOR = Person(username="olena_visitor", email="olena.visitor@example.com", full_name="Olena Visitor",
                 street="Sumska Street", city="Kharkiv", country_code="UA", kind="visitor")


def visitor_becomes_customer(now: datetime) -> None:
    """[8] Issue 23's story: a visitor browses and buys as a guest, then signs up with the same
    `anonymous_id`; the profile shows those visits, sessions and the purchase, exactly once."""
    print("\n[8] A visitor becomes a customer (anonymous_id, identify at signup)")
    anonymous_id = f"{EVENT_PREFIX}-device-olena"
    day3 = (now - timedelta(days=3)).replace(hour=9, minute=0, second=0)
    day1 = (now - timedelta(days=1)).replace(hour=18, minute=0, second=0)
    # Two visits: pricing, features, a trial (a custom event), then a guest checkout.
    visits: list[tuple[datetime, str, dict[str, object]]] = [
        (day3, "page_view", {"path": "/pricing"}),
        (day3 + timedelta(minutes=5), "page_view", {"path": "/features"}),
        (day3 + timedelta(minutes=12), "trial_started", {"plan": "pro"}),
        (day1, "page_view", {"path": "/checkout"}),
        (day1 + timedelta(minutes=3), "user_purchase", {"product_id": "PROD-HOME-7", "price": 149.0,
                                                         "category": "home"}),
    ]
    events = [{"event_id": f"{anonymous_id}-{i}", "anonymous_id": anonymous_id, "event_type": kind,
               "timestamp": at.isoformat(), "metadata": metadata} for i, (at, kind, metadata) in enumerate(visits)]
    call("POST", "/api/events/batch", expect=(202,), json={"events": events})
    print(f"  {len(events)} events as visitor {anonymous_id!r}: "
          + ", ".join(f"{kind} {metadata.get('path', '')}".strip() for _, kind, metadata in visits))
    p = VISITOR
    response = call("POST", "/api/users/signup", expect=(201, 409), json={
        "username": p.username, "email": p.email, "full_name": p.full_name, "anonymous_id": anonymous_id,
        "address": {"street": p.street, "city": p.city, "country_code": p.country_code}})
    if response.status_code == 201:
        p.id = response.json()["id"]
        print(f"  Signed up as user {p.id} with the same anonymous_id: the visitor's history becomes theirs")
    else:  # a re-run: signed up (and linked) by an earlier run
        p.id = existing_users()[p.username]["id"]
        print(f"  User {p.id} signed up with it in an earlier run (the link stays; nothing is counted twice)")
    user_id: int = p.id

    def merged():
        data = profile(user_id).json()
        return data["totals"]["purchases"] >= 1 and data["totals"]["events"] >= len(events) + 1, data["totals"]

    wait_for("the visitor's events to become the customer's", merged, timeout=120)
    data = profile(user_id).json()
    totals, sessions = data["totals"], data["sessions"]
    print(f"    Segment: {data['segment'].lower()}; first purchase (as a guest): {totals['last_purchase_at']}")
    print(f"    Totals: ${totals['total_spent']:.2f} over {totals['purchases']} purchase(s), "
          f"{totals['events']} events (the visitor's {len(events)} and the signup)")
    average = "n/a" if sessions["average_minutes_30d"] is None else f"{sessions['average_minutes_30d']:.1f} min"
    print(f"    Sessions (30 days): {sessions['last_30_days']}, average {average}")


# --------------------------------------------------------------------------- funnel and retention

FUNNEL_STEPS = ("login", "page_view", "user_purchase")
FUNNEL_WINDOW = timedelta(days=7)
# The funnel covers the demo's whole history (120 days back from the run that stored it), and that of
# runs months before this one: re-sent events keep their first timestamps (same event_id).
FUNNEL_SPAN = timedelta(days=400)
# The history's 120 days touch up to 19 calendar weeks (Monday to Sunday): every first page view's week.
RETENTION_WEEKS = 19


def own_funnel(persons: list[Person], start: datetime, end: datetime) -> list[int]:
    """Persons at each step of FUNNEL_STEPS among the demo's users, from the events it planned: the
    API's definition (enter at the first login in [start, end); each next step the earliest event of
    its type after the previous step and within the window of the entry)."""
    reached = [0] * len(FUNNEL_STEPS)
    for person in persons:
        timed = sorted((datetime.fromisoformat(e["timestamp"]), e["event_type"]) for e in person.events)
        entry = next((at for at, kind in timed if kind == FUNNEL_STEPS[0] and start <= at < end), None)
        if entry is None:
            continue
        reached[0] += 1
        previous = entry
        for k, step in enumerate(FUNNEL_STEPS[1:], start=1):
            found = next((at for at, kind in timed if kind == step and previous < at <= entry + FUNNEL_WINDOW), None)
            if found is None:
                break
            reached[k] += 1
            previous = found
    return reached


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def ratio(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def funnel_and_retention(persons: list[Person], now: datetime) -> None:
    start, end = now - FUNNEL_SPAN, now + timedelta(minutes=5)
    body = {"steps": [{"event_type": step, "where": {}} for step in FUNNEL_STEPS],
            "window_seconds": int(FUNNEL_WINDOW.total_seconds()), "from": start.isoformat(), "to": end.isoformat(),
            "breakdown": None, "cohort": None}
    own = own_funnel(persons, start, end)

    # The worker stores the events' rows for the insights as it stores the events: wait until every
    # step counts the demo's own people (others' events, e.g. the visitor's or a benchmark's, only add).
    def counted():
        steps = answer("POST", "/api/analytics/funnels", json=body, timeout=300)["steps"]
        persons_at = [s["persons"] for s in steps]
        return all(a >= b for a, b in zip(persons_at, own, strict=True)) and steps, persons_at

    steps = wait_for("the funnel to count the demo's events", counted, timeout=120, interval=2)
    print(f"\n[9] Funnel: {' → '.join(FUNNEL_STEPS)} within {FUNNEL_WINDOW.days} days "
          f"(entries from {start:%Y-%m-%d} to {end:%Y-%m-%d}; POST /api/analytics/funnels)")
    print(f"  {'step':<18}{'persons':>9}{'from previous':>15}{'from first':>12}{'median time':>13}"
          f"{'demo users':>12}")
    for i, (step, mine) in enumerate(zip(steps, own, strict=True)):
        print(f"  {i + 1}. {step['event_type']:<15}{step['persons']:>9}{ratio(step['conversion_from_previous']):>15}"
              f"{ratio(step['conversion_from_first']):>12}{duration(step['median_seconds_to_convert']):>13}{mine:>12}")
    print("  (demo users: the same funnel counted here from the events the demo sent; equal when the stack holds "
          "only the demo's data)")

    monday = (now - timedelta(days=now.weekday())).date()
    first = monday - timedelta(weeks=RETENTION_WEEKS - 1)
    matrix = answer("GET", "/api/analytics/retention", timeout=300, params={
        "cohort": "first_event", "period": "week", "periods": RETENTION_WEEKS, "event_type": "page_view",
        "from": first.isoformat(), "to": (monday + timedelta(weeks=1)).isoformat()})
    print("\n[10] Weekly retention (GET /api/analytics/retention): of the people whose first page_view fell in a")
    print("     week (the cohort), the % with a page_view k weeks later")
    print(f"  {'cohort':<11}{'size':>5} " + "".join(f"{k:>4}" for k in range(RETENTION_WEEKS)))
    for cohort in matrix["cohorts"]:
        cells = "".join(f"{100 * rate:>4.0f}" for rate in cohort["rates"])
        print(f"  {cohort['cohort']:<11}{cohort['size']:>5} {cells}")
    if not matrix["cohorts"]:
        print("  no page views in these weeks")


def fit_state(params: dict) -> str:
    state = "converged" if params["converged"] else "did NOT converge"
    return state + (f", at a bound: {', '.join(params['at_bounds'])}" if params["at_bounds"] else "")


def money(value) -> str:
    return "n/a" if value is None else f"${value:.2f}"


def pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def num(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="pulse demo", description="Replay the companion guide's scenarios against the running stack.",
        epilog="PULSE_API: the stack's API (default http://127.0.0.1:8000); PULSE_API_KEY: a key with every "
        "scope (default the one `make dev` wrote in $PULSE_VAR_DIR/dev-api-key, var/ by default). "
        "Safe to re-run: nothing is stored twice.").parse_args(argv)
    try:
        require_stack()
        persons = people()
        print(f"Loading the guide's sample data into {API} ...")
        created, found = load_users(persons)
        print(f"Users: {created} created, {found} already there.")
        events = send_events(persons)
        kinds = Counter(e["event_type"] for e in events)
        print(f"Events sent: {len(events)} ({', '.join(f'{k}: {v}' for k, v in sorted(kinds.items()))}); "
              "waiting for the worker and analytics ...")
        t0 = time.monotonic()
        wait_until_processed(persons, events)
        print(f"Stored and scored in {time.monotonic() - t0:.1f}s. Fitting the population models ...")
        t0 = time.monotonic()
        fitted = fit_and_wait(persons)
        print(f"Model v{fitted['version']} fitted and every profile rescored in {time.monotonic() - t0:.1f}s.")
        scenarios(persons, fitted)
        visitor_becomes_customer(datetime.now(UTC))
        funnel_and_retention(persons, datetime.now(UTC))
        print(f"\nDrawn, with a form for each: {API}/dashboard/insights")
        print(f"\nThe same, drawn: {API}/dashboard (log in with the development key, {key_file()}).")
        return 0
    except StackError as exc:
        print(f"\nERROR: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
