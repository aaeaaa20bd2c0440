"""The glossary (docs/GLOSSARY.md, read by pages/glossary.py) and the Method page that shows it; and the app's
references, which stay inside the repository."""

from __future__ import annotations

import re
from pathlib import Path

from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from llc_core import diagnostics
from pages import glossary

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")

# every symbol and diagnostic the app shows (issue 14), by its glossary name
SYMBOLS = ["llc", "llc_mean", "w_star", "n", "loss", "d", "nbeta", "localization", "step_size", "sgld", "burnin",
           "chains", "steps", "mala", "mala_acceptance", "rhat", "ess", "auto", "finite_target", "minibatch_heat",
           "batch_size", "refined", "multiplicity", "theoretical_llc", "global_llc", "llc_se", "relative_error"]


def test_every_verdict_and_symbol_has_an_entry_with_a_short_label():
    entries = glossary.glossary().entries
    codes = [check.__name__ for check in diagnostics.CHECKS] + ["ok"]
    assert len(codes) == 16
    for code in codes:
        assert code in entries and entries[code].group == glossary.VERDICTS, code
        label = glossary.verdict_label(code)
        assert label and "_" not in label and len(label) <= 20, (code, label)
    assert glossary.verdict_label("negative_llc") == "negative λ̂"
    assert glossary.verdict_label("still_climbing") == "still climbing"
    assert glossary.verdict_label("some_new_code") == "some new code"  # a code the glossary lacks, in words
    for name in SYMBOLS:
        assert name in entries, name
        assert 40 < len(entries[name].short) < 600, (name, entries[name].short)


def test_the_glossary_renders_its_symbols_literally():
    """w* is written w\\* so that Markdown shows the star; no $ (Streamlit's LaTeX), no link, no emphasis
    that swallows a star."""
    text = glossary.GLOSSARY_FILE.read_text(encoding="utf-8")
    assert "$" not in text and "](" not in text and "http" not in text
    for item in glossary.glossary().entries.values():
        html = MarkdownIt("commonmark").render(item.text)
        plain = re.sub(r"<[^>]+>", "", html)
        if "w\\*" in item.text:
            assert "w*" in plain, item.name
        for emphasised in re.findall(r"<em>(.*?)</em>", html, flags=re.DOTALL):
            assert len(emphasised) < 30, (item.name, emphasised)  # a word or two, never a run of text between stars


def test_the_method_page_shows_every_entry_and_finds_terms():
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    at.switch_page("pages/method.py").run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Method and glossary"
    titles = [m.value for m in at.markdown if m.value.startswith("#### ")]
    assert len(titles) == len(glossary.glossary().entries)
    assert "#### R-hat" in titles and "#### still climbing" in titles
    assert [h.value for h in at.header][-1] == "Method notes"
    assert any("## 6. Step-size adaptation (dual averaging)" in m.value for m in at.markdown)  # docs/METHOD.md
    for text in [m.value for m in at.markdown] + [c.value for c in at.caption]:  # no link, image or autolink
        html = MarkdownIt("commonmark", {"html": True}).render(text)
        assert not re.search(r"<(a|img|script)[\s>]", html), text[:200]
        assert not re.search(r"https?://|www\.|[\w.]@\w", re.sub(r"<[^>]+>", "", html)), text[:200]
    at.text_input(key="method.find").set_value("ESS").run()
    titles = [m.value for m in at.markdown if m.value.startswith("#### ")]
    assert "#### ESS, the effective sample size" in titles and len(titles) < 10
    at.text_input(key="method.find").set_value("zzz-no-such-term").run()
    assert any("No entry mentions" in i.value for i in at.info)


def test_the_method_page_is_in_the_navigation_and_linked_from_home():
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert any(link.proto.page.endswith("method") for link in at.get("page_link"))


def test_hover_help_quotes_the_glossary():
    text = glossary.help_text("rhat")
    assert text.startswith(glossary.entry("rhat").short) and "Method page" in text


def app_files() -> list[Path]:
    return [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py")), *sorted((ROOT / "docs").glob("*.md")),
            ROOT / "assets" / "examples" / "examples.json"]


def test_nothing_in_the_app_points_outside_the_repository():
    """No "REFERENCE §2-3" (a document the repository does not carry); every "docs/X.md §N" names a file and
    a section that exist."""
    method = (ROOT / "docs" / "METHOD.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^## (\d+)\. ", method, flags=re.MULTILINE))
    for path in app_files():
        text = path.read_text(encoding="utf-8")
        assert "REFERENCE" not in text, path
        for doc, numbers in re.findall(r"docs/(\w+\.md),? (§[\d\-, §]+)", text):
            assert (ROOT / "docs" / doc).is_file(), (path, doc)
            for number in re.findall(r"\d+", numbers):
                assert doc != "METHOD.md" or number in sections, (path, number)
        for doc in re.findall(r"docs/(\w+\.md)", text):
            assert (ROOT / "docs" / doc).is_file(), (path, doc)

