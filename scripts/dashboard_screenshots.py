"""Screenshots of the running stack's dashboard: `python -m scripts.dashboard_screenshots [--out docs]`.

Logs in with the development key (PULSE_API_KEY or var/dev-api-key), waits until the dashboard
has drawn the customers and `--readings` pipeline readings (rates need two), and writes `dashboard.png`,
`dashboard-user.png` (the top user by score, or --user) and `dashboard-insights.png` (the insights
page's default funnel, retention and lifecycle). docs/dashboard.md's pictures are made this
way after `make dev` and `make demo`.
"""
import argparse
import time
from pathlib import Path

from scripts import browser
from scripts.stack_client import API, api_key, call


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--user", type=int, help="the user whose page to take (default: the top user by score)")
    parser.add_argument("--readings", type=int, default=2,
                        help="pipeline readings (5 s apart) to wait for: more draw more of the throughput chart")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    user = args.user or call("GET", "/api/users/top", params={"min_score": 0, "limit": 1}).json()["items"][0]["id"]
    driver = browser.chromium(1440, 2150)
    try:
        browser.log_in(driver, API, "/dashboard", api_key())
        wait(lambda: browser.loaded(driver), 60, "the dashboard")
        for _ in range(args.readings - 1):
            before = driver.find_element("id", "status").text
            wait(lambda before=before: driver.find_element("id", "status").text != before, 30,
                 "the next pipeline reading")
        driver.save_screenshot(str(args.out / "dashboard.png"))
        driver.set_window_size(1440, 1000)
        driver.get(f"{API}/dashboard/users/{user}")
        wait(lambda: browser.loaded(driver), 60, "the user page")
        driver.save_screenshot(str(args.out / "dashboard-user.png"))
        driver.set_window_size(1440, 2300)
        driver.get(f"{API}/dashboard/insights")
        wait(lambda: browser.loaded(driver), 120, "the insights page")
        driver.save_screenshot(str(args.out / "dashboard-insights.png"))
    finally:
        driver.quit()
    names = ("dashboard.png", "dashboard-user.png", "dashboard-insights.png")
    print(f"wrote {', '.join(str(args.out / name) for name in names)}")


if __name__ == "__main__":
    main()
