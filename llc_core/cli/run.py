"""`python -m llc_core run CONFIG.json`: one estimate, the RunResult as JSON on stdout."""

from __future__ import annotations

import sys
import threading

from llc_core.cli.common import add_ray_options, executor_from_args, progress_bar, ray_line, run_interruptibly, summary
from llc_core.config import RunConfig, read_config_text
from llc_core.errors import LLCInputError
from llc_core.execution.chain_groups import run_chain_groups
from llc_core.runner import run


def add_parser(commands) -> None:
    cmd = commands.add_parser("run", help="estimate the LLC for a config and print the result JSON")
    cmd.add_argument("config", help="path to a RunConfig JSON file, or - to read it from stdin")
    cmd.add_argument("--trace", action="store_true", help="include the per-step loss trace in the JSON")
    cmd.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    add_ray_options(cmd, chain_groups=True)
    cmd.set_defaults(handler=main)


def main(args) -> int:
    try:
        config = RunConfig.from_json(read_config_text(args.config))
        executor = executor_from_args(args)
        stop = threading.Event()
        if executor is not None:  # chain groups, here or on Ray (llc_core/execution/chain_groups.py)
            result = run_interruptibly(lambda: split_run(config, executor, args.quiet, stop), stop)
        else:
            progress = None if args.quiet else progress_bar(sys.stderr)
            result = run_interruptibly(lambda: run(config, on_snapshot=progress, stop=stop), stop)
            if progress is not None and sys.stderr.isatty():
                sys.stderr.write("\n")  # end the redrawn bar's line
    except LLCInputError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    if not sys.stdout.isatty() and not args.quiet:
        # the JSON goes to a file or a pipe: a person watching stderr still reads what came out
        sys.stderr.write(summary(result) + "\n")
    sys.stdout.write(result.to_json(include_trace=args.trace) + "\n")
    return 0


def split_run(config: RunConfig, executor, quiet: bool, stop: threading.Event):
    """The estimate as chain groups, merged; a line per finished group and one on where they ran."""
    def show(done: int, total: int) -> None:
        if not quiet:
            sys.stderr.write(f"[{done}/{total}] chain groups done\n")
            sys.stderr.flush()

    split = run_chain_groups(config, executor, on_group=show, stop=stop.is_set)
    if not quiet:
        lost = f"; groups {split.missing} missing (their chains are not in the result)" if split.missing else ""
        sys.stderr.write(f"{len(split.groups)} chain group(s) merged into {len(split.result.llc_per_chain)} chains; "
                         + ray_line(split.executor) + lost + "\n")
    return split.result
