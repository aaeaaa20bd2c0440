"""Two calibration experiments from the paper, as functions the CLI, the app and the tests share.

Rescaling invariance (docs/METHOD.md §5, paper App. O). A two-layer ReLU network with biases,
f(x) = W2 ReLU(W1 x + b1) + b2, is unchanged by W1 → W1/α, b1 → b1/α, W2 → α W2, and so is λ.
In the rescaled coordinates w' = D w (D = 1/α on W1, b1; α on W2; 1 on b2) the loss is
L'(w') = L(D⁻¹ w'), so ∇L' = D⁻¹ ∇L and plain SGLD in w maps to

    Δw' = D Δw = (ε/2) D² (−nβ ∇L'(w')) + N(0, ε D²),

i.e. SGLD with the fixed diagonal preconditioner A = D²: 1/α² on the W1, b1 entries and α² on the
W2 entries. That chain is the α = 1 chain multiplied by D, draw by draw (same seed, same noise):
λ̂ is the same up to rounding, for every α. Two caveats, both measured by `rescaling_experiment`:

- The localization term is not invariant: (γ/2)||w' − w'*||² = (γ/2)||D(w − w*)||², a γ of
  γ/α² on W1, b1 and γα² on W2 in the original coordinates. Exact invariance needs γ = 0 (the
  default here); with γ > 0 λ̂ drifts at extreme α.
- The paper's App. O (and an earlier version of the project's method notes) states the inverse preconditioner (α² on W1, b1 and 1/α²
  on W2 for W1 → W1/α). With that A the stiff rescaled directions get the larger step, and the
  chains diverge already at α = 10 (`method="reference"` reproduces it).

Exact baseline (paper App. M). `compare_samplers` runs the same model kind at several dataset sizes
n with minibatch SGLD and with full-batch MALA (sampler.algorithm = "mala", real accept/reject) and
reports λ̂ ± se and wall time for both: they agree, and MALA's cost grows ∝ n while SGLD's does not.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from llc_core.config import DataConfig, ModelConfig, RunConfig, SamplerConfig
from llc_core.errors import LLCInputError
from llc_core.estimator import StopRequest, stop_checker, default_nbeta, estimate_llc
from llc_core.result import json_safe
from llc_core.runner import run
from llc_core.problem import Problem
from llc_core.runner import build_problem

ALPHAS = [10.0**k for k in range(-4, 5)]  # eight orders of magnitude around 1
METHODS = ("preconditioned", "plain", "reference")


# ----------------------------------------------------------------------------- rescaling invariance


def rescaling_problem(input_dim: int = 2, hidden: int = 4, n: int = 1000, seed: int = 0) -> Problem:
    """The teacher: zoo's ReLU MLP input_dim → hidden → 1 with biases, noise-free labels, w* = the teacher."""
    return build_problem(ModelConfig(kind="mlp", input_dim=input_dim, hidden=[hidden], output_dim=1, seed=seed),
                         DataConfig(n=n))


def _layers(model: nn.Module) -> tuple[nn.Linear, nn.Linear]:
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if len(linear) != 2:
        raise LLCInputError(f"the rescaling experiment needs a two-layer network, got {len(linear)} linear layers")
    return linear[0], linear[1]


def rescale(model: nn.Module, alpha: float) -> nn.Module:
    """A copy with W1 → W1/α, b1 → b1/α, W2 → α W2 (b2 unchanged): the same function."""
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise LLCInputError(f"α = {alpha!r} must be a finite number > 0")
    scaled = copy.deepcopy(model)
    first, second = _layers(scaled)
    with torch.no_grad():
        first.weight.div_(alpha)
        first.bias.div_(alpha)
        second.weight.mul_(alpha)
    return scaled


def rescaling_preconditioner(model: nn.Module, alpha: float, method: str = "preconditioned") -> list[float] | None:
    """The fixed diagonal A, one entry per parameter in `named_parameters` order.

    "preconditioned": A = D² (1/α² on W1, b1; α² on W2; 1 on b2), the exact reparametrization.
    "reference": the inverse, as the paper states it. "plain": None (A = 1).
    """
    if method == "plain":
        return None
    if method not in METHODS:
        raise LLCInputError(f"method = {method!r}: use one of {', '.join(METHODS)}")
    first, second = _layers(model)
    layer_one = alpha**-2 if method == "preconditioned" else alpha**2
    entries: list[float] = []
    for _, p in model.named_parameters():
        if p is first.weight or p is first.bias:
            value = layer_one
        elif p is second.weight:
            value = 1.0 / layer_one
        else:
            value = 1.0
        entries += [value] * p.numel()
    return entries


@dataclass
class RescalingPoint:
    alpha: float
    method: str
    llc_mean: float | None
    llc_se: float | None
    acceptance: float | None
    diverged_fraction: float
    wall_time_s: float


@dataclass
class RescalingResult:
    points: list[RescalingPoint]
    step_size: float
    localization: float
    nbeta: float
    num_params: int
    settings: dict[str, Any] = field(default_factory=dict)

    def reference_llc(self, method: str = "preconditioned") -> RescalingPoint | None:
        """The α = 1 point of a method (α = 1 is the same run for every method)."""
        found = [p for p in self.points if p.method == method and p.alpha == 1.0]
        return found[0] if found else None

    def max_deviation(self, method: str = "preconditioned") -> float | None:
        """max over α of |λ̂(α) − λ̂(1)| for a method; None if a point has no estimate (diverged)."""
        ref = self.reference_llc(method)
        points = [p for p in self.points if p.method == method]
        if ref is None or ref.llc_mean is None or any(p.llc_mean is None for p in points):
            return None
        return max(abs(p.llc_mean - ref.llc_mean) for p in points)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RescalingResult":
        raw = dict(raw)
        raw["points"] = [RescalingPoint(**p) for p in raw["points"]]
        return cls(**raw)


def rescaling_experiment(
    alphas: Sequence[float] = ALPHAS,
    methods: Sequence[str] = ("preconditioned", "plain"),
    *,
    input_dim: int = 2,
    hidden: int = 4,
    n: int = 1000,
    steps: int = 2000,
    chains: int = 4,
    step_size: float | None = None,
    step_fraction: float = 0.2,
    localization: float = 0.0,
    seed: int = 0,
    common_noise: bool = True,
    dtype: str = "float64",
    on_point: Callable[[RescalingPoint], None] | None = None,
    stop: StopRequest = None,
) -> RescalingResult:
    """λ̂ of the rescaled teacher for every α and method, all with ONE fixed ε.

    ε defaults to step_fraction / (nβ h_max + γ) with h_max the top Hessian eigenvalue of L_n at the
    unscaled w* (a step that mixes well at α = 1). common_noise: every run uses `seed`, so the
    preconditioned chains are the α = 1 chains rescaled draw by draw; otherwise run i uses seed + i
    and the comparison is within error bars. float64 keeps the rounding far below the error bars at
    α = 10^±4.
    """
    from llc_core.sampling.curvature import top_hessian_eigenvalue
    from llc_core.model_function import FlatParams
    from llc_core.losses import make_nll
    from torch.func import functional_call

    for m in methods:
        if m not in METHODS:
            raise LLCInputError(f"method = {m!r}: use one of {', '.join(METHODS)}")
    problem = rescaling_problem(input_dim, hidden, n, seed)
    nbeta = default_nbeta(n)
    if step_size is None:
        model = copy.deepcopy(problem.model).double()
        params = {k: v.detach() for k, v in model.named_parameters()}
        flat = FlatParams(params)
        nll = make_nll(problem.loss, problem.noise_scale)

        def batch_loss(w, xb, yb):
            return nll(functional_call(model, flat.unflatten(w), (xb,)), yb).mean()

        top = top_hessian_eigenvalue(batch_loss, flat.flatten(params), problem.inputs.double(),
                                     problem.targets.double(), seed=seed)
        step_size = step_fraction / (nbeta * top + localization)
    stop_requested = stop_checker(stop)
    points: list[RescalingPoint] = []
    run_index = 0
    for method in methods:
        for alpha in alphas:
            if stop_requested():
                break
            model = rescale(problem.model, float(alpha))
            sampler = SamplerConfig(
                step_size=step_size, localization=localization, nbeta=nbeta, chains=chains, steps=steps,
                burnin=0.5, seed=seed if common_noise else seed + run_index,
                preconditioner=rescaling_preconditioner(model, float(alpha), method),
            )
            run_index += 1
            result = estimate_llc(model, problem.inputs, problem.targets, sampler, loss=problem.loss,
                                  noise_scale=problem.noise_scale, device="cpu", dtype=dtype)
            point = RescalingPoint(
                alpha=float(alpha), method=method, llc_mean=result.llc_mean, llc_se=result.llc_se,
                acceptance=result.mala_acceptance_mean,
                diverged_fraction=len(result.diverged_chains) / chains, wall_time_s=result.wall_time_s,
            )
            points.append(point)
            if on_point is not None:
                on_point(point)
    return RescalingResult(points, float(step_size), float(localization), float(nbeta), problem.num_params,
                           {"input_dim": input_dim, "hidden": hidden, "n": n, "steps": steps, "chains": chains,
                            "seed": seed, "common_noise": common_noise, "dtype": dtype})


# ----------------------------------------------------------------------------- SGLD vs MALA


@dataclass
class CompareRow:
    n: int
    algorithm: str  # "sgld" or "mala"
    llc_mean: float | None
    llc_se: float | None
    acceptance: float | None
    wall_time_s: float
    step_size: float | None
    batch_size: int
    diverged_fraction: float
    theoretical_llc: float | None


@dataclass
class CompareResult:
    rows: list[CompareRow]
    config: dict[str, Any]
    sizes: list[int]
    partial: bool = False

    def to_dict(self) -> dict[str, Any]:
        return json_safe(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "CompareResult":
        raw = dict(raw)
        raw["rows"] = [CompareRow(**r) for r in raw["rows"]]
        return cls(**raw)


def check_sizes(sizes: Sequence[Any]) -> list[int]:
    if not sizes:
        raise LLCInputError("sizes is empty: give dataset sizes n, e.g. 100,1000,10000")
    out = []
    for s in sizes:
        if isinstance(s, float) and s.is_integer():
            s = int(s)
        if isinstance(s, bool) or not isinstance(s, int) or s < 2:
            raise LLCInputError(f"dataset size {s!r} must be a whole number ≥ 2")
        out.append(s)
    return out


def compare_samplers(
    config: RunConfig,
    sizes: Sequence[int],
    *,
    on_row: Callable[[CompareRow], None] | None = None,
    stop: StopRequest = None,
) -> CompareResult:
    """For each n: the config's run with minibatch SGLD, then the same with full-batch MALA.

    Both use the config's sampler otherwise (ε, γ, nβ, chains, steps; nβ left unset is n / log n
    at each n, as the paper's β* = 1/log n); MALA drops the batch size (it is always n) and an
    RMSprop preconditioner (MALA needs a fixed one). Wall time is the estimator's, per run.
    """
    sizes = check_sizes(sizes)
    stop_requested = stop_checker(stop)
    rows: list[CompareRow] = []
    partial = False
    for n in sizes:
        for algorithm in ("sgld", "mala"):
            if stop_requested():
                partial = True
                break
            sampler = dataclasses.replace(config.sampler, algorithm=algorithm)
            if algorithm == "mala":
                sampler = dataclasses.replace(
                    sampler, batch_size=None,
                    preconditioner=None if sampler.preconditioner == "rmsprop" else sampler.preconditioner)
            elif sampler.batch_size is not None and sampler.batch_size > n:
                sampler = dataclasses.replace(sampler, batch_size=n)
            run_config = dataclasses.replace(config, data=dataclasses.replace(config.data, n=n), sampler=sampler)
            result = run(run_config, stop=stop)
            if result.partial:
                partial = True
            chains = len(result.llc_per_chain)
            row = CompareRow(
                n=n, algorithm=algorithm, llc_mean=result.llc_mean, llc_se=result.llc_se,
                acceptance=result.mala_acceptance_mean, wall_time_s=result.wall_time_s,
                step_size=result.step_size, batch_size=int(result.config["sampler"]["batch_size"]),
                diverged_fraction=len(result.diverged_chains) / chains if chains else 0.0,
                theoretical_llc=result.theoretical_llc,
            )
            rows.append(row)
            if on_row is not None:
                on_row(row)
        if partial:
            break
    return CompareResult(rows, config.to_dict(), sizes, partial)


def format_compare(result: CompareResult) -> str:
    lines = [f"{'n':>8} {'sampler':>7} {'λ̂':>10} {'± se':>8} {'accept':>7} {'batch':>6} {'seconds':>8}"]
    for r in result.rows:
        llc = f"{r.llc_mean:10.4g}" if r.llc_mean is not None else f"{'—':>10}"
        se = f"{r.llc_se:8.2g}" if r.llc_se is not None else f"{'—':>8}"
        acc = f"{r.acceptance:7.3f}" if r.acceptance is not None else f"{'—':>7}"
        lines.append(f"{r.n:8d} {r.algorithm:>7} {llc} {se} {acc} {r.batch_size:6d} {r.wall_time_s:8.2f}")
    return "\n".join(lines)
