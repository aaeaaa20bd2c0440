"""End-to-end: the Home, Method, Checkpoint, Training run and Validate pages in a real headless Chromium, looked
at at 1440 px wide and on a 1024×768 projector (issue 14): nothing cut off, overflowing or unreadable.

Full-page screenshots go to $LLC_SHOTS (default /tmp/shots14a/), one per page, step and size: look at them.
Fixtures (a `streamlit run app.py` server, the browser) are in tests/e2e/conftest.py.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from page_helpers import (
    assert_no_exception,
    button,
    open_page,
    wait_for_app_idle,
    wait_while_running,
)

pytestmark = pytest.mark.e2e

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture skips (or fails, in CI) with the reason
    expect = None

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"
SHOTS = Path(os.environ.get("LLC_SHOTS", "/tmp/shots14a"))
SIZES = ((1440, 900), (1024, 768))
RUN_LIMIT_S = 240  # tiny runs: seconds on a free machine, longer on a busy 2-core one


def shot(page, name: str, tall: int = 4000) -> Path:
    """`name`-<width>.png: the page as a user scrolls through it. Streamlit scrolls inside its own container,
    so a "full page" screenshot is only the window: the window is made as tall as the content (up to `tall`
    px) for the picture, then set back."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    size = dict(page.viewport_size)
    path = SHOTS / f"{name}-{size['width']}.png"
    content = page.evaluate("() => Math.max(...[...document.querySelectorAll('[data-testid=\"stMain\"], "
                            "[data-testid=\"stAppViewContainer\"]')].map(e => e.scrollHeight))")
    if content > size["height"]:
        page.set_viewport_size({"width": size["width"], "height": min(int(content) + 40, tall)})
    page.wait_for_timeout(600)  # charts re-lay out after a resize
    page.screenshot(path=path)
    page.set_viewport_size(size)
    return path


def at_both_sizes(page, name: str, check=None) -> None:
    """Screenshot the page at each size, after `check(page)` (what must hold at that width), and the window as
    the 768 px projector shows it where `check` scrolled to."""
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        wait_for_app_idle(page)
        page.wait_for_timeout(400)
        if check is not None:
            check(page)
        if width == 1024:  # the projector's window, where `check` scrolled to, before the tall picture
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=SHOTS / f"{name}-1024-window.png")
        shot(page, name)


def upload(page, index: int, name: str) -> None:
    page.locator('[data-testid="stFileUploader"] input[type="file"]').nth(index).set_input_files(
        {"name": name, "mimeType": "application/octet-stream", "buffer": (EXAMPLES / name).read_bytes()})
    wait_for_app_idle(page)


def set_number(page, label: str, value: str) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(value)
    field.press("Enter")
    wait_for_app_idle(page)


def inside_main(page, locator) -> None:
    """The element lies within the main column: not wider than the page's content, nothing cut off at the right."""
    main = page.get_by_test_id("stMainBlockContainer").bounding_box()
    for index in range(locator.count()):
        box = locator.nth(index).bounding_box()
        assert box is not None
        assert box["x"] >= main["x"] - 1 and box["x"] + box["width"] <= main["x"] + main["width"] + 1, (box, main)


def test_home_and_method_pages(page, app_url):
    page.set_viewport_size({"width": 1440, "height": 900})
    open_page(page, app_url)
    expect(page.get_by_text("measures how complex a trained network really is near its", exact=False)).to_be_visible()
    intro = page.get_by_test_id("stMarkdownContainer").filter(has_text="local learning coefficient").first
    assert "λ(w*) measures" in intro.inner_text() and not intro.locator("em").filter(has_text="measures").count()
    at_both_sizes(page, "home")
    page.get_by_role("link", name=re.compile("^Method: what")).click()
    wait_for_app_idle(page)
    assert_no_exception(page)
    expect(page.get_by_role("heading", name="Method and glossary")).to_be_visible()
    expect(page.get_by_role("heading", name="still climbing")).to_be_attached()
    at_both_sizes(page, "method")
    page.get_by_label("Find a term", exact=True).fill("R-hat")
    page.get_by_label("Find a term", exact=True).press("Enter")
    wait_for_app_idle(page)
    expect(page.get_by_role("heading", name="R-hat", exact=True)).to_be_visible()
    at_both_sizes(page, "method-find-rhat")
    page.get_by_text("The formulas and their sources (docs/METHOD.md)").click()  # the method notes, opened
    wait_for_app_idle(page)
    expect(page.get_by_role("heading", name="6. Step-size adaptation (dual averaging)")).to_be_visible()
    at_both_sizes(page, "method-notes", lambda page: page.get_by_role("heading", name="1. The estimator")
                  .scroll_into_view_if_needed())


def test_checkpoint_page_targets_loss_and_known_llc(page, app_url):
    page.set_viewport_size({"width": 1440, "height": 900})
    open_page(page, f"{app_url}/checkpoint")
    # the DLN's files as a user's own: the targets start as the model's two outputs, y1 and y2
    upload(page, 0, "dln.pt")
    upload(page, 1, "dln.csv")
    page.get_by_text("This is my model's architecture").click()
    wait_for_app_idle(page)
    expect(page.get_by_text("The model takes 4 inputs and gives 2 outputs per sample", exact=False)).to_be_visible()
    chips = page.get_by_test_id("stMultiSelect").inner_text()
    assert chips.index("y1") < chips.index("y2"), chips
    page.get_by_test_id("stMultiSelect").scroll_into_view_if_needed()
    at_both_sizes(page, "checkpoint-dln-upload")

    # a classifier's integer labels: cross-entropy preselected; the Gaussian loss gets the fix under the selectors
    upload(page, 0, "classifier.pt2")
    upload(page, 1, "classifier_data.safetensors")
    expect(page.get_by_text("n = 500 samples", exact=False)).to_be_visible()
    page.get_by_text("Gaussian (MSE) with noise σ").click()
    wait_for_app_idle(page)
    error = page.get_by_test_id("stAlertContentError")
    expect(error).to_contain_text("use the cross-entropy loss")
    assert "reshape" not in error.inner_text()
    targets = page.get_by_test_id("stSelectbox").filter(has_text="Targets").bounding_box()
    assert 0 < error.bounding_box()["y"] - (targets["y"] + targets["height"]) < 120  # right under the selectors
    error.scroll_into_view_if_needed()
    at_both_sizes(page, "checkpoint-classifier-gaussian")

    # the DLN example: its known λ beside the result
    page.get_by_test_id("stSelectbox").first.click()
    page.get_by_text("Deep linear network 4 → 3 → 2", exact=False).last.click()
    wait_for_app_idle(page)
    button(page, "Load example").click()
    wait_for_app_idle(page)
    expect(page.get_by_text("This example's λ is known: λ = 4", exact=False)).to_be_visible()
    assert not page.get_by_text("sidebar", exact=False).count()
    set_number(page, "Steps", "300")
    set_number(page, "Chains", "2")
    button(page, "Estimate λ̂").click()
    result = page.get_by_text(re.compile(r"^λ̂ = [-0-9.]+ ± "))
    wait_while_running(page, lambda: result.count() > 0, RUN_LIMIT_S, "λ̂ of the DLN example")
    wait_for_app_idle(page)
    expect(page.get_by_text(re.compile(r"^Theory: λ = 4 \(multiplicity m = 1\)"))).to_be_visible()
    assert not page.get_by_text("No closed-form λ", exact=False).count()

    def result_fits(page):
        inside_main(page, page.get_by_test_id("stVegaLiteChart"))
        page.get_by_text(re.compile(r"^Theory: λ = 4")).scroll_into_view_if_needed()
    at_both_sizes(page, "checkpoint-dln-result", result_fits)


def test_training_run_page_chart_and_table_fit(page, app_url):
    page.set_viewport_size({"width": 1440, "height": 900})
    open_page(page, f"{app_url}/trajectory")
    for label, value in (("Training steps", "300"), ("Checkpoints kept", "12"), ("Chains", "2"),
                         ("SGLD steps", "60")):
        set_number(page, label, value)
    button(page, "Estimate every checkpoint").click()
    charts = page.get_by_test_id("stVegaLiteChart")
    wait_while_running(page, lambda: page.get_by_text("Every checkpoint used", exact=False).count() > 0
                       and not button(page, "Stop").count(), RUN_LIMIT_S, "the end of the training run")
    wait_for_app_idle(page)
    assert_no_exception(page)
    expect(charts).to_have_count(2)
    table = page.get_by_test_id("stTable")

    def fits(page):
        inside_main(page, charts)
        inside_main(page, table)
        for index in range(2):  # tall enough to read on a projector
            assert charts.nth(index).bounding_box()["height"] >= 250
        ticks = charts.nth(1).locator("svg text").evaluate_all("texts => texts.map(t => t.textContent || '')")
        if ticks:  # an SVG renderer: its tick labels are text; a canvas one is judged on the screenshot
            assert len({t for t in ticks if re.fullmatch(r"[0-9.e\-]+", t)}) >= 4, ticks
        # every row and every column of the table shown: 12 checkpoints and the header, nothing scrolled away
        assert table.locator("tbody tr").count() == 12
        inside_main(page, table.locator("th").last)  # the last column in view, not clipped at the right
        table.scroll_into_view_if_needed()
    at_both_sizes(page, "training-run", fits)
    text = table.inner_text()
    assert "verdicts" in text and not re.search(r"[a-z]+_[a-z]+", text), text  # verdicts in words, no engine codes


def test_validate_page_table(page, app_url):
    page.set_viewport_size({"width": 1440, "height": 900})
    open_page(page, f"{app_url}/validate")
    page.get_by_test_id("stSelectbox").first.click()
    page.get_by_text("smoke: 2 tiny cases", exact=False).last.click()
    wait_for_app_idle(page)
    button(page, "Run suite").click()
    table = page.get_by_test_id("stTable")
    wait_while_running(page, lambda: page.get_by_text("Summary", exact=False).count() > 0 and table.count() > 0,
                       RUN_LIMIT_S, "the smoke suite")
    wait_for_app_idle(page)
    assert_no_exception(page)

    def fits(page):
        inside_main(page, table)
        inside_main(page, table.locator("th").last)  # the last column in view, not clipped at the right
        inside_main(page, page.get_by_test_id("stVegaLiteChart"))
        table.scroll_into_view_if_needed()
    at_both_sizes(page, "validate", fits)
    cells = table.inner_text()
    assert "potential" in cells and "dln" in cells  # the smoke suite's two cases
    assert "None" not in cells and "NaN" not in cells and "nan" not in cells, cells

