"""What the refined LLC of every layer costs: all groups in one computation against one full run.

A 12-group MLP (12 Linear layers of width WIDTH with tanh between them; a group is one Linear's
weight and bias) on n = 2000 regression samples: (a) one full run, C chains, every parameter moving; (b) the
LLC of each of the 12 layers with C chains each, all 12 × C chains in one batched computation
(`llc_core.studies.refined.estimate_groups`); (c) for reference, 12 separate refined runs of C chains.
Same ε, γ, nβ, steps, batch size and seed. Variants alternate and repeat; medians of the per-repetition
ratios are printed. Target (issue: refined LLCs): (b) ≤ 3× (a). Run from the repository root:

    .venv/bin/python benchmarks/bench_refined.py [--quick] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from llc_core import SamplerConfig, estimate_llc  # noqa: E402
from llc_core.refine import layer_groups  # noqa: E402
from llc_core.studies.refined import estimate_groups  # noqa: E402

TARGET = 3.0
LAYERS, WIDTH = 12, 16


def mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    layers = [nn.Linear(4, WIDTH)]
    for _ in range(LAYERS - 2):
        layers += [nn.Tanh(), nn.Linear(WIDTH, WIDTH)]
    layers += [nn.Tanh(), nn.Linear(WIDTH, 1)]
    model = nn.Sequential(*layers)
    x = torch.randn(2000, 4)
    with torch.no_grad():
        y = model(x)
    return model, x, y


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 steps and 2 repetitions instead of 1000 and 3")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chains", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps, reps = (300, 2) if args.quick else (1000, 3)
    model, x, y = mlp()
    groups = layer_groups(model)
    sampler = SamplerConfig(chains=args.chains, steps=steps, step_size=1e-5, batch_size=200, seed=0)
    d = sum(p.numel() for p in model.parameters())
    print(f"MLP of {LAYERS} Linear layers, d = {d:,}, {len(groups)} groups, {args.chains} chains per run/group, "
          f"{steps} steps, batch 200, torch threads {args.threads}")
    full = lambda: estimate_llc(model, x, y, sampler, device="cpu")  # noqa: E731
    grouped = lambda: estimate_groups(model, x, y, sampler, groups, device="cpu")  # noqa: E731
    separate = lambda: [estimate_llc(model, x, y, sampler, parameter_masks=m, device="cpu")  # noqa: E731
                        for m in groups.values()]
    times = {"full": [], "grouped": [], "separate": []}
    for rep in range(reps):
        order = list(times) if rep % 2 == 0 else list(reversed(times))
        for name in order:
            times[name].append(timed({"full": full, "grouped": grouped, "separate": separate}[name]))
    ratio = statistics.median(g / f for g, f in zip(times["grouped"], times["full"]))
    separate_ratio = statistics.median(s / f for s, f in zip(times["separate"], times["full"]))
    print(f"one full run:                {statistics.median(times['full']):7.2f} s")
    print(f"{len(groups)} groups in one computation: {statistics.median(times['grouped']):7.2f} s   "
          f"= {ratio:.2f}x the full run (target ≤ {TARGET:g}x: {'met' if ratio <= TARGET else 'MISSED'})")
    print(f"{len(groups)} separate refined runs:     {statistics.median(times['separate']):7.2f} s   "
          f"= {separate_ratio:.2f}x the full run")


if __name__ == "__main__":
    main()
