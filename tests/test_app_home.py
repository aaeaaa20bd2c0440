"""The entry point and the Home page under streamlit's AppTest."""

import shutil
import sys
import time
from pathlib import Path

import pytest
from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest, app_test

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")


pytestmark = pytest.mark.usefixtures("navigation_mode")  # tests/conftest.py


def test_home_explains_and_links_to_the_pages():
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert at.title[0].value == "LLC Explorer"
    assert any("local learning coefficient" in m.value for m in at.markdown)
    links = [link.proto.page for link in at.get("page_link")]
    assert any("estimate" in link for link in links) and any("learn" in link for link in links)


def test_every_page_loads_through_the_navigation():
    at = AppTest.from_file(APP, default_timeout=30).run()
    pages = (("pages/estimate.py", "Estimate λ̂"), ("pages/learn.py", "Learn"), ("pages/home.py", "LLC Explorer"))
    for page, title in pages:
        at.switch_page(page).run()
        assert not at.exception, page
        assert at.title[0].value.startswith(title)


def test_a_validate_page_joins_the_navigation_when_its_file_exists(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "pages" or m.startswith("pages.")]:
        monkeypatch.delitem(sys.modules, name)  # import the copy's pages package, not this checkout's
    shutil.copy(ROOT / "app.py", tmp_path / "app.py")
    shutil.copytree(ROOT / "pages", tmp_path / "pages", ignore=shutil.ignore_patterns("__pycache__", "validate.py"))
    at = AppTest.from_file(str(tmp_path / "app.py"), default_timeout=30).run()
    assert not at.exception
    (tmp_path / "pages" / "validate.py").write_text('import streamlit as st\nst.title("Validate stub")\n')
    at = AppTest.from_file(str(tmp_path / "app.py"), default_timeout=30).run()
    at.switch_page("pages/validate.py").run()
    assert not at.exception and at.title[0].value == "Validate stub"


def test_a_running_estimate_is_kept_alive_and_shown_on_other_pages():
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params.update({"steps": "200000", "chains": "2"})
    at.run()
    at.switch_page("pages/estimate.py").run()
    [run] = [b for b in at.button if b.label == "Run"]
    run.click().run()
    record = at.session_state["est.run"]
    try:
        at.switch_page("pages/home.py").run()
        deadline = time.monotonic() + 30
        while not any("Estimate: running" in (p.proto.text or "") for p in at.sidebar.get("progress")):
            assert time.monotonic() < deadline
            time.sleep(0.3)
            at.run()
        assert record.background.alive and not at.exception
    finally:
        record.background.request_stop()
        record.background.join(30)


def test_a_direct_link_works_in_streamlits_legacy_pages_mode(monkeypatch):
    # A fresh server with a pages/ folder starts in legacy mode; a first request for /estimate then
    # runs pages/estimate.py on its own, and the page hands over to app.py's navigation.
    monkeypatch.setattr(app_test, "PagesManager", PagesManager)
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.switch_page("pages/estimate.py").run()
    assert not at.exception
    assert at.title[0].value == "Estimate λ̂" and any(b.label == "Run" for b in at.button)
    assert at.query_params["kind"] == "potential"


def test_home_shows_w_star_literally_and_links_the_method_page():
    """w* is the trained weights, not the start of italics: in Markdown a bare * pairs with the next one."""
    import re

    from markdown_it import MarkdownIt

    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    [intro] = [m.value for m in at.markdown if "local learning coefficient" in m.value]
    html = MarkdownIt("commonmark").render(intro)
    plain = re.sub(r"<[^>]+>", "", html)
    assert "λ(w*) measures" in plain and "weights w*." in plain and "L_n(w*)" in plain
    assert set(re.findall(r"<em>(.*?)</em>", html, flags=re.DOTALL)) == {"singular", "The Local Learning\nCoefficient"}
    assert "docs/METHOD.md" in intro and "REFERENCE" not in intro
    assert any(link.proto.page.endswith("method") for link in at.get("page_link"))
