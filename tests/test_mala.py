"""Full-batch MALA, the exact baseline: it samples the posterior exactly where SGLD is biased."""

import pytest
import torch

from llc_core import LLCInputError, RunConfig, SamplerConfig, estimate_llc, run
from llc_core.sampling.mala import MALA

from test_estimator import quadratic_problem

H = torch.tensor([4.0, 6.0, 8.0, 10.0], dtype=torch.float64)
NBETA, GAMMA = 100.0, 1.0


def quadratic(w, batch):
    return 0.5 * (H * w**2).sum(-1), H * w


def test_sample_variance_matches_the_gaussian_posterior():
    # U = t·½ Σ h w² + ½ γ ||w||² is Gaussian with variance 1/(t h + γ) per coordinate. At
    # ε (t h_max + γ) = 1.5, SGLD's stationary variance is off by 1/(1 − ε a/4): 60% on the stiffest
    # coordinate; MALA's accept/reject must remove that. 1000 chains × 1500 draws (autocorrelation
    # time ≲ 5 steps here) estimate each variance to ≈ 0.3%, so 2% is > 5 standard errors.
    step = 1.5 / (NBETA * float(H.max()) + GAMMA)
    kernel = MALA(quadratic, torch.zeros(4, dtype=torch.float64), step, GAMMA, NBETA)
    generator = torch.Generator().manual_seed(0)
    state = kernel.init(torch.zeros(1000, 4, dtype=torch.float64))
    draws, acceptance = [], []
    for t in range(1800):
        state, info = kernel.step(state, None, generator)
        acceptance.append(float(info.acceptance.mean()))
        if t >= 300:
            draws.append(state.position)
    samples = torch.stack(draws)
    variance = samples.square().mean((0, 1))
    exact = 1 / (NBETA * H + GAMMA)
    torch.testing.assert_close(variance, exact, rtol=0.02, atol=0)
    assert 0.3 < sum(acceptance) / len(acceptance) < 0.99  # a real accept/reject, not a no-op


def test_mala_through_the_estimator_matches_the_continuous_formula():
    # With exact sampling, t·E[K] = ½ Σ t h/(t h + γ) at ANY ε: no 1/(1 − εa/4) factor (which at this
    # ε would add 15%). 32 chains × 2000 draws: standard error ≈ 1%, tolerance 4%.
    model, x, y, h = quadratic_problem()
    a = NBETA * h + GAMMA
    step = 0.5 / float(a.max())
    sampler = SamplerConfig(step_size=step, localization=GAMMA, nbeta=NBETA, chains=32, steps=2500, burnin=500,
                            algorithm="mala")
    result = estimate_llc(model, x, y, sampler, dtype="float64")
    exact = float((0.5 * NBETA * h / a).sum())
    assert abs(result.llc_mean / exact - 1) < 0.04, (result.llc_mean, exact)
    assert result.config["sampler"]["algorithm"] == "mala" and result.config["sampler"]["batch_size"] == len(x)


@pytest.mark.parametrize("sampler, words", [
    ({"algorithm": "mala", "batch_size": 10}, "full dataset"),
    ({"algorithm": "mala", "preconditioner": "rmsprop"}, "fixed preconditioner"),
    ({"algorithm": "hmc"}, "sgld"),
])
def test_bad_mala_settings_are_refused(sampler, words):
    config = RunConfig.from_dict({"model": {"kind": "potential", "powers": [1]}, "data": {"n": 100},
                                  "sampler": {"steps": 200, "step_size": 1e-3, **sampler}})
    with pytest.raises(LLCInputError, match=words):
        run(config)


def test_mala_with_auto_step_size_is_accurate_on_a_regular_model():
    # One 5x20 matrix (λ = d/2 = 50), full-batch MALA with ε calibrated by "auto": MALA samples
    # exactly at any ε, so λ̂ must match λ to its standard error (tolerance 8%: ~3 se for 4 chains ×
    # 1000 draws).
    from llc_core import RunConfig, run

    result = run(RunConfig.from_dict({"model": {"kind": "dln", "widths": [20, 5], "seed": 0}, "data": {"n": 2000},
                                      "sampler": {"algorithm": "mala", "step_size": "auto", "batch_size": 2000,
                                                  "chains": 4, "steps": 2000, "burnin": 0.5}}))
    assert result.calibration is not None
    assert abs(result.llc_mean - 50) / 50 < 0.08, result.llc_mean
