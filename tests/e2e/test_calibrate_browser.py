"""End-to-end: the Calibrate page in a real headless Chromium: a sweep runs, its heatmaps and
recommendation appear, and the chosen cell opens the Estimate page with those settings.

Fixtures (a `streamlit run app.py` server, the browser, screenshots) are in tests/e2e/conftest.py.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from page_helpers import assert_no_exception, wait_for_app_idle, wait_while_running  # tests/e2e/page_helpers.py

pytestmark = pytest.mark.e2e

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture skips (or fails, in CI) with the reason
    expect = None

SWEEP_LIMIT_S = 240  # 57 cells × 4 chains × 1000 steps of a 2-parameter potential: seconds when idle
SHOTS = Path(os.environ.get("LLC_SHOTS_DIR", "/tmp/shots14b"))  # issue 14's screenshots, as in test_browser.py
SIZES = {"1440": {"width": 1440, "height": 900}, "1024x768": {"width": 1024, "height": 768}}
MAIN = "document.querySelector('[data-testid=\"stMain\"]')"


def save_shots(page, name: str, most: int = 12) -> None:
    """Screenshots of the main area a screen at a time (Streamlit scrolls it, not the page)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob(f"{name}-*.png"):
        old.unlink()
    height = page.viewport_size["height"]
    total = page.evaluate(f"() => {MAIN}.scrollHeight")
    for index, top in enumerate(range(0, max(total, 1), height - 80)):
        if index >= most:
            break
        page.evaluate(f"() => {MAIN}.scrollTo(0, {top})")
        page.wait_for_timeout(300)
        page.screenshot(path=SHOTS / f"{name}-{index}.png", animations="disabled")
    page.evaluate(f"() => {MAIN}.scrollTo(0, 0)")


def charts_past_their_column(page) -> list[dict]:
    return page.evaluate("""() => [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')]
        .filter(chart => chart.offsetParent !== null)
        .map(chart => [(chart.querySelector('canvas, svg') || chart).getBoundingClientRect(),
                       (chart.closest('[data-testid="stColumn"]') || chart).getBoundingClientRect()])
        .filter(([box, column]) => box.left < column.left - 2 || box.right > column.right + 2)
        .map(([box, column]) => ({left: box.left, right: box.right, columnLeft: column.left, columnRight: column.right}))""")


def test_sweep_recommends_a_cell_and_sends_it_to_estimate(page, app_url, screenshot):
    page.set_viewport_size(SIZES["1440"])
    page.goto(f"{app_url}/calibrate", wait_until="domcontentloaded")
    wait_for_app_idle(page)
    assert_no_exception(page)
    page.get_by_role("button", name="Run sweep").click()
    verdict = page.get_by_text(re.compile(r"Recommended cell|No cell qualifies"))
    wait_while_running(page, lambda: verdict.count() > 0, SWEEP_LIMIT_S, "a sweep verdict")
    wait_for_app_idle(page)
    assert_no_exception(page)
    assert page.locator('[data-testid="stVegaLiteChart"]').count() >= 4  # λ̂, acceptance, divergence, flatness
    # the default model's default sweep finds a cell that passes its own rule, and preselects it
    expect(page.get_by_text("Recommended cell").first).to_be_visible()
    picker = page.locator('[data-testid="stSelectbox"]').filter(has=page.get_by_text("Cell to use"))
    shown = picker.inner_text() + " ".join(field.input_value() for field in picker.locator("input").all())
    assert "(recommended)" in shown, shown
    screenshot(page, "sweep")
    for size, viewport in SIZES.items():
        page.set_viewport_size(viewport)
        page.wait_for_timeout(1_000)  # the charts re-fit their columns
        assert not charts_past_their_column(page), size
        save_shots(page, f"calibrate-{size}")

    page.get_by_role("button", name="Use these settings in Estimate").click()
    page.wait_for_url(re.compile(r"/estimate\?"), timeout=30_000)
    wait_for_app_idle(page)
    assert_no_exception(page)
    assert "step_size=" in page.url and "step_size=auto" not in page.url
    query = parse_qs(urlsplit(page.url).query)
    assert query["steps"] == ["10000"] and query["chains"] == ["16"]  # Estimate's own, not the sweep's 1000 × 4
    expect(page.get_by_role("button", name="Run")).to_be_visible()
