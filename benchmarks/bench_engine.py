"""Throughput of the batched SGLD engine against a sequential per-chain loop and a vmapped floor.

For each model (SMALL: a deep linear network of ~300 parameters; MEDIUM: ~9·10^4 parameters) and
each number of chains C, three variants are timed, interleaved in one process:

  engine      `estimate_llc(...)` with the real defaults (MALA every 20 steps, snapshots every 20
              steps, shuffled minibatch walk); chain-steps/s from the result (sampling loop only)
              and from the wall time of the whole call.
  sequential  how devinterp does it: per chain, deep-copy the model and walk a shuffled
              DataLoader(TensorDataset(x, y), batch_size=500); forward, loss, backward, a
              per-parameter SGLD update, `loss.item()` every step.
  floor       the engine's own vmapped loss-and-gradient over C flat parameter vectors on one minibatch of shape
              (C, 500, in) prepared once, plus `w = w - lr * g`: no sampler logic at all.

Every repetition runs the three variants back to back (their order rotates); a ratio is taken
within a repetition and the median over repetitions is printed, so machine-wide slowdowns caused
by other users mostly cancel. Run from the repository root:

    .venv/bin/python benchmarks/bench_engine.py [--quick] [--chains 1 8 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch.func import functional_call  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import llc_core.estimator as estimator_module  # noqa: E402
from llc_core import SamplerConfig, estimate_llc  # noqa: E402
from llc_core.estimator import default_nbeta  # noqa: E402
from llc_core.batching import batched_loss_and_grad  # noqa: E402
from llc_core.model_function import FlatParams  # noqa: E402
from llc_core.losses import make_nll  # noqa: E402
from llc_core.truth.zoo import linear_stack  # noqa: E402

N = 10_000
BATCH = 500
LOCALIZATION = 1.0
# Per model: repetitions (at the target C, and at the other C's), seconds per measurement, and the
# fewest steps per measurement (sequential: per chain). The small model's per-step cost is mostly
# Python/dispatch overhead, the noisiest kind, so it gets more repetitions; the medium model needs
# ~0.1 s a step at C = 32, so it gets the fewest steps that still cover a MALA/snapshot cycle.
SETTINGS = {
    "small": {"reps": 7, "other_reps": 4, "target_s": 0.8,
              "min_steps": {"engine": 40, "floor": 20, "sequential": 20}},
    "medium": {"reps": 5, "other_reps": 3, "target_s": 0.8,
               "min_steps": {"engine": 20, "floor": 10, "sequential": 5}},
}
QUICK = {"reps": 3, "other_reps": 2, "target_s": 0.25}
TARGET_CHAINS = 8  # the targets are checked at this C
SPEEDUP_TARGET = 10.0  # engine ≥ 10× sequential (small model)
FLOOR_TARGET = 1.3  # engine time ≤ 1.3× floor time (both models)


@dataclass
class Problem:
    name: str
    widths: list[int]
    step_size: float
    model: torch.nn.Module
    x: torch.Tensor
    y: torch.Tensor

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def make_problem(name: str, widths: list[int], step_size: float) -> Problem:
    """A DLN with PyTorch's default init, inputs uniform on [-10, 10], noise-free labels y = f(x, w*)."""
    torch.manual_seed(0)
    model = linear_stack(widths)
    x = torch.rand(N, widths[0]) * 20 - 10
    with torch.no_grad():
        y = model(x)
    return Problem(name, widths, step_size, model, x, y)


# ---------------------------------------------------------------------------------------------
# (a) the engine


class _RecordingClock:
    """Stands in for the `time` module inside llc_core.estimator while the engine runs.

    perf_counter() is unchanged (so the result's chain_steps_per_second is the engine's own figure);
    each call also records the process CPU time, from which the sampling loop's CPU time is read.
    """

    def __init__(self):
        self.cpu_marks: list[float] = []

    def perf_counter(self) -> float:
        self.cpu_marks.append(time.process_time())
        return time.perf_counter()

    def __getattr__(self, name):
        return getattr(time, name)


def run_engine(prob: Problem, chains: int, steps: int, seed: int) -> dict:
    config = SamplerConfig(step_size=prob.step_size, chains=chains, steps=steps, batch_size=BATCH,
                           localization=LOCALIZATION, seed=seed)
    clock = _RecordingClock()
    estimator_module.time = clock
    try:
        start = time.perf_counter()
        result = estimate_llc(prob.model, prob.x, prob.y, config, device="cpu")
        wall = time.perf_counter() - start
    finally:
        estimator_module.time = time
    # Without a callback estimate_llc reads the clock 4 times: start, loop start, loop end, end.
    marks = clock.cpu_marks
    loop_cpu = marks[2] - marks[1] if len(marks) == 4 else math.nan
    return {
        "cs": result.chain_steps_per_second,  # sampling loop, wall clock (the engine's own figure)
        "cpu_cs": chains * steps / loop_cpu if loop_cpu > 0 else math.nan,  # sampling loop, CPU time
        "wall_cs": chains * steps / wall,  # the whole estimate_llc call
        "acceptance": result.mala_acceptance_mean,
        "diverged": len(result.diverged_chains),
    }


# ---------------------------------------------------------------------------------------------
# (b) the sequential per-chain loop (devinterp style)


def run_sequential(prob: Problem, chains: int, steps: int, seed: int) -> dict:
    torch.manual_seed(seed)
    nll = make_nll("gaussian")
    loader = DataLoader(TensorDataset(prob.x, prob.y), batch_size=BATCH, shuffle=True)
    eps, gamma, nbeta = prob.step_size, LOCALIZATION, default_nbeta(N)
    noise_scale = math.sqrt(eps)
    traces = []
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(chains):
        model = copy.deepcopy(prob.model)
        w_star = [p.detach().clone() for p in model.parameters()]
        iterator = iter(loader)
        losses = []
        for _ in range(steps):
            try:
                xb, yb = next(iterator)
            except StopIteration:
                iterator = iter(loader)
                xb, yb = next(iterator)
            loss = nll(model(xb), yb).mean()
            model.zero_grad()
            loss.backward()
            with torch.no_grad():
                for p, p_star in zip(model.parameters(), w_star):
                    p += -(eps / 2) * (nbeta * p.grad + gamma * (p - p_star)) + noise_scale * torch.randn_like(p)
            losses.append(loss.item())
        traces.append(losses)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return {"cs": chains * steps / elapsed, "cpu_cs": chains * steps / cpu}


# ---------------------------------------------------------------------------------------------
# (c) the floor: bare vmapped forward + backward


def make_floor(prob: Problem, chains: int):
    nll = make_nll("gaussian")
    model = prob.model
    params = {k: v.detach() for k, v in model.named_parameters()}
    flat = FlatParams(params)

    def loss_fn(w, xb, yb):
        return nll(functional_call(model, flat.unflatten(w), (xb,)), yb).mean()

    # the engine's own batched gradient (vmap over chains; see batching.batched_loss_and_grad), so
    # that engine / floor measures exactly what the sampler adds on top of the gradients
    loss_and_grad = batched_loss_and_grad(loss_fn, False, flat.num_params)
    generator = torch.Generator().manual_seed(1)
    index = torch.stack([torch.randperm(N, generator=generator)[:BATCH] for _ in range(chains)])  # (C, m)
    xb, yb = prob.x[index], prob.y[index]  # (C, m, in), (C, m, out): prepared once
    w0 = flat.flatten(params).expand(chains, -1).clone()
    lr = prob.step_size

    def run(steps: int) -> dict:
        w = w0
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            _value, g = loss_and_grad(w, (xb, yb))
            w = w - lr * g
        elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        if not bool(torch.isfinite(w).all()):
            raise RuntimeError("floor loop diverged")
        return {"cs": chains * steps / elapsed, "cpu_cs": chains * steps / cpu}

    return run


# ---------------------------------------------------------------------------------------------


def round_up(value: float, multiple: int, minimum: int) -> int:
    return max(minimum, multiple * math.ceil(value / multiple))


def bench_case(prob: Problem, chains: int, reps: int, target_s: float, min_steps: dict) -> dict:
    floor = make_floor(prob, chains)

    # Warm up every variant (twice: the first call of vmap/autograd pays one-off costs), then size
    # each measurement to about target_s seconds.
    run_engine(prob, chains, 20, seed=100)
    warm = run_engine(prob, chains, 20, seed=101)
    # engine steps: whole 20-step cycles (MALA, snapshot, one pass of n/m = 20 minibatches)
    engine_steps = round_up(target_s * warm["cs"] / chains, 20, min_steps["engine"])
    floor(2)
    floor_steps = round_up(target_s * floor(5)["cs"] / chains, 5, min_steps["floor"])
    run_sequential(prob, 1, 2, seed=100)
    seq_warm = run_sequential(prob, 1, 5, seed=101)
    seq_steps = round_up(target_s * seq_warm["cs"] / chains, 5, min_steps["sequential"])

    samples = {"engine": [], "sequential": [], "floor": []}
    variants = {
        "engine": lambda rep: run_engine(prob, chains, engine_steps, seed=rep),
        "sequential": lambda rep: run_sequential(prob, chains, seq_steps, seed=rep),
        "floor": lambda rep: floor(floor_steps),
    }
    order = list(variants)
    for rep in range(reps):
        for name in order[rep % 3:] + order[:rep % 3]:  # rotate so no variant always goes first
            samples[name].append(variants[name](rep))

    med = statistics.median
    row = {
        "model": prob.name, "params": prob.num_params, "C": chains,
        "steps": (engine_steps, seq_steps, floor_steps),
        "engine_wall": med(s["wall_cs"] for s in samples["engine"]),
        "acceptance": med(s["acceptance"] for s in samples["engine"] if s["acceptance"] is not None),
        "diverged": max(s["diverged"] for s in samples["engine"]),
    }
    for clock, key in (("wall", "cs"), ("cpu", "cpu_cs")):
        eng = [s[key] for s in samples["engine"]]
        seq = [s[key] for s in samples["sequential"]]
        flo = [s[key] for s in samples["floor"]]
        vs_floor = [f / e for e, f in zip(eng, flo)]  # engine time / floor time, within one repetition
        row[clock] = {
            "engine": med(eng), "sequential": med(seq), "floor": med(flo),
            "best_vs_floor": max(flo) / max(eng),  # fastest floor run / fastest engine run
            "speedup": med(e / s for e, s in zip(eng, seq)),  # within one repetition, then the median
            "ceiling": med(f / s for f, s in zip(flo, seq)),  # the most any vmapped engine could gain
            "vs_floor": med(vs_floor), "vs_floor_range": (min(vs_floor), max(vs_floor)),
        }
    return row


def print_table(rows: list[dict], clock: str) -> None:
    if clock == "wall":
        print("WALL CLOCK - chain-steps per second (cs/s); engine = the result's chain_steps_per_second "
              "(sampling loop), (call) = chains*steps / wall time of the whole estimate_llc call")
    else:
        print("CPU TIME of this process (insensitive to other users' load) - chain-steps per CPU-second; "
              "engine = sampling loop, (call) = wall figure repeated for reference")
    header = (f"{'model':<27} {'params':>6} {'C':>3} {'engine cs/s':>11} {'(call)':>7} {'sequential':>10} "
              f"{'floor':>7} {'engine/seq':>10} {'(floor/seq)':>11} {'engine t/floor t':>16} {'(min-max)':>11}")
    print(header)
    print("-" * len(header))
    for r in rows:
        c = r[clock]
        lo, hi = c["vs_floor_range"]
        print(f"{r['model']:<27} {r['params']:>6} {r['C']:>3} {c['engine']:>11.0f} {r['engine_wall']:>7.0f} "
              f"{c['sequential']:>10.0f} {c['floor']:>7.0f} {c['speedup']:>9.1f}x {c['ceiling']:>10.1f}x "
              f"{c['vs_floor']:>15.2f}x "
              f"  {lo:.2f}-{hi:.2f}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter measurements and 3 repetitions")
    parser.add_argument("--chains", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--reps", type=int, default=None,
                        help="repetitions per variant (default at C=8: 7 small, 5 medium; fewer at other C)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: on a shared 2-core box, 2 OpenMP threads "
                             "competing with other users' processes make timings erratic)")
    parser.add_argument("--models", nargs="+", default=["small", "medium"], choices=["small", "medium"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    problems = {
        "small": lambda: make_problem("small DLN [10,10,10,10]", [10, 10, 10, 10], 1e-6),
        "medium": lambda: make_problem("medium DLN [100,300,200,1]", [100, 300, 200, 1], 1e-8),
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), n = {N}, batch {BATCH}, Gaussian loss, "
          f"noise-free labels; variants interleaved, ratios paired within a repetition", flush=True)
    began = time.perf_counter()
    rows = []
    for key in args.models:
        prob = problems[key]()
        settings = {**SETTINGS[key], **(QUICK if args.quick else {})}
        for chains in args.chains:
            reps = args.reps or settings["reps" if chains == TARGET_CHAINS else "other_reps"]
            row = bench_case(prob, chains, reps, settings["target_s"], settings["min_steps"])
            rows.append(row)
            print(f"  done {row['model']} C={chains}: steps per measurement engine/sequential(per chain)/floor "
                  f"= {row['steps']}, {reps} reps, MALA acceptance {row['acceptance']:.3f}, diverged chains {row['diverged']} "
                  f"[{time.perf_counter() - began:.0f} s]", flush=True)
    print()
    print_table(rows, "wall")
    print_table(rows, "cpu")

    at_target = [r for r in rows if r["C"] == TARGET_CHAINS]
    if not at_target:
        print(f"targets are checked at C = {TARGET_CHAINS}; add it to --chains")
    for r in at_target:
        checks = []
        if r["model"].startswith("small"):
            checks.append(("speedup", f"engine >= {SPEEDUP_TARGET:.0f}x sequential", lambda v: v >= SPEEDUP_TARGET, "x"))
        checks.append(("vs_floor", f"engine time <= {FLOOR_TARGET}x floor time", lambda v: v <= FLOOR_TARGET, "x"))
        for key, what, holds, unit in checks:
            wall, cpu = r["wall"][key], r["cpu"][key]
            verdict = "PASS" if holds(wall) and holds(cpu) else "FAIL" if not holds(wall) and not holds(cpu) else "MIXED"
            print(f"[{verdict}] {r['model']}, C={TARGET_CHAINS}: {what}: wall clock {wall:.2f}{unit} "
                  f"({'holds' if holds(wall) else 'fails'}), CPU time {cpu:.2f}{unit} ({'holds' if holds(cpu) else 'fails'})"
                  + (f"; fastest-run ratio: wall {r['wall']['best_vs_floor']:.2f}x, CPU {r['cpu']['best_vs_floor']:.2f}x"
                     if key == "vs_floor" else ""))
    print(f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
