"""What a run hands back: streamed Snapshots while it runs, one RunResult at the end."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Verdict:
    """A plain-language diagnosis. `suggestion` holds settings to change, e.g. {"step_size": 3e-5}."""

    code: str  # stable identifier: step_too_large, step_could_grow, not_equilibrated, negative_llc, ...
    severity: str  # "ok", "info", "warning" or "error"
    message: str
    suggestion: dict[str, Any] | None = None


@dataclass
class Snapshot:
    """The state of a running estimation, handed to the streaming callback every few steps.

    losses holds the minibatch losses L_B(w_t) of the steps since the previous snapshot, shape
    (len(steps), chains). llc_running is nβ (mean post-burn-in L_B − L_n(w*)) per chain (NaN during
    burn-in); llc_recent is the same over this snapshot's window only, so one can watch equilibration.
    """

    step: int
    total_steps: int
    burnin: int
    steps: np.ndarray
    losses: np.ndarray
    llc_running: np.ndarray
    llc_recent: np.ndarray
    acceptance: np.ndarray
    steps_per_second: float
    elapsed: float
    diverged: list[dict[str, Any]]
    init_loss: float
    nbeta: float
    step_size: float | None = None  # ε in use (None when each chain has its own)
    calibrating: bool = False  # True while "auto" is still adapting ε (all of it burn-in)

    @property
    def seconds_left(self) -> float:
        if self.steps_per_second <= 0:
            return math.inf
        return (self.total_steps - self.step) / self.steps_per_second


@dataclass
class RunResult:
    """λ̂ with its error bars, diagnostics and the resolved config; round-trips to JSON.

    llc_per_chain has one entry per chain, None for a chain that diverged. llc_se is the standard
    error of llc_mean from the spread across healthy chains (chains are independent).
    loss_trace (steps × chains minibatch losses) is kept in memory, and left out of JSON unless asked.
    """

    llc_mean: float | None
    llc_std: float | None
    llc_se: float | None
    llc_per_chain: list[float | None]
    theoretical_llc: float | None
    multiplicity: int | None
    mala_acceptance_mean: float | None
    mala_acceptance_per_chain: list[float | None]
    diverged_chains: list[dict[str, Any]]
    chain_steps_per_second: float
    partial: bool
    steps_completed: int
    burnin_steps: int
    init_loss: float
    nbeta: float
    num_params: int
    n: int
    rhat: float | None
    ess: float | None
    flatness: dict[str, Any]
    verdicts: list[Verdict]
    device: str
    wall_time_s: float
    config: dict[str, Any]
    loss_trace: list[list[float]] | None = field(default=None, repr=False)
    step_size: float | None = None  # the ε the draws were taken with (the calibrated one in "auto" mode)
    calibration: dict[str, Any] | None = None  # "auto" mode: initial and final ε, trace of ε and acceptance
    # λ̂ that minibatch gradient noise adds, ε nβ² E||∇L_B1 − ∇L_B2||²/16 over the draws (SGLD.minibatch_heat);
    # (ε tr(AΣ_ξ)/8 with a preconditioner A); None for full-batch runs and MALA
    minibatch_heat: float | None = None
    # start_spread runs: λ̂ of the chains started at w* and of those started spread out, and the gap
    start_comparison: dict[str, Any] | None = None
    # how the module was evaluated (eval mode: dropout off, frozen normalisation statistics) and why
    model_mode: dict[str, Any] | None = None
    # refined LLCs: what was refined (parameters that move, the data subset), None for a plain run
    refined: dict[str, Any] | None = None
    # how much λ̂ depends on γ, measured on the draws: dλ̂/d(log γ) = −γ·Cov(nβ L_B, ||w − w*||²/2)
    # across the chains ("effect", its "se"); for a quadratic direction effect/λ̂ is exactly the relative
    # bias against γ = 0 (docs/METHOD.md §3). None when too few draws.
    localization_effect: dict[str, Any] | None = None
    # SGLD's first-order heat (ε/8)(E||∇U_B||²_A − γ tr A) over the draws: discretization plus minibatch
    # noise (docs/METHOD.md §8). "mean" over the live chains and "per_chain"; "applied": subtracted from
    # every λ̂ above (sampler.heat_correction); "share": mean / the uncorrected λ̂. None for MALA.
    heat_correction: dict[str, Any] | None = None

    def to_dict(self, include_trace: bool = False) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if not include_trace:
            out.pop("loss_trace")
        return json_safe(out)

    def to_json(self, include_trace: bool = False) -> str:
        return json.dumps(self.to_dict(include_trace), indent=2, allow_nan=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RunResult":
        raw = dict(raw)
        raw["verdicts"] = [Verdict(**v) for v in raw.get("verdicts", [])]
        return cls(**raw)

    @classmethod
    def from_json(cls, text: str) -> "RunResult":
        return cls.from_dict(json.loads(text))


def json_safe(value: Any) -> Any:
    """NaN and inf have no JSON spelling: they become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
