"""`python -m llc_core validate SUITE`: a validation suite of known-λ models, a table and a summary."""

from __future__ import annotations

import sys

from llc_core.cli.common import add_ray_options, executor_from_args, json_object, ray_line
from llc_core.errors import LLCInputError
from llc_core.studies import validate


def add_parser(commands) -> None:
    cmd = commands.add_parser("validate", help="run a validation suite of known-λ models and score λ̂")
    cmd.add_argument("suite", help="suite name: smoke, toy, dln-1k, dln-10k, dln-deepest or dln-100k")
    cmd.add_argument("--out", default="validation-output", help="directory for <suite>.json and <suite>.png")
    cmd.add_argument("--cases", type=int, default=None, help="run only the first N cases")
    cmd.add_argument("--seed", type=int, default=0, help="seed offset of the random cases")
    cmd.add_argument("--check", action="store_true", help="exit with status 1 when the suite's targets are missed")
    cmd.add_argument("--sampler", default=None,
                     help='JSON object of sampler keys to override in every case, e.g. \'{"step_size": "auto"}\'')
    add_ray_options(cmd)
    cmd.set_defaults(handler=main)


def main(args) -> int:
    try:
        sampler = json_object(args.sampler, "--sampler") if args.sampler else None
        cases = validate.suite_cases(args.suite, args.cases, args.seed, sampler)
        executor = executor_from_args(args)
    except LLCInputError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    print(f"suite {args.suite}: {validate.SUITES[args.suite].description}; {len(cases)} cases", flush=True)
    print(validate.format_table([]).splitlines()[0], flush=True)

    def show(row, index, total):
        print(f"[{index + 1}/{total}] " + "  ".join(validate.table_row(row)), flush=True)

    try:
        report = validate.run_suite(args.suite, args.out, args.cases, args.seed, on_case=show, sampler=sampler,
                                    executor=executor)
    except KeyboardInterrupt:  # pragma: no cover - interactive only
        return 130
    except LLCInputError as err:  # with --ray: a bad address, Ray missing, an unwritable results directory
        sys.stderr.write(f"error: {err}\n")
        return 2
    print()
    print(validate.format_table(report["cases"]))
    print(validate.format_summary(report["summary"]))
    if "executor" in report["summary"]:
        print(ray_line(report["summary"]["executor"]))
    print(f"wrote {args.out}/{args.suite}.json and {args.out}/{args.suite}.png")
    return 1 if args.check and not report["summary"]["passed"] else 0

