"""A worker thread for long jobs that a UI polls: sweeps, validation suites, comparisons.

The work runs in a daemon thread that never touches a UI; it reports finished pieces and progress
through a callback, and a UI copies them with `snapshot()` whenever it redraws. A job stops when
asked, and also when nobody has polled it for `abandon_after` seconds, so a closed browser tab does
not leave it running. (background.BackgroundRun is the single-run counterpart, with a worker process.)
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from llc_core.errors import LLCInputError


class Job:
    """`work(report, stop)` in a daemon thread that never touches a UI; a UI polls `snapshot()`.

    The work calls report("item", x) to append a finished piece (a cell, a row) and
    report("progress", p) to replace the progress shown; its return value becomes `result`. Like
    background.BackgroundRun, it stops when asked and when nobody has polled it for `abandon_after`
    seconds (a closed tab leaves nothing running).
    """

    def __init__(self, work: Callable[[Callable[[str, Any], None], Callable[[], bool]], Any],
                 abandon_after: float | None = 60.0, name: str = "llc-job"):
        self._work_fn = work
        self._abandon_after = abandon_after
        self._last_poll = time.monotonic()
        self._lock = threading.Lock()
        self._items: list[Any] = []
        self._progress: Any = None
        self._result: Any = None
        self._error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)

    def start(self) -> "Job":
        self._thread.start()
        return self

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def join(self, timeout: float | None = None) -> dict[str, Any]:
        self._thread.join(timeout)
        return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        """{"items", "progress", "result", "error", "running"}: a copy, safe to read while it runs."""
        self._last_poll = time.monotonic()
        with self._lock:
            return {"items": list(self._items), "progress": self._progress, "result": self._result,
                    "error": self._error, "running": self._thread.is_alive()}

    def _should_stop(self) -> bool:
        if self._stop.is_set():
            return True
        return self._abandon_after is not None and time.monotonic() - self._last_poll > self._abandon_after

    def _report(self, what: str, value: Any) -> None:
        with self._lock:
            if what == "item":
                self._items.append(value)
            else:
                self._progress = value

    def _work(self) -> None:
        try:
            result = self._work_fn(self._report, self._should_stop)
            with self._lock:
                self._result = result
        except LLCInputError as err:
            with self._lock:
                self._error = str(err)
        except Exception as err:  # shown on the page; never a traceback
            with self._lock:
                self._error = f"internal error ({type(err).__name__}: {err}); please report it"
