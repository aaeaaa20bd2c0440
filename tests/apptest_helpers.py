"""What the AppTest page tests share."""

from __future__ import annotations

import json
import time

from streamlit.testing.v1 import AppTest


def run_until(at: AppTest, done, timeout: float = 60.0) -> AppTest:
    """Rerun the page (as its polling fragment would) until done(at) holds, failing on an exception
    or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not done(at):
        assert time.monotonic() < deadline, "the run did not finish in time"
        time.sleep(0.3)
        at.run()
        assert not at.exception
    return at


def chart_specs(at: AppTest) -> list[dict]:
    """The Vega-Lite specs of every chart on the page (inside columns, tabs and expanders too)."""
    def walk(node):
        for child in getattr(node, "children", {}).values():
            yield child
            yield from walk(child)
    return [json.loads(e.proto.spec) for e in walk(at._tree) if getattr(e, "type", None) == "vega_lite_chart"]


def chart_count(at: AppTest) -> int:
    """How many Vega-Lite (Altair) charts the page shows, inside columns, tabs and expanders too."""
    return len(chart_specs(at))


def shown(text: str) -> str:
    """An st.error/st.markdown body as the user reads it: pages escape user text (common.escape_markdown)."""
    import re

    return re.sub(r"\\(.)", r"\1", text)
