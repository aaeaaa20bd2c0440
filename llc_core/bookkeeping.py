"""What a run keeps while it samples, and what it hands back: per-step losses, acceptance and heat
sums over the live chains, chains parked after diverging, the streamed Snapshots and the RunResult.

λ̂ per chain is nβ (mean of L_B over the draws after burn-in − L_n(w*)); a chain whose loss goes
NaN/inf or explodes is parked at w* and never counted again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from llc_core import defaults, diagnostics
from llc_core.config import SamplerConfig
from llc_core.result import RunResult, Snapshot


@dataclass(frozen=True)
class Divergence:
    """When a chain has diverged: its loss is not finite, or nβ(L − L_n(w*)) passes `explosion`."""

    w_star: Tensor  # (d,)
    nbeta: Tensor  # nβ per chain, (C,)
    init_loss: float
    explosion: float

    @classmethod
    def for_run(cls, w_star: Tensor, nbeta_chains: np.ndarray, init_loss: float) -> "Divergence":
        explosion = defaults.EXPLOSION_FACTOR * max(w_star.shape[0], 10)
        return cls(w_star, torch.as_tensor(nbeta_chains, device=w_star.device, dtype=w_star.dtype), init_loss,
                   explosion)

    def exploded(self, losses: Tensor) -> Tensor:
        return ~torch.isfinite(losses) | (self.nbeta * (losses - self.init_loss) > self.explosion)

    def reset(self, state, mask: Tensor):
        """Put the chains in `mask` back at w*, forgetting their preconditioner and cached gradient."""
        position = torch.where(mask[:, None], self.w_star.expand_as(state.position), state.position)
        square_avg = state.square_avg
        if square_avg is not None:
            square_avg = torch.where(mask[:, None], torch.zeros_like(square_avg), square_avg)
        state = state._replace(position=position, square_avg=square_avg)
        if getattr(state, "count", None) is not None:  # a bias-corrected RMSprop starts afresh too
            state = state._replace(count=torch.where(mask, torch.zeros_like(state.count), state.count))
        if hasattr(state, "grad_potential"):  # MALA caches ∇U at the position: recompute it
            state = state._replace(loss=None, grad_potential=None)
        return state


@dataclass
class Tally:
    """Running record of a run: losses (steps, C), acceptances, live chains, sums after burn-in."""

    losses: Tensor
    burnin: int
    nbeta_chains: np.ndarray
    init_loss: float
    alive: Tensor
    # sums over the draws after burn-in of L_B, ||w − w*||² and their product, per chain (float64):
    # the localization effect's covariance without keeping a second (steps, C) trace
    distance_sums: Tensor | None = None  # (3, C)
    distance_count: int = 0
    acceptances: list[Tensor] = field(default_factory=list)
    diverged: list[dict[str, Any]] = field(default_factory=list)
    post_sum: Tensor | None = None
    acc_sum: Tensor | None = None
    acc_count: int = 0
    heat_sum: Tensor | None = None
    heat_count: int = 0
    # the first-order heat (ε/8)(||∇U_B||²_A − γ tr A) of every draw after burn-in, summed per chain
    step_heat_sum: Tensor | None = None
    step_heat_count: int = 0
    heat_correction: bool = True  # subtract its mean from λ̂ (SamplerConfig.heat_correction)
    checked: int = 0  # steps already checked for divergence and summed
    done: int = 0

    @classmethod
    def start(cls, steps: int, burnin: int, nbeta_chains: np.ndarray, init_loss: float, like: Tensor,
              heat_correction: bool = True) -> "Tally":
        chains = len(nbeta_chains)
        zeros = torch.zeros(chains, dtype=torch.float64, device=like.device)
        return cls(torch.empty(steps, chains, device=like.device, dtype=like.dtype), burnin, nbeta_chains,
                   init_loss, torch.ones(chains, dtype=torch.bool, device=like.device),
                   torch.zeros(3, chains, dtype=torch.float64, device=like.device),
                   post_sum=zeros, acc_sum=zeros.clone(), heat_sum=zeros.clone(), step_heat_sum=zeros.clone(),
                   heat_correction=heat_correction)

    def record_acceptance(self, acceptance: Tensor) -> None:
        self.acceptances.append(acceptance)
        self.acc_sum += acceptance * self.alive
        self.acc_count += 1

    def record_distance(self, loss: Tensor, distance: Tensor) -> None:
        """One draw after burn-in: its L_B and ||w − w*||², per chain."""
        loss, distance = loss.double(), distance.double()
        self.distance_sums += torch.stack((loss, distance, loss * distance))
        self.distance_count += 1

    def record_heat(self, heat: Tensor) -> None:
        self.heat_sum += torch.where(self.alive, heat, 0.0)  # a diverging chain's NaN stays out
        self.heat_count += 1

    def record_step_heat(self, heat: Tensor) -> None:
        """One draw after burn-in: its first-order heat per chain (SGLD.step_heat)."""
        self.step_heat_sum += heat.double()
        self.step_heat_count += 1

    def step_heat(self) -> np.ndarray | None:
        """The mean first-order heat of each chain's draws so far, (C,), or None before any."""
        if not self.step_heat_count:
            return None
        return (self.step_heat_sum / self.step_heat_count).cpu().numpy()

    def correction(self) -> np.ndarray | float:
        """What λ̂ loses to the heat correction, per chain (0 when it is off or nothing was measured)."""
        heat = self.step_heat() if self.heat_correction else None
        return 0.0 if heat is None else heat

    def close_window(self, state, divergence: Divergence, ignore_before: int):
        """At a snapshot: park the chains that diverged since the last one (steps before
        `ignore_before`, calibration, which resets its own failures, do not count) and add the new
        draws after burn-in to the running sums."""
        window = self.losses[self.checked:self.done]
        bad = divergence.exploded(window)
        if self.checked < ignore_before:
            bad[:ignore_before - self.checked] = False
        newly = bad.any(0) & self.alive
        if bool(newly.any()):
            first_bad = bad.float().argmax(0)
            for chain in torch.nonzero(newly).flatten().tolist():
                value = float(window[int(first_bad[chain]), chain])
                reason = "loss became NaN/inf" if not math.isfinite(value) else f"loss exploded to {value:.3g}"
                self.diverged.append({"chain": chain, "step": self.checked + int(first_bad[chain]), "reason": reason})
            self.alive &= ~newly
            # A parked chain keeps being computed (it is one row of a batched tensor) but is never counted.
            state = divergence.reset(state, newly)
        start = max(self.checked, self.burnin)
        if self.done > start:
            self.post_sum += self.losses[start:self.done].double().sum(0)
        return state

    def snapshot(self, elapsed: float, step_size: float | Tensor, calibrating: bool) -> Snapshot:
        """What a UI draws now: the window since the last snapshot, running and recent λ̂ per chain."""
        nbeta, done = self.nbeta_chains, self.done
        alive = self.alive.cpu().numpy()
        recent = self.losses[self.checked:done].double().cpu().numpy()
        post = done - self.burnin
        correction = self.correction()
        llc_running = (nbeta * (self.post_sum.cpu().numpy() / post - self.init_loss) - correction if post > 0
                       else np.full(len(alive), np.nan))
        llc_recent = nbeta * (recent.mean(0) - self.init_loss) - correction
        acceptance = self.acc_sum.cpu().numpy() / self.acc_count if self.acc_count else np.full(len(alive), np.nan)
        for values in (llc_running, llc_recent, acceptance):
            values[~alive] = np.nan
        return Snapshot(
            step=done, total_steps=self.losses.shape[0], burnin=self.burnin, steps=np.arange(self.checked, done),
            losses=recent, llc_running=llc_running, llc_recent=llc_recent, acceptance=acceptance,
            steps_per_second=done / elapsed if elapsed > 0 else 0.0, elapsed=elapsed,
            diverged=list(self.diverged), init_loss=self.init_loss, nbeta=float(nbeta.mean()),
            step_size=float(step_size) if not isinstance(step_size, Tensor) else None, calibrating=calibrating,
        )

    def minibatch_heat(self) -> float | None:
        """Mean minibatch heat over the live chains after burn-in (None when never measured)."""
        alive_heat = (self.heat_sum / self.heat_count)[self.alive] if self.heat_count else None
        return float(alive_heat.mean()) if alive_heat is not None and len(alive_heat) else None


@dataclass(frozen=True)
class RunFacts:
    """What a RunResult reports besides the draws: the resolved settings and where they came from."""

    sampler: SamplerConfig
    n: int
    num_params: int
    nbeta: float
    localization: float
    batch_size: int
    device: str
    theoretical_llc: float | None = None
    multiplicity: int | None = None
    config: dict[str, Any] | None = None
    model_mode: dict[str, Any] | None = None
    moving_params: list[int] | None = None  # parameters each chain moves, when not all (refined LLCs)


@dataclass(frozen=True)
class Ending:
    """How the sampling loop ended: steps done, stopped early, timings, the ε in use, calibration."""

    partial: bool
    loop_time: float
    wall_time: float
    step_size: float | Tensor
    calibration: dict[str, Any] | None


def run_result(tally: Tally, facts: RunFacts, ending: Ending) -> RunResult:
    """λ̂ ± se over the live chains, diagnostics and verdicts, and the resolved config."""
    trace = tally.losses[:tally.done].cpu().double().numpy()
    chains = trace.shape[1]
    acceptance = torch.stack(tally.acceptances).cpu().numpy() if tally.acceptances else np.zeros((0, chains))
    alive = tally.alive.cpu().numpy()
    done, burnin = tally.done, tally.burnin
    used_burnin = done > burnin
    post = trace[burnin if used_burnin else done // 2:]
    healthy = np.flatnonzero(alive)
    per_chain = (tally.nbeta_chains * (post.mean(0) - tally.init_loss) - tally.correction() if len(post)
                 else np.full(chains, np.nan))
    values = per_chain[healthy]
    llc_std = float(values.std(ddof=1)) if len(values) >= 2 else None
    acc_per_chain = acceptance.mean(0) if len(acceptance) else np.full(chains, np.nan)
    start_comparison = compare_starts(per_chain, alive) if facts.sampler.start_spread is not None else None
    minibatch_heat = tally.minibatch_heat()
    summary = dict(
        llc_mean=float(values.mean()) if len(values) else None, llc_std=llc_std,
        llc_se=llc_std / math.sqrt(len(values)) if llc_std is not None else None,
        llc_per_chain=[float(per_chain[c]) if alive[c] else None for c in range(chains)],
        mala_acceptance_mean=float(acc_per_chain[healthy].mean()) if len(acceptance) and len(healthy) else None,
        mala_acceptance_per_chain=[float(acc_per_chain[c]) if alive[c] and len(acceptance) else None
                                   for c in range(chains)],
        step_size=float(ending.step_size) if not isinstance(ending.step_size, Tensor) else None,
    )
    checks = chain_diagnostics(trace, post, healthy, facts.nbeta, tally.init_loss)
    result = RunResult(
        **summary, theoretical_llc=facts.theoretical_llc, multiplicity=facts.multiplicity,
        diverged_chains=tally.diverged,
        chain_steps_per_second=chains * done / ending.loop_time if ending.loop_time > 0 else 0.0,
        partial=ending.partial, steps_completed=done, burnin_steps=burnin, init_loss=tally.init_loss,
        nbeta=facts.nbeta, num_params=facts.num_params, n=facts.n, rhat=checks["rhat"], ess=checks["ess"],
        flatness={**checks["flat"], "trend": checks["trend"]}, verdicts=[], device=facts.device,
        wall_time_s=ending.wall_time, config=resolved_config(facts), loss_trace=trace.tolist(),
        calibration=ending.calibration, minibatch_heat=minibatch_heat, start_comparison=start_comparison,
        model_mode=facts.model_mode,
        refined={"moving_params": facts.moving_params} if facts.moving_params is not None else None,
        localization_effect=localization_effect(tally, facts.localization, healthy),
        heat_correction=heat_correction(tally, per_chain, healthy),
    )
    result.verdicts = diagnostics.judge(result)
    return result


def heat_correction(tally: Tally, per_chain: np.ndarray, healthy: np.ndarray) -> dict[str, Any] | None:
    """RunResult.heat_correction of a run (heat_summary of its live chains); None when not measured (MALA,
    no draws)."""
    heat = tally.step_heat()
    if heat is None:
        return None
    live = set(healthy.tolist())
    return heat_summary([float(heat[c]) if c in live else None for c in range(len(heat))],
                        [float(v) if c in live else None for c, v in enumerate(per_chain)], tally.heat_correction)


def heat_summary(heat: list[float | None], llc: list[float | None], applied: bool) -> dict[str, Any] | None:
    """The first-order heat of the draws per chain (None for a chain not counted), its mean over the chains
    that have both a heat and a λ̂, whether λ̂ has it subtracted, and its share of the uncorrected λ̂."""
    pairs = [(h, v) for h, v in zip(heat, llc) if h is not None and v is not None]
    if not pairs:
        return None
    mean = float(np.mean([h for h, _ in pairs]))
    raw = float(np.mean([v for _, v in pairs])) + (mean if applied else 0.0)
    return {"mean": mean, "per_chain": list(heat), "applied": applied, "share": mean / raw if raw > 0 else None}


def localization_effect(tally: Tally, localization: float, healthy: np.ndarray) -> dict[str, Any] | None:
    """dλ̂/d(log γ) = −γ·Cov(nβ L_B, ||w − w*||²/2) over each live chain's draws after burn-in, its
    mean and standard error across chains. The posterior ∝ exp(−nβL − γ||w − w*||²/2) makes
    d E[nβL]/dγ = −Cov(nβL, ||w − w*||²/2); a flat direction that only γ confines (a DLN's
    symmetries) adds no covariance, so this measures the pull of γ on λ̂ itself."""
    count = tally.distance_count
    if tally.distance_sums is None or count < 8 or len(healthy) == 0 or not localization:
        return None
    loss, distance, product = (tally.distance_sums[:, healthy] / count).cpu().numpy()
    covariance = tally.nbeta_chains[healthy] * (product - loss * distance) / 2
    effects = -float(localization) * covariance
    se = float(effects.std(ddof=1) / math.sqrt(len(effects))) if len(effects) >= 2 else None
    return {"effect": float(effects.mean()), "se": se}


def chain_diagnostics(trace: np.ndarray, post: np.ndarray, healthy: np.ndarray, nbeta: float,
                      init_loss: float) -> dict[str, Any]:
    """R-hat and ESS of the draws, and whether the trace is flat after burn-in, on the live chains."""
    if not len(healthy):
        return {"rhat": None, "ess": None, "flat": {"drift": None, "drift_se": None, "flat": None}, "trend": {}}
    healthy_trace = post[:, healthy].T
    rhat, ess = diagnostics.rhat_ess(healthy_trace)
    return {"rhat": rhat, "ess": ess, "flat": diagnostics.flatness(healthy_trace, nbeta, init_loss),
            "trend": diagnostics.trend(trace[:, healthy].T, nbeta, init_loss)}


def resolved_config(facts: RunFacts) -> dict[str, Any]:
    """The RunConfig dict attached to the result, its sampler part the one the run actually used."""
    resolved = dict(facts.config) if facts.config is not None else {}
    resolved["sampler"] = {
        **(resolved.get("sampler") or {}),
        **{k: getattr(facts.sampler, k) for k in SamplerConfig.__dataclass_fields__},
        "localization": facts.localization, "nbeta": facts.nbeta, "batch_size": facts.batch_size,
    }
    resolved["device"] = facts.device
    return resolved


def compare_starts(per_chain: np.ndarray, alive: np.ndarray) -> dict[str, Any] | None:
    """λ̂ of the chains started at w* (even indices) against those started spread out (odd)."""
    groups = {}
    for name, index in (("from_w_star", slice(0, None, 2)), ("from_spread", slice(1, None, 2))):
        values = per_chain[index][alive[index]]
        if len(values) == 0:
            return None
        se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) >= 2 else None
        groups[name] = {"llc": float(values.mean()), "se": se, "chains": int(len(values))}
    ses = [g["se"] for g in groups.values()]
    groups["gap"] = groups["from_spread"]["llc"] - groups["from_w_star"]["llc"]
    groups["gap_se"] = math.sqrt(sum(e * e for e in ses)) if None not in ses else None
    return groups
