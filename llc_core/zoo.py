"""Models whose data, w* and (when theory has one) true λ the tool builds itself.

Each kind turns a ModelConfig + DataConfig into a Problem. Kinds:

- potential: f(x, w) = x · Π_j w_j^(p_j), x ~ N(0, 1), w* = 0, noise-free labels y = 0, so
  L_n(w) − L_n(w*) ∝ Π w_j^(2 p_j) and λ follows from the normal-crossing formula.
- dln: deep linear network with widths H_0 … H_M and no biases; random N(0, 1) true weights whose
  product has rank r (the first matrix is made rank r); inputs uniform on [−10, 10], noise-free
  labels; w* = the true weights (paper App. J).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from . import theory
from .config import DataConfig, ModelConfig
from .errors import LLCInputError

KINDS = ("potential", "dln")


@dataclass
class Problem:
    """Everything the estimator needs, plus the truth when it is known."""

    model: nn.Module  # its parameters are w*
    inputs: Tensor
    targets: Tensor
    loss: str = "gaussian"
    noise_scale: float = 1.0
    truth: theory.Theory | None = None
    sampler_defaults: dict[str, Any] = field(default_factory=dict)  # kind-specific recommendations


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


def build_problem(model: ModelConfig, data: DataConfig) -> Problem:
    if not isinstance(data.n, int) or data.n < 2:
        raise LLCInputError(f"data.n = {data.n!r} must be a whole number ≥ 2")
    if model.kind == "potential":
        return _potential(model, data)
    if model.kind == "dln":
        return _dln(model, data)
    raise LLCInputError(f"unknown model kind {model.kind!r}: use one of {', '.join(KINDS)}")


def _potential(model: ModelConfig, data: DataConfig) -> Problem:
    powers = model.powers if model.powers is not None else [1, 2]
    if not isinstance(powers, list) or not powers or not all(isinstance(p, int) and p >= 0 for p in powers):
        raise LLCInputError(f"powers = {powers!r} must be a non-empty list of whole numbers ≥ 0, e.g. [1, 2]")
    if not any(powers):
        raise LLCInputError("powers are all 0, so the model is constant: make at least one power ≥ 1")
    generator = torch.Generator().manual_seed(data.seed)
    x = torch.randn(data.n, 1, generator=generator)
    module = Potential(powers)
    with torch.no_grad():
        y = module(x)
    truth = theory.potential(powers)
    # The stiffest direction of t·K at the typical scale of the posterior has curvature ~ t for a
    # quadratic factor; ε = 1e-4 keeps ε t h/4 ≈ 3% at n = 1e4 while the quartic valleys still mix.
    return Problem(module, x, y, truth=truth, sampler_defaults={"step_size": 1e-4, "steps": 4000})


def _dln(model: ModelConfig, data: DataConfig) -> Problem:
    widths = model.widths
    if not isinstance(widths, list) or len(widths) < 2 or not all(isinstance(h, int) and h >= 1 for h in widths):
        raise LLCInputError(f"widths = {widths!r} must list at least 2 whole numbers ≥ 1 (input, …, output)")
    rank = min(widths) if model.rank is None else model.rank
    if not isinstance(rank, int) or not 0 <= rank <= min(widths):
        raise LLCInputError(f"rank = {rank!r} must be a whole number between 0 and the smallest width {min(widths)}")
    generator = torch.Generator().manual_seed(model.seed if model.seed is not None else 0)
    module = linear_stack(widths)
    with torch.no_grad():
        for i, layer in enumerate(module):
            out_dim, in_dim = layer.weight.shape
            if i == 0 and rank < min(out_dim, in_dim):
                left = torch.randn(out_dim, rank, generator=generator, dtype=torch.float64)
                right = torch.randn(rank, in_dim, generator=generator, dtype=torch.float64)
                weight = left @ right / max(rank, 1) ** 0.5
            else:
                weight = torch.randn(out_dim, in_dim, generator=generator, dtype=torch.float64)
            layer.weight.copy_(weight)
        product = torch.eye(widths[0], dtype=torch.float64)
        for layer in module:
            product = layer.weight.double() @ product
        actual = int(torch.linalg.matrix_rank(product)) if rank else 0
    if actual != rank:
        raise LLCInputError(f"could not draw true weights of rank {rank} (got {actual}): try another model seed")
    data_gen = torch.Generator().manual_seed(data.seed)
    x = (torch.rand(data.n, widths[0], generator=data_gen, dtype=torch.float64) * 20 - 10)
    y = x @ product.T
    return Problem(module, x.float(), y.float(), truth=theory.deep_linear_network(widths, rank))
