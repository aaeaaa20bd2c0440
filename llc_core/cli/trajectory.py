"""`python -m llc_core trajectory CHECKPOINT... --data FILE`: λ̂ of every checkpoint of a training run."""

from __future__ import annotations

import dataclasses
import sys
import threading

from llc_core.cli.common import add_ray_options, executor_from_args, print_result, ray_line, run_interruptibly
from llc_core.cli.refine import json_groups
from llc_core.config import RefineConfig, parse_json
from llc_core.errors import LLCInputError
from llc_core.files.checkpoint import parse_architecture
from llc_core.files.safe_read import read_limited
from llc_core.studies.trajectory import TrainingConfig, TrajectoryConfig, TrajectoryPoint, format_number, run_trajectory


def add_parser(commands) -> None:
    """The `trajectory` subcommand of `python -m llc_core` (registered in llc_core/cli/__init__.py)."""
    cmd = commands.add_parser("trajectory", help="λ̂ of every checkpoint of a training run, one calibrated sampler")
    cmd.add_argument("checkpoints", nargs="*", help="checkpoint files (.safetensors, .pt, .pt2) or zips of them")
    cmd.add_argument("--config", help="a TrajectoryConfig JSON file (the other options then override it)")
    cmd.add_argument("--data", help="data file: .npz, .safetensors, .pt (tensors only) or .csv with a header")
    cmd.add_argument("--inputs-key", help="name of the inputs array in the data file")
    cmd.add_argument("--targets-key", help="name of the targets array in the data file")
    cmd.add_argument("--target-columns", help="CSV: comma-separated target column(s)")
    cmd.add_argument("--loss", choices=["gaussian", "cross_entropy"], help="default gaussian")
    cmd.add_argument("--sigma", type=float, help="σ of the Gaussian loss (data.noise_scale), default 1")
    cmd.add_argument("--architecture", help="JSON architecture spec, or a file holding one (default: inferred)")
    cmd.add_argument("--activation", help="activation between inferred Linear layers (identity, relu, tanh, ...)")
    cmd.add_argument("--train", choices=["dln", "mlp"], help="train a model here and keep checkpoints instead")
    cmd.add_argument("--train-steps", type=int, help="training steps (dln 500, mlp 2000)")
    cmd.add_argument("--keep", type=int, help="number of checkpoints kept while training (default 21)")
    for name, kind in (("chains", int), ("steps", int), ("step-size", float), ("localization", float),
                       ("nbeta", float), ("burnin", float), ("batch-size", int), ("seed", int)):
        cmd.add_argument(f"--{name}", type=kind, help=f"sampler {name.replace('-', '_')} for every checkpoint")
    cmd.add_argument("--groups", help='also the refined λ̂ of each group at every checkpoint: "layer", "head", or JSON '
                                      'such as \'{"first": ["0.*"], "last": ["2.*"]}\'')
    cmd.add_argument("--device", help="auto, cpu or cuda")
    cmd.add_argument("--json", action="store_true", help="print the TrajectoryResult as JSON instead of a table")
    cmd.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    add_ray_options(cmd)
    cmd.set_defaults(handler=main)


def main(args) -> int:
    try:
        config = config_from_args(args)
        def show(point: TrajectoryPoint, done: int, total: int) -> None:
            if not args.quiet:
                sys.stderr.write(f"[{done}/{total}] {point.label}: λ̂ = {format_number(point.llc_mean)} ± {format_number(point.llc_se)}\n")
                sys.stderr.flush()

        stop = threading.Event()
        result = run_interruptibly(lambda: run_trajectory(config, on_point=show, stop=stop), stop)
    except LLCInputError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    print_result(result, args.json, f"ε = {result.step_size:.3g} (calibrated on {result.calibrated_on}), "
                                    f"nβ = {result.nbeta:.4g}, γ = {result.localization:g}, "
                                    f"{result.sampler['chains']} chains × {result.sampler['steps']} steps")
    if not args.json:
        if result.groups:
            sys.stdout.write(f"\nRefined λ̂ ± se of each group (group × checkpoint):\n{result.group_table()}\n")
        sys.stdout.write("\n" + result.hints_text() + "\n")
        if result.executor:
            sys.stdout.write(ray_line(result.executor) + "\n")
    return 0


def config_from_args(args) -> TrajectoryConfig:
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as err:
            raise LLCInputError(f"cannot read the trajectory config {args.config!r}: {err}") from None
        config = TrajectoryConfig.from_dict(parse_json(text, "the trajectory config"))
    else:
        config = TrajectoryConfig()
    if args.checkpoints:
        config.checkpoint_paths = list(args.checkpoints)
    if args.train:
        config.training = TrainingConfig(task=args.train)
    if config.training is not None:
        if args.train_steps is not None:
            config.training.steps = args.train_steps
        if args.keep is not None:
            config.training.checkpoints = args.keep
    if args.architecture:
        text = args.architecture
        if not text.lstrip().startswith("{"):
            text = read_limited(text, "architecture file", 2**20).decode("utf-8", "replace")
        config.architecture = {"layers": parse_architecture(text)}
    data_changes = {"path": args.data, "inputs_key": args.inputs_key, "targets_key": args.targets_key,
                    "loss": args.loss, "noise_scale": args.sigma,
                    "target_columns": args.target_columns.split(",") if args.target_columns else None}
    config.data = dataclasses.replace(config.data, **{k: v for k, v in data_changes.items() if v is not None})
    sampler_changes = {"chains": args.chains, "steps": args.steps, "step_size": args.step_size,
                       "localization": args.localization, "nbeta": args.nbeta, "burnin": args.burnin,
                       "batch_size": args.batch_size, "seed": args.seed}
    config.sampler = dataclasses.replace(config.sampler, **{k: v for k, v in sampler_changes.items() if v is not None})
    if args.activation:
        config.activation = args.activation
    if args.device:
        config.device = args.device
    if args.groups:
        groups = args.groups if args.groups in ("layer", "head") else json_groups(args.groups)
        config.refine = dataclasses.replace(config.refine or RefineConfig(), groups=groups)
    config.executor = executor_from_args(args, config.executor)
    return config
