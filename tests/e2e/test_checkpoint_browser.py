"""End-to-end: the Checkpoint page in a real headless Chromium, with real file uploads (AppTest cannot upload).

Fixtures (a `streamlit run app.py` server, the browser, screenshots) are in tests/e2e/conftest.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from page_helpers import assert_no_exception, button, wait_for_app_idle, wait_while_running  # tests/e2e/page_helpers.py

pytestmark = pytest.mark.e2e

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture skips (or fails, in CI) with the reason
    expect = None

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"
RUN_LIMIT_S = 240  # a 41-parameter model: seconds on a free machine, longer on a busy 2-core one


def upload(page, index: int, name: str, data: bytes) -> None:
    """Set the index-th file uploader's file, as a user's drop would."""
    page.locator('[data-testid="stFileUploader"] input[type="file"]').nth(index).set_input_files(
        {"name": name, "mimeType": "application/octet-stream", "buffer": data})
    wait_for_app_idle(page)


def load_example(page, app_url: str, name: str) -> None:
    """The Checkpoint page with the example whose name starts with `name` loaded in one click."""
    page.goto(f"{app_url}/checkpoint", wait_until="domcontentloaded")
    wait_for_app_idle(page)
    page.get_by_test_id("stSelectbox").first.click()
    page.get_by_text(name, exact=False).last.click()
    wait_for_app_idle(page)
    button(page, "Load example").click()
    wait_for_app_idle(page)


def estimate_full_llc(page, steps: int) -> None:
    """Steps and chains per group set, then the full λ̂ estimated and waited for."""
    for label, value in (("Steps", str(steps)), ("Chains per group", "2")):
        field = page.get_by_label(label, exact=True)
        field.fill(value)
        field.press("Enter")
        wait_for_app_idle(page)
    button(page, "Estimate λ̂").click()
    full = page.get_by_text(re.compile(r"^λ̂ = [-0-9.]+ ± "))
    wait_while_running(page, lambda: full.count() > 0, RUN_LIMIT_S, "the full λ̂")
    wait_for_app_idle(page)


def test_upload_a_checkpoint_and_data_and_estimate(page, app_url, screenshot):
    page.goto(f"{app_url}/checkpoint", wait_until="domcontentloaded")
    wait_for_app_idle(page)
    assert_no_exception(page)
    upload(page, 0, "weights.pt", b"\x89PNG\r\n\x1a\n" + b"\0" * 64)  # a PNG renamed .pt
    expect(page.get_by_text("is a PNG image", exact=False)).to_be_visible()
    assert_no_exception(page)
    screenshot(page, "bad-upload")

    upload(page, 0, "model.safetensors", (EXAMPLES / "mlp_regression.safetensors").read_bytes())
    expect(page.get_by_text("Linear 3→8 (bias) → relu → Linear 8→1 (bias)", exact=False)).to_be_visible()
    upload(page, 1, "data.npz", (EXAMPLES / "mlp_regression.npz").read_bytes())
    page.get_by_text("This is my model's architecture").click()
    wait_for_app_idle(page)
    expect(page.get_by_text("d = 41 parameters", exact=False)).to_be_visible()
    screenshot(page, "ready")

    button(page, "Estimate λ̂").click()
    result = page.get_by_text(re.compile(r"^λ̂ = [-0-9.]+ ± "))
    wait_while_running(page, lambda: result.count() > 0, RUN_LIMIT_S, "λ̂")
    assert_no_exception(page)
    screenshot(page, "result")


def test_load_example_on_the_training_run_page(page, app_url, screenshot):
    page.goto(f"{app_url}/trajectory", wait_until="domcontentloaded")
    wait_for_app_idle(page)
    page.get_by_text("My checkpoints (files or a zip) and data").click()
    wait_for_app_idle(page)
    button(page, "Load example training run").click()
    wait_for_app_idle(page)
    expect(page.get_by_text("dln_training.zip + dln_training.npz", exact=False)).to_be_visible()
    assert_no_exception(page)
    screenshot(page, "example-loaded")

    button(page, "Estimate every checkpoint").click()
    charts = page.locator('[data-testid="stVegaLiteChart"]')
    wait_while_running(page, lambda: charts.count() > 0 and not button(page, "Stop").count(), RUN_LIMIT_S,
                       "the end of the example trajectory")
    wait_for_app_idle(page)
    assert_no_exception(page)
    charts.first.scroll_into_view_if_needed()
    screenshot(page, "trajectory")


def test_transformer_example_in_one_click_at_both_widths(page, app_url, screenshot):
    """The tiny causal transformer (.pt2 + token npz) loads with one click; looked at at 1440 px and on
    a 1024×768 projector."""
    for width, height in ((1440, 900), (1024, 768)):
        page.set_viewport_size({"width": width, "height": height})
        load_example(page, app_url, "Tiny transformer, next-token prediction")
        expect(page.get_by_text("brings its own architecture", exact=False)).to_be_visible()
        expect(page.get_by_text("next_token loss", exact=False)).to_be_visible()
        assert_no_exception(page)
        screenshot(page, f"transformer-example-{width}")
        page.get_by_text("brings its own architecture", exact=False).scroll_into_view_if_needed()
        screenshot(page, f"transformer-model-and-data-{width}")


def test_refined_llc_per_layer_at_both_widths(page, app_url, screenshot):
    """Section 5 on the small CNN example: after a full estimate, "Estimate per group" draws one bar per
    layer beside a rule at the full λ̂; the chart is looked at at 1440×900 and on a 1024×768 projector."""
    page.set_viewport_size({"width": 1440, "height": 900})
    load_example(page, app_url, "Small CNN on 8×8 digits")
    expect(page.get_by_text("5 · Where does the complexity live?")).to_be_visible()
    estimate_full_llc(page, steps=100)  # the full λ̂ first: the groups' chart then marks it
    button(page, "Estimate per group").click()
    done = page.get_by_text(re.compile(r"^3 groups × 2 chains"))  # the caption under the finished chart
    wait_while_running(page, lambda: done.count() > 0 and not button(page, "Stop").count(), RUN_LIMIT_S,
                       "the refined LLCs")
    wait_for_app_idle(page)
    assert_no_exception(page)
    assert not page.get_by_test_id("stAlertContentError").count()
    expect(page.get_by_text("the red line is the full model's λ̂", exact=False)).to_be_visible()
    chart = page.get_by_test_id("stVegaLiteChart").last
    for width, height in ((1440, 900), (1024, 768)):
        page.set_viewport_size({"width": width, "height": height})
        wait_for_app_idle(page)
        chart.scroll_into_view_if_needed()
        page.wait_for_timeout(500)  # the chart re-lays out at the new width
        box = chart.bounding_box()
        assert box is not None and box["height"] >= 220, box
        expect(chart.locator("svg, canvas").first).to_be_visible()
        screenshot(page, f"refined-per-layer-{width}")


def test_refined_llc_per_data_subset_at_both_widths(page, app_url, screenshot):
    """Section 5, "per data subset", each class label, on the classifier example: one bar per label beside the
    full λ̂, its rows, nβ and verdicts in the table; looked at at 1440×900 and on a 1024×768 projector."""
    page.set_viewport_size({"width": 1440, "height": 900})
    load_example(page, app_url, "Tanh classifier as a torch.export program")
    estimate_full_llc(page, steps=60)
    page.get_by_text("per data subset", exact=True).click()
    wait_for_app_idle(page)
    expect(page.get_by_text("3 subsets: label 0 (149 rows)", exact=False)).to_be_visible()
    button(page, "Estimate per group").click()
    done = page.get_by_text(re.compile(r"^3 data subsets × 2 chains"))
    wait_while_running(page, lambda: done.count() > 0 and not button(page, "Stop").count(), RUN_LIMIT_S,
                       "the data-refined LLCs")
    wait_for_app_idle(page)
    assert_no_exception(page)
    assert not page.get_by_test_id("stAlertContentError").count()
    chart = page.get_by_test_id("stVegaLiteChart").last
    for width, height in ((1440, 900), (1024, 768)):
        page.set_viewport_size({"width": width, "height": height})
        wait_for_app_idle(page)
        chart.scroll_into_view_if_needed()
        page.wait_for_timeout(500)  # the chart re-lays out at the new width
        box = chart.bounding_box()
        assert box is not None and box["height"] >= 220, box
        screenshot(page, f"refined-per-data-subset-{width}")
        page.get_by_test_id("stDataFrame").last.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        screenshot(page, f"refined-per-data-subset-table-{width}")
