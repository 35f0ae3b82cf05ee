"""Headless Chromium for the browser tests and the UI benchmark: Debian's `chromium` and `chromium-driver`
(`apt-get install -y chromium chromium-driver`; `.ci/run` installs them), driven by Selenium. Nothing is
downloaded: the driver and browser are given by path, so Selenium Manager never runs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
DRIVER_CANDIDATES = ("chromedriver",)


def find_browser() -> tuple[str, str] | None:
    """(browser, driver) paths, or None when either is missing."""
    browser = os.environ.get("DREAMMASK_CHROMIUM") or next(
        (p for p in map(shutil.which, CHROMIUM_CANDIDATES) if p), None)
    driver = os.environ.get("DREAMMASK_CHROMEDRIVER") or next(
        (p for p in map(shutil.which, DRIVER_CANDIDATES) if p), None)
    if not browser or not driver:
        return None
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None
    return browser, driver


MISSING = ("browser tests need Chromium, its driver and selenium: "
           "`apt-get install -y chromium chromium-driver` and the dev extra (selenium)")


def start_chromium(width: int = 1400, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_browser()
    if found is None:
        raise RuntimeError(MISSING)
    browser, driver = found
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--disable-extensions", "--no-first-run"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def artifacts_dir() -> Path:
    d = Path(os.environ.get("DREAMMASK_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts")) / "ui"
    d.mkdir(parents=True, exist_ok=True)
    return d


def shot(d, name: str) -> None:
    d.save_screenshot(str(artifacts_dir() / f"{name}.png"))


def wait_for(d, check, timeout: float = 60.0, what: str = "", poll: float = 0.2):
    """check(d) until it returns something truthy (exceptions count as not yet); a screenshot on timeout."""
    import time

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check(d)
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - the page may be between loads
            last = e
        time.sleep(poll)
    shot(d, f"timeout-{what.replace(' ', '-')}")
    raise TimeoutError(f"timed out waiting for {what} (last: {last!r}) on {d.current_url}")


def log_in(d, base: str, key: str, then: str = "/ui/jobs") -> None:
    from selenium.webdriver.common.by import By

    d.get(base + then)
    wait_for(d, lambda d: d.find_element(By.ID, "login-form"), what="login form")
    d.find_element(By.ID, "api-key").send_keys(key)
    d.find_element(By.ID, "login-submit").click()
    wait_for(d, lambda d: d.find_elements(By.ID, "logout"), what="logged in")


def csp_violations(d) -> list[str]:
    """Console messages about the Content-Security-Policy (the pages must not need any exception to it)."""
    try:
        logs = d.get_log("browser")
    except Exception:  # noqa: BLE001 - a driver without the log endpoint
        return []
    return [e["message"] for e in logs if "Content Security Policy" in e.get("message", "")]
