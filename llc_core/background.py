"""Run an estimation in a worker thread and let a UI poll it.

The worker never touches the UI: it writes each Snapshot into a lock-protected Progress, which
the UI copies whenever it redraws. A run stops when asked, and also when nobody has polled it for
`abandon_after` seconds, so a closed browser tab does not leave a worker running.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .config import RunConfig
from .errors import LLCInputError
from .result import RunResult, Snapshot
from .runner import run

log = logging.getLogger(__name__)

MAX_HISTORY_ROWS = 600  # per-snapshot rows kept for charts; halved by thinning when exceeded


@dataclass
class Progress:
    """What a UI draws: the latest snapshot, a thinned history, and the outcome when there is one.

    history_* arrays have one row per kept snapshot: the step, the mean minibatch loss of each chain
    over that snapshot's window, the running λ̂ per chain, and the running acceptance per chain.
    """

    status: str = "starting"  # starting, running, done, stopped, failed
    latest: Snapshot | None = None
    history_step: np.ndarray = field(default_factory=lambda: np.zeros(0))
    history_loss: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    history_llc: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    history_acceptance: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    result: RunResult | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("done", "stopped", "failed")


class BackgroundRun:
    """One estimation in a daemon thread. `run_fn` is `llc_core.run` unless a caller supplies another."""

    def __init__(
        self,
        config: RunConfig,
        run_fn: Callable[..., RunResult] = run,
        abandon_after: float | None = 60.0,
    ):
        self.config = config
        self._run_fn = run_fn
        self._abandon_after = abandon_after
        self._lock = threading.Lock()
        self._progress = Progress()
        self._stop = threading.Event()
        self._last_poll = time.monotonic()
        self._thread = threading.Thread(target=self._work, name="llc-run", daemon=True)

    def start(self) -> "BackgroundRun":
        self._thread.start()
        return self

    def request_stop(self) -> None:
        self._stop.set()

    def poll(self) -> Progress:
        """A copy of the progress, safe to read while the worker goes on."""
        self._last_poll = time.monotonic()
        with self._lock:
            return copy.copy(self._progress)

    def join(self, timeout: float | None = None) -> Progress:
        self._thread.join(timeout)
        return self.poll()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _should_stop(self) -> bool:
        if self._stop.is_set():
            return True
        if self._abandon_after is not None and time.monotonic() - self._last_poll > self._abandon_after:
            log.info("stopping a run nobody has polled for %.0f s", self._abandon_after)
            return True
        return False

    def _on_snapshot(self, snapshot: Snapshot) -> None:
        with self._lock:
            p = self._progress
            row_loss = snapshot.losses.mean(0)
            if p.history_loss.size == 0:
                p.history_loss = np.zeros((0, len(row_loss)))
                p.history_llc = np.zeros((0, len(row_loss)))
                p.history_acceptance = np.zeros((0, len(row_loss)))
            p.history_step = np.append(p.history_step, snapshot.step)
            p.history_loss = np.vstack([p.history_loss, row_loss])
            p.history_llc = np.vstack([p.history_llc, snapshot.llc_running])
            p.history_acceptance = np.vstack([p.history_acceptance, snapshot.acceptance])
            if len(p.history_step) > MAX_HISTORY_ROWS:
                keep = slice(None, None, 2)
                p.history_step, p.history_loss = p.history_step[keep], p.history_loss[keep]
                p.history_llc, p.history_acceptance = p.history_llc[keep], p.history_acceptance[keep]
            p.latest = snapshot
            p.status = "running"

    def _work(self) -> None:
        try:
            result = self._run_fn(self.config, on_snapshot=self._on_snapshot, stop=self._should_stop)
        except LLCInputError as err:
            self._finish("failed", error=str(err))
        except Exception as err:  # the UI shows a message, never a traceback; the log keeps the details
            log.exception("estimation failed")
            self._finish("failed", error=f"internal error ({type(err).__name__}: {err}); please report it")
        else:
            self._finish("stopped" if result.partial else "done", result=result)

    def _finish(self, status: str, result: RunResult | None = None, error: str | None = None) -> None:
        with self._lock:
            self._progress.status, self._progress.result, self._progress.error = status, result, error
