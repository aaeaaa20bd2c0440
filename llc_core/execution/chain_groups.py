"""One estimate's chains split into chain groups, each a run of its own (here or on Ray), merged into one result.

An estimate with many chains (C) can outgrow one GPU or one node: `run_chain_groups` splits its
RunConfig into G groups of consecutive chains (group g: chains first … first + size − 1), runs each
group as a run with `size` chains, and merges them into one RunResult: the per-chain draws (loss
traces), λ̂ per chain and acceptances concatenated in chain order, and every diagnostic (λ̂ ± se,
R-hat, ESS, flatness, trend, the verdicts) computed again on all C chains.

Seeds come from the estimate and the chains, never from the worker: group g draws with seed
`group_seed(seed, first)`, which is the estimate's own seed for the group that starts at chain 0.
So the merged result is the same bit for bit wherever the groups run (here one after another, on a
Ray cluster, on any node), and a split into one group is the unsplit run itself.

What it is not: bit for bit the unsplit run of C chains. The engine draws the noise and minibatches
of all the chains of a run from one generator (estimator.start_loop: one (C, d) draw per step), so a
chain's draws depend on how many chains share its run; and every group runs its own schedule, so with
step_size "auto" each group calibrates ε on its own chains (the result's `step_size` is None when the
groups settled on different values; `calibration` lists each group's). The merged result is a valid
C-chain estimate with independent chains, statistically the same as the unsplit one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from llc_core import defaults, diagnostics
from llc_core.bookkeeping import chain_diagnostics, compare_starts, heat_summary
from llc_core.config import ExecutorConfig, RunConfig
from llc_core.errors import LLCInputError
from llc_core.execution import ray_backend
from llc_core.execution.units import Journal, Unit, run_here, unit_key
from llc_core.result import RunResult
from llc_core.runner import run
from llc_core.truth import zoo


@dataclass(frozen=True)
class ChainGroup:
    """Chains first … first + size − 1 of the estimate, drawn with `seed`."""

    index: int
    first: int
    size: int
    seed: int


@dataclass
class SplitRun:
    """The merged result, the groups it came from, and where they ran (ray_backend's summary)."""

    result: RunResult
    groups: list[ChainGroup]
    executor: dict[str, Any] = field(default_factory=dict)
    missing: list[int] = field(default_factory=list)  # groups lost or stopped: their chains are not in the result


def group_seed(seed: int, first: int) -> int:
    """The seed of the group starting at chain `first`: the estimate's own for chain 0, else a digest
    of (seed, first), in torch.Generator's range."""
    if first == 0:
        return int(seed)
    digest = hashlib.sha256(f"llc chain group {int(seed)}:{int(first)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & defaults.MAX_SEED


def total_chains(config: RunConfig) -> tuple[int, int, bool]:
    """The estimate's chains, seed, and whether it spreads every second chain's start (as run() would
    resolve them: the config's, else the model kind's, else the engine's defaults)."""
    recommended = dict(defaults.CHECKPOINT_SAMPLER) if config.model.kind == "checkpoint" else \
        zoo.recommended_sampler(config.model.kind, config.model)
    sampler = config.sampler.with_defaults(recommended)
    return int(sampler.chains), int(sampler.seed), sampler.start_spread is not None


def plan_groups(chains: int, groups: int, seed: int, paired: bool = False) -> list[ChainGroup]:
    """`groups` runs of consecutive chains, as equal as can be. `paired` (start_spread: every second
    chain starts spread out) keeps every group's first chain even and its size ≥ 2, so that each chain
    starts where it would in the unsplit run."""
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise LLCInputError(f"chain_groups = {groups!r} must be a whole number ≥ 1")
    unit = 2 if paired else 1
    if groups > chains // unit:
        raise LLCInputError(f"{groups} chain groups for {chains} chains: each group needs at least {unit} "
                            f"chain{'s (start_spread pairs them)' if paired else ''}; use at most {chains // unit} groups")
    pairs, extra = divmod(chains // unit, groups)
    out, first = [], 0
    for index in range(groups):
        size = unit * (pairs + (1 if index < extra else 0))
        if index == groups - 1:
            size = chains - first  # the odd chain left over by pairing goes to the last group
        out.append(ChainGroup(index, first, size, group_seed(seed, first)))
        first += size
    return out


def group_config(config: RunConfig, group: ChainGroup) -> dict[str, Any]:
    """The RunConfig (as a dict) of one group: the estimate's, with the group's chains and seed."""
    raw = config.to_dict()
    raw["sampler"] = {**raw["sampler"], "chains": group.size, "seed": group.seed}
    return raw


def run_group(payload: dict[str, Any], shared: Any = None) -> dict[str, Any]:
    """One chain group, on a worker or here (ray_backend.Unit): its RunResult as a dict, trace included."""
    return run(RunConfig.from_dict(payload)).to_dict(include_trace=True)


def run_chain_groups(config: RunConfig, executor: ExecutorConfig | None = None, *, groups: int | None = None,
                     on_group: Callable[[int, int], None] | None = None,
                     stop: Callable[[], bool] | None = None) -> SplitRun:
    """The estimate `config` describes, its chains split into `groups` runs (default: the executor's
    chain_groups), on Ray when the executor says so, else here one after another; merged into one
    RunResult. on_group(done, total) as each group finishes. With executor.resume, finished groups are
    kept in that results directory and not run again."""
    if config.refine is not None and config.refine.groups is not None:
        raise LLCInputError("refine.groups runs every group in one computation (llc_core refine); chain groups "
                            "split a single estimate")
    chains, seed, paired = total_chains(config)
    count = groups if groups is not None else (executor.chain_groups if executor is not None else 1)
    plan = plan_groups(chains, count, seed, paired)
    payloads = [group_config(config, g) for g in plan]
    units = [Unit(unit_key(f"chains {g.first}-{g.first + g.size - 1}", p), run_group, p) for g, p in zip(plan, payloads)]
    journal = None
    if executor is not None and executor.resume:
        name = unit_key("run", [config.to_dict(), count]).replace("#", "-")
        journal = Journal(Path(executor.resume) / f"{name}.runs.jsonl")
    arrived = None if on_group is None else (lambda key, value, done, total: on_group(done, total))
    started = time.perf_counter()
    if ray_backend.ray_requested(executor):
        outcome = ray_backend.run_units(units, executor, journal=journal, on_value=arrived, stop=stop)
    else:
        outcome = run_here(units, journal=journal, on_value=arrived, stop=stop)
    kept = [(g, RunResult.from_dict(outcome.values[u.key])) for g, u in zip(plan, units) if u.key in outcome.values]
    if not kept:
        raise LLCInputError("no chain group finished: " + ("; ".join(outcome.failed.values()) or "stopped before any"))
    merged = merge([r for _, r in kept], [g for g, _ in kept], seed=seed, wall_time_s=time.perf_counter() - started)
    missing = [g.index for g, u in zip(plan, units) if u.key not in outcome.values]
    if missing:
        merged.partial = True
        merged.verdicts = diagnostics.judge(merged)
    return SplitRun(merged, plan, outcome.summary(), missing)


def trace_of(result: RunResult, steps: int) -> np.ndarray:
    """The first `steps` rows of a result's loss trace as floats (a JSON null, a diverged chain's NaN, as NaN)."""
    rows = (result.loss_trace or [])[:steps]
    return np.array([[math.nan if v is None else v for v in row] for row in rows], dtype=float).reshape(
        len(rows), len(result.llc_per_chain))


def merge(results: list[RunResult], groups: list[ChainGroup], *, seed: int, wall_time_s: float) -> RunResult:
    """One RunResult of all the groups' chains: draws and per-chain values concatenated in chain order,
    λ̂ ± se, R-hat, ESS, flatness, trend and verdicts computed on every chain (the verdicts without the
    model kind's recommendations, which run() alone knows). One group is its own result."""
    first = results[0]
    if len(results) == 1 and groups[0].first == 0:
        return dataclasses.replace(first, wall_time_s=wall_time_s)
    done = min(r.steps_completed for r in results)
    trace = np.concatenate([trace_of(r, done) for r in results], axis=1)
    burnin, nbeta, init_loss = first.burnin_steps, first.nbeta, first.init_loss
    post = trace[burnin if done > burnin else done // 2:]
    # each chain's λ̂ as its group's run computed it (a group stopped early: over the steps it took); the
    # trace, and the diagnostics on it, over the steps every group has
    per_chain: list[float | None] = [v for r in results for v in r.llc_per_chain]
    alive = np.array([v is not None for v in per_chain])
    healthy = np.flatnonzero(alive)
    values = np.array([per_chain[c] for c in healthy], dtype=float)
    llc_std = float(values.std(ddof=1)) if len(values) >= 2 else None
    acceptance = [a for r in results for a in r.mala_acceptance_per_chain]
    measured = [acceptance[c] for c in healthy if acceptance[c] is not None]
    checks = chain_diagnostics(trace, post, healthy, nbeta, init_loss)
    merged = dataclasses.replace(
        first, llc_mean=float(values.mean()) if len(values) else None, llc_std=llc_std,
        llc_se=llc_std / math.sqrt(len(values)) if llc_std is not None else None, llc_per_chain=per_chain,
        mala_acceptance_mean=float(np.mean(measured)) if measured else None, mala_acceptance_per_chain=acceptance,
        diverged_chains=[{**d, "chain": d["chain"] + g.first} for r, g in zip(results, groups) for d in r.diverged_chains],
        chain_steps_per_second=float(sum(r.chain_steps_per_second for r in results)),
        partial=any(r.partial for r in results), steps_completed=done, rhat=checks["rhat"], ess=checks["ess"],
        flatness={**checks["flat"], "trend": checks["trend"]}, device=",".join(sorted({r.device for r in results})),
        wall_time_s=wall_time_s, loss_trace=trace.tolist(), **merged_settings(results, groups, seed),
        minibatch_heat=weighted([r.minibatch_heat for r in results], healthy_counts(results)),
        start_comparison=(compare_starts(np.array([math.nan if v is None else v for v in per_chain]), alive)
                          if first.start_comparison is not None else None),
        localization_effect=pooled_effect(results), refined=merged_refined(results),
        heat_correction=pooled_heat(results, per_chain),
    )
    merged.verdicts = diagnostics.judge(merged)
    return merged


def pooled_heat(results: list[RunResult], per_chain: list[float | None]) -> dict[str, Any] | None:
    """The groups' heat corrections (docs/METHOD.md §8) as one: per chain concatenated, summarised over all."""
    if any(r.heat_correction is None for r in results):
        return None
    return heat_summary([h for r in results for h in r.heat_correction["per_chain"]], per_chain,
                        all(r.heat_correction["applied"] for r in results))


def merged_settings(results: list[RunResult], groups: list[ChainGroup], seed: int) -> dict[str, Any]:
    """ε (the groups' common one, else None), each group's calibration, and the config of the whole."""
    steps = {r.step_size for r in results}
    config = dict(results[0].config)
    config["sampler"] = {**config.get("sampler", {}), "chains": sum(g.size for g in groups), "seed": seed}
    calibrations = [r.calibration for r in results]
    return {"step_size": steps.pop() if len(steps) == 1 else None, "config": config,
            "calibration": None if all(c is None for c in calibrations) else
            {"groups": [{"chains": [g.first, g.first + g.size - 1], **(c or {})} for g, c in zip(groups, calibrations)]}}


def healthy_counts(results: list[RunResult]) -> list[int]:
    return [sum(v is not None for v in r.llc_per_chain) for r in results]


def weighted(values: list[float | None], counts: list[int]) -> float | None:
    """The mean over every healthy chain of a per-group mean over its healthy chains."""
    pairs = [(v, k) for v, k in zip(values, counts) if v is not None and k > 0]
    if not pairs:
        return None
    return float(sum(v * k for v, k in pairs) / sum(k for _, k in pairs))


def pooled_effect(results: list[RunResult]) -> dict[str, Any] | None:
    """The localization effect's mean and standard error over every healthy chain, pooled from each
    group's (mean, se over its chains): the same numbers as from the chains themselves, up to rounding."""
    effects, counts = [r.localization_effect for r in results], healthy_counts(results)
    if any(e is None for e in effects) or sum(counts) == 0:
        return None
    total = sum(counts)
    mean = sum(e["effect"] * k for e, k in zip(effects, counts)) / total
    squares = sum((k - 1) * k * (e["se"] or 0.0) ** 2 + k * e["effect"] ** 2 for e, k in zip(effects, counts))
    if total < 2:
        return {"effect": float(mean), "se": None}
    variance = max(0.0, (squares - total * mean * mean) / (total - 1))
    return {"effect": float(mean), "se": float(math.sqrt(variance / total))}


def merged_refined(results: list[RunResult]) -> dict[str, Any] | None:
    if results[0].refined is None:
        return None
    moving = [m for r in results for m in ((r.refined or {}).get("moving_params") or [])]
    return {**results[0].refined, **({"moving_params": moving} if moving else {})}
