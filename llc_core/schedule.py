"""What happens at which step of a run, besides the kernel's move: the schedule of step size ε.

With step_size "auto" the first `calibration` steps tune ε by dual averaging towards the target
MALA acceptance (each move accepted or rejected, so a hot trial ε cannot inflate the acceptance it is
judged by); ε is then fixed at the averaged iterate. Two rechecks follow, at 1/3 and 2/3 of the rest
of burn-in: the acceptance measured on the run's own minibatches (lower ε if it fell below the band)
and the minibatch heat (lower ε if gradient noise adds more than MINIBATCH_HEAT_LIMIT of λ̂). The
first heat check compares with a λ̂ that is itself hot, hence two.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from llc_core import defaults
from llc_core.bookkeeping import Divergence, Tally
from llc_core.sampling import adaptation
from llc_core.sampling.sgld import SGLD


@dataclass
class Schedule:
    """When to calibrate, measure and recheck, and the state that this needs between steps."""

    steps: int
    burnin: int
    calibration: int  # steps of dual averaging at the start (0: ε is fixed)
    mala_every: int
    heat_measurable: bool  # minibatch SGLD (no heat on full batches or MALA)
    target: float  # acceptance goal of calibration
    num_params: int
    initial_step_size: float | None = None
    tuner: adaptation.DualAveragingState | None = None
    recheck_at: tuple[int, ...] = ()
    trace: list[tuple[float, float]] = field(default_factory=list)
    burnin_acceptance: list[Tensor] = field(default_factory=list)
    burnin_heat: list[Tensor] = field(default_factory=list)
    acceptance_recheck: list[dict[str, Any] | None] | None = None
    heat_cap: list[dict[str, Any] | None] | None = None

    def __post_init__(self):
        if self.calibration:
            self.tuner = adaptation.init(self.initial_step_size)

    def start(self, kernel):
        """The kernel the first step runs with (at the tuner's first ε when calibrating), and the
        recheck steps, which only SGLD's "auto" has."""
        if self.tuner is None:
            return kernel
        if isinstance(kernel, SGLD):
            rest = self.burnin - self.calibration
            self.recheck_at = tuple(self.calibration + rest * k // 3 for k in (1, 2))
        return dataclasses.replace(kernel, step_size=adaptation.current_step_size(self.tuner))

    def calibrating(self, t: int) -> bool:
        return t < self.calibration

    def measure_acceptance(self, t: int) -> bool:
        return self.calibrating(t) or (t + 1) % self.mala_every == 0

    def measure_heat(self, t: int) -> bool:
        return self.heat_measurable and not self.calibrating(t) and (t + 1) % defaults.MINIBATCH_HEAT_EVERY == 0

    def after_heat(self, t: int, heat: Tensor, tally: Tally) -> None:
        if t >= self.burnin:
            tally.record_heat(heat)
        else:
            self.burnin_heat.append(heat)

    def recheck(self, t: int, kernel, tally: Tally, nbeta: Tensor):
        """At a recheck step: lower ε if burn-in acceptance fell below the band, then if the
        minibatch heat is too large a share of λ̂."""
        if t not in self.recheck_at:
            return kernel
        if self.burnin_acceptance:
            kernel, check = recheck_acceptance(kernel, self.burnin_acceptance, tally.alive, self.target)
            self.acceptance_recheck = [*(self.acceptance_recheck or []), check]
            self.burnin_acceptance = []
        if self.burnin_heat and self.heat_measurable:
            recent = tally.losses[t - (self.burnin - self.calibration) // 6:t + 1]
            kernel, cap = cap_minibatch_heat(kernel, self.burnin_heat, recent, tally.alive, nbeta, tally.init_loss)
            self.heat_cap = [*(self.heat_cap or []), cap]
            self.burnin_heat = []
        return kernel

    def after_acceptance(self, t: int, acceptance: Tensor, tally: Tally) -> None:
        """A fixed-ε step's measured acceptance: counted, and kept for the burn-in recheck."""
        if t < self.burnin:
            self.burnin_acceptance.append(acceptance)
        tally.record_acceptance(acceptance)

    def calibrate(self, t: int, kernel, step: "Move", tally: Tally, divergence: Divergence):
        """One dual-averaging update from this step's mean acceptance over live chains; the move is
        then accepted or rejected. Returns the kernel at the next ε and the state to go on from."""
        acceptance = float(step.info.acceptance[tally.alive].mean()) if bool(tally.alive.any()) else 0.0
        self.trace.append((float(kernel.step_size), acceptance))
        self.tuner = adaptation.update(self.tuner, acceptance, self.target)
        state = accept_or_reject(kernel, step, divergence)
        last = t + 1 == self.calibration
        step_now = adaptation.final_step_size(self.tuner) if last else adaptation.current_step_size(self.tuner)
        return dataclasses.replace(kernel, step_size=step_now), state

    def report(self, kernel) -> dict[str, Any] | None:
        """What calibration did, for RunResult.calibration (None for a fixed ε)."""
        if not self.calibration:
            return None
        return {
            "steps": len(self.trace), "target_acceptance": self.target,
            "initial_step_size": self.initial_step_size, "step_size": float(kernel.step_size),
            "acceptance_step_size": adaptation.final_step_size(self.tuner),
            "acceptance_recheck": self.acceptance_recheck, "minibatch_heat_cap": self.heat_cap,
            "trace_step_size": [e for e, _ in self.trace], "trace_acceptance": [a for _, a in self.trace],
        }


@dataclass(frozen=True)
class Move:
    """One kernel step: the state it started from, the state it proposed, its info, the generator."""

    started_from: Any
    state: Any
    info: Any
    generator: torch.Generator


def accept_or_reject(kernel, move: Move, divergence: Divergence):
    """Accept or reject a calibration move as in MALA, and send chains that blew up back to w*.

    Without the accept/reject step a chain on a too-large trial ε runs hot (the Langevin
    discretisation and minibatch noise both add variance), and the acceptance of a move from a hot
    point is inflated: calibration drifted up to ε where SGLD was 20-30% high while reading acceptance
    1.0 (a regular 10⁴-parameter model). A blown-up chain loses nothing: calibration is burn-in.
    """
    state, info = move.state, move.info
    if isinstance(kernel, SGLD):  # a MALA step has accepted or rejected already (and caches ∇U at its position)
        uniform = torch.rand(info.acceptance.shape, generator=move.generator, device=info.acceptance.device)
        rejected = uniform >= info.acceptance
        if bool(rejected.any()):
            state = state._replace(position=torch.where(rejected[:, None], move.started_from.position, state.position))
    blown = ~torch.isfinite(state.position).all(1) | divergence.exploded(info.loss)
    if bool(blown.any()):
        state = divergence.reset(state, blown)
    return state


def recheck_acceptance(kernel, acceptances: list[Tensor], alive: Tensor, target: float):
    """Lower ε when the acceptance measured during burn-in (on the run's changing minibatches, which
    if anything inflates it) fell below the band around the run's own goal `target` (the band's low
    end allows 1.25 times the goal's rejection rate: 0.90 for the goal 0.92, docs/METHOD.md §2).
    Calibration sees chains near w*; at highly singular points the curvature grows as the chains
    spread out, and dln-deepest cases ended at 0.59-0.81."""
    if not bool(alive.any()):
        return kernel, None
    acceptance = float(torch.stack(acceptances)[:, alive].mean())
    report = {"acceptance": acceptance, "step_size_before": float(kernel.step_size)}
    low_goal, goal = defaults.ACCEPTANCE_TARGET[0], defaults.ACCEPTANCE_GOAL
    if acceptance < 1 - (1 - target) * (1 - low_goal) / (1 - goal):
        # Langevin rejection grows like ε^(3/2) (diagnostics.suggested_step_size), at most ×10 per recheck
        factor = ((1.0 - target) / max(1.0 - acceptance, 1e-6)) ** (2.0 / 3.0)
        kernel = dataclasses.replace(kernel, step_size=float(kernel.step_size) * min(max(factor, 0.1), 10.0))
    report["step_size_after"] = float(kernel.step_size)
    return kernel, report


def cap_minibatch_heat(kernel, heats: list[Tensor], recent_losses: Tensor, alive: Tensor, nbeta: Tensor,
                       init_loss: float):
    """Lower ε when minibatch noise adds more than defaults.MINIBATCH_HEAT_LIMIT of λ̂ (the heat is
    proportional to ε); the chains re-equilibrate over the rest of burn-in."""
    if not bool(alive.any()):
        return kernel, None
    heat = float(torch.stack(heats)[:, alive].mean())
    # nβ per chain, (C,), must be filtered like the losses (a single nβ broadcasts as it is)
    nbeta_alive = nbeta[alive] if nbeta.ndim else nbeta
    llc_now = float((nbeta_alive * (recent_losses[:, alive].double().mean(0) - init_loss)).mean())
    share = heat / llc_now if llc_now > 0 else None
    report = {"heat": heat, "llc_burnin": llc_now, "share": share, "limit": defaults.MINIBATCH_HEAT_LIMIT,
              "step_size_before": float(kernel.step_size)}
    if share is not None and share > defaults.MINIBATCH_HEAT_LIMIT:
        kernel = dataclasses.replace(kernel, step_size=float(kernel.step_size) * defaults.MINIBATCH_HEAT_LIMIT / share)
    report["step_size_after"] = float(kernel.step_size)
    return kernel, report
