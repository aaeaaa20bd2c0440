"""What the subcommands share: torch threads, JSON options, the progress bar."""

from __future__ import annotations

import dataclasses
import sys
import threading
from typing import Callable, TextIO, TypeVar

import numpy as np

from llc_core.config import ExecutorConfig, parse_json
from llc_core.errors import LLCInputError
from llc_core.execution.ray_backend import parse_address
from llc_core.execution.units import where_ran
from llc_core.result import RunResult, Snapshot

BAR_WIDTH = 30


def set_torch_threads() -> None:
    """One torch thread fewer than torch's default (background.worker_threads), as the app's runs:
    on a busy 2-core machine torch's second OpenMP thread spins while it waits, and a small model's
    run (the default trajectory) took minutes instead of 35 s."""
    import torch

    from llc_core.execution.background import worker_threads

    torch.set_num_threads(worker_threads(torch.get_num_threads()))


T = TypeVar("T")


def run_interruptibly(work: Callable[[], T], stop: threading.Event) -> T:
    """`work()` in a worker thread; Ctrl-C sets `stop` (which the run honours within about
    defaults.STOP_CHECK_SECONDS) and waits for the partial result, which is returned as usual. A
    second Ctrl-C while it winds down leaves at once (KeyboardInterrupt)."""
    box: dict = {}
    finished = threading.Event()  # not Thread.join: a Ctrl-C inside join can make is_alive() lie

    def target() -> None:
        try:
            box["result"] = work()
        except BaseException as err:  # noqa: BLE001 - handed to the main thread as is
            box["error"] = err
        finally:
            finished.set()

    threading.Thread(target=target, name="llc-cli-run", daemon=True).start()
    try:
        while not finished.wait(0.1):
            pass
    except KeyboardInterrupt:
        stop.set()
        sys.stderr.write("\nstopping: the partial result follows (Ctrl-C again to quit without it)\n")
        sys.stderr.flush()
        while not finished.wait(0.1):
            pass
    if "error" in box:
        raise box["error"]
    return box["result"]


def json_object(text: str, what: str) -> dict:
    value = parse_json(text, what)
    if not isinstance(value, dict):
        raise LLCInputError(f"{what} must be a JSON object such as '{{\"step_size\": \"auto\"}}'")
    return value


def progress_bar(stream: TextIO):
    """A bar redrawn in place on a terminal; elsewhere (a log file, a pipe, CI) one plain line per tenth
    of the run, since carriage-return redraws there become one huge line."""
    interactive = stream.isatty() if hasattr(stream, "isatty") else False
    logged: set[int] = set()

    def show(snapshot: Snapshot) -> None:
        done = snapshot.step / snapshot.total_steps
        llc = snapshot.llc_running
        llc_text = f"λ̂ {nanmean(llc):.4g}" if snapshot.step > snapshot.burnin else "burn-in"
        status = (f"{snapshot.step}/{snapshot.total_steps} {snapshot.steps_per_second:.0f} steps/s, "
                  f"{snapshot.seconds_left:.0f}s left, {llc_text}")
        if interactive:
            filled = int(BAR_WIDTH * done)
            stream.write(f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {status}   ")
        elif int(10 * done) not in logged:
            logged.add(int(10 * done))
            stream.write(f"step {status}\n")
        stream.flush()

    return show


def print_result(result, as_json: bool, footer: str) -> None:
    """A study's result on stdout: its JSON, or its table and a one-line footer of the settings."""
    if as_json:
        sys.stdout.write(result.to_json() + "\n")
    else:
        sys.stdout.write(result.table() + "\n" + footer + "\n")


def summary(result: RunResult) -> str:
    """One paragraph for a person: λ̂ ± se, the settings it came from, the truth when known, findings."""
    if result.llc_mean is None:
        head = "No estimate: every chain diverged."
    else:
        se = f" ± {result.llc_se:.2g}" if result.llc_se is not None else ""
        head = f"λ̂ = {result.llc_mean:.4g}{se}"
        if result.theoretical_llc is not None:
            head += f" (the true λ is {result.theoretical_llc:.4g})"
        head += "."
    chains = len(result.llc_per_chain)
    step = f"ε = {result.step_size:.3g}" if result.step_size is not None else "ε per chain"
    acceptance = ("" if result.mala_acceptance_mean is None
                  else f", MALA acceptance {result.mala_acceptance_mean:.3f}")
    settings = (f" {chains} chains × {result.steps_completed} steps ({result.burnin_steps} burn-in), {step}, "
                f"nβ = {result.nbeta:.4g}, n = {result.n:,}, d = {result.num_params:,}{acceptance}; "
                f"{result.wall_time_s:.1f} s on {result.device}" + (", stopped early." if result.partial else "."))
    heat = result.heat_correction
    if heat and heat.get("applied") and heat.get("mean") is not None:
        settings += f" The heat correction took {heat['mean']:.3g} off λ̂ (docs/METHOD.md §8)."
    findings = " ".join(v.message for v in result.verdicts if v.severity != "ok") or "No problems found."
    return head + settings + " " + findings


def nanmean(values) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")


def add_ray_options(cmd, chain_groups: bool = False) -> None:
    """--ray and its companions, shared by the studies that can run on a Ray cluster (docs/CLUSTER.md)."""
    cmd.add_argument("--ray", metavar="auto|local|HOST:PORT", default=None,
                     help="run the study's independent runs as Ray tasks: auto (a cluster started on this machine "
                          "or in RAY_ADDRESS, else Ray here alone), local, or a Ray head's host:port; needs "
                          "`pip install -r requirements-ray.txt`")
    cmd.add_argument("--resume", metavar="DIR", default=None,
                     help="a results directory (with or without --ray): runs already finished there are kept and "
                          "not run again, new ones are written there as they finish")
    cmd.add_argument("--max-retries", type=int, default=None, help="with --ray: retries of a run whose worker dies (default 3)")
    cmd.add_argument("--task-cpus", type=float, default=None, help="with --ray: CPUs (torch threads) per run (default 1)")
    cmd.add_argument("--task-gpus", type=float, default=None,
                     help="with --ray: GPUs per run (default: 1 when the cluster has GPUs, else 0)")
    cmd.add_argument("--actors", type=int, default=None,
                     help="with --ray: long-lived workers that take the runs in turn, model and data kept resident "
                          "(default: one per GPU when the cluster has GPUs, else a task per run; 0: tasks)")
    if chain_groups:
        cmd.add_argument("--chain-groups", type=int, default=None,
                         help="split the chains into this many groups, each a run of its own (on Ray: a task, on "
                              "any worker), merged into one result")


RAY_ONLY = {"max_retries": "--max-retries", "num_cpus": "--task-cpus", "num_gpus": "--task-gpus", "actors": "--actors"}


def executor_from_args(args, base: ExecutorConfig | None = None) -> ExecutorConfig | None:
    """The executor the flags ask for, over `base` (a config file's "executor"); None: run here."""
    changes = {"ray": args.ray, "resume": args.resume, "max_retries": args.max_retries,
               "num_cpus": args.task_cpus, "num_gpus": args.task_gpus, "actors": args.actors,
               "chain_groups": getattr(args, "chain_groups", None)}
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        return base
    raw = {**(dataclasses.asdict(base) if base is not None else {}), **changes}
    executor = ExecutorConfig.from_dict(raw)
    if executor.ray is None:
        given = [flag for name, flag in RAY_ONLY.items() if name in changes]
        if given:
            raise LLCInputError(f"{', '.join(given)} go{'es' if len(given) == 1 else ''} with --ray auto|local|HOST:PORT")
    else:
        parse_address(executor.ray)  # its form now, before any work; whether a head answers, when the study starts
    return executor


def ray_line(info: dict) -> str:
    """One line on where a study's runs went: the cluster, nodes, and what was retried or resumed."""
    return where_ran(info)
