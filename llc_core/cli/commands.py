"""Command line of llc_core: `python -m llc_core {run,validate,trajectory,sweep,compare} --help`.

- `run CONFIG.json` (or `-` for stdin) prints the RunResult as JSON.
- `validate SUITE` runs a validation suite (llc_core/studies/validate.py: smoke, toy, dln-1k, dln-10k,
  dln-deepest, dln-100k), prints a table row per case and a summary, and writes `<out>/<suite>.json` and
  `<out>/<suite>.png` (default out dir `validation-output/`).
- `trajectory CHECKPOINT... --data FILE` (or `--train dln|mlp`) estimates λ̂ of every checkpoint of a
  training run with one calibrated set of SGLD settings (llc_core/studies/trajectory.py).
- `sweep CONFIG.json` runs a grid of ε × γ (× nβ) and recommends a cell (llc_core/studies/sweep.py).
- `compare CONFIG.json --sizes 100,1000,10000` runs minibatch SGLD and full-batch MALA across dataset
  sizes (llc_core/studies/experiments.py).

Progress goes to stderr; bad input exits with status 2 and a one-line message; Ctrl-C stops the
run and still prints the (partial) result.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from llc_core.cli import compare, run, sweep, trajectory, validate
from llc_core.cli.common import set_torch_threads

# Each module has `add_parser(commands)`, which registers its subcommand with `handler=its main`.
COMMANDS = (run, validate, trajectory, sweep, compare)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llc_core", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
    args = parser.parse_args(argv)
    set_torch_threads()
    return args.handler(args)
