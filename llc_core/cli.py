"""Command line: `python -m llc_core run CONFIG.json` (or `-` for stdin) prints the RunResult as JSON.

`python -m llc_core validate SUITE` runs a validation suite (llc_core/validate.py: smoke, toy, dln-1k,
dln-10k, dln-deepest, dln-100k), prints a table row per case and a summary, and writes `<out>/<suite>.json` and
`<out>/<suite>.png` (default out dir `validation-output/`).

`python -m llc_core trajectory CHECKPOINT... --data FILE` (or `--train dln|mlp`) estimates λ̂ of every
checkpoint of a training run with one calibrated set of SGLD settings and prints a table (`--json`
for JSON); see llc_core/trajectory.py.

`python -m llc_core sweep CONFIG.json` runs a grid of ε × γ (× nβ) and recommends a cell
(llc_core/sweep.py); `python -m llc_core compare CONFIG.json --sizes 100,1000,10000` runs minibatch
SGLD and full-batch MALA across dataset sizes (llc_core/experiments.py).

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
    val_cmd = commands.add_parser("validate", help="run a validation suite of known-λ models and score λ̂")
    val_cmd.add_argument("suite", help="suite name: smoke, toy, dln-1k, dln-10k, dln-deepest or dln-100k")
    val_cmd.add_argument("--out", default="validation-output", help="directory for <suite>.json and <suite>.png")
    val_cmd.add_argument("--cases", type=int, default=None, help="run only the first N cases")
    val_cmd.add_argument("--seed", type=int, default=0, help="seed offset of the random cases")
    val_cmd.add_argument("--check", action="store_true", help="exit with status 1 when the suite's targets are missed")
    val_cmd.add_argument("--sampler", default=None,
                         help='JSON object of sampler keys to override in every case, e.g. \'{"step_size": "auto"}\'')
    from .trajectory import add_trajectory_command  # its options and handler live beside the code they run

    add_trajectory_command(commands)
    from . import experiments, sweep  # `sweep` and `compare`: options and handlers beside the code they run

    sweep.add_command(commands)
    experiments.add_command(commands)
    args = parser.parse_args(argv)
    _set_torch_threads()
    if args.command == "validate":
        return _validate(args)
    if args.command == "trajectory":
        return args.handler(args)
    if args.command in ("sweep", "compare"):
        return args.calibration_command(args)

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


def _validate(args) -> int:
    from . import validate

    try:
        sampler = _json_object(args.sampler, "--sampler") if args.sampler else None
        cases = validate.suite_cases(args.suite, args.cases, args.seed, sampler)
    except LLCInputError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    print(f"suite {args.suite}: {validate.SUITES[args.suite].description}; {len(cases)} cases", flush=True)
    header = validate.format_table([]).splitlines()[0]
    print(header, flush=True)

    def show(row, index, total):
        print(f"[{index + 1}/{total}] " + "  ".join(validate.table_row(row)), flush=True)

    try:
        report = validate.run_suite(args.suite, args.out, args.cases, args.seed, on_case=show, sampler=sampler)
    except KeyboardInterrupt:  # pragma: no cover - interactive only
        return 130
    print()
    print(validate.format_table(report["cases"]))
    print(validate.format_summary(report["summary"]))
    print(f"wrote {args.out}/{args.suite}.json and {args.out}/{args.suite}.png")
    return 1 if args.check and not report["summary"]["passed"] else 0


def _set_torch_threads() -> None:
    """One torch thread fewer than torch's default (background.worker_threads), as the app's runs:
    on a busy 2-core machine torch's second OpenMP thread spins while it waits, and a small model's
    run (the default trajectory) took minutes instead of 35 s."""
    import torch

    from .background import worker_threads

    torch.set_num_threads(worker_threads(torch.get_num_threads()))


def _json_object(text: str, what: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise LLCInputError(f"{what} is not valid JSON: {err.msg} at column {err.colno}") from None
    if not isinstance(value, dict):
        raise LLCInputError(f"{what} must be a JSON object such as '{{\"step_size\": \"auto\"}}'")
    return value


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
