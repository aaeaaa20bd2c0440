"""Fixtures for the end-to-end tests: a real `streamlit run app.py` server and a headless Chromium.

The browser is Debian's `chromium` package driven by Playwright's Python API (`playwright install`
is not used: its downloads are not reachable from this project's machines). Without the browser the
tests skip, unless LLC_REQUIRE_BROWSER=1 (set by `.ci/run`), in which case they fail.

Environment:
  LLC_CHROMIUM         the browser executable (default /usr/bin/chromium)
  LLC_REQUIRE_BROWSER  1: a missing browser, Playwright or app.py is a failure, not a skip
  LLC_E2E_APP_DIR      serve the app.py found there instead of the repository's own (for debugging)

Screenshots, one per step, and the server log go to test-output/ (ignored by git).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Iterator

import pytest

from app_server import CHROMIUM_ARGS, VIEWPORT, AppServer, AppServerError  # tests/e2e/app_server.py

REPO = Path(__file__).resolve().parents[2]
APP_DIR = Path(os.environ.get("LLC_E2E_APP_DIR", REPO)).resolve()
OUTPUT = REPO / "test-output"
SCREENSHOTS = OUTPUT / "screenshots"
CHROMIUM = os.environ.get("LLC_CHROMIUM", "/usr/bin/chromium")
REQUIRED = os.environ.get("LLC_REQUIRE_BROWSER", "") == "1"

SERVER_START_TIMEOUT_S = 60


def _unavailable(reason: str) -> None:
    """Skip, or fail when CI asked for the browser tests to be mandatory."""
    if REQUIRED:
        pytest.fail(f"{reason} (LLC_REQUIRE_BROWSER=1, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def app_url() -> Iterator[str]:
    """Start `streamlit run app.py` on a free port (tests/e2e/app_server.py); yield its base URL;
    kill its process group after."""
    if not (APP_DIR / "app.py").is_file():
        _unavailable(f"no app.py in {APP_DIR}")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    try:
        server = AppServer(APP_DIR, OUTPUT / "streamlit-e2e.log", timeout=SERVER_START_TIMEOUT_S)
    except AppServerError as err:
        pytest.fail(str(err), pytrace=False)
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture(scope="session")
def browser() -> Iterator["object"]:
    """One headless Chromium for the session (each test gets its own context)."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        _unavailable(f"no Chromium at {CHROMIUM}: install Debian's package with `apt-get install -y chromium`")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright Python package is not installed (pip install -r requirements-dev.txt)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def new_page(browser) -> Iterator[Callable[[], "object"]]:
    """A factory of pages, each in a fresh browser context (no shared cookies or storage)."""
    contexts = []

    def make():
        context = browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(30_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_page, request) -> Iterator["object"]:
    """A page in a fresh context; screenshotted as `<test>-FAILED.png` when the test fails."""
    page = new_page()
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        try:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=SCREENSHOTS / f"{_slug(request.node.name)}-FAILED.png", full_page=True)
        except Exception:  # the page may be gone; the failure itself is what matters
            pass


@pytest.fixture
def screenshot(request) -> Callable[["object", str], Path]:
    """`screenshot(page, "label")` saves test-output/screenshots/<test>-<NN>-<label>.png."""
    counter = iter(range(1, 100))

    def take(page, label: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{_slug(request.node.name)}-{next(counter):02d}-{_slug(label)}.png"
        page.screenshot(path=path, full_page=True)
        return path

    return take


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
