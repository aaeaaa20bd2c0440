"""What every page shares: the navigation and its entry point, the URL binding of widgets, number formats.

The rest of the pages' machinery lives beside this module:
  pages/settings.py  the Setting table and the widget values ⇄ RunConfig ⇄ URL conversions (no drawing)
  pages/charts.py    the live charts (Vega-Lite specs built once with Altair, fed fresh data each redraw)
  pages/runs.py      run records in the session, the polling live panel and the result view
  pages/live_runs.py the server's registry of running work, by the token in the URL: a reload re-attaches
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import uuid
import weakref
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import streamlit as st

# ====================================================================== navigation

# (file, title, url path, icon). Optional pages arrive with later issues and are listed once their
# file exists.
PAGES = [
    ("pages/home.py", "Home", "", ":material/home:"),
    ("pages/estimate.py", "Estimate", "estimate", ":material/query_stats:"),
    ("pages/learn.py", "Learn", "learn", ":material/school:"),
]
OPTIONAL_PAGES = [
    ("pages/validate.py", "Validate", "validate", ":material/fact_check:"),
    ("pages/checkpoint.py", "Checkpoint", "checkpoint", ":material/upload_file:"),
    ("pages/trajectory.py", "Training run", "trajectory", ":material/timeline:"),
    ("pages/calibrate.py", "Calibrate", "calibrate", ":material/tune:"),
    ("pages/method.py", "Method", "method", ":material/menu_book:"),
]
APP_DIR = Path(__file__).resolve().parents[1]
_ENTRY = threading.local()  # set while app.py runs the current page, in the session's script thread


def navigation_pages() -> list:
    pages = []
    for path, title, url_path, icon in PAGES + OPTIONAL_PAGES:
        if (APP_DIR / path).is_file():
            pages.append(st.Page(path, title=title, icon=icon, url_path=url_path or None, default=not url_path))
    return pages


@contextlib.contextmanager
def entry_point():
    """app.py runs the page inside this, so that `require_entry_point` knows it came through app.py."""
    _ENTRY.active = True
    try:
        yield
    finally:
        _ENTRY.active = False


def require_entry_point() -> None:
    """First line of every page: make sure the page runs under app.py's st.navigation.

    With a pages/ folder beside app.py, Streamlit starts a fresh server in its legacy multipage
    mode, in which a direct link such as /estimate runs the page file on its own (no page config,
    a navigation listing every file in pages/). Calling st.navigation once switches the server to
    st.navigation mode for good; the rerun then goes through app.py to the same page.
    """
    if getattr(_ENTRY, "active", False):
        return
    st.navigation(navigation_pages())
    st.rerun()


_SET_UP = threading.Lock()
_set_up = False


def set_up_process() -> None:
    """Once per server process, from app.py: freeze the heap as it is after the imports, and leave
    a core to the browser and the server (see `freeze_startup_heap` and llc_core.execution.background.worker_threads)."""
    global _set_up
    with _SET_UP:
        if _set_up:
            return
        _set_up = True
        remove_stale_uploads()
        freeze_startup_heap()
        import torch  # imported already (pages.runs → llc_core); here so that this module stays light

        from llc_core.execution import worker_threads  # the CLI and the app's workers use the same rule

        torch.set_num_threads(worker_threads(torch.get_num_threads()))


def freeze_startup_heap() -> None:
    """Move every object alive now (the modules of torch, pandas, Altair, Streamlit, ...; some
    300,000 objects) into the garbage collector's permanent generation.

    Streamlit runs `gc.collect(2)` after every script run, fragment runs included (its hidden
    option runner.postScriptGC). Over the whole heap that took ~150 ms of CPU, holding the GIL,
    2.5 times a second while a run's live panel polls, and starved the worker thread that samples
    (benchmarks/bench_app.py). Frozen objects are not scanned, so the collection then costs well
    under a millisecond; they are still freed by reference counting when dropped, only reference
    cycles among them are never collected, and at start-up those are module-level objects that live
    as long as the process anyway.
    """
    gc.collect()
    gc.freeze()


# ====================================================================== URL binding

RUN_PARAM = "run"  # the URL parameter of a page's running work (pages/live_runs.py); not a setting


def widget_key(page: str, name: str) -> str:
    return f"{page}.{name}"


def run_token_key(page: str) -> str:
    """The session-state key of the page's run token (pages/live_runs.py), written to the URL beside the settings."""
    return f"{page}.run_token"


def settings_params(params: dict[str, str]) -> dict[str, str]:
    """A URL's parameters without the run token: the settings only."""
    return {name: value for name, value in params.items() if name != RUN_PARAM}


def restore_from_url(page: str, parse: Callable[[dict[str, str]], tuple[dict[str, Any], list[str]]]) -> list[str]:
    """Call before drawing the page's widgets.

    When the URL carries settings this session has not written itself (a pasted link, a new tab,
    the first load), they replace the widget values; returns the problems found in it. A URL that
    this session wrote, or an empty one (navigating between pages clears it), changes nothing.
    """
    state = st.session_state
    params = settings_params(st.query_params.to_dict())
    if not params or params == state.get(f"{page}.url_written"):
        return []
    if state.get("url_owner") not in (None, page) and params == state.get("url_params"):
        return []  # another page's settings, left in the address bar by a page switch
    values, problems = parse(params)
    for name, value in values.items():
        state[widget_key(page, name)] = value
    state[f"{page}.values"] = values
    state[f"{page}.url_written"] = params
    return problems


def ensure_widget(page: str, name: str, default: Any) -> str:
    """The widget key for `name`, holding the session's last value (or `default`) before first draw.

    Widgets are then drawn with `key=` only, never `value=`, so that the URL and the session own
    their values.
    """
    key = widget_key(page, name)
    if key not in st.session_state:
        st.session_state[key] = st.session_state.get(f"{page}.values", {}).get(name, default)
    return key


def remember_and_write_url(page: str, values: dict[str, Any], params: dict[str, str]) -> None:
    """After the widgets: keep their values for this session and mirror them in the URL, with the page's
    run token (pages/live_runs.py) when it has one."""
    remembered = dict(st.session_state.get(f"{page}.values", {}))
    remembered.update(values)
    st.session_state[f"{page}.values"] = remembered
    token = st.session_state.get(run_token_key(page))
    wanted = {**params, RUN_PARAM: token} if token else params
    if st.query_params.to_dict() != wanted:
        st.query_params.from_dict(wanted)
    st.session_state[f"{page}.url_written"] = params
    st.session_state["url_owner"], st.session_state["url_params"] = page, params


# ====================================================================== user text, errors, upload folders

LOG = logging.getLogger("llc_explorer")
# every ASCII punctuation character: escaped, none can open a link, an image, HTML, code or an autolink
_MARKDOWN_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")


# where GitHub-flavoured Markdown's autolink literals start (https://…, www.…, a@b.c): Streamlit links those
# in plain text, after the escapes are resolved, so an invisible word joiner (U+2060) goes in between
_AUTOLINK_LITERAL = re.compile(r"(?<=:)(?=//)|(?<=www)(?=\.)|(?<=@)", re.IGNORECASE)
WORD_JOINER = "\u2060"


def escape_markdown(text: Any) -> str:
    """Text that came from a user (a URL value, a file name or its contents, an error echoing them) made
    literal for st.error/st.markdown: `[x](https://…)` and `![x](…)` show as typed, never as a link or
    an image the browser would fetch, and a bare https://… or www.… is not linked either."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", _AUTOLINK_LITERAL.sub(WORD_JOINER, str(text)))


def show_error(err: BaseException) -> None:
    """An error of a page's work: a user's input problem (LLCInputError) as its one-line message; anything
    else as a short "this is a bug" with an id, the traceback going to the server's log under that id."""
    from llc_core import LLCInputError  # light: llc_core is imported by every page anyway

    if isinstance(err, LLCInputError):
        st.error(escape_markdown(err))
        return
    bug_id = uuid.uuid4().hex[:8]
    LOG.error("bug %s: %s", bug_id, type(err).__name__, exc_info=err)
    st.error(f"This is a bug in LLC Explorer, not a problem with your input (id {bug_id}): the details are in "
             "the server's log. Please report it with this id.")


UPLOAD_PREFIXES = ("llc-checkpoint-", "llc-trajectory-")


def session_folder(prefix: str, state_key: str) -> str:
    """This browser session's upload folder, `prefix` + this server's pid + a random part, removed when
    the session ends (its state is dropped, and the finalizer with it) or, if the server dies first, by
    `remove_stale_uploads` at the next server's start."""
    holder = st.session_state.get(state_key)
    if holder is None or not os.path.isdir(holder.path):
        holder = _Folder(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-"))
        st.session_state[state_key] = holder
    return holder.path


class _Folder:
    def __init__(self, path: str):
        self.path = path
        weakref.finalize(self, shutil.rmtree, path, True)


def remove_stale_uploads() -> int:
    """At server start: remove the upload folders of servers that are no longer running."""
    removed = 0
    root = tempfile.gettempdir()
    for name in os.listdir(root):
        if not name.startswith(UPLOAD_PREFIXES):
            continue
        pid = name.split("-")[2]
        if pid.isdigit() and _alive(int(pid)) and int(pid) != os.getpid():
            continue
        if pid.isdigit() and int(pid) == os.getpid():
            continue
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


# ====================================================================== number formats


def fmt(value: float | None, digits: int = 4, fixed: bool = False) -> str:
    """A number for display: `digits` significant digits, or `digits` decimals when `fixed`; — for none."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}f}" if fixed else f"{value:.{digits}g}"


def fraction_text(value: Fraction | float) -> str:
    """1/4 → "1/4 = 0.25"; 13/2 → "13/2 = 6.5"; 3 → "3"."""
    if isinstance(value, Fraction) and value.denominator != 1:
        return f"{value.numerator}/{value.denominator} = {float(value):.4g}"
    return f"{float(value):.4g}"
