"""What the subcommands share: torch threads, JSON options, the progress bar."""

from __future__ import annotations

import sys
import threading
from typing import Callable, TextIO, TypeVar

import numpy as np

from llc_core.config import parse_json
from llc_core.errors import LLCInputError
from llc_core.result import Snapshot

BAR_WIDTH = 30


def set_torch_threads() -> None:
    """One torch thread fewer than torch's default (background.worker_threads), as the app's runs:
    on a busy 2-core machine torch's second OpenMP thread spins while it waits, and a small model's
    run (the default trajectory) took minutes instead of 35 s."""
    import torch

    from llc_core.execution.background import worker_threads

    torch.set_num_threads(worker_threads(torch.get_num_threads()))


T = TypeVar("T")


def run_interruptibly(work: Callable[[], T], stop: threading.Event) -> T:
    """`work()` in a worker thread; Ctrl-C sets `stop` (which the run honours within about
    defaults.STOP_CHECK_SECONDS) and waits for the partial result, which is returned as usual. A
    second Ctrl-C while it winds down leaves at once (KeyboardInterrupt)."""
    box: dict = {}
    finished = threading.Event()  # not Thread.join: a Ctrl-C inside join can make is_alive() lie

    def target() -> None:
        try:
            box["result"] = work()
        except BaseException as err:  # noqa: BLE001 - handed to the main thread as is
            box["error"] = err
        finally:
            finished.set()

    threading.Thread(target=target, name="llc-cli-run", daemon=True).start()
    try:
        while not finished.wait(0.1):
            pass
    except KeyboardInterrupt:
        stop.set()
        sys.stderr.write("\nstopping: the partial result follows (Ctrl-C again to quit without it)\n")
        sys.stderr.flush()
        while not finished.wait(0.1):
            pass
    if "error" in box:
        raise box["error"]
    return box["result"]


def json_object(text: str, what: str) -> dict:
    value = parse_json(text, what)
    if not isinstance(value, dict):
        raise LLCInputError(f"{what} must be a JSON object such as '{{\"step_size\": \"auto\"}}'")
    return value


def progress_bar(stream: TextIO):
    def show(snapshot: Snapshot) -> None:
        done = snapshot.step / snapshot.total_steps
        filled = int(BAR_WIDTH * done)
        llc = snapshot.llc_running
        llc_text = f"λ̂ {nanmean(llc):.4g}" if snapshot.step > snapshot.burnin else "burn-in"
        stream.write(
            f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {snapshot.step}/{snapshot.total_steps} "
            f"{snapshot.steps_per_second:.0f} steps/s, {snapshot.seconds_left:.0f}s left, {llc_text}   "
        )
        stream.flush()

    return show


def nanmean(values) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")
