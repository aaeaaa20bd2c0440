"""What the browser tests do to a page: open it, wait until the app is idle, fail on a shown exception,
find one of the app's buttons by its label."""

from __future__ import annotations

import re
import time

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture skips (or fails, in CI) with the reason
    expect = None


def wait_for_app_idle(page, timeout_ms: int = 30_000) -> None:
    """Wait until the websocket is up and the script has finished its (re)run, as Streamlit's e2e suite does."""
    page.wait_for_timeout(250)  # past the debounce of a widget change
    page.locator('[data-testid="stApp"][data-test-connection-state="CONNECTED"]').wait_for(
        state="attached", timeout=timeout_ms)
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(
        state="attached", timeout=timeout_ms)
    expect(page.locator('[data-testid="stSkeleton"]')).to_have_count(0, timeout=timeout_ms)


def open_page(page, url: str) -> None:
    page.goto(url, wait_until="domcontentloaded")
    page.locator('[data-testid="stAppViewContainer"]').wait_for(state="attached", timeout=30_000)
    wait_for_app_idle(page)
    assert_no_exception(page)


def assert_no_exception(page) -> None:
    errors = page.locator('[data-testid="stException"]')
    if errors.count():
        pytest.fail(f"the app shows an exception at {page.url}:\n{errors.first.inner_text()}", pytrace=False)


def button(page, label: str):
    """The app's own button whose label is exactly `label` (an icon before it allowed).

    Scoped to app buttons: Streamlit's status widget has a "Stop" button of its own.
    """
    buttons = page.locator('[data-testid="stButton"], [data-testid="stFormSubmitButton"]')
    return buttons.get_by_role("button", name=re.compile(rf"(?:^|\s){re.escape(label)}$"))


def wait_while_running(page, done, timeout_s: float, what: str) -> None:
    """Poll once a second until done() holds, failing on an exception shown by the app or when
    `what` has not happened within timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert_no_exception(page)
        assert time.monotonic() < deadline, f"{what} not within {timeout_s:g} s"
        page.wait_for_timeout(1_000)
