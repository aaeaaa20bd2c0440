"""`python -m llc_core compare CONFIG.json --sizes ...`: minibatch SGLD against full-batch MALA across n."""

from __future__ import annotations

import dataclasses
import json
import sys

from llc_core.config import RunConfig, read_config_text
from llc_core.errors import LLCInputError
from llc_core.runner import check_config
from llc_core.studies.experiments import CompareRow, check_sizes, compare_samplers, format_compare
from llc_core.studies.sweep import parse_numbers


def add_parser(commands) -> None:
    """`python -m llc_core compare CONFIG.json --sizes 100,1000,10000` (registered in llc_core/cli/__init__.py)."""
    cmd = commands.add_parser(
        "compare", help="minibatch SGLD vs full-batch MALA (exact baseline) across dataset sizes n",
        description="Runs the RunConfig in CONFIG.json at each n with algorithm sgld and with algorithm mala; "
                    "prints λ̂ ± se, acceptance and wall time for both.")
    cmd.add_argument("config", help="path to a RunConfig JSON file, or - for stdin")
    cmd.add_argument("--sizes", default="100,1000,10000", help="comma-separated dataset sizes n (default 100,1000,10000)")
    cmd.add_argument("--out", help="also write the result JSON to this file")
    cmd.add_argument("--json", action="store_true", help="print the result JSON on stdout (the table goes to stderr)")
    cmd.set_defaults(handler=main)


def main(args) -> int:
    try:
        config = RunConfig.from_json(read_config_text(args.config))
        sizes = check_sizes(parse_numbers(args.sizes, "--sizes"))
        for n in sizes:  # every run of the comparison within the budget, before the first starts
            for algorithm in ("sgld", "mala"):
                check_config(dataclasses.replace(config, data=dataclasses.replace(config.data, n=n),
                                                 sampler=dataclasses.replace(config.sampler, algorithm=algorithm)))

        def show(row: CompareRow) -> None:
            sys.stderr.write(f"n = {row.n} {row.algorithm}: λ̂ = {row.llc_mean} in {row.wall_time_s:.1f} s\n")

        try:
            result = compare_samplers(config, sizes, on_row=show)
        except KeyboardInterrupt:  # pragma: no cover - interactive only
            return 130
    except LLCInputError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    text = json.dumps(result.to_dict(), indent=2, allow_nan=False)
    if args.out:
        try:
            with open(args.out, "w", encoding="utf-8") as handle:
                handle.write(text + "\n")
        except OSError as err:
            sys.stderr.write(f"error: cannot write {args.out!r}: {err.strerror}\n")
            return 2
    table = format_compare(result) + "\n"
    if args.json:
        sys.stderr.write(table)
        sys.stdout.write(text + "\n")
    else:
        sys.stdout.write(table)
    return 0
