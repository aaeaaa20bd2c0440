"""Command line of llc_core: `python -m llc_core {run,validate,trajectory,sweep,compare,refine} --help`.

- `run CONFIG.json` (or `-` for stdin) prints the RunResult as JSON.
- `validate SUITE` runs a validation suite (llc_core/studies/validate.py: smoke, toy, dln-1k, dln-10k,
  dln-deepest, dln-100k), prints a table row per case and a summary, and writes `<out>/<suite>.json` and
  `<out>/<suite>.png` (default out dir `validation-output/`).
- `trajectory CHECKPOINT... --data FILE` (or `--train dln|mlp`) estimates λ̂ of every checkpoint of a
  training run with one calibrated set of SGLD settings (llc_core/studies/trajectory.py).
- `sweep CONFIG.json` runs a grid of ε × γ (× nβ) and recommends a cell (llc_core/studies/sweep.py).
- `compare CONFIG.json --sizes 100,1000,10000` runs minibatch SGLD and full-batch MALA across dataset
  sizes (llc_core/studies/experiments.py).
- `refine CONFIG.json --groups layer|head` gives the refined LLC of every group of parameters in one
  computation (llc_core/studies/refined.py).

Progress goes to stderr; bad input exits with status 2 and a one-line message; Ctrl-C stops the
run and still prints the (partial) result.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from llc_core.cli import compare, refine, run, sweep, trajectory, validate
from llc_core import defaults
from llc_core.cli.common import set_torch_threads

# Each module has `add_parser(commands)`, which registers its subcommand with `handler=its main`.
COMMANDS = (run, validate, trajectory, sweep, compare, refine)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llc_core", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
    args = parser.parse_args(argv)
    set_torch_threads()
    try:
        return args.handler(args)
    except MemoryError:
        # the resource budget (llc_core/budget.py) refuses what it can foresee; this is what it could not
        sys.stderr.write("error: out of memory: lower the model's size, data.n, sampler.chains or sampler.steps "
                         f"(the budget is set by {defaults.MEMORY_LIMIT_ENV})\n")
        return 2
