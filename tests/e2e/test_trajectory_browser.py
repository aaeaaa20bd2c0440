"""End-to-end: the Training run page tracking each layer's refined λ̂ across checkpoints (issue 13), in a real
headless Chromium at 1440 px wide and on a 1024×768 projector: the λ̂ chart with its stage hints in words, the
group × checkpoint heatmap and the lines per group, nothing cut off at the right.

Full-page screenshots go to $LLC_SHOTS13 (default /tmp/shots13/): look at them.
Fixtures (a `streamlit run app.py` server, the browser) are in tests/e2e/conftest.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from page_helpers import assert_no_exception, button, open_page, wait_for_app_idle, wait_while_running

pytestmark = pytest.mark.e2e

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture skips (or fails, in CI) with the reason
    expect = None

SHOTS = Path(os.environ.get("LLC_SHOTS13", "/tmp/shots13"))
SIZES = ((1440, 900), (1024, 768))
RUN_LIMIT_S = 300  # a tiny run: seconds on a free machine, longer on a busy 2-core one


def shot(page, name: str, tall: int = 5000) -> Path:
    """`name`-<width>.png: the whole page (the window made as tall as Streamlit's scrolling content), and
    `name`-<width>-window.png: the window as it is."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    size = dict(page.viewport_size)
    page.screenshot(path=SHOTS / f"{name}-{size['width']}-window.png")
    content = page.evaluate("() => Math.max(...[...document.querySelectorAll('[data-testid=\"stMain\"], "
                            "[data-testid=\"stAppViewContainer\"]')].map(e => e.scrollHeight))")
    if content > size["height"]:
        page.set_viewport_size({"width": size["width"], "height": min(int(content) + 40, tall)})
    page.wait_for_timeout(800)  # charts re-lay out after a resize
    path = SHOTS / f"{name}-{size['width']}.png"
    page.screenshot(path=path)
    page.set_viewport_size(size)
    return path


def inside_main(page, locator) -> None:
    """The element lies within the main column: nothing cut off at the right."""
    main = page.get_by_test_id("stMainBlockContainer").bounding_box()
    for index in range(locator.count()):
        box = locator.nth(index).bounding_box()
        assert box is not None
        assert box["x"] >= main["x"] - 1 and box["x"] + box["width"] <= main["x"] + main["width"] + 1, (box, main)


def set_number(page, label: str, value: str) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(value)
    field.press("Enter")
    wait_for_app_idle(page)


def test_layers_tracked_across_a_training_run(page, app_url):
    page.set_viewport_size({"width": 1440, "height": 900})
    open_page(page, f"{app_url}/trajectory")
    for label, value in (("Training steps", "400"), ("Checkpoints kept", "9"), ("Chains", "2"), ("SGLD steps", "80")):
        set_number(page, label, value)
    page.get_by_test_id("stSelectbox").filter(has_text="Refined LLC per group").click()
    page.get_by_role("option", name="each layer").click()
    wait_for_app_idle(page)
    button(page, "Estimate every checkpoint").click()
    wait_while_running(page, lambda: page.get_by_text("Every checkpoint used", exact=False).count() > 0
                       and not button(page, "Stop").count(), RUN_LIMIT_S, "the end of the training run")
    wait_for_app_idle(page)
    assert_no_exception(page)
    charts = page.get_by_test_id("stVegaLiteChart")
    expect(charts).to_have_count(4)  # λ̂, train loss, the layer × checkpoint heatmap, the lines per layer
    expect(page.get_by_text("Stage hints.", exact=False)).to_be_visible()
    expect(page.get_by_text("Refined λ̂ per group", exact=True)).to_be_visible()
    expect(page.get_by_text("Stages of each group's refined λ̂", exact=False)).to_be_attached()
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        wait_for_app_idle(page)
        page.wait_for_timeout(500)
        inside_main(page, charts)
        for index in range(4):  # tall enough to read on a projector
            assert charts.nth(index).bounding_box()["height"] >= 180
        charts.first.scroll_into_view_if_needed()
        shot(page, "training-run-llc")
        charts.nth(2).scroll_into_view_if_needed()
        shot(page, "training-run-layers")
