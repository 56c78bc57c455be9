"""Headless Debian chromium through its chromedriver (selenium), for the dashboard's tests and
`scripts/dashboard_screenshots.py`. Debian's packages `chromium` and `chromium-driver` put both
in /usr/bin; `.ci/run` installs them."""
import shutil

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def available() -> bool:
    return bool(shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER))


def chromium(width: int = 1440, height: int = 2400) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}",
                     "--lang=en-US", "--hide-scrollbars"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console messages, for the tests
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    return driver


def log_in(driver: webdriver.Chrome, base: str, path: str, key: str) -> None:
    """Open `path`; when the dashboard asks for a key, give it `key` and come back to `path`."""
    driver.get(f"{base}{path}")
    if "/dashboard/login" in driver.current_url:
        driver.find_element("id", "key").send_keys(key)
        driver.find_element("id", "login").click()


def loaded(driver: webdriver.Chrome) -> bool:
    """Whether the page has drawn its first readings (dashboard.js sets the flag)."""
    return bool(driver.execute_script("return document.body && document.body.dataset.loaded === 'true'"))


def console_errors(driver: webdriver.Chrome) -> list[str]:
    """The SEVERE console messages logged since the last call (reading the log empties it)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
