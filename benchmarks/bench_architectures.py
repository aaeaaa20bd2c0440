"""Chain-steps per second per architecture: our engine against devinterp 1.3.2 and a plain per-chain loop.

Three small models, each built and trained briefly here (seeded, no downloads):

  mlp          MLP 20-128-128-1 (ReLU), regression on y = teacher(x) + noise, Gaussian loss
  cnn          Conv2d(1, 12, 3, padding=1) + ReLU + MaxPool2d(2) + Linear(192, 10), on synthetic 8x8
               one-channel "digit-like" images of 10 classes (a fixed stroke pattern per class, shifted
               by a pixel and noised), cross-entropy
  transformer  Embedding(16, 32) + learned positions + one nn.TransformerEncoderLayer(d_model=32,
               nhead=2, dim_feedforward=64, batch_first=True, dropout=0.0) + Linear(32, 16) on the
               mean over positions; predicts the largest of 8 tokens, cross-entropy

For each, 8 chains of S steps at one fixed ε, γ, nβ and batch size B, one torch thread:

  ours       `estimate_llc(model, x, y, SamplerConfig(step_size=ε, localization=γ, nbeta=nβ,
             chains=8, steps=S, batch_size=B, mala_every=10**6))`: the result's
             chain_steps_per_second (its sampling loop); also timed over the whole call
  plain      the same call with the engine batching as it did before llc_core/batching.py had chain
             kernels (this script empties batching.CHAIN_KERNEL_OPERATORS for the call): every model
             on the plain vmap path. ours/plain is what the chain kernels gain, within one run
  devinterp  devinterp 1.3.2 `estimate_learning_coeff_with_summary` (its SGLD, lr=ε, localization=γ,
             nbeta=nβ, num_chains=8, num_burnin_steps + num_draws = S, online=False, a shuffled
             DataLoader(TensorDataset(x, y), batch_size=B), init_loss given so that it is not
             recomputed), run in a separate venv by a runner process that this script starts once
             and feeds one request at a time; timed inside that process around the call (the model
             and data are loaded before)
  loop       a plain loop in this script: chain after chain, a copy of the module, a shuffled
             minibatch walk, loss, torch.autograd.grad, w <- w - ε/2 (nβ ∇L_B + γ (w - w*)) + √ε N(0, 1)

devinterp's SGLD measures nothing but the loss; ours is told to measure the MALA acceptance only
once in 10^6 steps so that it does the same work (its snapshots every 20 steps and a minibatch-heat
gradient every 80 steps are part of the engine and stay). The settings: n = 4096, S = 200 (100 of
them burn-in), B = 128, ε = 1e-4, γ = 100, nβ = n / log n.

With --gradients it times instead only L_B and ∇L_B of the 8 chains on one minibatch each (no
sampler, no devinterp) by each way of batching llc_core/batching.py chooses from: "vmap forward"
(vmapped forward pass, one autograd call), "vmap grad" (vmap(grad_and_value)), "chain kernels"
(vmap forward under batching.ChainKernels), and a loop over chains with one autograd call each.

Every repetition runs the four variants back to back (their order rotates); the ratios are taken
within a repetition and the median over repetitions is printed, as in bench_engine.py. Besides the
wall clock, CPU time (time.process_time of the process that ran the variant) is printed: it is far
less sensitive to other users of a shared machine.

The reference venv (not part of the repository; see benchmarks/README.md):

    python3 -m venv /tmp/devinterp-venv
    /tmp/devinterp-venv/bin/pip install torch==2.13.0 numpy
    /tmp/devinterp-venv/bin/pip install devinterp==1.3.2 --no-deps
    /tmp/devinterp-venv/bin/pip install einops pandas tqdm cloudpickle

Run from the repository root:

    .venv/bin/python benchmarks/bench_architectures.py [--reps 5] [--steps 200] [--models mlp cnn transformer]
        [--devinterp-python /tmp/devinterp-venv/bin/python]
    .venv/bin/python benchmarks/bench_architectures.py --gradients   # the ways of batching alone

This file is also imported by the devinterp runner (in the other venv) for the model definitions, so
at module level it imports only torch and the standard library; llc_core is imported where it is used.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 4096
BATCH = 128
CHAINS = 8
LOCALIZATION = 100.0
DEFAULT_STEPS = 200
DEFAULT_DEVINTERP = "/tmp/devinterp-venv/bin/python"
VOCAB, SEQ = 16, 8
# ε per model: one round value at which no chain diverges at this nβ and γ (speed does not depend on it)
STEP_SIZES = {"mlp": 1e-4, "cnn": 1e-4, "transformer": 1e-4}


# ----------------------------------------------------------------------------- the models and data


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 12, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(12 * 4 * 4, 10)

    def forward(self, x):
        return self.head(self.pool(F.relu(self.conv(x))).flatten(1))


class TinyTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 32)
        self.position = nn.Parameter(torch.zeros(SEQ, 32))
        self.block = nn.TransformerEncoderLayer(d_model=32, nhead=2, dim_feedforward=64, batch_first=True,
                                                dropout=0.0)
        self.head = nn.Linear(32, VOCAB)

    def forward(self, x):
        return self.head(self.block(self.embed(x) + self.position).mean(1))


def build_model(name: str) -> nn.Module:
    torch.manual_seed(1)
    if name == "mlp":
        return nn.Sequential(nn.Linear(20, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 1))
    if name == "cnn":
        return SmallCNN()
    if name == "transformer":
        return TinyTransformer()
    raise ValueError(name)


LOSSES = {"mlp": "gaussian", "cnn": "cross_entropy", "transformer": "cross_entropy"}


def make_data(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    if name == "mlp":
        x = torch.randn(N, 20, generator=generator)
        teacher = torch.randn(20, 8, generator=generator) / 20**0.5
        y = torch.tanh(x @ teacher).sum(1, keepdim=True) + 0.1 * torch.randn(N, 1, generator=generator)
        return x, y
    if name == "cnn":
        # a fixed stroke pattern per class (a few on-pixels of an 8x8 grid), shifted by up to one
        # pixel and noised: digit-like in that a class is a shape, not a colour
        templates = (torch.rand(10, 8, 8, generator=generator) < 0.3).float()
        labels = torch.randint(0, 10, (N,), generator=generator)
        images = templates[labels]
        shifts = torch.randint(-1, 2, (N, 2), generator=generator)
        images = torch.stack([torch.roll(img, (int(a), int(b)), (0, 1)) for img, (a, b) in zip(images, shifts)])
        images = images + 0.3 * torch.randn(N, 8, 8, generator=generator)
        return images.unsqueeze(1), labels
    tokens = torch.randint(0, VOCAB, (N, SEQ), generator=generator)
    return tokens, tokens.max(1).values


def model_loss(name: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The mean per-sample NLL, as the engine's losses define it (Gaussian with σ = 1: ||r||²/2)."""
    if LOSSES[name] == "gaussian":
        return 0.5 * (output - target).pow(2).sum(1).mean()
    return F.cross_entropy(output, target)


def train(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 400) -> float:
    """A short seeded Adam run on minibatches of 256, so that w* sits near a minimum."""
    torch.manual_seed(3)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        index = torch.randint(0, N, (256,))
        optimizer.zero_grad()
        model_loss(name, model(x[index]), y[index]).backward()
        optimizer.step()
    with torch.no_grad():
        return float(model_loss(name, model(x), y))


@dataclass
class Case:
    name: str
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    step_size: float
    nbeta: float
    train_loss: float

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def make_case(name: str) -> Case:
    model = build_model(name)
    x, y = make_data(name)
    train_loss = train(name, model, x, y)
    model.eval()
    return Case(name, model, x, y, STEP_SIZES[name], N / math.log(N), train_loss)


# ----------------------------------------------------------------------------- (a) our engine


def run_ours(case: Case, steps: int, seed: int, chain_kernels: bool = True) -> dict:
    """One estimate_llc call; with chain_kernels=False the engine batches as it did before
    llc_core/batching.py had chain kernels (every model on the plain vmap path)."""
    import llc_core.batching as batching
    from llc_core import SamplerConfig, estimate_llc

    kinds = []
    choose, operators = batching.ChainBatching.choose, batching.CHAIN_KERNEL_OPERATORS

    def recording_choose(self, w, batch):
        kind, run = choose(self, w, batch)
        kinds.append(kind)
        return kind, run

    batching.ChainBatching.choose = recording_choose
    if not chain_kernels:
        batching.CHAIN_KERNEL_OPERATORS = frozenset()
    config = SamplerConfig(step_size=case.step_size, localization=LOCALIZATION, nbeta=case.nbeta, chains=CHAINS,
                           steps=steps, batch_size=BATCH, mala_every=10**6, seed=seed)
    try:
        start, start_cpu = time.perf_counter(), time.process_time()
        result = estimate_llc(case.model, case.x, case.y, config, loss=LOSSES[case.name], device="cpu")
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    finally:
        batching.ChainBatching.choose, batching.CHAIN_KERNEL_OPERATORS = choose, operators
    chain_steps = CHAINS * steps
    return {"cs": result.chain_steps_per_second, "call_cs": chain_steps / wall, "cpu_cs": chain_steps / cpu,
            "llc": result.llc_mean, "diverged": len(result.diverged_chains), "kind": "/".join(sorted(set(kinds)))}


# ----------------------------------------------------------------------------- (c) the plain loop


def run_loop(case: Case, steps: int, seed: int) -> dict:
    """Chain after chain on a copy of the module: a shuffled minibatch walk, torch.autograd.grad, and the
    SGLD update per parameter tensor."""
    generator = torch.Generator().manual_seed(seed)
    eps, gamma, nbeta = case.step_size, LOCALIZATION, case.nbeta
    per_pass = N // BATCH
    losses = torch.zeros(CHAINS, steps)
    start, start_cpu = time.perf_counter(), time.process_time()
    for chain in range(CHAINS):
        model = copy.deepcopy(case.model)
        params = list(model.parameters())
        w_star = [p.detach().clone() for p in params]
        for t in range(steps):
            if t % per_pass == 0:
                order = torch.randperm(N, generator=generator)
            index = order[(t % per_pass) * BATCH:(t % per_pass + 1) * BATCH]
            loss = model_loss(case.name, model(case.x[index]), case.y[index])
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, g, p0 in zip(params, grads, w_star):
                    drift = g.mul(nbeta).add_(p - p0, alpha=gamma)
                    noise = torch.randn(p.shape, generator=generator)
                    p.add_(drift, alpha=-eps / 2).add_(noise, alpha=eps**0.5)
            losses[chain, t] = loss.detach()
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    chain_steps = CHAINS * steps
    with torch.no_grad():
        init_loss = float(model_loss(case.name, case.model(case.x), case.y))
    llc = float(nbeta * (losses[:, steps // 2:].mean() - init_loss))
    return {"cs": chain_steps / wall, "call_cs": chain_steps / wall, "cpu_cs": chain_steps / cpu, "llc": llc}


# ----------------------------------------------------------------------------- (b) devinterp, in its venv

RUNNER = textwrap.dedent('''
    """Runs devinterp 1.3.2 on the models that bench_architectures.py saved; one JSON request a line."""
    import json, sys, time, warnings
    import importlib.util
    warnings.filterwarnings("ignore")
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from devinterp.optim.sgld import SGLD
    from devinterp.slt.sampler import estimate_learning_coeff_with_summary

    torch.set_num_threads(1)
    bench_file, workdir = sys.argv[1], sys.argv[2]
    spec = importlib.util.spec_from_file_location("bench_models", bench_file)
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_models"] = bench  # dataclasses look their module up while it executes
    spec.loader.exec_module(bench)
    cases = {}
    print(json.dumps({"ready": True, "torch": torch.__version__}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        name = request["model"]
        if name not in cases:
            saved = torch.load(f"{workdir}/{name}.pt")
            model = bench.build_model(name)
            model.load_state_dict(saved["state_dict"])
            cases[name] = (model, saved["x"], saved["y"], saved["init_loss"])
        model, x, y, init_loss = cases[name]
        loader = DataLoader(TensorDataset(x, y), batch_size=request["batch_size"], shuffle=True)

        def evaluate(module, data, name=name):
            return bench.model_loss(name, module(data[0]), data[1])

        steps = request["steps"]
        start, start_cpu = time.perf_counter(), time.process_time()
        summary = estimate_learning_coeff_with_summary(
            model, loader, evaluate=evaluate, sampling_method=SGLD,
            optimizer_kwargs={"lr": request["step_size"], "localization": request["localization"],
                              "nbeta": request["nbeta"]},
            num_chains=request["chains"], num_burnin_steps=steps // 2, num_draws=steps - steps // 2,
            init_loss=init_loss, seed=request["seed"], device="cpu", verbose=False, online=False)
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        chain_steps = request["chains"] * steps
        print(json.dumps({"cs": chain_steps / wall, "call_cs": chain_steps / wall, "cpu_cs": chain_steps / cpu,
                          "llc": float(summary["llc/mean"])}), flush=True)
''')


class Devinterp:
    """The runner process in the reference venv, started once; `run` sends a request and waits."""

    def __init__(self, python: str, cases: dict[str, Case], workdir: str):
        for name, case in cases.items():
            with torch.no_grad():
                init_loss = float(model_loss(name, case.model(case.x), case.y))
            torch.save({"state_dict": case.model.state_dict(), "x": case.x, "y": case.y, "init_loss": init_loss},
                       os.path.join(workdir, f"{name}.pt"))
        runner = os.path.join(workdir, "devinterp_runner.py")
        with open(runner, "w") as f:
            f.write(RUNNER)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.process = subprocess.Popen([python, runner, os.path.abspath(__file__), workdir], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=env, cwd=workdir)
        hello = json.loads(self.receive())
        self.torch_version = hello["torch"]

    def receive(self) -> str:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the devinterp runner stopped (exit code {self.process.wait()}); see its stderr above")
        return line

    def run(self, case: Case, steps: int, seed: int) -> dict:
        request = {"model": case.name, "steps": steps, "seed": seed, "batch_size": BATCH, "chains": CHAINS,
                   "step_size": case.step_size, "localization": LOCALIZATION, "nbeta": case.nbeta}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return json.loads(self.receive())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


# ----------------------------------------------------------------------------- the ways of batching, alone


def gradient_variants(case: Case) -> tuple[dict, tuple, torch.Tensor]:
    """L_B and ∇L_B of 8 chains, each on its own minibatch, by each way of batching that
    llc_core/batching.py has or had to choose from, and by a loop over chains."""
    import llc_core.batching as batching
    from llc_core.model_function import FlatParams
    from torch.func import functional_call
    from torch.nn.attention import SDPBackend, sdpa_kernel

    params = {k: v.detach() for k, v in case.model.named_parameters()}
    flat = FlatParams(params)

    def batch_loss(w, xb, yb):
        return model_loss(case.name, functional_call(case.model, flat.unflatten(w), (xb,)), yb)

    def loop(w, batch):
        losses, grads = [], []
        for c in range(CHAINS):
            wc = w[c].detach().requires_grad_(True)
            loss = batch_loss(wc, batch[0][c], batch[1][c])
            grads.append(torch.autograd.grad(loss, wc)[0])
            losses.append(loss.detach())
        return torch.stack(losses), torch.stack(grads)

    def math_attention(run):  # as the engine runs: vmap has no rule for the fused CPU attention
        def timed(w, batch):
            with sdpa_kernel([SDPBackend.MATH]):
                return run(w, batch)
        return timed

    dims = (0, 0, 0)
    variants = {"vmap forward": math_attention(batching.vmapped_forward(batch_loss, dims, None)),
                "vmap grad": math_attention(batching.vmapped_grad(batch_loss, dims)),
                "loop": loop,
                "chain kernels": math_attention(batching.vmapped_forward(batch_loss, dims, batching.ChainKernels))}
    generator = torch.Generator().manual_seed(0)
    index = torch.stack([torch.randperm(N, generator=generator)[:BATCH] for _ in range(CHAINS)])
    w = flat.flatten(params).expand(CHAINS, -1).clone()
    return variants, (case.x[index], case.y[index]), w


def bench_gradients(case: Case, reps: int, seconds: float = 0.5) -> dict:
    """Chain-steps per CPU-second of each way of batching; ratios to "vmap forward" within a repetition."""
    variants, batch, w = gradient_variants(case)
    for run in variants.values():
        for _ in range(3):
            run(w, batch)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    for rep in range(reps):
        for name in order[rep % len(order):] + order[:rep % len(order)]:
            start, calls = time.process_time(), 0
            while time.process_time() - start < seconds:
                variants[name](w, batch)
                calls += 1
            samples[name].append(CHAINS * calls / (time.process_time() - start))
    base = samples["vmap forward"]
    return {name: (statistics.median(values), statistics.median(a / b for a, b in zip(values, base)))
            for name, values in samples.items()}


# ----------------------------------------------------------------------------- measuring


def bench_case(case: Case, devinterp: Devinterp, steps: int, reps: int) -> dict:
    variants = {
        "ours": lambda seed: run_ours(case, steps, seed),
        "plain": lambda seed: run_ours(case, steps, seed, chain_kernels=False),
        "devinterp": lambda seed: devinterp.run(case, steps, seed),
        "loop": lambda seed: run_loop(case, steps, seed),
    }
    for run in variants.values():  # warm-up: first calls pay one-off costs (vmap tracing, allocator)
        run(100)
    samples: dict[str, list[dict]] = {name: [] for name in variants}
    order = list(variants)
    for rep in range(reps):
        for name in order[rep % len(order):] + order[:rep % len(order)]:  # no variant always goes first
            samples[name].append(variants[name](rep))
    med = statistics.median
    row = {"model": case.name, "params": case.num_params, "train_loss": case.train_loss,
           "diverged": max(s["diverged"] for s in samples["ours"]), "kind": samples["ours"][0]["kind"]}
    for name in variants:
        row[f"llc_{name}"] = med(s["llc"] for s in samples[name])
    for clock, key in (("wall", "cs"), ("call", "call_cs"), ("cpu", "cpu_cs")):
        figures = {name: [s[key] for s in samples[name]] for name in variants}
        ratios = {other: [a / b for a, b in zip(figures["ours"], figures[other])]
                  for other in ("plain", "devinterp", "loop")}
        row[clock] = {name: med(values) for name, values in figures.items()}
        row[clock].update({f"vs_{other}": med(values) for other, values in ratios.items()})
        row[clock]["vs_devinterp_range"] = (min(ratios["devinterp"]), max(ratios["devinterp"]))
    return row


def print_table(rows: list[dict], clock: str) -> None:
    titles = {
        "wall": "WALL CLOCK, chain-steps/s; ours and plain = the result's chain_steps_per_second (sampling loop)",
        "call": "WALL CLOCK of the whole call, chain-steps/s (ours, plain: estimate_llc with its setup; "
                "the others as above)",
        "cpu": "CPU TIME of the process that ran it, chain-steps per CPU-second (ours, plain: the whole call)",
    }
    print(titles[clock])
    header = (f"{'model':<12} {'params':>6} {'ours':>7} {'plain':>7} {'devinterp':>9} {'loop':>7} "
              f"{'ours/devinterp':>14} {'(min-max)':>11} {'ours/loop':>9} {'ours/plain':>10}")
    print(header)
    print("-" * len(header))
    for r in rows:
        c = r[clock]
        lo, hi = c["vs_devinterp_range"]
        print(f"{r['model']:<12} {r['params']:>6} {c['ours']:>7.0f} {c['plain']:>7.0f} {c['devinterp']:>9.0f} "
              f"{c['loop']:>7.0f} {c['vs_devinterp']:>13.2f}x {lo:>5.2f}-{hi:<5.2f} {c['vs_loop']:>8.2f}x "
              f"{c['vs_plain']:>9.2f}x")
    print()


def print_gradients(cases: dict[str, Case], reps: int) -> None:
    print(f"L_B and ∇L_B alone, {CHAINS} chains x batch {BATCH}, one minibatch per chain; chain-steps per "
          f"CPU-second, median of {reps} interleaved repetitions (ratio to vmap forward within each)")
    names = ["vmap forward", "vmap grad", "loop", "chain kernels"]
    print(f"{'model':<12} {'params':>6} " + " ".join(f"{name:>20}" for name in names))
    for case in cases.values():
        figures = bench_gradients(case, reps)
        cells = " ".join(f"{figures[name][0]:>11.0f} ({figures[name][1]:.2f}x)" for name in names)
        print(f"{case.name:<12} {case.num_params:>6} {cells}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn", "transformer"],
                        choices=["mlp", "cnn", "transformer"])
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="steps per chain (half of them burn-in)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions per variant (medians are printed)")
    parser.add_argument("--gradients", action="store_true",
                        help="time only L_B and ∇L_B by each way of batching (no devinterp needed), then stop")
    parser.add_argument("--devinterp-python", default=DEFAULT_DEVINTERP,
                        help="the python of a venv with devinterp 1.3.2 (see benchmarks/README.md)")
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    torch.set_num_threads(1)
    # in eval mode nn.TransformerEncoderLayer may take a fused path that autograd cannot differentiate
    torch.backends.mha.set_fastpath_enabled(False)

    began = time.perf_counter()
    cases = {name: make_case(name) for name in args.models}
    if args.gradients:
        print_gradients(cases, args.reps)
        return
    with tempfile.TemporaryDirectory() as workdir:
        devinterp = Devinterp(args.devinterp_python, cases, workdir)
        print(f"torch {torch.__version__} (devinterp venv: torch {devinterp.torch_version}), 1 thread, "
              f"n = {N}, batch {BATCH}, {CHAINS} chains, {args.steps} steps, γ = {LOCALIZATION}, "
              f"nβ = n/log n = {N / math.log(N):.1f}; variants interleaved, ratios paired within a repetition",
              flush=True)
        rows = []
        try:
            for case in cases.values():
                row = bench_case(case, devinterp, args.steps, args.reps)
                rows.append(row)
                print(f"  done {case.name} ({case.num_params} params, ε = {case.step_size:g}, train loss "
                      f"{case.train_loss:.3f}; ours batched by {row['kind']}): λ̂ ours {row['llc_ours']:.1f}, "
                      f"plain {row['llc_plain']:.1f}, devinterp {row['llc_devinterp']:.1f}, "
                      f"loop {row['llc_loop']:.1f}; "
                      f"diverged chains (ours) {row['diverged']} [{time.perf_counter() - began:.0f} s]", flush=True)
        finally:
            devinterp.close()
    print()
    for clock in ("wall", "call", "cpu"):
        print_table(rows, clock)
    for r in rows:
        ratio = r["wall"]["vs_devinterp"]
        verdict = "PASS" if ratio >= 2.0 else "FAIL"
        print(f"[{verdict}] {r['model']}: ours >= 2x devinterp: wall {ratio:.2f}x, CPU {r['cpu']['vs_devinterp']:.2f}x")
    print(f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
