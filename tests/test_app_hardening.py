"""Issue 16 in the app, under streamlit's AppTest: a reload re-attaches to the page's running work by the
run token in the URL (pages/live_runs.py); hostile URLs never raise nor render as links or images; a file's
name and columns are shown as text."""

from __future__ import annotations

import html
import random
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from apptest_helpers import run_until, shown
from streamlit.testing.v1 import AppTest

from pages import live_runs
from pages.common import RUN_PARAM

APP = str(Path(__file__).resolve().parents[1] / "app.py")

pytestmark = pytest.mark.usefixtures("navigation_mode")  # tests/conftest.py
LONG = {"steps": "100000000", "chains": "2", "snapshot_every": "200"}


def open_page(page: str, params: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params.update(params or {})
    at.run()  # the home page; st.navigation registers the pages
    at.switch_page(page).run()
    assert not at.exception
    return at


def button(at: AppTest, label: str):
    found = [b for b in at.button if b.label == label]
    return found[0] if found else None


def infos(at: AppTest) -> list[str]:
    return [shown(i.value) for i in at.info]


# ---------------------------------------------------------------- the registry


class FakeWorker:
    def __init__(self):
        self.alive = True


def test_the_registry_binds_tokens_to_pages_and_forgets_finished_work():
    now = [0.0]
    registry = live_runs.RunRegistry(max_entries=3, keep_finished=60.0, clock=lambda: now[0])
    worker, other = FakeWorker(), FakeWorker()
    token = registry.add("est", None, "run", worker, lambda: {"est.run": worker})
    assert live_runs.valid_token(token) and len(token) == 24
    assert registry.add("est", token, "second", other, dict) == token  # the page's runs share its token
    assert set(registry.find("est", token)) == {"run", "second"}
    assert registry.find("ckpt", token) is None  # bound to its page
    for bogus in (None, "", "x", token[:-1], token + "A", token[:-1] + "!", "../" * 8, 5, ["a"]):
        assert registry.find("est", bogus) is None
    assert registry.find("est", "A" * 24) is None  # well formed, unknown

    worker.alive = False  # finished, and drawn by the page: gone at once
    registry.collected(token, "run")
    assert set(registry.find("est", token)) == {"second"}
    other.alive = False  # finished (stopped, or abandoned), never drawn: gone after keep_finished
    assert set(registry.find("est", token)) == {"second"}
    now[0] = 61.0
    assert registry.find("est", token) is None and len(registry) == 0

    tokens = [registry.add("est", None, "run", FakeWorker(), dict) for _ in range(5)]
    assert len(registry) == 3 and registry.find("est", tokens[0]) is None  # bounded: the oldest go
    assert registry.find("est", tokens[-1]) is not None
    assert registry.add("ckpt", tokens[-1], "run", FakeWorker(), dict) != tokens[-1]  # another page: a new token


# ---------------------------------------------------------------- reload re-attaches


def progress_text(at: AppTest) -> str:
    return " ".join(p.proto.text or "" for p in at.get("progress"))


def test_a_reload_reattaches_to_the_running_estimate_and_stop_works():
    first = open_page("pages/estimate.py", LONG)
    button(first, "Run").click().run()
    token = first.query_params.get("run")
    assert live_runs.valid_token(token), dict(first.query_params)
    assert first.query_params["steps"] == "100000000"  # the settings stay in the URL beside it
    run_until(first, lambda a: "Step " in progress_text(a), timeout=60)
    background = first.session_state["est.run"].background

    reloaded = open_page("pages/estimate.py", dict(first.query_params))  # a new session, the same URL
    assert reloaded.session_state["est.run"].background is background
    assert button(reloaded, "Stop") is not None and button(reloaded, "Run").disabled
    assert "Step " in progress_text(reloaded) and not infos(reloaded)
    assert reloaded.query_params.get("run") == token
    reloaded.number_input(key="est.seed").set_value(3).run()  # a widget rerun keeps the token in the URL
    assert reloaded.query_params.get("run") == token and reloaded.query_params["seed"] == "3"

    button(reloaded, "Stop").click().run()
    run_until(reloaded, lambda a: any("Partial result" in w.value for w in a.warning), timeout=30)
    assert background.poll().status == "stopped" and not reloaded.exception
    background.join(10)
    assert not background.alive
    again = open_page("pages/estimate.py", dict(reloaded.query_params))  # drawn and ended: gone
    assert any("That run has ended" in text for text in infos(again))
    assert "est.run" not in again.session_state and "run" not in again.query_params


@pytest.mark.parametrize("token", ["A" * 24, "nope", "<img src=x>", "[x](http://evil.example)", "x" * 5000, ""])
def test_an_unknown_or_malformed_token_gets_one_info_message(token):
    at = open_page("pages/estimate.py", {"run": token, "steps": "300"})
    assert not at.exception and not at.error
    assert [text.replace("**", "") for text in infos(at) if "ended" in text] == [
        "That run has ended or belongs to a restarted server; press Run to start again."]
    assert "run" not in at.query_params and at.query_params["steps"] == "300"
    assert button(at, "Run") is not None and not button(at, "Run").disabled


def start_checkpoint(at: AppTest) -> None:
    button(at, "Load example").click().run()
    at.number_input(key="ckpt.steps").set_value(10_000_000).run()
    button(at, "Estimate λ̂").click().run()


def start_trajectory(at: AppTest) -> None:
    at.number_input(key="traj.train_steps").set_value(100_000).run()
    button(at, "Estimate every checkpoint").click().run()


def start_sweep(at: AppTest) -> None:
    at.number_input(key="cal.steps").set_value(1_000_000)
    button(at, "Run sweep").click().run()


def start_suite(at: AppTest) -> None:
    at.selectbox(key="validate.suite").set_value("smoke")
    button(at, "Run suite").click().run()


def worker_of(state: Any, key: str):
    value = state[key]
    return value.background if key.endswith(".run") and key != "validate.run" else value


@pytest.mark.parametrize("page, start, key", [
    ("pages/checkpoint.py", start_checkpoint, "ckpt.run"),
    ("pages/trajectory.py", start_trajectory, "traj.worker"),
    ("pages/calibrate.py", start_sweep, "cal.sweep_job"),
    ("pages/validate.py", start_suite, "validate.run"),
])
def test_every_page_that_starts_work_reattaches_to_it(page, start, key, monkeypatch):
    """Checkpoint, Training run, Calibrate and Validate put their worker's token in the URL; a reload takes the
    worker back, Stop included."""
    from llc_core.studies import validate

    release = threading.Event()
    real = validate.run_suite
    monkeypatch.setattr(validate, "run_suite", lambda *a, **k: (release.wait(30), real(*a, **k))[1])
    at = open_page(page)
    start(at)
    assert not at.exception and not at.error, [shown(e.value) for e in at.error]
    token = at.query_params.get("run")
    assert live_runs.valid_token(token), dict(at.query_params)
    worker = worker_of(at.session_state, key)
    assert worker.alive
    at.switch_page("pages/home.py")
    at.query_params.clear()  # a page switch clears the URL's parameters
    at.run()
    at.switch_page(page).run()
    assert at.query_params.get("run") == token  # back on the page: the token is in the URL again

    again = open_page(page, {"run": token})
    assert worker_of(again.session_state, key) is worker and not any("has ended" in t for t in infos(again))
    if page.endswith("checkpoint.py"):  # the run's files come back with it
        assert again.session_state["ckpt.model_label"] == at.session_state["ckpt.model_label"]
        assert any("Inferred architecture" in m.value for m in again.markdown)
    stop = button(again, "Stop")
    assert stop is not None
    release.set()
    stop.click().run()
    assert not again.exception
    wait_for(lambda: not worker.alive)
    run_until(again, lambda a: button(a, "Stop") is None, timeout=30)
    assert not again.exception


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.1)


# ---------------------------------------------------------------- fuzzed URLs

HOSTILE_VALUES = [
    "1e300", "-1e300", "1e-300", "-1", "-0", "0", "NaN", "nan", "inf", "-inf", "Infinity", "9" * 400, "1" + "0" * 30,
    "0x10", "1_000", "10**30", "", " ", "[[[[", "]]]]", "[[1,[2,[3]]]]", "{}", "[]", "null", "true", "1,,2", "1," * 3000,
    "[Session expired, log in again](https://evil.example/login)", "![x](http://127.0.0.1:9/t.png)",
    "<img src=x onerror=alert(1)>", "<script>alert(1)</script>", "<a href='https://evil.example'>x</a>",
    "https://evil.example", "www.evil.example", "me@evil.example", "javascript:alert(1)", "*bold* _it_ `code` # h",
    "a" * 20_000, "ünïcödé 🙂 λ̂", "\u202eevil", "%00", "\x00", "1,2,[x](https://evil.example)", "potential-1-[x](//e)",
    "mlp", "dln", "potential", "checkpoint", "auto", "5,4,3", "100000,100000", "1000000000",
]
# per page: its URL parameters, and a few it does not know
URL_NAMES = {
    "pages/learn.py": ["potential", "level", "gamma", "step_size", "nbeta"],
    "pages/checkpoint.py": ["groups", "chains_per_group", "subsets", "subset_rows"], "pages/trajectory.py": ["groups"],
    "pages/calibrate.py": [], "pages/validate.py": [],
    "pages/home.py": [],
}
LINK = re.compile(r"<(a|img|script|iframe|svg|video|audio|object)[\s>/]", re.IGNORECASE)  # a tag, not its text
AUTOLINK = re.compile(r"https?://|www\.|[\w.]@\w|javascript:", re.IGNORECASE)


def url_cases(seed: int, count: int) -> list[tuple[str, dict[str, str]]]:
    from pages import settings

    names = {**URL_NAMES, "pages/estimate.py": list(settings.all_settings())}
    rng = random.Random(seed)
    cases = []
    for index in range(count):
        page = list(names)[index % len(names)] if index < 2 * len(names) else rng.choice(list(names))
        known = names[page] + [RUN_PARAM, "x", "kind"]
        params = {}
        for _ in range(rng.choice([1, 1, 2, 3, 5])):
            value = rng.choice(HOSTILE_VALUES)
            if rng.random() < 0.2:  # a hostile value inside a plausible one
                value = rng.choice(["1,", "0.5", "auto", "potential-", "5,"]) + value
            params[rng.choice(known)] = value
        cases.append((page, params))
    return cases


def rendered_texts(at: AppTest) -> list[str]:
    """Every Markdown body the page sent (alerts, captions, headings, markdown) and every widget label and help."""
    def walk(node):
        for child in getattr(node, "children", {}).values():
            yield child
            yield from walk(child)

    texts = []
    for element in walk(at._tree):
        kind = getattr(element, "type", "")
        if kind in ("markdown", "caption", "error", "warning", "info", "success", "title", "header", "subheader"):
            texts.append(element.value)
        for attribute in ("label", "help"):
            text = getattr(element, attribute, None)
            if isinstance(text, str):
                texts.append(text)
    return texts


def link_problems(texts: list[str]) -> list[str]:
    from markdown_it import MarkdownIt

    renderer = MarkdownIt("commonmark", {"html": True})
    problems = []
    for text in texts:
        html_text = renderer.render(text)
        plain = html.unescape(re.sub(r"<[^>]+>", "", html_text))
        if LINK.search(html_text) or AUTOLINK.search(plain):
            problems.append(html_text[:300])
    return problems


def test_fuzzed_urls_raise_nothing_and_render_no_link_or_image():
    """120 URLs (seeded) of hostile values for every page's parameters, and the run token: no exception, no
    "bug" box, and no text rendered as a link, an image, HTML or an autolink, within a minute."""
    started = time.monotonic()
    failures = []
    for page, params in url_cases(seed=16, count=120):
        at = open_page_unchecked(page, params)
        texts = rendered_texts(at)
        problems = ([f"exception: {e.value}" for e in at.exception] + link_problems(texts)
                    + [t for t in texts if "This is a bug" in t or "internal error" in t])
        if problems:
            failures.append({"page": page, "params": {k: v[:80] for k, v in params.items()}, "problems": problems[:3]})
    assert not failures, failures[:5]
    assert time.monotonic() - started < 90


def open_page_unchecked(page: str, params: dict[str, str]) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params.update(params)
    at.run()
    if not at.exception:
        at.switch_page(page).run()
    return at


# ---------------------------------------------------------------- file names and columns are text

EVIL = "[x](http://evil.example)*bold*"


def test_file_names_tensor_names_and_columns_show_as_text_never_as_links():
    import io

    import torch

    state = {f"{EVIL}.weight": torch.randn(1, 2), f"{EVIL}.bias": torch.zeros(1)}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    csv = f"a,{EVIL} ![i](http://127.0.0.1:9/t.png),y\n" + "\n".join(f"{i},{i % 3},{i % 2}" for i in range(20))
    at = open_page("pages/checkpoint.py")
    at.file_uploader(key="ckpt.model_upload").set_value((f"{EVIL}.pt", buffer.getvalue(), "application/octet-stream"))
    at.file_uploader(key="ckpt.data_upload").set_value((f"{EVIL} <img src=x>.csv", csv.encode(), "text/csv"))
    at.run()
    at.checkbox(key="ckpt.confirmed").check().run()
    assert not at.exception, at.exception
    texts = rendered_texts(at)
    assert link_problems(texts) == [], link_problems(texts)
    shown_texts = [shown(t).replace("\u2060", "") for t in texts]  # as the user reads it
    assert any(f"{EVIL}.pt" in t for t in shown_texts), shown_texts  # the name, as typed, in the caption
    assert any(f"Names in the file: {EVIL}" in t for t in shown_texts)
    assert any(f"Target column(s) of **{EVIL} <img src=x>.csv**" in t for t in shown_texts)
    assert f"{EVIL} ![i](http://127.0.0.1:9/t.png)" in at.multiselect(key="ckpt.target_columns").options


def test_the_link_checker_finds_what_it_looks_for():
    from pages.common import escape_markdown

    for text in ("[x](https://evil.example)", "![x](http://127.0.0.1:9/t.png)", "<img src=x>", "see https://evil.example",
                 "www.evil.example", "me@evil.example", "<script>alert(1)</script>"):
        assert link_problems([text]), text
        assert link_problems([escape_markdown(text)]) == [], text


ZIP_NAME = "[x](evil.example)*bold*"  # no "/" nor ":": a zip member path with those is refused as traversal


def test_checkpoint_names_in_a_training_run_show_as_text():
    """The Training-run page names the checkpoint ε was calibrated on: a zip member's own name, user text."""
    import io
    import zipfile

    examples = Path(APP).parent / "assets" / "examples"
    renamed = io.BytesIO()
    with zipfile.ZipFile(examples / "dln_training.zip") as source, zipfile.ZipFile(renamed, "w") as target:
        for info in source.infolist():
            step = "".join(c for c in info.filename if c.isdigit())
            target.writestr(f"{ZIP_NAME}_{step}.safetensors", source.read(info))
    at = open_page("pages/trajectory.py")
    at.radio(key="traj.source").set_value("upload").run()
    at.file_uploader(key="traj.uploads").set_value([("run.zip", renamed.getvalue(), "application/zip")])
    at.file_uploader(key="traj.data_upload").set_value(
        ("data.npz", (examples / "dln_training.npz").read_bytes(), "application/octet-stream"))
    at.run()
    at.number_input(key="traj.steps").set_value(60).run()
    at.number_input(key="traj.chains").set_value(2).run()
    button(at, "Estimate every checkpoint").click().run()
    run_until(at, lambda a: any("Every checkpoint used" in m.value for m in a.markdown) or a.error, timeout=240)
    assert not at.error, [shown(e.value) for e in at.error]
    [text] = [m.value for m in at.markdown if "Every checkpoint used" in m.value]
    assert ZIP_NAME in shown(text) and link_problems(rendered_texts(at)) == []
