"""Issue 16 in a real browser: text from the URL is never rendered as a link or an image, the run
that snapshots never (snapshot_every = steps = 10^8) still stops within seconds, and a reload during a
run re-attaches to it (its token in the URL), a bogus token getting one info message."""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from page_helpers import assert_no_exception, button, open_page, wait_for_app_idle  # tests/e2e/page_helpers.py

pytestmark = pytest.mark.e2e

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture skips (or fails, in CI) with the reason
    expect = None

LINK = "[Session expired, log in again](https://evil.example/login)"
IMAGE = "![x](http://127.0.0.1:9/t.png)"


def test_markdown_in_the_url_shows_as_text_never_as_a_link_or_an_image(page, app_url, screenshot):
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    open_page(page, f"{app_url}/estimate?kind=mlp&hidden={quote(LINK)}")
    error = page.locator('[data-testid="stAlertContentError"]').filter(has_text="Session expired, log in again")
    expect(error.first).to_be_visible(timeout=30_000)
    assert page.locator('a[href*="evil.example"]').count() == 0
    assert '<a href="https://evil.example' not in page.content() and 'href="https://evil.example' not in page.content()
    screenshot(page, "link-as-text")

    open_page(page, f"{app_url}/estimate?kind=mlp&hidden={quote(IMAGE)}")
    expect(page.locator('[data-testid="stAlertContentError"]').filter(has_text="127.0.0.1:9").first).to_be_visible(
        timeout=30_000)
    page.wait_for_timeout(1_000)  # time for an image, were there one, to be requested
    assert page.locator('img[src*="127.0.0.1:9"]').count() == 0
    hosts = {urlsplit(url).netloc for url in requests}
    assert "127.0.0.1:9" not in hosts and "evil.example" not in hosts, hosts
    assert_no_exception(page)


def test_a_run_that_never_snapshots_stops_within_seconds(page, app_url, screenshot):
    page.set_viewport_size({"width": 1440, "height": 1000})
    open_page(page, f"{app_url}/estimate?snapshot_every=100000000&steps=100000000")
    button(page, "Run").click()
    stop = button(page, "Stop")
    expect(stop).to_be_visible(timeout=60_000)
    page.wait_for_timeout(3_000)  # sampling, between snapshots that never come
    screenshot(page, "running-1440")
    stop.click()
    clicked = time.monotonic()
    expect(stop).to_have_count(0, timeout=15_000)  # the run has ended
    expect(page.get_by_text(re.compile("Partial result|stopped", re.IGNORECASE)).first).to_be_visible(timeout=15_000)
    ended = time.monotonic() - clicked
    assert ended < 10, f"the run ended {ended:.1f} s after Stop"
    wait_for_app_idle(page)
    assert_no_exception(page)
    screenshot(page, "stopped-1440")
    page.set_viewport_size({"width": 1024, "height": 768})
    page.wait_for_timeout(500)
    screenshot(page, "stopped-1024x768")


def test_stop_ends_sgd_pre_training(page, app_url, screenshot):
    """/estimate?kind=dln&...&train_steps=10^7 trains for many minutes before sampling: Stop ends it
    within seconds with a clear message, not a result at a half-trained w*."""
    open_page(page, f"{app_url}/estimate?kind=dln&widths=5,4,3&rank=1&train_steps=10000000")
    button(page, "Run").click()
    stop = button(page, "Stop")
    expect(stop).to_be_visible(timeout=60_000)
    page.wait_for_timeout(2_000)  # the model is built, SGD pre-training under way
    stop.click()
    clicked = time.monotonic()
    expect(page.get_by_text("stopped during SGD pre-training").first).to_be_visible(timeout=15_000)
    assert time.monotonic() - clicked < 10
    expect(stop).to_have_count(0, timeout=10_000)
    wait_for_app_idle(page)
    assert_no_exception(page)
    screenshot(page, "stopped-in-pre-training")


def test_a_reload_reattaches_to_the_running_run_and_stop_still_works(page, app_url, screenshot):
    """A reload starts a new session: the run's token in the URL (?run=...) brings the running run back, its
    progress live and Stop working, instead of a fresh page while the worker runs on unseen."""
    page.set_viewport_size({"width": 1440, "height": 1000})
    open_page(page, f"{app_url}/estimate?steps=100000000&chains=2&snapshot_every=200")
    button(page, "Run").click()
    progress = page.locator('[data-testid="stProgress"]').filter(has_text=re.compile(r"Step [\d,]+ / 100,000,000"))
    expect(progress.first).to_be_visible(timeout=60_000)
    token = parse_qs(urlsplit(page.url).query).get("run", [""])[0]
    assert re.fullmatch(r"[A-Za-z0-9_-]{24}", token), page.url

    page.reload(wait_until="domcontentloaded")
    page.locator('[data-testid="stAppViewContainer"]').wait_for(state="attached", timeout=30_000)
    expect(button(page, "Stop")).to_be_visible(timeout=30_000)
    expect(progress.first).to_be_visible(timeout=30_000)
    first = progress.first.inner_text()
    page.wait_for_timeout(2_000)
    assert progress.first.inner_text() != first, "the re-attached progress does not move"
    assert parse_qs(urlsplit(page.url).query).get("run") == [token] and "steps=100000000" in page.url
    assert page.get_by_text("That run has ended").count() == 0
    assert_no_exception(page)
    screenshot(page, "reattached-1440")
    page.set_viewport_size({"width": 1024, "height": 768})
    page.wait_for_timeout(1_000)
    screenshot(page, "reattached-1024x768")
    page.set_viewport_size({"width": 1440, "height": 1000})

    button(page, "Stop").click()
    expect(button(page, "Stop")).to_have_count(0, timeout=15_000)
    expect(page.get_by_text(re.compile("Partial result")).first).to_be_visible(timeout=15_000)
    wait_for_app_idle(page)
    assert_no_exception(page)
    screenshot(page, "stopped-after-reload")


@pytest.mark.parametrize("token", ["not-a-token", "A" * 24])
def test_a_bogus_run_token_shows_one_info_message(page, app_url, token):
    open_page(page, f"{app_url}/estimate?steps=300&run={quote(token)}")
    info = page.locator('[data-testid="stAlertContentInfo"]').filter(has_text="That run has ended")
    expect(info).to_have_count(1, timeout=30_000)
    assert "belongs to a restarted server" in info.inner_text()
    expect(button(page, "Run")).to_be_enabled()
    assert "run=" not in page.url and "steps=300" in page.url
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0
    assert_no_exception(page)
