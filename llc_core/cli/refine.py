"""`python -m llc_core refine CONFIG.json --groups layer|head`: the refined LLC of every group at once."""

from __future__ import annotations

import dataclasses
import json
import sys
import threading

from llc_core.cli.common import print_result, run_interruptibly
from llc_core.config import RefineConfig, RunConfig, read_config_text
from llc_core.errors import LLCInputError
from llc_core.studies.refined import run_groups


def add_parser(commands) -> None:
    cmd = commands.add_parser(
        "refine", help="refined LLCs: λ̂ of every layer, attention head or named group, in one computation",
        description="CONFIG.json is a RunConfig; its refine.groups (or --groups) says which groups, refine.data an "
                    "optional data subset. Each group's chains move only its parameters; the rest stay at w*.")
    cmd.add_argument("config", help="path to a RunConfig JSON file, or - for stdin")
    cmd.add_argument("--groups", help='"layer", "head", or JSON such as \'{"first": ["0.*"], "last": ["2.*"]}\'')
    cmd.add_argument("--json", action="store_true", help="print the result JSON instead of a table")
    cmd.set_defaults(handler=main)


def main(args) -> int:
    try:
        config = RunConfig.from_json(read_config_text(args.config))
        if args.groups:
            groups = args.groups if args.groups in ("layer", "head") else json_groups(args.groups)
            config.refine = dataclasses.replace(config.refine or RefineConfig(), groups=groups)
        stop = threading.Event()
        result = run_interruptibly(lambda: run_groups(config, stop=stop), stop)  # Ctrl-C keeps the partial result
    except LLCInputError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    step = "per chain" if result.step_size is None else f"{result.step_size:.3g}"
    print_result(result, args.json, f"{result.chains_per_group} chains per group, n = {result.n}, "
                                    f"nβ = {result.nbeta:.4g}, ε = {step}, {result.wall_time_s:.1f} s")
    return 0


def json_groups(text: str) -> dict:
    try:
        groups = json.loads(text)
    except json.JSONDecodeError as err:
        raise LLCInputError(f"--groups is not \"layer\", \"head\" or valid JSON: {err.msg}") from None
    if not isinstance(groups, dict):
        raise LLCInputError("--groups JSON must be an object of name → list of parameter name patterns")
    return groups
