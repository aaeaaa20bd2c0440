"""Command line: `python -m llc_core run CONFIG.json` (or `-` for stdin) prints the RunResult as JSON.

Progress goes to stderr; bad input exits with status 2 and a one-line message; Ctrl-C stops the
run and still prints the (partial) result.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Sequence, TextIO

from .config import RunConfig
from .errors import LLCInputError
from .result import Snapshot
from .runner import run

BAR_WIDTH = 30


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llc_core", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_cmd = commands.add_parser("run", help="estimate the LLC for a config and print the result JSON")
    run_cmd.add_argument("config", help="path to a RunConfig JSON file, or - to read it from stdin")
    run_cmd.add_argument("--trace", action="store_true", help="include the per-step loss trace in the JSON")
    run_cmd.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    args = parser.parse_args(argv)

    try:
        config = RunConfig.from_json(_read(args.config))
        stop = threading.Event()
        progress = None if args.quiet else _progress_bar(sys.stderr)
        try:
            result = run(config, on_snapshot=progress, stop=stop)
        except KeyboardInterrupt:  # pragma: no cover - interactive only
            return 130
        if progress is not None:
            sys.stderr.write("\n")
    except LLCInputError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    sys.stdout.write(result.to_json(include_trace=args.trace) + "\n")
    return 0


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as err:
        raise LLCInputError(f"cannot read config {path!r}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise LLCInputError(f"config {path!r} is not a UTF-8 text file: pass a JSON file") from None


def _progress_bar(stream: TextIO):
    def show(snapshot: Snapshot) -> None:
        done = snapshot.step / snapshot.total_steps
        filled = int(BAR_WIDTH * done)
        llc = snapshot.llc_running
        llc_text = f"λ̂ {_nanmean(llc):.4g}" if snapshot.step > snapshot.burnin else "burn-in"
        stream.write(
            f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {snapshot.step}/{snapshot.total_steps} "
            f"{snapshot.steps_per_second:.0f} steps/s, {snapshot.seconds_left:.0f}s left, {llc_text}   "
        )
        stream.flush()

    return show


def _nanmean(values) -> float:
    import numpy as np

    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")
