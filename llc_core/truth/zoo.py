"""Models whose data, w* and (when theory has one) true λ the tool builds itself.

Each kind turns a ModelConfig + DataConfig into a Problem. Kinds:

- potential: f(x, w) = x · Π_j w_j^(p_j), x ~ N(0, 1), w* = 0, noise-free labels y = 0, so
  L_n(w) − L_n(w*) = mean(x²)/2 · Π w_j^(2 p_j) and λ follows from the normal-crossing formula.
  Fields: `powers`.
- dln: deep linear network with widths H_0 … H_M and no biases; inputs uniform on [−10, 10],
  noise-free labels; w* = the true weights (paper App. J). Two ways to choose it:
  `widths` (+ `rank`, default full): random weights with every matrix of rank r, the deepest point
  of the true set, where λ(w*) is Aoyagi's λ; or the paper's random generator, when `widths` is
  left out: `layers` = [lo, hi] draws the number of matrices M, `width_range` = [lo, hi] draws each
  of H_0 … H_M, every matrix is N(0, 1) and, with probability 0.5, replaced by a random matrix of
  random rank r ~ U{0 … min(H_{j−1}, H_j)}. `seed` seeds both the architecture and the weights.
  The truth is the local λ(w*) at the drawn weights (theory.deep_linear_network_local), not
  Aoyagi's global λ, which is only its lower bound (info["global_llc"]): e.g. one zero matrix
  between full-rank ones gives a regular-like λ(w*) far above the global value. Draws with two or
  more rank-deficient factors of different ranks have no closed form: truth None.
- rrr: reduced-rank regression y = B A x, `input_dim` M → `hidden` H → `output_dim` N with true rank
  `rank` (default min(M, H, N)); built like a two-matrix dln, λ from Aoyagi & Watanabe 2005.
- tanh: one hidden tanh layer, 1 input, 1 output, `hidden` H units, no biases, w* = 0 (true function
  0), x ~ U[−1, 1], y = 0; λ = (H + i² + i)/(4i + 2), i = ⌊√H⌋.
- mlp: a ReLU teacher with biases, `input_dim` → `hidden` (list of widths) → `output_dim`, PyTorch's
  default initialisation (seeded) as w*, x ~ N(0, I). task "regression": noise-free labels
  y = f(x, w*), Gaussian loss; task "classification": labels drawn from softmax(f(x, w*)),
  cross-entropy. No theory: the truth is unknown.

`train_steps` > 0 (dln, rrr, mlp) evaluates at an SGD-trained point instead of the true one (paper
Figure 4, right): a student of the same architecture starts from PyTorch's default initialisation
and is trained on the same data by SGD with momentum 0.9 (minibatch 500, `train_lr`, default
0.5/h where h is the top Hessian eigenvalue of L_n at the true point) for `train_steps` steps; the
truth reported is still the one of the true parameter, and `Problem.info` records the final loss.

Default sampler settings per kind live in `Problem.sampler_defaults` (see `_DLN_DEFAULTS` etc.),
measured by `python -m llc_core validate SUITE` (README "Validation"): toy potentials land within
10% of their finite-n target and random DLNs with a known λ(w*) within a few percent; but at highly
singular points (several rank-deficient factors) λ̂ is far too low at the default 6000 steps: the
singular directions have a posterior scale ~ t^(-1/4) while ε is capped by the stiffest direction,
so they need many times more steps to equilibrate.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from llc_core import budget, defaults
from llc_core.truth import theory
from llc_core.config import DataConfig, ModelConfig, check_seed, check_types
from llc_core.errors import LLCInputError
from llc_core.estimator import StopRequest, stop_checker
from llc_core.problem import Problem

KINDS = ("potential", "dln", "rrr", "tanh", "mlp")

# Kind defaults (docs/METHOD.md §3, and the measurements in README.md "Validation"). A step size no kind
# recommends is "auto" (defaults.STEP_SIZE), calibrated from the curvature rule's ε (curvature.py).
# Toy models (d ≤ 10) cost little per step whatever the chain count, and their λ̂ is noisy
# (Var(nβ K) ≈ λ per draw, so a 3% standard error needs thousands of independent draws): many
# chains, many steps (16 × 10000: the toy suite within its tolerances, a few seconds a run; the app,
# the CLI and the README use these same values); the step size comes from the curvature at the
# posterior's typical scale (`_toy_step_size`): "auto" read the potentials 4-22% high.
_POTENTIAL_DEFAULTS = {"steps": 10000, "burnin": 0.25, "chains": 16, "localization": 1.0}
# tanh: γ = 0.25, not 1. Its soft directions are held mostly by γ, and γ = 1 pulls λ̂ down measurably (the
# draws' dλ̂/d log γ, verdict localization_too_strong): H = 3, the app's default, 0.56 ± 0.02 with that
# verdict at γ = 1, 0.63 ± 0.03 and no verdict at 0.25 (λ = 5/6, approached from below at finite n);
# H = 1, 2, 5: 0.38 → 0.41, 0.50 → 0.55, 0.64 → 0.75 (H = 5 then reads not_equilibrated).
_TANH_DEFAULTS = {"steps": 10000, "burnin": 0.25, "chains": 16, "localization": 0.25}
TOY_STEP_FRACTION = 0.1  # ε · (typical curvature of nβ L) for the toy kinds
# DLN: paper App. J (batch 500, γ = 1, 90% burn-in); 4 chains × 6000 steps keeps a dln-1k case
# under a minute on 2 CPU cores. ε "auto", starting from curvature.spread_aware_step_size.
_DLN_DEFAULTS = {"steps": 6000, "chains": 4, "burnin": 0.9, "localization": 1.0, "batch_size": 500}
# Deep linear networks (and RRR) mix slowly along their flat directions: started at w*, chains need tens
# of thousands of steps to spread into them (the 5-3-5 r = 1 example, λ = 8: −20% after 6,000 steps,
# −11% after 24,000, 0% and −5% after 48,000; 4-3-4 RRR: R-hat 1.14 after 6,000, 1.01 after 48,000).
# A small model's steps are cheap, so the step count follows its size and a default run of up to
# 2,000 parameters stays near a minute on a 2-core CPU: (at most this many parameters, steps).
SINGULAR_STEPS = ((200, 48_000), (2_000, 24_000))
_MLP_DEFAULTS = {"steps": 2000, "burnin": 0.5, "localization": 1.0}


class Potential(nn.Module):
    """f(x, w) = x · Π_j w_j^(p_j): the dataset model of a normal-crossing potential."""

    def __init__(self, powers: list[int]):
        super().__init__()
        self.powers = [int(p) for p in powers]
        self.weight = nn.Parameter(torch.zeros(len(powers)))

    def forward(self, x: Tensor) -> Tensor:
        product = torch.ones((), dtype=self.weight.dtype, device=self.weight.device)
        for j, p in enumerate(self.powers):
            if p:
                product = product * self.weight[j] ** p
        return x * product


def linear_stack(widths: list[int]) -> nn.Sequential:
    """A deep linear network H_0 → H_1 → … → H_M without biases."""
    return nn.Sequential(*[nn.Linear(a, b, bias=False) for a, b in zip(widths[:-1], widths[1:])])


def tanh_net(hidden: int) -> nn.Sequential:
    """x ↦ Σ_h a_h tanh(b_h x): 1 input, `hidden` tanh units, 1 output, no biases."""
    return nn.Sequential(nn.Linear(1, hidden, bias=False), nn.Tanh(), nn.Linear(hidden, 1, bias=False))


def relu_mlp(widths: list[int]) -> nn.Sequential:
    """A ReLU network with biases, widths[0] inputs → … → widths[-1] outputs."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)


def build_problem(model: ModelConfig, data: DataConfig, *, stop: StopRequest = None) -> Problem:
    """The Problem of a zoo kind (KINDS): its model, data drawn from it, w* and the truth when known.
    Kind "checkpoint" (a user's files) is built by `llc_core.build_problem`. `stop` (an Event or a
    callable, as estimate_llc takes) ends SGD pre-training (`train_steps`) with an LLCInputError."""
    check_config(model, data)
    if model.kind == "checkpoint":
        raise LLCInputError("model kind \"checkpoint\" is built from files: use llc_core.build_problem")
    problem = _BUILDERS[model.kind](model, data)
    if model.train_steps:
        _train(problem, model, data, stop=stop)
    return problem


def check_config(model: ModelConfig, data: DataConfig) -> None:
    """What every kind asks of a ModelConfig and DataConfig: values of the right types, n ≥ 2, σ > 0, a
    known kind, only its fields, and a model and data within the resource budget (`check_size`)."""
    check_types(model, "model")
    data.validate()
    if model.seed is not None:
        check_seed("model.seed", model.seed)
    if model.kind not in _FIELDS:
        raise LLCInputError(f"unknown model kind {model.kind!r}: use one of {', '.join(KINDS)}")
    _reject_fields(model)
    data_file_fields = [k for k in ("path", "inputs_key", "targets_key", "target_columns", "loss", "teacher",
                                    "class_weights")
                        if getattr(data, k, None) is not None]
    if data_file_fields and model.kind != "checkpoint":
        raise LLCInputError(f"data {', '.join(data_file_fields)} only apply to model kind \"checkpoint\": "
                            f"kind {model.kind!r} draws its own data")
    check_size(model, data)


def recommended_sampler(kind: str, model: ModelConfig | None = None) -> dict[str, Any]:
    """The sampler settings a kind recommends before its model is built (Problem.sampler_defaults
    adds those that depend on the data, such as ε). Given the model's config, a dln's or rrr's steps
    follow its planned size (SINGULAR_STEPS), as the built problem's do."""
    recommended = dict({"potential": _POTENTIAL_DEFAULTS, "tanh": _TANH_DEFAULTS, "dln": _DLN_DEFAULTS,
                        "rrr": _DLN_DEFAULTS, "mlp": _MLP_DEFAULTS}.get(kind, {}))
    if kind in ("dln", "rrr") and model is not None:
        try:
            planned = planned_size(model)
        except LLCInputError:
            planned = None
        if planned is not None:
            recommended["steps"] = singular_steps(planned[0])
    return recommended


def singular_steps(num_params: int) -> int:
    """The steps a dln or rrr of this many parameters recommends (SINGULAR_STEPS)."""
    return next((steps for limit, steps in SINGULAR_STEPS if num_params <= limit), _DLN_DEFAULTS["steps"])


def check_size(model: ModelConfig, data: DataConfig) -> None:
    """Refuse, before anything is built, a model or data over the resource budget (llc_core/budget.py)
    and the structural limits of defaults.py (depth, number of powers, train_steps)."""
    planned = planned_size(model)
    if model.train_steps is not None and _is_int(model.train_steps):
        budget.check_at_most("train_steps", model.train_steps, defaults.MAX_TRAIN_STEPS,
                             "lower train_steps (a few thousand SGD steps reach a trained point)")
    if planned is None:
        return  # the kind's builder names what is malformed
    num_params, data_width, activation_width = planned
    budget.check(budget.Footprint(num_params=num_params, n=data.n, sample_width=data_width,
                                  activation_width=activation_width))


def planned_size(model: ModelConfig) -> tuple[int, int, int] | None:
    """(parameters, floats per sample of the data: inputs and outputs, floats per sample of a forward
    pass: every layer's units) of a zoo kind's model, read off its config without building it; None
    when the config is malformed (the builder then says how)."""
    widths = _planned_widths(model)
    if widths is None:
        return None
    if model.kind == "potential":
        budget.check_at_most("the number of powers", len(widths), defaults.MAX_POWERS, "use fewer factors")
        return len(widths), 2, 2 + len(widths)
    budget.check_at_most("the number of weight matrices", len(widths) - 1, defaults.MAX_DEPTH,
                         "use fewer layers (widths, hidden or layers)")
    biases = sum(widths[1:]) if model.kind == "mlp" else 0
    return sum(a * b for a, b in zip(widths[:-1], widths[1:])) + biases, widths[0] + widths[-1], sum(widths)


def _planned_widths(model: ModelConfig) -> list[int] | None:
    """The widths a kind's config asks for (for potential: its powers; for a drawn dln: the largest draw)."""
    def ints(value: Any) -> list[int] | None:
        value = [value] if _is_int(value) else value
        return value if isinstance(value, list) and value and all(_is_int(v) and v >= 0 for v in value) else None

    kind, hidden = model.kind, model.hidden
    if kind == "potential":
        return ints([1, 2] if model.powers is None else model.powers)
    if kind == "dln" and model.widths is None:
        layers, width_range = ints(model.layers), ints(model.width_range)
        if layers is None or width_range is None or len(layers) != 2 or len(width_range) != 2:
            return None
        budget.check_at_most("layers (its upper end)", layers[1], defaults.MAX_DEPTH, "draw fewer weight matrices")
        return [width_range[1]] * (layers[1] + 1)
    if kind == "dln":
        return ints(model.widths)
    if kind == "rrr":
        return ints([model.input_dim, hidden, model.output_dim])
    if kind == "tanh":
        return ints([1, 2 if hidden is None else hidden, 1])
    if kind == "mlp":
        inner = ints([16] if hidden is None else hidden)
        return None if inner is None else [model.input_dim or 4, *inner, model.output_dim or 3]
    return None


# Which ModelConfig fields each kind reads (others must stay unset, so a typo'd combination fails loudly).
_FIELDS = {
    "potential": {"powers"},
    "dln": {"widths", "rank", "seed", "layers", "width_range", "weight_scale", "train_steps", "train_lr"},
    "rrr": {"input_dim", "hidden", "output_dim", "rank", "seed", "weight_scale", "train_steps", "train_lr"},
    "tanh": {"hidden", "seed"},
    "mlp": {"input_dim", "hidden", "output_dim", "task", "seed", "train_steps", "train_lr"},
    "checkpoint": {"path", "architecture", "activation"},  # a user's weights and data: llc_core/files/checkpoint.py
}


def _reject_fields(model: ModelConfig) -> None:
    allowed = _FIELDS[model.kind] | {"kind"}
    extra = [name for name, value in vars(model).items() if value is not None and name not in allowed]
    if extra:
        raise LLCInputError(
            f"model kind {model.kind!r} does not use {', '.join(map(repr, sorted(extra)))}: "
            f"its fields are {', '.join(sorted(_FIELDS[model.kind]))}"
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(name: str, value: Any, default: int | None = None, minimum: int = 1) -> int:
    value = default if value is None else value
    if not _is_int(value) or value < minimum:
        raise LLCInputError(f"{name} = {value!r} must be a whole number ≥ {minimum}")
    return value


def _int_range(name: str, value: Any, minimum: int) -> tuple[int, int]:
    if (not isinstance(value, (list, tuple)) or len(value) != 2 or not all(_is_int(v) for v in value)
            or not minimum <= value[0] <= value[1]):
        raise LLCInputError(f"{name} = {value!r} must be [lo, hi] with {minimum} ≤ lo ≤ hi, e.g. [2, 5]")
    return int(value[0]), int(value[1])


# --------------------------------------------------------------------------- potential


def _potential(model: ModelConfig, data: DataConfig) -> Problem:
    powers = model.powers if model.powers is not None else [1, 2]
    if not isinstance(powers, list) or not powers or not all(_is_int(p) and p >= 0 for p in powers):
        raise LLCInputError(f"powers = {powers!r} must be a non-empty list of whole numbers ≥ 0, e.g. [1, 2]")
    if not any(powers):
        raise LLCInputError("powers are all 0, so the model is constant: make at least one power ≥ 1")
    generator = torch.Generator().manual_seed(data.seed)
    x = torch.randn(data.n, 1, generator=generator)
    module = Potential(powers)
    with torch.no_grad():
        y = module(x)
    truth = theory.potential(powers)
    # nβ·(L_n(w) − L_n(0)) = nβ · mean(x²)/(2σ²) · Π w^(2p): the effective inverse temperature of K.
    k_scale = float(x.double().square().mean()) / (2 * data.noise_scale**2)
    nbeta = data.n / math.log(data.n)
    def rule(nbeta: float, localization: float) -> float:
        return _toy_step_size(powers, nbeta * k_scale)

    defaults = {**_POTENTIAL_DEFAULTS, "nbeta": nbeta, "step_size": rule(nbeta, 1.0)}
    return Problem(module, x, y, noise_scale=data.noise_scale, truth=truth, sampler_defaults=defaults,
                   info={"powers": list(powers), "k_scale": k_scale}, step_size_rule=rule)


def _toy_step_size(powers: list[int], t: float) -> float:
    """ε = TOY_STEP_FRACTION / h, h the largest curvature of t·w^(2p) at its typical scale.

    For one factor t w^(2p) the posterior puts t w^(2p) ≈ 1/(2p), where the curvature is
    h = 2p(2p − 1) t (1/(2p t))^((p−1)/p): 2t for p = 1 (exact), ≈ 6√t for p = 2, ≈ 9 t^(1/3) for
    p = 3. A product is as stiff as its stiffest factor (along its valleys the other factors are
    O(1) under the γ = 1 localization). The nβ this assumes is the kind's default (n / log n).
    """
    stiffest = max(2 * p * (2 * p - 1) * t * (1 / (2 * p * t)) ** ((p - 1) / p) for p in powers if p > 0)
    return TOY_STEP_FRACTION / stiffest


# --------------------------------------------------------------------------- deep linear networks


def _low_rank(out_dim: int, in_dim: int, rank: int, generator: torch.Generator) -> Tensor:
    """A random out_dim × in_dim matrix of the given rank (N(0, 1) entries when full rank)."""
    if rank >= min(out_dim, in_dim):
        return torch.randn(out_dim, in_dim, generator=generator, dtype=torch.float64)
    left = torch.randn(out_dim, rank, generator=generator, dtype=torch.float64)
    right = torch.randn(rank, in_dim, generator=generator, dtype=torch.float64)
    return left @ right / max(rank, 1) ** 0.5


def draw_dln(layers: tuple[int, int], width_range: tuple[int, int], seed: int) -> tuple[list[int], list[Tensor]]:
    """The paper's random DLN (App. J): M ~ U{layers}, H_j ~ U{width_range}, N(0, 1) matrices, each
    replaced with probability 0.5 by a random matrix of random rank r ~ U{0 … min(H_{j−1}, H_j)}."""
    generator = torch.Generator().manual_seed(seed)

    def uniform_int(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (1,), generator=generator))

    depth = uniform_int(*layers)
    widths = [uniform_int(*width_range) for _ in range(depth + 1)]
    weights = []
    for a, b in zip(widths[:-1], widths[1:]):
        full = min(a, b)
        low = bool(torch.rand(1, generator=generator) < 0.5)
        rank = uniform_int(0, full) if low else full
        weights.append(_low_rank(b, a, rank, generator))
    return widths, weights


def _dln_weights(widths: list[int], rank: int, seed: int) -> list[Tensor]:
    """Every matrix of rank r: the deepest point of the true set, where the local λ(w*) equals the
    global λ of Aoyagi's formula (at a point with full-rank factors it is larger:
    theory.deep_linear_network_local)."""
    generator = torch.Generator().manual_seed(seed)
    return [_low_rank(b, a, rank, generator) for a, b in zip(widths[:-1], widths[1:])]


def _product_rank(weights: list[Tensor]) -> int:
    product = weights[0]
    for w in weights[1:]:
        product = w @ product
    if not bool(product.abs().max() > 0):
        return 0
    return int(torch.linalg.matrix_rank(product))


def dln_truth(widths: list[int], weights: list[Tensor]) -> tuple[theory.Theory | None, theory.Theory, list[int]]:
    """(λ(w*) at these weights or None when no closed form covers them, Aoyagi's global λ, the rank
    of each factor), from one rank computation per segment of consecutive factors.

    The global λ is a lower bound for λ(w*): the LLC at a w* whose factors are fuller than the
    product needs is larger (theory.deep_linear_network_local)."""
    segment_rank = functools.cache(lambda i, j: _product_rank(weights[i - 1:j]))
    local = theory.deep_linear_network_local(widths, segment_rank)
    global_truth = theory.deep_linear_network(widths, segment_rank(1, len(weights)))
    return local, global_truth, [segment_rank(k, k) for k in range(1, len(weights) + 1)]


def _weight_scale(model: ModelConfig) -> str:
    scale = model.weight_scale or "fan_in"
    if scale not in ("fan_in", "unit"):
        raise LLCInputError(f"weight_scale = {scale!r}: use \"fan_in\" (N(0, 1/H_in)) or \"unit\" (N(0, 1), the paper's)")
    return scale


def _linear_problem(widths: list[int], weights: list[Tensor], data: DataConfig, truth: theory.Theory,
                    info: dict[str, Any], scale: str) -> Problem:
    if scale == "fan_in":  # same ranks and λ; outputs stay O(|x|), so float32 resolves the residuals
        weights = [w / math.sqrt(w.shape[1]) for w in weights]
    info["weight_scale"] = scale
    module = linear_stack(widths)
    with torch.no_grad():
        for layer, weight in zip(module, weights):
            layer.weight.copy_(weight)
    product = weights[0]
    for w in weights[1:]:
        product = w @ product
    data_gen = torch.Generator().manual_seed(data.seed)
    x = torch.rand(data.n, widths[0], generator=data_gen, dtype=torch.float64) * 20 - 10
    y = x @ product.T
    info = {**info, "widths": list(widths), "num_params": sum(a * b for a, b in zip(widths[:-1], widths[1:]))}
    problem = Problem(module, x.float(), y.float(), noise_scale=data.noise_scale, truth=truth,
                      sampler_defaults={**_DLN_DEFAULTS, "steps": singular_steps(info["num_params"])}, info=info)
    _recommend_step_size(problem, data)
    return problem


def _recommend_step_size(problem: Problem, data: DataConfig) -> None:
    """Fill sampler_defaults' step size (with the nβ and γ it assumes) from the spread-aware rule.

    The engine's own fallback (curvature.step_size_from_curvature, c = 0.02 on h_max) is safe but
    too timid for deep linear networks: their soft directions do not equilibrate in the default
    steps and λ̂ comes out 15-40% low. The rule of curvature.spread_aware_step_size needs nβ and
    γ, so the kind recommends those too (n / log n and γ = 1); a user who overrides nbeta or
    localization should set step_size as well (the resolved config shows the one used).
    """
    from llc_core.sampling.curvature import BIAS, STABILITY, spread_aware_step_size
    from llc_core.losses import make_nll

    nbeta = data.n / math.log(data.n)
    localization = problem.sampler_defaults.get("localization", 1.0)
    nll = make_nll(problem.loss, data.noise_scale)
    module = problem.model
    shapes = [(name, p.shape, p.numel()) for name, p in module.named_parameters()]

    def batch_loss(w_flat: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
        params, start = {}, 0
        for name, shape, size in shapes:
            params[name] = w_flat[start:start + size].view(shape)
            start += size
        return nll(functional_call(module, params, (xb,)), yb).mean()

    w = torch.cat([p.detach().reshape(-1) for p in module.parameters()])
    step, curvature = spread_aware_step_size(batch_loss, w, problem.inputs, problem.targets, nbeta, localization)
    if math.isfinite(step) and step > 0:
        # "auto" calibrates ε to the target acceptance, starting from the rule's value (runner.py);
        # on dln-1k it lands every case in the acceptance band and is more accurate than the rule alone
        problem.sampler_defaults.update({"step_size": "auto", "nbeta": nbeta, "localization": localization})
        problem.info["curvature"] = curvature
        top, mean = curvature["h_max"], curvature["h_mean"]

        def rule(nbeta: float, localization: float) -> float:
            return min(STABILITY / (nbeta * top + localization), 4 * BIAS / (nbeta * mean + localization))

        problem.step_size_rule = rule


def _dln(model: ModelConfig, data: DataConfig) -> Problem:
    seed = 0 if model.seed is None else model.seed
    if not _is_int(seed):
        raise LLCInputError(f"seed = {seed!r} must be a whole number")
    if model.widths is None:
        if model.layers is None or model.width_range is None:
            raise LLCInputError(
                "a dln needs widths (e.g. [10, 10, 10]) or the random generator's layers and width_range "
                "(e.g. \"layers\": [2, 5], \"width_range\": [5, 50])"
            )
        if model.rank is not None:
            raise LLCInputError("rank only applies with explicit widths: the random generator draws the ranks")
        widths, weights = draw_dln(_int_range("layers", model.layers, 1), _int_range("width_range", model.width_range, 1), seed)
        rank = _product_rank(weights)
        info = {"generator": {"layers": list(model.layers), "width_range": list(model.width_range)}}
    else:
        if model.layers is not None or model.width_range is not None:
            raise LLCInputError("give either widths or the random generator's layers and width_range, not both")
        widths = model.widths
        if not isinstance(widths, list) or len(widths) < 2 or not all(_is_int(h) and h >= 1 for h in widths):
            raise LLCInputError(f"widths = {widths!r} must list at least 2 whole numbers ≥ 1 (input, …, output)")
        rank = min(widths) if model.rank is None else model.rank
        if not _is_int(rank) or not 0 <= rank <= min(widths):
            raise LLCInputError(f"rank = {rank!r} must be a whole number between 0 and the smallest width {min(widths)}")
        weights = _dln_weights(widths, rank, seed)
        actual = _product_rank(weights)
        if actual != rank:
            raise LLCInputError(f"could not draw true weights of rank {rank} (got {actual}): try another model seed")
        info = {}
    info["rank"] = rank
    return _linear_problem(widths, weights, data, _record_truth(widths, weights, info), info, _weight_scale(model))


def _record_truth(widths: list[int], weights: list[Tensor], info: dict[str, Any]) -> theory.Theory | None:
    local, global_truth, info["matrix_ranks"] = dln_truth(widths, weights)
    info["global_llc"] = float(global_truth.llc)
    info["truth"] = "λ(w*)" if local is not None else (
        "unknown: two or more rank-deficient factors of different ranks; the global λ is a lower bound")
    return local


def _rrr(model: ModelConfig, data: DataConfig) -> Problem:
    m = _positive_int("input_dim", model.input_dim)
    if isinstance(model.hidden, list):
        raise LLCInputError("rrr has one hidden layer: give hidden as one whole number")
    h = _positive_int("hidden", model.hidden)
    n_out = _positive_int("output_dim", model.output_dim)
    rank = min(m, h, n_out) if model.rank is None else model.rank
    if not _is_int(rank) or not 0 <= rank <= min(m, h, n_out):
        raise LLCInputError(f"rank = {rank!r} must be a whole number between 0 and {min(m, h, n_out)}")
    seed = 0 if model.seed is None else model.seed
    widths = [m, h, n_out]
    weights = _dln_weights(widths, rank, seed)
    if _product_rank(weights) != rank:
        raise LLCInputError(f"could not draw true weights of rank {rank}: try another model seed")
    return _linear_problem(widths, weights, data, theory.reduced_rank_regression(m, h, n_out, rank), {"rank": rank},
                           _weight_scale(model))


# --------------------------------------------------------------------------- tanh


def _tanh(model: ModelConfig, data: DataConfig) -> Problem:
    if isinstance(model.hidden, list):
        raise LLCInputError("tanh has one hidden layer: give hidden as one whole number, e.g. 3")
    hidden = _positive_int("hidden", model.hidden, default=2)
    module = tanh_net(hidden)
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    generator = torch.Generator().manual_seed(data.seed)
    x = torch.rand(data.n, 1, generator=generator) * 2 - 1
    y = torch.zeros(data.n, 1)
    # Near w* = 0, f ≈ (Σ a_h b_h) x: like the potential (w1 w2)² with t = nβ · mean(x²)/(2σ²).
    nbeta = data.n / math.log(data.n)
    t = nbeta * float(x.double().square().mean()) / (2 * data.noise_scale**2)
    scale = t / nbeta

    def rule(nbeta: float, localization: float) -> float:
        return _toy_step_size([1], nbeta * scale)

    defaults = {**_TANH_DEFAULTS, "nbeta": nbeta, "step_size": rule(nbeta, 1.0)}
    return Problem(module, x, y, noise_scale=data.noise_scale, truth=theory.tanh_one_hidden(hidden),
                   sampler_defaults=defaults, info={"hidden": hidden}, step_size_rule=rule)


# --------------------------------------------------------------------------- mlp teacher


def _mlp(model: ModelConfig, data: DataConfig) -> Problem:
    task = model.task or "regression"
    if task not in ("regression", "classification"):
        raise LLCInputError(f"task = {task!r}: use \"regression\" or \"classification\"")
    d_in = _positive_int("input_dim", model.input_dim, default=4)
    d_out = _positive_int("output_dim", model.output_dim, default=3 if task == "classification" else 1,
                          minimum=2 if task == "classification" else 1)
    hidden = [16] if model.hidden is None else model.hidden
    hidden = [hidden] if _is_int(hidden) else hidden
    if not isinstance(hidden, list) or not hidden or not all(_is_int(h) and h >= 1 for h in hidden):
        raise LLCInputError(f"hidden = {model.hidden!r} must be a whole number or a list of whole numbers ≥ 1")
    seed = 0 if model.seed is None else model.seed
    widths = [d_in, *hidden, d_out]
    with torch.random.fork_rng():  # nn.Linear's default initialisation draws from the global generator
        torch.manual_seed(seed)
        module = relu_mlp(widths)
    generator = torch.Generator().manual_seed(data.seed)
    x = torch.randn(data.n, d_in, generator=generator)
    with torch.no_grad():
        out = module(x)
    if task == "regression":
        y, loss = out, "gaussian"
    else:
        y, loss = torch.multinomial(torch.softmax(out, 1), 1, generator=generator).squeeze(1), "cross_entropy"
    return Problem(module, x, y, loss=loss, noise_scale=data.noise_scale, truth=None,
                   sampler_defaults=dict(_MLP_DEFAULTS), info={"widths": widths, "task": task})


# --------------------------------------------------------------------------- SGD-trained point


def _train(problem: Problem, model: ModelConfig, data: DataConfig, *, stop: StopRequest = None) -> None:
    """Replace w* in `problem.model` by the point SGD (momentum 0.9) reaches from a fresh init.

    The stop request is read every defaults.STOP_CHECK_SECONDS of wall time (the clock draws no
    random numbers, so an unstopped training is unchanged). A stop raises LLCInputError: a λ̂ at a
    half-trained point would be an estimate at a w* nobody asked for, and no sampling has begun."""
    from llc_core.sampling.curvature import top_hessian_eigenvalue
    from llc_core.losses import make_nll

    steps = _positive_int("train_steps", model.train_steps)
    nll = make_nll(problem.loss, problem.noise_scale)
    module = problem.model
    names = [name for name, _ in module.named_parameters()]

    def batch_loss(w_flat: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
        params, start = {}, 0
        for name, p in module.named_parameters():
            params[name] = w_flat[start:start + p.numel()].view_as(p)
            start += p.numel()
        return nll(functional_call(module, params, (xb,)), yb).mean()

    true_flat = torch.cat([p.detach().reshape(-1) for p in module.parameters()])
    lr = model.train_lr
    if lr is None:
        top = top_hessian_eigenvalue(batch_loss, true_flat, problem.inputs, problem.targets)
        lr = 0.5 / top if top > 0 else 0.01
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not math.isfinite(lr) or lr <= 0:
        raise LLCInputError(f"train_lr = {lr!r} must be a finite number > 0")
    seed = (model.seed or 0) + 1
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        student = type(module)(*[_fresh(layer) for layer in module])
    optimizer = torch.optim.SGD(student.parameters(), lr=lr, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    n = problem.inputs.shape[0]
    batch = min(500, n)
    final = float("nan")
    stop_requested = stop_checker(stop)
    next_check = time.perf_counter()  # the first step looks, then every STOP_CHECK_SECONDS
    for step in range(steps):
        if time.perf_counter() >= next_check:
            next_check = time.perf_counter() + defaults.STOP_CHECK_SECONDS
            if stop_requested():
                raise LLCInputError(f"stopped during SGD pre-training at step {step} of {steps} (train_steps), "
                                    "before any sampling: nothing was estimated; start again, with fewer "
                                    "train_steps to finish sooner")
        index = torch.randint(0, n, (batch,), generator=generator)
        loss = nll(student(problem.inputs[index]), problem.targets[index]).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0 / lr)  # no single step moves w by > 1
        optimizer.step()
        if not math.isfinite(float(loss.detach())):
            raise LLCInputError(f"SGD training diverged at step {step}: lower train_lr (now {lr:.3g})")
    with torch.no_grad():
        final = float(nll(student(problem.inputs), problem.targets).mean())
        for (name, p), q in zip(module.named_parameters(), student.parameters()):
            p.copy_(q)
    problem.info.update({"trained": True, "train_steps": steps, "train_lr": lr, "train_loss": final,
                         "parameter_names": names})


def _fresh(layer: nn.Module) -> nn.Module:
    """A newly initialised copy of a layer (PyTorch's default initialisation)."""
    if isinstance(layer, nn.Linear):
        return nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    return type(layer)()


_BUILDERS = {"potential": _potential, "dln": _dln, "rrr": _rrr, "tanh": _tanh, "mlp": _mlp}
