"""Automatic step size: dual averaging on log ε (docs/METHOD.md §6) and the estimator's "auto" mode."""

import math

import pytest

from llc_core import LLCInputError, RunConfig, SamplerConfig, estimate_llc, run
from llc_core.sampling import adaptation

from test_estimator import quadratic_problem


def test_dual_averaging_finds_the_step_of_a_known_acceptance_curve():
    # With acceptance a(ε) = exp(−ε/ε_c) the target 0.92 is met at ε* = −ε_c log 0.92. Deterministic,
    # so the tolerance (3%) only has to cover the averaged iterate's remaining lag after 1000 updates.
    scale, target = 1e-3, 0.92
    state = adaptation.init(1e-6)
    for _ in range(1000):
        state = adaptation.update(state, math.exp(-adaptation.current_step_size(state) / scale), target)
    assert adaptation.final_step_size(state) == pytest.approx(-scale * math.log(target), rel=0.03)


def test_nan_acceptance_counts_as_a_failed_step():
    state = adaptation.init(1e-3)
    failed = adaptation.update(state, float("nan"), 0.92)
    zero = adaptation.update(state, 0.0, 0.92)
    assert failed == zero and adaptation.current_step_size(failed) < 10 * 1e-3


@pytest.mark.parametrize("start", [1e-7, 1e-1])
def test_auto_mode_lands_in_the_acceptance_band_from_far_away_starts(start):
    # The 4-parameter quadratic of test_estimator: with d = 4 < 20 the goal is 1 − 0.08·4/20 = 0.984
    # (band 0.98-0.99). From a step 4 orders too small or one that diverges at once, calibration (600
    # of 3000 steps) must find it. The mean acceptance of 16 chains × 120 measured steps has a
    # standard error below 0.002, so ±0.01 around the goal leaves room for ε's residual error only.
    model, x, y, h = quadratic_problem()
    sampler = SamplerConfig(step_size="auto", localization=1.0, nbeta=100.0, chains=16, steps=3000, burnin=0.4,
                            batch_size=len(x), calibration_steps=600)
    result = estimate_llc(model, x, y, sampler, dtype="float64", initial_step_size=start)
    calibration = result.calibration
    assert calibration["target_acceptance"] == pytest.approx(0.984)
    assert abs(result.mala_acceptance_mean - 0.984) < 0.01, result.mala_acceptance_mean
    assert calibration["steps"] == 600 and calibration["initial_step_size"] == start
    assert result.step_size == calibration["step_size"]  # the draws used the calibrated ε, fixed
    assert len(calibration["trace_step_size"]) == 600 and not result.diverged_chains
    # the estimator is unchanged: λ̂ before the heat correction (docs/METHOD.md §8) matches the fixed-ε
    # stationary formula at the chosen ε
    a = 100.0 * h + 1.0
    exact = float((0.5 * (100.0 * h / a) / (1 - result.step_size * a / 4)).sum())
    raw = result.llc_mean + result.heat_correction["mean"]
    assert abs(raw / exact - 1) < 0.05, (raw, exact)


def test_auto_through_a_config_and_its_default_calibration_length():
    config = RunConfig.from_dict({"model": {"kind": "potential", "powers": [1]}, "data": {"n": 1000},
                                  "sampler": {"step_size": "auto", "chains": 4, "steps": 1000, "burnin": 0.5}})
    result = run(config)
    # 10% of the steps, inside the burn-in: its extra gradients cost ≈ 0.1 / 1.15 of the run (≤ 20%)
    assert result.calibration["steps"] == 100
    assert result.config["sampler"]["step_size"] == "auto"  # feeding it back reruns the calibration
    # d = 1: the goal is 1 − 0.08/20 = 0.996 (a 1-D quadratic at 0.92 would be 35% high)
    assert result.calibration["target_acceptance"] == pytest.approx(0.996)
    assert 0.99 <= result.mala_acceptance_mean <= 1.0
    again = run(RunConfig.from_dict(result.config))
    assert again.llc_mean == result.llc_mean and again.step_size == result.step_size


@pytest.mark.parametrize("sampler, words", [
    ({"step_size": "fast"}, "auto"),
    ({"step_size": "auto", "burnin": 0}, "calibrat"),
    ({"step_size": "auto", "steps": 100, "burnin": 10, "calibration_steps": 50}, "exceeds the burn-in"),
    ({"step_size": "auto", "target_acceptance": 1.2}, "between 0 and 1"),
    ({"step_size": "auto", "calibration_steps": 0}, "calibration_steps"),
])
def test_bad_auto_settings_are_refused(sampler, words):
    config = RunConfig.from_dict({"model": {"kind": "potential", "powers": [1]}, "data": {"n": 100},
                                  "sampler": {"steps": 200, **sampler}})
    with pytest.raises(LLCInputError, match=words):
        run(config)


def test_one_step_size_per_chain():
    # Per-chain ε: chains with the same ε as a scalar run draw the very same numbers.
    model, x, y, _ = quadratic_problem()
    base = SamplerConfig(localization=1.0, nbeta=100.0, chains=2, steps=200, burnin=0.5, batch_size=len(x))
    scalar = estimate_llc(model, x, y, SamplerConfig(**{**vars(base), "step_size": 1e-3}), dtype="float64")
    per_chain = estimate_llc(model, x, y, base, dtype="float64", per_chain={"step_size": [1e-3, 1e-3]})
    assert scalar.llc_per_chain == pytest.approx(per_chain.llc_per_chain, rel=1e-9)
    mixed = estimate_llc(model, x, y, base, dtype="float64", per_chain={"step_size": [1e-3, 2e-3]})
    assert mixed.llc_per_chain[0] == pytest.approx(scalar.llc_per_chain[0], rel=1e-9)
    assert mixed.mala_acceptance_per_chain[1] < mixed.mala_acceptance_per_chain[0]
    with pytest.raises(LLCInputError, match="2 chains"):
        estimate_llc(model, x, y, base, per_chain={"step_size": [1e-3]})


def test_burnin_recheck_keeps_to_the_runs_own_acceptance_goal():
    # schedule.recheck_acceptance lowers ε when burn-in acceptance falls below the band around the
    # run's goal: low end 1 − 1.25 (1 − goal), i.e. 0.90 for 0.92 (the same ε as the diagnostics'
    # suggestion there) and 0.625 for a goal of 0.7, which a run that asked for 0.7 must not be cut at.
    import torch

    from llc_core import diagnostics
    from llc_core.sampling.sgld import SGLD
    from llc_core.schedule import recheck_acceptance

    kernel = SGLD(lambda w, b: (w.sum(-1), torch.ones_like(w)), torch.zeros(3), 1e-3, 1.0, 10.0)
    alive = torch.ones(2, dtype=torch.bool)

    def recheck(acceptance, target):
        return recheck_acceptance(kernel, [torch.full((2,), acceptance)], alive, target)[0].step_size

    assert recheck(0.91, 0.92) == 1e-3
    assert recheck(0.85, 0.92) == pytest.approx(diagnostics.suggested_step_size(1e-3, 0.85, 100))
    assert recheck(0.65, 0.7) == 1e-3
    assert recheck(0.5, 0.7) == pytest.approx(1e-3 * (0.3 / 0.5) ** (2 / 3))
    assert recheck(0.0, 0.99) == pytest.approx(1e-4)  # (0.01)^(2/3) = 0.046, but at most ×10 per recheck
