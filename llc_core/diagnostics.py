"""Convergence diagnostics (R-hat, ESS, flatness, trend) and the plain-language verdicts on a run."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from arviz_stats.base import array_stats

from llc_core import defaults
from llc_core.result import RunResult, Verdict
from llc_core.sampling.adaptation import effective_target

# A drift between the two halves of the sampling window counts only if it is both statistically
# clear (more than 2 standard errors across chains) and practically large (5% of λ̂).
DRIFT_SIGMAS = 3.0  # 2 fired on 2 of 13 accurate runs of the known-λ corpus (benchmarks/bench_diagnostics.py)
DRIFT_RELATIVE = 0.05
RHAT_LIMIT = 1.1
# start_spread runs: the two groups of chains disagree when this far apart (both must hold)
START_GAP_SIGMAS = 2.0
START_GAP_RELATIVE = 0.10
# warn when minibatch noise is this share of λ̂ ("auto" aims below defaults.MINIBATCH_HEAT_LIMIT)
HEAT_WARNING = 0.10
# with the heat correction applied (docs/METHOD.md §8) the minibatch heat is already taken off λ̂ to first
# order; a heat this large a share of λ̂ is past where first order can be trusted
CORRECTED_HEAT_WARNING = 0.25
TREND_RELATIVE = 0.10
# R-hat warns only when the chains' spread matters: λ̂'s standard error above this share of λ̂
RHAT_SE_SHARE = 0.05
# whatever R-hat says, a standard error above this share of λ̂ is too noisy to read
IMPRECISE_SHARE = 0.15
# below the acceptance band's low edge a run is noted; below this (scaled like the band for small
# models) it is warned: at 0.85 on the known-λ corpus λ̂ was still within 5% (benchmarks/bench_diagnostics.py)
WARNING_ACCEPTANCE = 0.80
# chains are stuck when a fixed ε is under 1/STUCK_RATIO of the model's curvature rule, or (no rule
# known) their rejection rate is under STUCK_REJECTION of the goal's (ε ≲ 1/20 of the goal's)
STUCK_RATIO = 30.0
# a run with under 1/TOO_FEW_STEPS of the kind's recommended steps is warned about
TOO_FEW_STEPS = 4
STUCK_REJECTION = 0.01
# γ above this share of nβ: the localization competes with the likelihood (the paper's γ are 1-100
# against nβ of 10^3-10^5)
STRONG_LOCALIZATION = 0.1
REGULAR_SHARE = 0.9
# a measured pull of γ on λ̂ beyond this share warns; the suggested γ aims at LOCALIZATION_GOAL
LOCALIZATION_BIAS = 0.10
LOCALIZATION_GOAL = 0.03


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

    A trace that still rises after burn-in makes λ̂ an under-estimate (docs/METHOD.md §3); the drift
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
    return {"drift": drift, "drift_se": drift_se, "flat": is_flat(drift, drift_se, scale), "scale": scale}


def is_flat(drift: float, drift_se: float, scale: float) -> bool:
    """A drift counts when it is beyond DRIFT_SIGMAS standard errors and DRIFT_RELATIVE of λ̂."""
    return not (abs(drift) > DRIFT_SIGMAS * drift_se and abs(drift) > DRIFT_RELATIVE * max(scale, 1e-12))


def is_climbing(rise: float, rise_se: float, end: float) -> bool:
    """A rise counts when it is beyond DRIFT_SIGMAS standard errors and TREND_RELATIVE of λ̂."""
    return rise > DRIFT_SIGMAS * rise_se and rise > TREND_RELATIVE * abs(end)


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
    ok = not is_climbing(rise, rise_se, float(end.mean()))
    return {"middle": float(middle.mean()), "end": float(end.mean()), "rise": rise, "rise_se": rise_se, "ok": ok}


def acceptance_band(num_params: int | None = None) -> tuple[float, float, float]:
    """(low, goal, high) of the MALA acceptance for a model of this size: 0.90, 0.92, 0.95 from
    `full_dimension` parameters up, tighter below (adaptation.effective_target says why)."""
    low, high = defaults.ACCEPTANCE_TARGET
    if num_params is None:
        return low, defaults.ACCEPTANCE_GOAL, high
    full = defaults.AUTO_FULL_DIMENSION
    return tuple(effective_target(a, num_params, full) for a in (low, defaults.ACCEPTANCE_GOAL, high))


def suggested_step_size(step_size: float, acceptance: float, num_params: int | None = None,
                        limit: float = 10.0) -> float:
    """ε that should bring mean MALA acceptance to the goal.

    For Langevin proposals the rejection rate grows like ε^(3/2), so ε scales by
    ((1 − goal)/(1 − a))^(2/3); the factor is kept within [1/limit, limit] so one suggestion is never wild.
    """
    reject = max(1.0 - acceptance, 1e-6)
    factor = ((1.0 - acceptance_band(num_params)[1]) / reject) ** (2.0 / 3.0)
    return float(step_size * min(max(factor, 1.0 / limit), limit))


@dataclass(frozen=True)
class Evidence:
    """What the verdicts judge a run by. `step_size` is None when chains ran with different ε (a
    sweep): the findings then say which way to move it. `calibrated`: ε came from "auto"."""

    llc_mean: float | None
    llc_se: float | None
    acceptance: float | None
    step_size: float | None
    diverged: list[dict[str, Any]]
    chains: int
    flat: dict[str, Any]
    rhat: float | None
    partial: bool
    used_burnin: bool
    long_trend: dict[str, Any] | None = None
    num_params: int | None = None
    minibatch_heat: float | None = None
    batch_size: int | None = None
    n: int | None = None
    calibrated: bool = False
    start_comparison: dict[str, Any] | None = None
    steps: int | None = None  # the steps the run planned
    localization: float | None = None  # γ
    nbeta: float | None = None
    reference: Reference | None = None  # what the model kind recommends, when it is a zoo kind
    localization_effect: dict[str, Any] | None = None  # RunResult.localization_effect
    heat_correction: dict[str, Any] | None = None  # RunResult.heat_correction

    @property
    def heat_corrected(self) -> bool:
        return bool(self.heat_correction and self.heat_correction.get("applied"))

    @property
    def band(self) -> tuple[float, float, float]:
        return acceptance_band(self.num_params)

    @property
    def trace_flat(self) -> bool:
        flat = self.flat
        if flat.get("drift") is None or flat.get("drift_se") is None:
            return flat.get("flat") is not False
        scale = flat.get("scale", abs(self.llc_mean or 0.0))
        return is_flat(flat["drift"], flat["drift_se"], scale)

    @property
    def climbing(self) -> bool:
        trend = self.long_trend or {}
        if trend.get("rise") is None or trend.get("rise_se") is None:
            return False
        return is_climbing(trend["rise"], trend["rise_se"], trend["end"])

    @property
    def rejection(self) -> float | None:
        return None if self.acceptance is None else 1.0 - self.acceptance

    def more_steps(self, factor: int) -> dict[str, Any] | None:
        """`factor` × the steps, or at once the model's recommended count when the run used far fewer."""
        if not self.steps:
            return None
        recommended = self.reference.steps if self.reference and self.reference.steps else 0
        return {"steps": int(max(self.steps * factor, recommended))}


@dataclass(frozen=True)
class Reference:
    """What the model kind recommends (runner.run knows it; the bare API does not): the curvature
    rule's ε at this run's nβ and γ, whether the kind's default ε is "auto" (calibrated from that
    rule) rather than the rule itself, and its step count."""

    step_size: float | None = None
    auto: bool = True
    steps: int | None = None


def judge(result: RunResult, reference: Reference | None = None) -> list[Verdict]:
    """The verdicts on a finished (or stopped) run, from what its RunResult reports."""
    sampler = result.config.get("sampler", {})
    flatness = dict(result.flatness or {})
    return verdicts(
        llc_mean=result.llc_mean, llc_se=result.llc_se, acceptance=result.mala_acceptance_mean,
        step_size=result.step_size, diverged=result.diverged_chains, chains=len(result.llc_per_chain),
        flat=flatness, rhat=result.rhat, partial=result.partial,
        used_burnin=result.steps_completed > result.burnin_steps, long_trend=flatness.get("trend"),
        num_params=result.num_params, minibatch_heat=result.minibatch_heat, batch_size=sampler.get("batch_size"),
        n=result.n, calibrated=result.calibration is not None, start_comparison=result.start_comparison,
        steps=sampler.get("steps"), localization=sampler.get("localization"), nbeta=result.nbeta,
        reference=reference, localization_effect=result.localization_effect, heat_correction=result.heat_correction,
    )


def verdicts(**evidence: Any) -> list[Verdict]:
    """Plain-language findings, most serious first, each saying what to change (keywords: the fields
    of Evidence). A run that was stopped early never reads "No problems found"."""
    run = Evidence(**evidence)
    found = [verdict for check in CHECKS if (verdict := check(run)) is not None]
    if not run.partial and not [v for v in found if v.severity in ("warning", "error")]:
        acc = "" if run.acceptance is None else f"acceptance {run.acceptance:.3g}, "
        found.insert(0, Verdict("ok", "ok", f"No problems found: {acc}flat trace after burn-in, no divergence."))
    return found


def diverged(run: Evidence) -> Verdict | None:
    if not run.diverged:
        return None
    which = ", ".join(f"chain {d['chain']} at step {d['step']}" for d in run.diverged[:5])
    none_left = len(run.diverged) == run.chains
    # a fixed ε that diverged: the kind's own choice (its rule, or "auto" calibrated from it) is the
    # well-founded value, unless ε was already at most that; then, and for a calibrated ε that diverged
    # all the same (a sharp region away from w*), a tenth of it
    kind = kind_step_size(run)
    below_kind = isinstance(kind, float) and run.step_size is not None and run.step_size <= kind
    smaller: float | str | None = (kind if not run.calibrated and not below_kind
                                   else run.step_size / 10 if run.step_size else None)
    return Verdict(
        "diverged", "error" if none_left else "warning",
        f"{len(run.diverged)} of {run.chains} chains diverged ({which}); "
        + ("no healthy chain is left, so there is no estimate. " if none_left else "λ̂ uses the healthy chains only. ")
        + "The step size is too large: " + _try("lower ε", smaller),
        _suggest(smaller),
    )


def chains_stuck(run: Evidence) -> Verdict | None:
    """A fixed ε far below the model's curvature rule, or (with no rule known) so small that almost
    no proposal would be rejected: the chains barely moved."""
    if run.diverged or run.calibrated or run.step_size is None:
        return None
    rule = run.reference.step_size if run.reference else None
    if rule:
        if run.step_size * STUCK_RATIO > rule:
            return None
        better: float | str = kind_step_size(run)
        why = f"ε = {run.step_size:.2g} is 1/{rule / run.step_size:.0f} of the ε this model's curvature suggests"
    else:
        if run.rejection is None or run.rejection > STUCK_REJECTION * (1.0 - run.band[1]):
            return None
        better = "auto"
        why = f"MALA acceptance {run.acceptance:.6g} means the step size is far smaller than needed"
    return Verdict(
        "chains_stuck", "warning",
        f"The chains barely moved: {why}, so they have not explored the posterior and λ̂ is an "
        "under-estimate. " + _try("Raise ε", better),
        _suggest(better),
    )


def step_too_large(run: Evidence) -> Verdict | None:
    limit = warning_floor(run.num_params)
    if run.acceptance is None or run.acceptance >= limit:
        return None
    new = suggested_step_size(run.step_size, run.acceptance, run.num_params, limit=100.0) if run.step_size else None
    return Verdict(
        "step_too_large", "warning",
        f"MALA acceptance {_pair(run.acceptance, limit)} : the step size is too large, so the "
        "discretisation error inflates λ̂. " + _try("Lower ε", new),
        _suggest(new),
    )


def too_few_steps(run: Evidence) -> Verdict | None:
    """Far fewer steps than the model kind recommends (its defaults are measured: README "Validation")."""
    recommended = run.reference.steps if run.reference else None
    if not (recommended and run.steps) or run.steps * TOO_FEW_STEPS >= recommended:
        return None
    return Verdict(
        "too_few_steps", "warning",
        f"{run.steps:,} steps is far fewer than this model needs ({recommended:,} by default): the chains "
        "have not had time to reach equilibrium, so λ̂ is not to be trusted, even if the trace looks flat.",
        {"steps": int(recommended)},
    )


def negative_llc(run: Evidence) -> Verdict | None:
    if run.llc_mean is None or run.llc_mean >= 0:
        return None
    return Verdict(
        "negative_llc", "error",
        f"λ̂ = {run.llc_mean:.3g} is negative: the chains found lower loss than at w*. Either w* is not a "
        "local minimum (train it further) or the step size is too large (lower ε).",
    )


def localization_too_strong(run: Evidence) -> Verdict | None:
    """λ̂ measurably pulled down by γ (the draws' dλ̂/d(log γ), RunResult.localization_effect, beyond
    LOCALIZATION_BIAS of λ̂ and 3 standard errors), or γ comparable to nβ while λ̂ is below its
    ceiling d/2 (docs/METHOD.md §3: the bias along a w^(2k) direction is about −γ·(nβ)^(−1/k))."""
    gamma, llc = run.localization, run.llc_mean
    if not isinstance(gamma, (int, float)) or not gamma or llc is None or llc <= 0:
        return None
    # while the loss still rises, distance and loss grow together over time, and that trend, not γ,
    # makes their covariance: the measured effect means nothing until the trace is flat
    share = _measured_bias(run) if run.trace_flat and not run.climbing else None
    by_rule = (run.nbeta and gamma > STRONG_LOCALIZATION * run.nbeta
               and not (run.num_params and llc >= REGULAR_SHARE * run.num_params / 2))
    if share is None and not by_rule:
        return None
    if share is not None and 0 < share < 1:
        # quadratic directions: bias = γ/(nβh + γ); this γ brings it to LOCALIZATION_GOAL
        better = gamma * (LOCALIZATION_GOAL / (1 - LOCALIZATION_GOAL)) * ((1 - share) / share)
        what = f"measured on the draws, λ̂ is about {share:.0%} lower than without the localization"
    else:
        better = defaults.LOCALIZATION if gamma > defaults.LOCALIZATION else gamma / 10
        what = f"γ is {gamma / run.nbeta:.2g} × nβ"
    better = float(f"{better:.2g}")
    return Verdict(
        "localization_too_strong", "warning",
        f"γ = {gamma:.3g} pulls λ̂ down: {what}. The localization term competes with the loss and holds the "
        f"chains close to w*, most along the flattest directions. Try γ = {better:g} (smaller γ lets chains "
        "wander further; raise it again only if they drift off).",
        {"localization": better},
    )


def _measured_bias(run: Evidence) -> float | None:
    """−(dλ̂/d log γ)/λ̂ when it is beyond LOCALIZATION_BIAS and 3 standard errors, else None."""
    effect = run.localization_effect or {}
    value, se = effect.get("effect"), effect.get("se")
    if value is None or se is None or run.llc_mean is None or run.llc_mean <= 0:
        return None
    share = -value / run.llc_mean
    return share if share > LOCALIZATION_BIAS and -value > DRIFT_SIGMAS * se else None


def not_equilibrated(run: Evidence) -> Verdict | None:
    if run.trace_flat:
        return None
    drift = run.flat["drift"]
    grow = run.acceptance is not None and run.acceptance > run.band[2] and not run.calibrated
    return Verdict(
        "not_equilibrated", "warning",
        f"The loss trace is still {'rising' if drift > 0 else 'falling'} after burn-in (λ̂ moved by {drift:.3g} ± "
        f"{run.flat['drift_se']:.2g} between the two halves of the sampling window), so the chains have not "
        "equilibrated and λ̂ is " + ("an under-estimate" if drift > 0 else "unreliable")
        + ". Run more steps" + (", or raise ε: acceptance allows it." if grow else "."),
        run.more_steps(2),
    )


def still_climbing(run: Evidence) -> Verdict | None:
    trend = run.long_trend
    if not (run.climbing and run.trace_flat):
        return None
    return Verdict(
        "still_climbing", "warning",
        f"λ̂ was {trend['middle']:.3g} over the steps just after the chains' midpoint and "
        f"{trend['end']:.3g} over the last 10%: the loss is still climbing slowly, so λ̂ is likely "
        "an under-estimate even though the sampling window looks flat. Run several times more steps "
        "until λ̂ stops growing.",
        run.more_steps(4),
    )


def starts_disagree(run: Evidence) -> Verdict | None:
    comparison = run.start_comparison
    if comparison is None or run.llc_mean is None or not _starts_disagree(comparison, run.llc_mean):
        return None
    at_w_star, spread = comparison["from_w_star"]["llc"], comparison["from_spread"]["llc"]
    low, high = sorted((at_w_star, spread))
    return Verdict(
        "starts_disagree", "warning",
        f"Chains started at w* give λ̂ = {at_w_star:.3g} and chains started "
        f"spread out give {spread:.3g}: the two groups have not met, so the "
        f"chains have not mixed and λ̂ = {run.llc_mean:.3g} is their average, not an estimate to trust. "
        f"If the spread-out start is not too wide, λ lies between about {low:.3g} and {high:.3g}: "
        "run more steps until the groups agree.",
        run.more_steps(2),
    )


def minibatch_noise(run: Evidence) -> Verdict | None:
    heat, llc = run.minibatch_heat, run.llc_mean
    if run.heat_corrected and llc is not None:
        llc += run.heat_correction["mean"]  # the heat's share of the λ̂ it heated
    limit = CORRECTED_HEAT_WARNING if run.heat_corrected else HEAT_WARNING
    if heat is None or llc is None or llc <= 0 or heat <= limit * llc:
        return None
    share = heat / llc
    what = ("λ̂ has it taken off (the heat correction), but only to first order, which is not to be trusted "
            "for a heat this large" if run.heat_corrected else "so λ̂ is too high by about that much")
    # the heat falls like 1/batch (for batches well below n) and is proportional to ε
    bigger = (min(run.n, int(math.ceil(run.batch_size * share / defaults.MINIBATCH_HEAT_LIMIT)))
              if run.batch_size and run.n else None)
    smaller = run.step_size * defaults.MINIBATCH_HEAT_LIMIT / share if run.step_size else None
    return Verdict(
        "minibatch_noise", "warning",
        f"Minibatch gradient noise heats the chains: about {heat:.3g} of λ̂ ({share:.0%}) is that heat, "
        f"which the MALA acceptance cannot see; {what}. Use a larger batch"
        + (f" (batch_size {bigger})" if bigger else "") + " or a smaller step size"
        + (f" (ε = {smaller:.2g})" if smaller else "") + ".",
        {"batch_size": bigger} if bigger else _suggest(smaller),
    )


def chains_disagree(run: Evidence) -> Verdict | None:
    """R-hat above the limit, and the chains' spread matters: the standard error of λ̂ is a sizeable
    share of it. (R-hat of loss traces exceeds 1.1 on most accurate runs of singular models, whose
    chains each wander a flat valley; alone it cried wolf on 3 of 4 accurate runs.)"""
    if run.rhat is None or run.rhat <= RHAT_LIMIT or run.llc_mean is None or run.llc_se is None:
        return None
    if run.llc_se <= RHAT_SE_SHARE * abs(run.llc_mean):
        return None
    return Verdict(
        "chains_disagree", "warning",
        f"R-hat of the loss traces is {run.rhat:.2f} (> {RHAT_LIMIT}) and λ̂'s standard error is "
        f"{run.llc_se / abs(run.llc_mean):.0%} of it: the chains sample different regions. Run more steps.",
        run.more_steps(2),
    )


def imprecise(run: Evidence) -> Verdict | None:
    """A standard error that is a large share of λ̂ (when R-hat has not already said why)."""
    if run.llc_mean is None or run.llc_se is None or run.llc_mean <= 0 or chains_disagree(run):
        return None
    if run.llc_se <= IMPRECISE_SHARE * run.llc_mean:
        return None
    return Verdict(
        "imprecise", "warning",
        f"λ̂'s standard error is {run.llc_se / run.llc_mean:.0%} of λ̂: the number is too noisy to read closely. "
        "Four times the steps halves the error (or use more chains).",
        run.more_steps(4),
    )


def step_could_grow(run: Evidence) -> Verdict | None:
    # after "auto" calibration (on one fixed batch, with accept/reject) a high acceptance on the
    # run's changing minibatches is no reason to grow ε: it is inflated by the batch-to-batch change
    high = run.band[2]
    if (run.acceptance is None or run.acceptance <= high or not run.trace_flat or run.diverged or run.calibrated
            or chains_stuck(run)):
        return None
    new = suggested_step_size(run.step_size, run.acceptance, run.num_params) if run.step_size else None
    return Verdict(
        "step_could_grow", "info",
        f"MALA acceptance {_pair(run.acceptance, high)}: the step size could grow"
        + (f" to about ε = {new:.2g}" if new else "") + ", which mixes faster for the same number of steps.",
        _suggest(new),
    )


def step_slightly_large(run: Evidence) -> Verdict | None:
    low = run.band[0]
    if run.acceptance is None or run.acceptance >= low or run.acceptance < warning_floor(run.num_params):
        return None
    new = suggested_step_size(run.step_size, run.acceptance, run.num_params) if run.step_size else None
    return Verdict(
        "step_slightly_large", "info",
        f"MALA acceptance {_pair(run.acceptance, low)}: the discretisation error may make λ̂ a few percent "
        + ("high beyond what the heat correction removes (its first order)" if run.heat_corrected else "high")
        + ". A slightly smaller ε would remove it" + (f" (ε = {new:.2g})." if new else "."),
        _suggest(new),
    )


def partial(run: Evidence) -> Verdict | None:
    if not run.partial:
        return None
    return Verdict(
        "partial", "warning",
        "The run was stopped early: λ̂ comes from the draws taken so far"
        + (", which cannot be judged like a finished run's." if run.used_burnin
           else ", and as burn-in had not ended it uses the second half of them: not an estimate to trust."),
    )


# In the order the findings are listed: most serious first.
CHECKS = (diverged, chains_stuck, step_too_large, too_few_steps, negative_llc, localization_too_strong, not_equilibrated,
          still_climbing, starts_disagree, minibatch_noise, chains_disagree, imprecise, partial, step_slightly_large,
          step_could_grow)


def kind_step_size(run: Evidence) -> float | str:
    """The ε the model kind itself would use: its rule's value, or "auto" (also when no kind is known)."""
    reference = run.reference
    return reference.step_size if reference and reference.step_size and not reference.auto else "auto"


def warning_floor(num_params: int | None) -> float:
    """The acceptance below which a run is warned about (under the band's low edge it is only noted):
    WARNING_ACCEPTANCE for large models, closer to 1 for small ones as the band itself is."""
    if num_params is None:
        return WARNING_ACCEPTANCE
    return effective_target(WARNING_ACCEPTANCE, num_params, defaults.AUTO_FULL_DIMENSION)


def _starts_disagree(comparison: dict[str, Any], llc_mean: float) -> bool:
    """Apart by more than START_GAP_SIGMAS combined standard errors and START_GAP_RELATIVE of λ̂."""
    gap, gap_se = abs(comparison["gap"]), comparison.get("gap_se")
    return gap > START_GAP_RELATIVE * abs(llc_mean) and (gap_se is None or gap > START_GAP_SIGMAS * gap_se)


def _try(fallback: str, step_size: float | str | None) -> str:
    if step_size == "auto":
        return "use the calibrated ε (step size \"auto\")."
    return f"try ε = {step_size:.2g}." if step_size else f"{fallback}."


def _suggest(step_size: float | str | None) -> dict[str, Any] | None:
    return {"step_size": step_size} if step_size else None


def _pair(acceptance: float, edge: float) -> str:
    """"0.874 is below 0.9", with enough digits that the two never read the same ("0.99 is below 0.99")."""
    digits = 3
    # also never round an acceptance below 1 up to "1" ("1 is above 0.995")
    while digits < 8 and (f"{acceptance:.{digits}g}" == f"{edge:.{digits}g}"
                          or (acceptance < 1 and float(f"{acceptance:.{digits}g}") >= 1)):
        digits += 1
    word = "below" if acceptance < edge else "above"
    return f"{acceptance:.{digits}g} is {word} {edge:.{digits}g}"


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def apply_suggestion(config: dict[str, Any], suggestion: dict[str, Any]) -> dict[str, Any]:
    """A RunConfig dict with a verdict's suggested sampler settings applied (the app's button)."""
    return {**config, "sampler": {**(config.get("sampler") or {}), **suggestion}}


def opposite_advice(suggestions: list[dict[str, Any] | None], step_size: float | None) -> bool:
    """Whether two suggestions move one setting in opposite directions (ε up and down, say)."""
    moves: dict[str, set[int]] = {}
    current = {"step_size": step_size}
    for suggestion in suggestions:
        for key, value in (suggestion or {}).items():
            if isinstance(value, (int, float)) and isinstance(current.get(key), (int, float)) and value != current[key]:
                moves.setdefault(key, set()).add(1 if value > current[key] else -1)
    return any(len(directions) > 1 for directions in moves.values())
