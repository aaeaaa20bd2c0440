"""Convergence diagnostics and plain-language verdicts (REFERENCE.md §2-3)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from arviz_stats.base import array_stats

from . import defaults
from .adaptation import effective_target
from .result import Verdict

# A drift between the two halves of the sampling window counts only if it is both statistically
# clear (more than 2 standard errors across chains) and practically large (5% of λ̂).
DRIFT_SIGMAS = 2.0
DRIFT_RELATIVE = 0.05
RHAT_LIMIT = 1.1
# start_spread runs: the two groups of chains disagree when this far apart (both must hold)
START_GAP_SIGMAS = 2.0
START_GAP_RELATIVE = 0.10
# warn when minibatch noise is this share of λ̂ ("auto" aims below defaults.MINIBATCH_HEAT_LIMIT)
HEAT_WARNING = 0.10
TREND_RELATIVE = 0.10


def rhat_ess(trace: np.ndarray) -> tuple[float | None, float | None]:
    """Rank-normalized R-hat and bulk ESS of loss traces shaped (chains, draws), via arviz-stats."""
    chains, draws = trace.shape
    if draws < 4:
        return None, None
    ess = float(array_stats.ess(trace, chain_axis=0, draw_axis=1, method="bulk"))
    rhat = float(array_stats.rhat(trace, chain_axis=0, draw_axis=1)) if chains >= 2 else None
    return _finite_or_none(rhat), _finite_or_none(ess)


def flatness(trace: np.ndarray, nbeta: float, init_loss: float) -> dict[str, Any]:
    """Compare λ̂ of the first and second half of the sampling window, chain by chain.

    A trace that still rises after burn-in makes λ̂ an under-estimate (REFERENCE §3); the drift
    nβ·(mean of 2nd half − mean of 1st half) is judged against its standard error across chains.
    """
    chains, draws = trace.shape
    if draws < 4:
        return {"drift": None, "drift_se": None, "flat": None}
    half = draws // 2
    first = nbeta * (trace[:, :half].mean(1) - init_loss)
    second = nbeta * (trace[:, half:].mean(1) - init_loss)
    diffs = second - first
    drift = float(diffs.mean())
    if chains >= 2:
        drift_se = float(diffs.std(ddof=1) / math.sqrt(chains))
    else:
        # one chain: the spread of λ̂ over 8 batches of the window stands in for the spread across chains
        batches = np.array_split(nbeta * (trace[0] - init_loss), 8)
        drift_se = float(np.std([b.mean() for b in batches], ddof=1) * 2 / math.sqrt(8))
    scale = abs(float(nbeta * (trace.mean() - init_loss)))
    flat = not (abs(drift) > DRIFT_SIGMAS * drift_se and abs(drift) > DRIFT_RELATIVE * max(scale, 1e-12))
    return {"drift": drift, "drift_se": drift_se, "flat": flat}


def trend(trace: np.ndarray, nbeta: float, init_loss: float) -> dict[str, Any]:
    """λ̂ over the 10% of steps from the chain's midpoint vs over its last 10%, across chains.

    A chain that climbs slowly for its whole length looks flat inside a short sampling window (the
    paper's 90% burn-in leaves one), yet λ̂ is far too low. An equilibrated chain has no such rise,
    so one beyond 2 standard errors and TREND_RELATIVE of λ̂ means "not there yet".
    """
    chains, steps = trace.shape
    width = steps // 10
    if width < 2:
        return {"middle": None, "end": None, "rise": None, "rise_se": None, "ok": None}
    middle = nbeta * (trace[:, steps // 2: steps // 2 + width].mean(1) - init_loss)
    end = nbeta * (trace[:, steps - width:].mean(1) - init_loss)
    rises = end - middle
    rise = float(rises.mean())
    rise_se = float(rises.std(ddof=1) / math.sqrt(chains)) if chains >= 2 else 0.0
    ok = not (rise > DRIFT_SIGMAS * rise_se and rise > TREND_RELATIVE * abs(float(end.mean())))
    return {"middle": float(middle.mean()), "end": float(end.mean()), "rise": rise, "rise_se": rise_se, "ok": ok}


def acceptance_band(num_params: int | None = None) -> tuple[float, float, float]:
    """(low, goal, high) of the MALA acceptance for a model of this size: 0.90, 0.92, 0.95 from
    `full_dimension` parameters up, tighter below (adaptation.effective_target says why)."""
    low, high = defaults.ACCEPTANCE_TARGET
    if num_params is None:
        return low, defaults.ACCEPTANCE_GOAL, high
    full = defaults.AUTO_FULL_DIMENSION
    return tuple(effective_target(a, num_params, full) for a in (low, defaults.ACCEPTANCE_GOAL, high))


def suggested_step_size(step_size: float, acceptance: float, num_params: int | None = None) -> float:
    """ε that should bring mean MALA acceptance to the goal.

    For Langevin proposals the rejection rate grows like ε^(3/2), so ε scales by
    ((1 − goal)/(1 − a))^(2/3); the factor is kept within [1/10, 10] so one suggestion is never wild.
    """
    reject = max(1.0 - acceptance, 1e-6)
    factor = ((1.0 - acceptance_band(num_params)[1]) / reject) ** (2.0 / 3.0)
    return float(step_size * min(max(factor, 0.1), 10.0))


def verdicts(
    *,
    llc_mean: float | None,
    llc_se: float | None,
    acceptance: float | None,
    step_size: float | None,
    diverged: list[dict[str, Any]],
    chains: int,
    flat: dict[str, Any],
    rhat: float | None,
    partial: bool,
    used_burnin: bool,
    long_trend: dict[str, Any] | None = None,
    num_params: int | None = None,
    minibatch_heat: float | None = None,
    batch_size: int | None = None,
    n: int | None = None,
    calibrated: bool = False,
    start_comparison: dict[str, Any] | None = None,
) -> list[Verdict]:
    """Plain-language findings, most serious first, each saying what to change. `step_size` is None
    when chains ran with different ε (a sweep): the findings then say which way to move it."""
    found: list[Verdict] = []
    low, _, high = acceptance_band(num_params)
    if diverged:
        which = ", ".join(f"chain {d['chain']} at step {d['step']}" for d in diverged[:5])
        smaller = step_size / 3 if step_size else None
        severity = "error" if len(diverged) == chains else "warning"
        found.append(Verdict(
            "diverged", severity,
            f"{len(diverged)} of {chains} chains diverged ({which}); "
            + ("no healthy chain is left, so there is no estimate. " if len(diverged) == chains else "λ̂ uses the healthy chains only. ")
            + "The step size is too large: " + _try("lower ε", smaller),
            _suggest(smaller),
        ))
    if acceptance is not None and acceptance < low:
        new = suggested_step_size(step_size, acceptance, num_params) if step_size else None
        found.append(Verdict(
            "step_too_large", "warning",
            f"MALA acceptance {acceptance:.3g} is below {low:.3g}: the step size is too large, so the "
            "discretisation error inflates λ̂. " + _try("Lower ε", new),
            _suggest(new),
        ))
    if llc_mean is not None and llc_mean < 0:
        found.append(Verdict(
            "negative_llc", "error",
            f"λ̂ = {llc_mean:.3g} is negative: the chains found lower loss than at w*. Either w* is not a "
            "local minimum (train it further) or the step size is too large (lower ε).",
        ))
    if flat.get("flat") is False:
        direction = "rising" if flat["drift"] > 0 else "falling"
        found.append(Verdict(
            "not_equilibrated", "warning",
            f"The loss trace is still {direction} after burn-in (λ̂ moved by {flat['drift']:.3g} ± "
            f"{flat['drift_se']:.2g} between the two halves of the sampling window), so the chains have not "
            "equilibrated and λ̂ is " + ("an under-estimate" if flat["drift"] > 0 else "unreliable")
            + ". Run more steps, or raise ε if acceptance allows.",
            {"steps": "x2"},
        ))
    if long_trend and long_trend.get("ok") is False and flat.get("flat") is not False:
        found.append(Verdict(
            "still_climbing", "warning",
            f"λ̂ was {long_trend['middle']:.3g} over the steps just after the chains' midpoint and "
            f"{long_trend['end']:.3g} over the last 10%: the loss is still climbing slowly, so λ̂ is likely "
            "an under-estimate even though the sampling window looks flat. Run several times more steps "
            "(or a larger ε if acceptance allows) until λ̂ stops growing.",
            {"steps": "x5"},
        ))
    if start_comparison is not None and llc_mean is not None and _starts_disagree(start_comparison, llc_mean):
        low, high = sorted((start_comparison["from_w_star"]["llc"], start_comparison["from_spread"]["llc"]))
        found.append(Verdict(
            "starts_disagree", "warning",
            f"Chains started at w* give λ̂ = {start_comparison['from_w_star']['llc']:.3g} and chains started "
            f"spread out give {start_comparison['from_spread']['llc']:.3g}: the two groups have not met, so the "
            f"chains have not mixed and λ̂ = {llc_mean:.3g} is their average, not an estimate to trust. "
            f"If the spread-out start is not too wide, λ lies between about {low:.3g} and {high:.3g}: "
            "run more steps until the groups agree.",
            {"steps": "x2"},
        ))
    if minibatch_heat is not None and llc_mean is not None and llc_mean > 0 and minibatch_heat > HEAT_WARNING * llc_mean:
        share = minibatch_heat / llc_mean
        # the heat falls like 1/batch (for batches well below n) and is proportional to ε
        bigger = min(n, int(math.ceil(batch_size * share / defaults.MINIBATCH_HEAT_LIMIT))) if batch_size and n else None
        smaller = step_size * defaults.MINIBATCH_HEAT_LIMIT / share if step_size else None
        found.append(Verdict(
            "minibatch_noise", "warning",
            f"Minibatch gradient noise heats the chains: about {minibatch_heat:.3g} of λ̂ ({share:.0%}) is that heat, "
            "which the MALA acceptance cannot see, so λ̂ is too high by about that much. Use a larger batch"
            + (f" (batch_size {bigger})" if bigger else "") + " or a smaller step size"
            + (f" (ε = {smaller:.2g})" if smaller else "") + ".",
            {"batch_size": bigger} if bigger else _suggest(smaller),
        ))
    if rhat is not None and rhat > RHAT_LIMIT:
        found.append(Verdict(
            "chains_disagree", "warning",
            f"R-hat of the loss traces is {rhat:.2f} (> {RHAT_LIMIT}): chains sample different regions. "
            "Run longer, or raise γ if chains wander away from w*.",
        ))
    # after "auto" calibration (on one fixed batch, with accept/reject) a high acceptance on the
    # run's changing minibatches is no reason to grow ε: it is inflated by the batch-to-batch change
    if (acceptance is not None and acceptance > high and flat.get("flat") is not False and not diverged
            and not calibrated):
        new = suggested_step_size(step_size, acceptance, num_params) if step_size else None
        found.append(Verdict(
            "step_could_grow", "info",
            f"MALA acceptance {acceptance:.3g} is above {high:.3g}: the step size could grow"
            + (f" to about ε = {new:.2g}" if new else "") + ", which mixes faster for the same number of steps.",
            _suggest(new),
        ))
    if partial:
        found.append(Verdict(
            "partial", "info",
            "The run was stopped early: λ̂ comes from the draws taken so far"
            + ("." if used_burnin else ", and as burn-in had not ended it uses the second half of them."),
        ))
    if not [v for v in found if v.severity in ("warning", "error")]:
        acc = "" if acceptance is None else f"acceptance {acceptance:.2f}, "
        found.insert(0, Verdict("ok", "ok", f"No problems found: {acc}flat trace after burn-in, no divergence."))
    return found


def _starts_disagree(comparison: dict[str, Any], llc_mean: float) -> bool:
    """Apart by more than START_GAP_SIGMAS combined standard errors and START_GAP_RELATIVE of λ̂."""
    gap, gap_se = abs(comparison["gap"]), comparison.get("gap_se")
    return gap > START_GAP_RELATIVE * abs(llc_mean) and (gap_se is None or gap > START_GAP_SIGMAS * gap_se)


def _try(fallback: str, step_size: float | None) -> str:
    return f"try ε = {step_size:.2g}." if step_size else f"{fallback}."


def _suggest(step_size: float | None) -> dict[str, Any] | None:
    return {"step_size": step_size} if step_size else None


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
