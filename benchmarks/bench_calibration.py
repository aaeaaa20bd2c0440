"""What the automatic step size costs: `"step_size": "auto"` against the same run with ε fixed.

For each model, one repetition runs the DLN kind's default config twice: once with "auto" (dual
averaging over the first 10% of the steps, inside burn-in, with the MALA acceptance measured on every
calibration step), and once with step_size fixed at the ε that calibration chose. The two runs then
differ only by the calibration's extra gradients. Variants alternate (order flipped every repetition);
the median of the per-repetition ratios is printed, on the wall clock and on this process's CPU time.
Target (issue #5): calibration ≤ 20% of the total run. Run from the repository root:

    .venv/bin/python benchmarks/bench_calibration.py [--quick] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from llc_core import RunConfig, run  # noqa: E402

TARGET = 0.20
MODELS = {
    "DLN [10,10,10,10] (300 params)": {"kind": "dln", "widths": [10, 10, 10, 10], "rank": 5, "seed": 0},
    "dln-1k case, seed 1 (1,173 params)": {"kind": "dln", "layers": [2, 5], "width_range": [5, 50], "seed": 1},
}


def timed(config: RunConfig):
    wall, cpu = time.perf_counter(), time.process_time()
    result = run(config)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1000 steps and 3 repetitions instead of 3000 and 5")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: least noise)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps, reps = (1000, 3) if args.quick else (3000, 5)
    print(f"steps {steps}, repetitions {reps}, torch threads {args.threads}")
    for name, model in MODELS.items():
        auto = RunConfig.from_dict({"model": model, "data": {"n": 10_000},
                                    "sampler": {"steps": steps, "step_size": "auto"}, "device": "cpu"})
        wall_ratios, cpu_ratios = [], []
        for rep in range(reps):
            first, auto_wall, auto_cpu = timed(auto)
            fixed = RunConfig.from_dict({**auto.to_dict(), "sampler": {**auto.to_dict()["sampler"],
                                                                      "step_size": first.step_size}})
            _, fixed_wall, fixed_cpu = timed(fixed)
            if rep % 2:  # flip the order: the second run of a pair can find warmer caches
                _, fixed_wall, fixed_cpu = timed(fixed)
                first, auto_wall, auto_cpu = timed(auto)
            wall_ratios.append(auto_wall / fixed_wall - 1)
            cpu_ratios.append(auto_cpu / fixed_cpu - 1)
        wall, cpu = statistics.median(wall_ratios), statistics.median(cpu_ratios)
        share = cpu / (1 + cpu)
        print(f"{name}: calibration {first.calibration['steps']} of {steps} steps; auto costs "
              f"{wall:+.1%} wall, {cpu:+.1%} CPU over fixed ε ({share:.1%} of the auto run) → "
              f"{'within' if share <= TARGET else 'OVER'} the {TARGET:.0%} target")


if __name__ == "__main__":
    main()
