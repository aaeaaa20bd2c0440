"""Run an estimation in a worker and let a UI poll it.

The worker never touches the UI: what it samples lands in a lock-protected Progress, which the UI
copies whenever it redraws. A run stops when asked, and also when nobody has polled it for
`abandon_after` seconds, so a closed browser tab does not leave a worker running.

The worker is a separate process by default (LLC_WORKER=process), so that sampling never waits
for the GIL while the UI's server threads run Python (benchmarks/bench_app.py). The process comes
from a fork server that imported llc_core.runner (torch and all) once, so that a run starts in a
fraction of a second; never from a plain fork of the multi-threaded server. It runs the engine and
sends what it sampled over a pipe a few times a second; a receiver thread here keeps the Progress.
A run function that cannot be pickled (a lambda, a local function) runs in a thread of this
process instead, as does every run under LLC_WORKER=thread.

A server runs at most `worker_limit()` workers at once ($LLC_MAX_WORKERS, by default one per CPU
core): a run started beyond that waits, with status "waiting", until one finishes (or until it is
stopped or abandoned, which ends it without running anything).
"""

from __future__ import annotations

import copy
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing import spawn
from typing import Any, Callable

import numpy as np

from llc_core.config import RunConfig
from llc_core.errors import LLCInputError
from llc_core.result import RunResult, Snapshot
from llc_core.runner import run

log = logging.getLogger(__name__)

MAX_HISTORY_ROWS = 600  # per-snapshot rows kept for charts; halved by thinning when exceeded
WORKER_ENV = "LLC_WORKER"  # "process" (default) or "thread"
WORKERS = ("process", "thread")
PROCESS_NAME = "llc-run"
SEND_SECONDS = 0.1  # a worker process sends what it sampled at most this often (the UI polls every 0.4 s)
RECEIVE_WAIT = 0.25  # the receiver thread checks for abandonment at least this often
EXIT_WAIT = 10.0  # after its last message, a worker process gets this long to exit before it is killed
WORKER_LIMIT_ENV = "LLC_MAX_WORKERS"  # workers (processes or threads) running at once in this server
SLOT_WAIT = 0.1  # a waiting run checks for a stop or abandonment at least this often


def worker_limit() -> int:
    """How many runs may sample at once in this process: $LLC_MAX_WORKERS, else one per CPU core."""
    text = os.environ.get(WORKER_LIMIT_ENV, "").strip()
    if not text:
        return max(1, os.cpu_count() or 1)
    try:
        return max(1, int(text))
    except ValueError:
        raise ValueError(f"{WORKER_LIMIT_ENV} must be a whole number ≥ 1, got {text!r}") from None


class WorkerSlots:
    """The server's count of running workers, at most worker_limit() (read at every take)."""

    def __init__(self) -> None:
        self._free = threading.Condition()
        self.busy = 0

    def take(self, give_up: Callable[[], bool] | None = None) -> bool:
        """Take a slot: at once (False if none is free) without `give_up`, else wait until one is
        free (True) or give_up() holds (False)."""
        with self._free:
            while self.busy >= worker_limit():
                if give_up is None or give_up():
                    return False
                self._free.wait(SLOT_WAIT)
            self.busy += 1
            return True

    def release(self) -> None:
        with self._free:
            self.busy -= 1
            self._free.notify()


SLOTS = WorkerSlots()


@dataclass
class Progress:
    """What a UI draws: the latest snapshot, a thinned history, and the outcome when there is one.

    history_* arrays have one row per kept snapshot: the step, the mean minibatch loss of each chain
    over that snapshot's window, the running λ̂ per chain, and the running acceptance per chain.
    """

    status: str = "starting"  # waiting (for a free worker), starting, running, done, stopped, failed
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
    """One estimation in a worker process (or a daemon thread, see the module docstring).

    `run_fn` is `llc_core.run` unless a caller supplies another; `worker` is "process" or "thread",
    by default $LLC_WORKER or "process". A worker process runs torch with `threads` intra-op
    threads, by default `worker_threads` of its torch's default; a thread worker runs with this
    process's setting.
    """

    def __init__(
        self,
        config: RunConfig,
        run_fn: Callable[..., RunResult] = run,
        abandon_after: float | None = 60.0,
        worker: str | None = None,
        threads: int | None = None,
    ):
        self.config = config
        self._run_fn = run_fn
        self._abandon_after = abandon_after
        self.worker = _choose_worker(worker, run_fn)
        self._threads = threads
        self._lock = threading.Lock()
        self._progress = Progress()
        self._last_poll = time.monotonic()
        self._abandoned = False
        if self.worker == "process":
            self._stop = worker_context().Event()
            self._thread = threading.Thread(target=self._receive, name="llc-run-receiver", daemon=True)
        else:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._work, name="llc-run", daemon=True)
        self._process = None
        self._conn = None
        self._has_slot = False

    def start(self) -> "BackgroundRun":
        self._has_slot = SLOTS.take()
        if not self._has_slot:
            self._progress.status = "waiting"
        elif self.worker == "process":
            self._launch()
        self._thread.start()
        return self

    def _launch(self) -> None:
        context = worker_context()
        self._conn, child_conn = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_child_main, name=PROCESS_NAME, daemon=True,
            args=(self._run_fn, self.config, child_conn, self._stop, self._threads))
        self._process.start()
        child_conn.close()  # the child holds the writing end now: its exit is our EOF

    def _wait_for_slot(self) -> bool:
        """In the worker's thread: wait for a free worker and start it; False (the run ended as failed,
        nothing run) when stopped or abandoned first."""
        if not self._has_slot:
            self._has_slot = SLOTS.take(lambda: self._stop.is_set() or self._abandoned_now())
            if not self._has_slot:
                self._finish("failed", error="stopped while waiting for a free worker: nothing was run")
                return False
            with self._lock:
                self._progress.status = "starting"
            if self.worker == "process":
                try:
                    self._launch()
                except Exception as err:
                    SLOTS.release()
                    log.exception("could not start a worker process")
                    self._finish("failed", error=f"internal error ({type(err).__name__}: {err}); please report it")
                    return False
        return True

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

    @property
    def pid(self) -> int | None:
        """The worker process's id once started; None for a thread worker."""
        return self._process.pid if self._process is not None else None

    # ------------------------------------------------------------------ both workers

    def _abandoned_now(self) -> bool:
        if self._abandon_after is None or time.monotonic() - self._last_poll <= self._abandon_after:
            return False
        if not self._abandoned:
            self._abandoned = True
            log.info("stopping a run nobody has polled for %.0f s", self._abandon_after)
        return True

    def _add_rows(self, steps: np.ndarray, loss: np.ndarray, llc: np.ndarray, acceptance: np.ndarray,
                  latest: Snapshot) -> None:
        """Append snapshot rows to the history, halving it (the newest row always kept) while too long."""
        with self._lock:
            p = self._progress
            if p.history_loss.size == 0:
                chains = loss.shape[1]
                p.history_loss, p.history_llc, p.history_acceptance = (np.zeros((0, chains)) for _ in range(3))
            p.history_step = np.concatenate([p.history_step, steps])
            p.history_loss = np.vstack([p.history_loss, loss])
            p.history_llc = np.vstack([p.history_llc, llc])
            p.history_acceptance = np.vstack([p.history_acceptance, acceptance])
            while len(p.history_step) > MAX_HISTORY_ROWS:
                keep = slice((len(p.history_step) - 1) % 2, None, 2)
                p.history_step, p.history_loss = p.history_step[keep], p.history_loss[keep]
                p.history_llc, p.history_acceptance = p.history_llc[keep], p.history_acceptance[keep]
            p.latest = latest
            p.status = "running"

    def _finish(self, status: str, result: RunResult | None = None, error: str | None = None) -> None:
        with self._lock:
            self._progress.status, self._progress.result, self._progress.error = status, result, error

    # ------------------------------------------------------------------ thread worker

    def _work(self) -> None:
        if not self._wait_for_slot():
            return
        try:
            self._sample_here()
        finally:
            SLOTS.release()

    def _sample_here(self) -> None:
        def should_stop() -> bool:
            return self._stop.is_set() or self._abandoned_now()

        def on_snapshot(snapshot: Snapshot) -> None:
            self._add_rows(*_snapshot_rows([snapshot]), snapshot)

        status, result, error, details = _outcome(self._run_fn, self.config, on_snapshot, should_stop)
        if details:
            log.error("estimation failed:\n%s", details)
        self._finish(status, result, error)

    # ------------------------------------------------------------------ process worker

    def _receive(self) -> None:
        if not self._wait_for_slot():
            return
        try:
            self._receive_messages()
        finally:
            SLOTS.release()

    def _receive_messages(self) -> None:
        """In this process: apply the worker's messages to the progress until it finishes or dies."""
        conn, process = self._conn, self._process
        finished = False
        try:
            while not finished:
                if self._abandoned_now():
                    self._stop.set()
                if not conn.poll(RECEIVE_WAIT):
                    continue
                message = conn.recv()
                if message[0] == "rows":
                    self._add_rows(*message[1:])
                else:  # ("finish", status, result, error, details)
                    _, status, result, error, details = message
                    if details:
                        log.error("estimation failed in the worker process:\n%s", details)
                    self._finish(status, result, error)
                    finished = True
        except (EOFError, OSError):  # the worker died without a last word
            process.join(EXIT_WAIT)
            self._finish("failed", error=f"the worker process ended unexpectedly ({_exit_text(process.exitcode)}) "
                                         "before it could report a result")
            log.error("the estimation's worker process ended unexpectedly (%s)", _exit_text(process.exitcode))
        except Exception as err:  # a message that cannot be read: say so, never hang
            log.exception("could not read the worker process's message")
            self._finish("failed", error=f"internal error ({type(err).__name__}: {err}); please report it")
        finally:
            conn.close()
            process.join(EXIT_WAIT if finished else 0)
            if process.is_alive():
                process.kill()
                process.join(EXIT_WAIT)


# ---------------------------------------------------------------------- worker processes

_CONTEXT_LOCK = threading.Lock()
_context: Any = None


def worker_context():
    """The multiprocessing context of worker processes: a fork server that imports llc_core.runner
    once (torch and all), or spawn where there is none. Never plain fork: the parent has threads."""
    global _context
    with _CONTEXT_LOCK:
        if _context is None:
            if "forkserver" in multiprocessing.get_all_start_methods():
                _context = multiprocessing.get_context("forkserver")
                _context.set_forkserver_preload(["llc_core.runner"])  # takes effect if the server is not up yet
            else:
                _context = multiprocessing.get_context("spawn")
            _leave_main_out_of_workers()
        return _context


def start_worker_server() -> None:
    """Start the fork server now, so that the first run does not wait for it to import torch (the
    app calls this at start-up; without it the first run starts the server). Nothing under
    LLC_WORKER=thread."""
    if os.environ.get(WORKER_ENV, "").strip().lower() == "thread":
        return
    if worker_context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _leave_main_out_of_workers() -> None:
    """A multiprocessing child first re-imports its parent's __main__ script; under
    `streamlit run`, that is Streamlit's launcher, which would import Streamlit into every worker
    (a second of CPU, and a UI library where none belongs). The worker's target and arguments are
    pickled by module reference, so ours do without it: leave it out of their preparation data."""
    original = spawn.get_preparation_data
    if getattr(original, "llc_leaves_main_out", False):
        return

    def get_preparation_data(name: str) -> dict:
        data = original(name)
        if name == PROCESS_NAME:
            data.pop("init_main_from_name", None)
            data.pop("init_main_from_path", None)
        return data

    get_preparation_data.llc_leaves_main_out = True
    spawn.get_preparation_data = get_preparation_data


def _choose_worker(worker: str | None, run_fn: Callable) -> str:
    worker = (worker or os.environ.get(WORKER_ENV, "").strip().lower() or "process")
    if worker not in WORKERS:
        raise ValueError(f"{WORKER_ENV} must be one of {', '.join(WORKERS)}, got {worker!r}")
    if worker == "process":
        try:
            pickle.dumps(run_fn)
        except Exception:  # a lambda, a local function: it can only run here
            log.debug("run function %r cannot be pickled: running it in a thread", run_fn)
            return "thread"
    return worker


class _Sender:
    """In the worker process: gathers snapshot rows and sends them at most every SEND_SECONDS."""

    def __init__(self, conn):
        self.conn = conn
        self.pending: list[Snapshot] = []
        self.sent_at = -np.inf
        self.broken = False  # the parent is gone: stop

    def add(self, snapshot: Snapshot) -> None:
        self.pending.append(snapshot)
        if time.monotonic() - self.sent_at >= SEND_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.send(("rows", *_snapshot_rows(self.pending), self.pending[-1]))
            self.pending = []
            self.sent_at = time.monotonic()

    def send(self, message: tuple) -> None:
        if self.broken:
            return
        try:
            self.conn.send(message)
        except OSError:  # BrokenPipeError: nobody is listening any more
            self.broken = True


def worker_threads(default: int) -> int:
    """torch intra-op threads, given torch's default: one fewer, at least one, unless
    OMP_NUM_THREADS chose the default. The one rule for the app's server and worker processes and
    the CLI: the browser drawing the live view and the server usually share the machine with the
    worker, and torch's second OpenMP thread spins while it waits; on a 2-core machine one thread
    sampled no slower than two (benchmarks/bench_app.py), and on a busy one far faster."""
    if os.environ.get("OMP_NUM_THREADS", "").strip():
        return default
    return max(1, default - 1)


def _child_main(run_fn: Callable[..., RunResult], config: RunConfig, conn, stop, threads: int | None) -> None:
    """The worker process: run the estimation, stream its rows, send the outcome, exit."""
    import torch

    # Not the parent's setting: torch.get_num_threads() answers per thread under OpenMP, so a UI
    # thread other than the one that set it would read back the default.
    torch.set_num_threads(threads if threads is not None else worker_threads(torch.get_num_threads()))
    sender = _Sender(conn)
    status, result, error, details = _outcome(
        run_fn, config, sender.add, lambda: stop.is_set() or sender.broken)
    sender.flush()
    try:
        sender.send(("finish", status, result, error, details))
    except Exception as err:  # a result that does not pickle: say so rather than die silently
        sender.send(("finish", "failed", None, f"internal error ({type(err).__name__}: {err}); please report it",
                     traceback.format_exc()))
    conn.close()


def _outcome(run_fn, config, on_snapshot, stop) -> tuple[str, RunResult | None, str | None, str | None]:
    """(status, result, error message, traceback) of one run: the UI shows the message, never a
    traceback; the caller logs it."""
    try:
        result = run_fn(config, on_snapshot=on_snapshot, stop=stop)
    except LLCInputError as err:
        return "failed", None, str(err), None
    except Exception as err:
        return "failed", None, f"internal error ({type(err).__name__}: {err}); please report it", traceback.format_exc()
    return ("stopped" if result.partial else "done"), result, None, None


def _snapshot_rows(snapshots: list[Snapshot]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """History rows of snapshots: steps, mean loss per chain, running λ̂ and acceptance per chain."""
    return (np.array([s.step for s in snapshots], dtype=float),
            np.stack([s.losses.mean(0) for s in snapshots]),
            np.stack([s.llc_running for s in snapshots]),
            np.stack([s.acceptance for s in snapshots]))


def _exit_text(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit status {exitcode}"
