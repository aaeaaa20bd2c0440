"""`python -m llc_core sweep CONFIG.json`: a grid of ε × γ (× nβ), per-cell diagnostics, a recommendation."""

from __future__ import annotations

import sys

from llc_core.cli.common import add_ray_options, executor_from_args, ray_line
from llc_core.config import RunConfig, parse_json, read_config_text
from llc_core.errors import LLCInputError
from llc_core.studies.sweep import (BATCH_LIMIT, MODES, SweepConfig, SweepProgress, format_table, log_grid,
                                    parse_numbers, run_sweep)


def add_parser(commands) -> None:
    """`python -m llc_core sweep CONFIG.json [...]` (registered in llc_core/cli/__init__.py)."""
    cmd = commands.add_parser(
        "sweep", help="run a grid of step sizes ε × localizations γ (× nβ), print per-cell diagnostics and a recommendation",
        description="CONFIG.json is a RunConfig (model, data, sampler; its ε, γ, nβ are replaced by the grid) or a "
                    "SweepConfig ({\"run\": RunConfig, \"step_sizes\": [...], ...}). Flags override the file.")
    cmd.add_argument("config", help="path to a RunConfig or SweepConfig JSON file, or - for stdin")
    cmd.add_argument("--step-sizes", help="comma-separated ε values, e.g. 1e-5,1e-4,1e-3 (default: 7 log-spaced "
                     "values from ε/100 to 10ε around the config's ε, else 1e-6 … 1e-1)")
    cmd.add_argument("--localizations", help="comma-separated γ values (default 1,10,100)")
    cmd.add_argument("--nbetas", help="comma-separated nβ values (default: the config's nβ, else n / log n)")
    cmd.add_argument("--chains-per-cell", type=int, help="chains per grid cell (default 4)")
    cmd.add_argument("--mode", choices=MODES, help="batched, cells, or auto (default: batched when d × chains ≤ "
                     f"{BATCH_LIMIT:,})")
    cmd.add_argument("--out", help="also write the SweepResult JSON to this file")
    cmd.add_argument("--json", action="store_true", help="print the SweepResult JSON on stdout (the table goes to stderr)")
    cmd.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_ray_options(cmd)
    cmd.set_defaults(handler=main)


def sweep_from_args(args) -> SweepConfig:
    raw = read_config_text(args.config)
    parsed = parse_json(raw, "config")
    if isinstance(parsed, dict) and "run" in parsed:
        sweep = SweepConfig.from_dict(parsed)
    else:
        run_config = RunConfig.from_dict(parsed)
        centre = run_config.sampler.step_size
        if isinstance(centre, (int, float)) and not isinstance(centre, bool) and centre > 0:
            step_sizes = log_grid(centre / 100, centre * 10, 7)
        else:
            step_sizes = log_grid(1e-6, 1e-1, 11)
        sweep = SweepConfig(run=run_config, step_sizes=step_sizes)
    if args.step_sizes:
        sweep.step_sizes = parse_numbers(args.step_sizes, "--step-sizes")
    if args.localizations:
        sweep.localizations = parse_numbers(args.localizations, "--localizations")
    if args.nbetas:
        sweep.nbetas = parse_numbers(args.nbetas, "--nbetas")
    if args.chains_per_cell is not None:
        sweep.chains_per_cell = args.chains_per_cell
    if args.mode:
        sweep.mode = args.mode
    sweep.executor = executor_from_args(args, sweep.executor)
    sweep.validate()
    return sweep


def main(args) -> int:
    try:
        sweep = sweep_from_args(args)
        total = len(sweep.cells())

        interactive, logged = sys.stderr.isatty(), set()

        def show(p: SweepProgress) -> None:
            if args.quiet:
                return
            status = f"{p.cells_done}/{total} cells done, step {p.step}/{p.total_steps}"
            if sweep.executor is not None and sweep.executor.ray is not None:  # cells arrive whole from Ray
                llc = p.running_llc[p.computation]
                status = f"{p.cells_done}/{total} cells done (cell {p.computation}: λ̂ = {'—' if llc is None else f'{llc:.4g}'})"
            if interactive:
                sys.stderr.write(f"\r{status}   ")
            elif (p.cells_done, int(10 * p.fraction)) not in logged:  # a plain line per tenth, for logs
                logged.add((p.cells_done, int(10 * p.fraction)))
                sys.stderr.write(status + "\n")
            sys.stderr.flush()

        try:
            result = run_sweep(sweep, on_progress=show)
        except KeyboardInterrupt:  # pragma: no cover - interactive only
            return 130
        if not args.quiet and interactive:
            sys.stderr.write("\n")
    except LLCInputError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    table = (f"{len(result.cells)} cells, {sweep.chains_per_cell} chains each, {result.steps} steps "
             f"({result.burnin_steps} burn-in), d = {result.num_params}, n = {result.n}, {result.mode} mode, "
             f"{result.wall_time_s:.1f} s\n" + format_table(result) + "\n"
             + ("recommended (*): " if result.recommended is not None else "no recommendation: ") + result.reason + "\n"
             + (ray_line(result.executor) + "\n" if result.executor else ""))
    if args.out:
        try:
            with open(args.out, "w", encoding="utf-8") as handle:
                handle.write(result.to_json() + "\n")
        except OSError as err:
            sys.stderr.write(f"error: cannot write {args.out!r}: {err.strerror}\n")
            return 2
    if args.json:
        sys.stderr.write(table)
        sys.stdout.write(result.to_json() + "\n")
    else:
        sys.stdout.write(table)
    return 0
