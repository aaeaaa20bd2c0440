"""What streaming and the app's background thread cost, as ratios measured in one process.

  (a) vs (b)  the same `estimate_llc` run with a callback receiving every snapshot
              (snapshot_every = 20, the callback copies the snapshot's arrays into a list, as a UI
              would) against snapshot_every = steps and no callback. Target: < 10% overhead.
  (c)         the app path: `BackgroundRun(config).start()` polled every 0.2 s by the main thread
              until it has finished, against `llc_core.run(config)` called directly on the same
              RunConfig. Target: < 10% overhead.

Variants alternate within each repetition (their order flips every repetition) and the median of
the per-repetition ratios is printed, measured on the wall clock and on this process's CPU time
(the latter is insensitive to other users' load on a shared machine). Run from the repository root:

    .venv/bin/python benchmarks/bench_streaming.py [--quick] [--chains 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import llc_core  # noqa: E402
from llc_core.bookkeeping import Tally  # noqa: E402
from llc_core import RunConfig, build_problem, estimate_llc  # noqa: E402
from llc_core.execution.background import BackgroundRun  # noqa: E402

OVERHEAD_TARGET = 0.10
POLL_INTERVAL = 0.2


def run_config(chains: int, steps: int) -> RunConfig:
    return RunConfig.from_dict({
        "model": {"kind": "dln", "widths": [10, 10, 10, 10], "rank": 5, "seed": 0},
        "sampler": {"step_size": 1e-8, "steps": steps, "chains": chains},
        "device": "cpu",
    })


class Attributed:
    """CPU time (of the calling thread) spent inside wrapped functions: the cost of streaming, measured
    where it is spent instead of as a small difference of two noisy totals."""

    def __init__(self):
        self.cpu = 0.0
        self.calls = 0

    def wrap(self, fn):
        def wrapped(*args, **kwargs):
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.cpu += time.thread_time() - start
                self.calls += 1
        return wrapped


class patched:
    """Temporarily wrap the bookkeeping's snapshot work (in this process only)."""

    NAMES = ("snapshot", "close_window")

    def __init__(self, meter: Attributed):
        self.meter = meter

    def __enter__(self):
        self.saved = {name: getattr(Tally, name) for name in self.NAMES}
        for name, fn in self.saved.items():
            setattr(Tally, name, self.meter.wrap(fn))

    def __exit__(self, *exc):
        for name, fn in self.saved.items():
            setattr(Tally, name, fn)


# ---------------------------------------------------------------------------------------------
# (a) / (b): the engine with and without streaming


def engine_run(problem, sampler, on_snapshot=None) -> dict:
    start, start_cpu = time.perf_counter(), time.process_time()
    result = estimate_llc(problem.model, problem.inputs, problem.targets, sampler, loss=problem.loss,
                          noise_scale=problem.noise_scale, device="cpu", on_snapshot=on_snapshot)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return {"loop_wall": result.steps_completed * sampler.chains / result.chain_steps_per_second,
            "wall": wall, "cpu": cpu, "result": result}


def fastest_ratio(runs_a: list[dict], runs_b: list[dict], key: str) -> float:
    """Fastest run of A over fastest run of B: other users' load only ever adds time."""
    return min(r[key] for r in runs_a) / min(r[key] for r in runs_b)


def bench_callback(config: RunConfig, reps: int) -> dict:
    problem = build_problem(config.model, config.data)
    base = config.sampler.with_defaults(problem.sampler_defaults)
    streamed = dataclasses.replace(base, snapshot_every=20)
    silent = dataclasses.replace(base, snapshot_every=base.steps)
    received: list[dict] = []

    def on_snapshot(snapshot) -> None:  # what a UI does: keep its own copy of every array
        received.append({
            "step": snapshot.step,
            "steps": np.array(snapshot.steps, copy=True),
            "losses": np.array(snapshot.losses, copy=True),
            "llc_running": np.array(snapshot.llc_running, copy=True),
            "llc_recent": np.array(snapshot.llc_recent, copy=True),
            "acceptance": np.array(snapshot.acceptance, copy=True),
            "diverged": list(snapshot.diverged),
        })

    warm = dataclasses.replace(base, steps=100, snapshot_every=20)
    engine_run(problem, warm, on_snapshot)
    engine_run(problem, dataclasses.replace(warm, snapshot_every=100))

    # Attribution: CPU time inside snapshot building, divergence checks and the callback, per variant.
    attributed = {}
    for name, sampler, callback in (("streamed", streamed, on_snapshot), ("silent", silent, None)):
        meter = Attributed()
        with patched(meter):
            run = engine_run(problem, sampler, meter.wrap(callback) if callback else None)
        attributed[name] = (meter.cpu, run["cpu"])
    attributed_overhead = (attributed["streamed"][0] - attributed["silent"][0]) / attributed["silent"][1]

    ratios = {"loop_wall": [], "wall": [], "cpu": []}
    runs = {"streamed": [], "silent": []}
    snapshots = 0
    for rep in range(reps):
        received.clear()
        pair = {}
        for name in (("streamed", "silent") if rep % 2 == 0 else ("silent", "streamed")):
            pair[name] = engine_run(problem, streamed, on_snapshot) if name == "streamed" else engine_run(problem, silent)
            runs[name].append(pair[name])
        snapshots = len(received)
        for key in ratios:
            ratios[key].append(pair["streamed"][key] / pair["silent"][key])
    return {"ratios": {k: statistics.median(v) for k, v in ratios.items()},
            "ranges": {k: (min(v), max(v)) for k, v in ratios.items()},
            "fastest": {k: fastest_ratio(runs["streamed"], runs["silent"], k) for k in ratios},
            "attributed": attributed_overhead, "attributed_ms": 1e3 * attributed["streamed"][0] / max(snapshots, 1),
            "snapshots": snapshots, "steps": base.steps, "chains": base.chains,
            "acceptance": pair["silent"]["result"].mala_acceptance_mean,
            "diverged": len(pair["silent"]["result"].diverged_chains)}


# ---------------------------------------------------------------------------------------------
# (c): BackgroundRun polled by the main thread vs llc_core.run


def background_run(config: RunConfig, meter: Attributed | None = None) -> dict:
    start, start_cpu = time.perf_counter(), time.process_time()
    job = BackgroundRun(config)
    poll = job.poll
    if meter is not None:  # the worker's progress updates and the main thread's polls
        job._on_snapshot = meter.wrap(job._on_snapshot)
        poll = meter.wrap(job.poll)
    job.start()
    polls = 0
    while True:
        progress = poll()
        polls += 1
        if progress.finished:
            break
        time.sleep(POLL_INTERVAL)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    job.join()
    if progress.status != "done":
        raise RuntimeError(f"background run ended as {progress.status}: {progress.error}")
    return {"wall": wall, "cpu": cpu, "inner": progress.result.wall_time_s, "polls": polls,
            "history": len(progress.history_step)}


def direct_run(config: RunConfig) -> dict:
    start, start_cpu = time.perf_counter(), time.process_time()
    result = llc_core.run(config)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return {"wall": wall, "cpu": cpu, "inner": result.wall_time_s}


def bench_background(config: RunConfig, reps: int) -> dict:
    small = dataclasses.replace(config, sampler=dataclasses.replace(config.sampler, steps=100))
    direct_run(small)
    background_run(small)
    meter = Attributed()
    with patched(meter):
        attributed_run = background_run(config, meter)
    attributed_overhead = meter.cpu / attributed_run["cpu"]

    ratios = {"wall": [], "cpu": [], "inner": []}
    runs = {"background": [], "direct": []}
    info = {}
    for rep in range(reps):
        pair = {}
        for name in (("background", "direct") if rep % 2 == 0 else ("direct", "background")):
            pair[name] = background_run(config) if name == "background" else direct_run(config)
            runs[name].append(pair[name])
        for key in ratios:
            ratios[key].append(pair["background"][key] / pair["direct"][key])
        info = {"polls": pair["background"]["polls"], "history": pair["background"]["history"],
                "direct_s": pair["direct"]["wall"]}
    return {"ratios": {k: statistics.median(v) for k, v in ratios.items()},
            "ranges": {k: (min(v), max(v)) for k, v in ratios.items()},
            "fastest": {k: fastest_ratio(runs["background"], runs["direct"], k) for k in ratios},
            "attributed": attributed_overhead, **info}


# ---------------------------------------------------------------------------------------------


def verdict(ratio: float) -> str:
    return "PASS" if ratio - 1 < OVERHEAD_TARGET else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps and repetitions")
    parser.add_argument("--chains", type=int, default=8)
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per run in (a)/(b) (default 400; 200 with --quick); (c) uses 2.5x as many")
    parser.add_argument("--reps", type=int, default=None,
                        help="repetitions per variant in (a)/(b) (default 11; 3 with --quick); (c) uses half")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: on a shared 2-core box, 2 OpenMP threads "
                             "competing with other users' processes make timings erratic)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = args.steps or (200 if args.quick else 400)
    reps = args.reps or (3 if args.quick else 11)
    config = run_config(args.chains, steps)
    bg_steps, bg_reps = round(2.5 * steps), max(2, (reps + 1) // 2)  # longer runs: the 0.2 s poll granularity
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); config: dln [10,10,10,10] rank 5, "
          f"n = {config.data.n}, step_size 1e-8, {args.chains} chains; (a)/(b): {steps} steps, {reps} interleaved "
          f"repetitions; (c): {bg_steps} steps, {bg_reps} interleaved repetitions", flush=True)
    began = time.perf_counter()

    cb = bench_callback(config, reps)
    r, lo = cb["ratios"], cb["ranges"]
    print()
    print(f"(a) snapshot every 20 steps + copying callback ({cb['snapshots']} snapshots)  vs  "
          f"(b) snapshot_every = steps, no callback   [MALA acceptance {cb['acceptance']:.3f}, "
          f"diverged chains {cb['diverged']}]")
    print(f"    {'measure':<40} {'(a)/(b)':>8} {'overhead':>9} {'(min-max)':>12} {'fastest-run ratio':>18}")
    for key, label in (("loop_wall", "sampling loop, wall clock (engine's own)"),
                       ("wall", "whole estimate_llc call, wall clock"),
                       ("cpu", "whole estimate_llc call, CPU time")):
        print(f"    {label:<40} {r[key]:>8.3f} {100 * (r[key] - 1):>8.1f}% {lo[key][0]:>6.3f}-{lo[key][1]:.3f} "
              f"{cb['fastest'][key]:>18.3f}")
    print(f"    CPU time spent inside snapshot building + divergence checks + the callback, (a) minus (b), "
          f"over (b)'s CPU time: {100 * cb['attributed']:.2f}% ({cb['attributed_ms']:.2f} ms per snapshot)")
    print(f"[{verdict(r['loop_wall'])}] streaming overhead (sampling loop, wall) {100 * (r['loop_wall'] - 1):.1f}% "
          f"(CPU time {100 * (r['cpu'] - 1):.1f}%, attributed {100 * cb['attributed']:.2f}%), "
          f"target < {100 * OVERHEAD_TARGET:.0f}%", flush=True)

    bg = bench_background(run_config(args.chains, bg_steps), bg_reps)
    r, lo = bg["ratios"], bg["ranges"]
    print()
    print(f"(c) BackgroundRun(config).start(), polled every {POLL_INTERVAL} s until finished  vs  "
          f"llc_core.run(config)   [{bg['polls']} polls, {bg['history']} history rows, direct run "
          f"{bg['direct_s']:.1f} s]")
    print(f"    {'measure':<40} {'(c)/run':>8} {'overhead':>9} {'(min-max)':>12} {'fastest-run ratio':>18}")
    for key, label in (("wall", "start to finished seen, wall clock"),
                       ("inner", "result.wall_time_s (inside the worker)"),
                       ("cpu", "start to finished seen, CPU time")):
        print(f"    {label:<40} {r[key]:>8.3f} {100 * (r[key] - 1):>8.1f}% {lo[key][0]:>6.3f}-{lo[key][1]:.3f} "
              f"{bg['fastest'][key]:>18.3f}")
    print(f"    CPU time spent inside snapshot building + divergence checks + BackgroundRun's progress updates "
          f"+ the polls, over the run's CPU time: {100 * bg['attributed']:.2f}%")
    print(f"[{verdict(r['wall'])}] background-thread overhead (wall, as the app sees it) {100 * (r['wall'] - 1):.1f}% "
          f"(CPU time {100 * (r['cpu'] - 1):.1f}%, attributed {100 * bg['attributed']:.2f}%), "
          f"target < {100 * OVERHEAD_TARGET:.0f}%")
    print(f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
