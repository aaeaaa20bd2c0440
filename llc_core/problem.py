"""What every run is about: a model whose parameters are w*, its data, its loss and, when known, its true λ.

The zoo (`truth/`), checkpoint loading and data files (`files/`) all produce a Problem; none of them
imports another to get one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable

from torch import Tensor, nn


@dataclass(frozen=True)
class Theory:
    """A theoretical learning coefficient.

    Attributes:
        llc: ``λ``, exact.
        multiplicity: ``m`` (``≥ 1``); the finite-n estimate falls below ``λ`` by about
            ``(m - 1) / log t`` when ``m > 1``.
        source: short human-readable provenance, e.g. ``"Aoyagi 2024 (deep linear network)"``.
    """

    llc: Fraction
    multiplicity: int
    source: str

    def __float__(self) -> float:
        return float(self.llc)


@dataclass
class Problem:
    """Everything the estimator needs, plus the truth when it is known."""

    model: nn.Module  # its parameters are w*
    inputs: Tensor
    targets: Tensor
    loss: str = "gaussian"
    noise_scale: float = 1.0
    truth: Theory | None = None
    sampler_defaults: dict[str, Any] = field(default_factory=dict)  # kind-specific recommendations
    info: dict[str, Any] = field(default_factory=dict)  # what was drawn: widths, ranks, train loss, ...
    # ε as a function of the resolved (nβ, γ), for a runner that fills step_size after nβ and γ are
    # known; sampler_defaults["step_size"] is this rule at the kind's default nβ = n / log n and γ.
    step_size_rule: Callable[[float, float], float] | None = field(default=None, repr=False)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())
