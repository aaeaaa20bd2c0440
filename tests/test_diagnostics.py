"""Diagnostics on synthetic traces whose answer is known."""

import numpy as np
import pytest

from llc_core import diagnostics


def noisy(chains, steps, level, slope=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return level + slope * np.arange(steps)[None, :] + rng.normal(0, 0.01, (chains, steps))


def test_flat_trace_passes_and_rising_trace_is_caught():
    flat = diagnostics.flatness(noisy(8, 1000, 1.0), nbeta=10.0, init_loss=0.0)
    assert flat["flat"] is True
    rising = diagnostics.flatness(noisy(8, 1000, 1.0, slope=1e-3), nbeta=10.0, init_loss=0.0)
    assert rising["flat"] is False and rising["drift"] > 0


def test_slow_climb_over_the_whole_chain_is_caught_by_the_trend():
    # λ̂ rises by nβ·slope·4000 = 4 between the windows at 50-60% and 90-100% of the steps
    trace = noisy(8, 10_000, 1.0, slope=1e-4)
    trend = diagnostics.trend(trace, nbeta=10.0, init_loss=0.0)
    assert trend["ok"] is False and trend["rise"] == pytest.approx(4.0, rel=0.05)
    assert diagnostics.trend(noisy(8, 10_000, 1.0), nbeta=10.0, init_loss=0.0)["ok"] is True


def test_rhat_and_ess_from_arviz():
    rhat, ess = diagnostics.rhat_ess(noisy(4, 500, 1.0))
    assert rhat == pytest.approx(1.0, abs=0.02) and ess > 1000
    shifted = noisy(4, 500, 1.0) + np.array([[0.0], [0.0], [0.0], [0.1]])
    assert diagnostics.rhat_ess(shifted)[0] > 1.1


def test_suggested_step_moves_acceptance_towards_the_goal():
    assert diagnostics.suggested_step_size(1e-4, 0.5) < 1e-4
    assert diagnostics.suggested_step_size(1e-4, 0.99) > 1e-4
    assert diagnostics.suggested_step_size(1e-4, 0.92) == pytest.approx(1e-4)
    assert diagnostics.suggested_step_size(1e-4, 1.0) == pytest.approx(1e-3)  # capped at ×10


def test_verdicts_say_what_to_change():
    common = dict(llc_se=0.01, step_size=1e-4, chains=4, rhat=1.0, partial=False, used_burnin=True,
                  flat={"flat": True, "drift": 0.0, "drift_se": 0.1})
    low = diagnostics.verdicts(llc_mean=1.0, acceptance=0.71, diverged=[], **common)
    assert low[0].code == "step_too_large" and "0.71" in low[0].message
    assert low[0].suggestion["step_size"] < 1e-4 and "ε = " in low[0].message
    negative = diagnostics.verdicts(llc_mean=-0.5, acceptance=0.93, diverged=[], **common)
    assert [v.code for v in negative] == ["negative_llc"]
    good = diagnostics.verdicts(llc_mean=1.0, acceptance=0.93, diverged=[], **common)
    assert [v.code for v in good] == ["ok"]


def test_minibatch_heat_warns_with_a_batch_size_and_calibrated_runs_do_not_grow_the_step():
    common = dict(llc_se=0.01, step_size=1e-4, chains=4, rhat=1.0, partial=False, used_burnin=True,
                  flat={"flat": True, "drift": 0.0, "drift_se": 0.1}, diverged=[])
    hot = diagnostics.verdicts(llc_mean=100.0, acceptance=0.93, minibatch_heat=20.0, batch_size=100, n=10_000, **common)
    assert hot[0].code == "minibatch_noise" and "20%" in hot[0].message
    # heat falls like 1/batch: 20% -> the 3% auto aims at needs about 6.7x the batch
    assert hot[0].suggestion == {"batch_size": 667}
    mild = diagnostics.verdicts(llc_mean=100.0, acceptance=0.93, minibatch_heat=5.0, batch_size=100, n=10_000, **common)
    assert [v.code for v in mild] == ["ok"]
    high = dict(llc_mean=1.0, acceptance=0.99, num_params=5000, **common)
    assert "step_could_grow" in [v.code for v in diagnostics.verdicts(**high)]
    assert "step_could_grow" not in [v.code for v in diagnostics.verdicts(calibrated=True, **high)]


def test_step_could_grow_judges_acceptance_against_the_band_even_when_starts_disagree():
    # Before the verdicts were split into one function per check, the start groups' λ̂ overwrote the
    # acceptance band's upper edge, so acceptance 0.999 was compared with λ̂ = 30 and said nothing.
    evidence = dict(llc_mean=20.0, llc_se=1.0, acceptance=0.999, step_size=1e-4, diverged=[], chains=4,
                    flat={"flat": True, "drift": 0.0, "drift_se": 0.1}, rhat=1.0, partial=False, used_burnin=True,
                    num_params=1000, start_comparison={"from_w_star": {"llc": 10.0, "se": 0.5},
                                                       "from_spread": {"llc": 30.0, "se": 0.5},
                                                       "gap": 20.0, "gap_se": 0.7})
    codes = [v.code for v in diagnostics.verdicts(**evidence)]
    assert codes == ["starts_disagree", "step_could_grow"]
