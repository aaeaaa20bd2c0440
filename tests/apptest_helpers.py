"""What the AppTest page tests share."""

from __future__ import annotations

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
