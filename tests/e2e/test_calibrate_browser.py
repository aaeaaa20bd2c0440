"""End-to-end: the Calibrate page in a real headless Chromium: a sweep runs, its heatmaps and
recommendation appear, and the chosen cell opens the Estimate page with those settings.

Fixtures (a `streamlit run app.py` server, the browser, screenshots) are in tests/e2e/conftest.py.
"""

from __future__ import annotations

import re

import pytest

from page_helpers import assert_no_exception, wait_for_app_idle, wait_while_running  # tests/e2e/page_helpers.py

pytestmark = pytest.mark.e2e

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture skips (or fails, in CI) with the reason
    expect = None

SWEEP_LIMIT_S = 240  # 27 cells × 4 chains × 1000 steps of a 2-parameter potential: seconds when idle


def test_sweep_recommends_a_cell_and_sends_it_to_estimate(page, app_url, screenshot):
    page.goto(f"{app_url}/calibrate", wait_until="domcontentloaded")
    wait_for_app_idle(page)
    assert_no_exception(page)
    page.get_by_role("button", name="Run sweep").click()
    verdict = page.get_by_text(re.compile(r"Recommended cell|No cell qualifies"))
    wait_while_running(page, lambda: verdict.count() > 0, SWEEP_LIMIT_S, "a sweep verdict")
    wait_for_app_idle(page)
    assert_no_exception(page)
    assert page.locator('[data-testid="stVegaLiteChart"]').count() >= 4  # λ̂, acceptance, divergence, flatness
    screenshot(page, "sweep")

    page.get_by_role("button", name="Use these settings in Estimate").click()
    page.wait_for_url(re.compile(r"/estimate\?"), timeout=30_000)
    wait_for_app_idle(page)
    assert_no_exception(page)
    assert "step_size=" in page.url and "step_size=auto" not in page.url
    expect(page.get_by_role("button", name="Run")).to_be_visible()
