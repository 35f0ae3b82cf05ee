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
