"""The SGLD kernel alone, on an exactly solvable quadratic (REFERENCE.md §4, quadratic check)."""

import math

import torch

from llc_core.sampling.sgld import SGLD, RMSprop

H = torch.tensor([4.0, 6.0, 8.0, 10.0], dtype=torch.float64)
NBETA, GAMMA = 100.0, 1.0
STEP = 0.5 / (NBETA * 10 + GAMMA)  # ε (t h_max + γ) = 0.5: the discretisation bias is large enough to see


def quadratic(w, batch):
    """L(w) = ½ Σ h_i w_i², so U = t·L + (γ/2)||w||² is Gaussian."""
    return 0.5 * (H * w**2).sum(-1), H * w


def exact_llc(step=STEP):
    a = NBETA * H + GAMMA
    return float((0.5 * (NBETA * H / a) / (1 - step * a / 4)).sum())


def test_stationary_value_matches_exact_formula():
    # 2000 independent chains × 1500 draws: the standard error of t·E[K] is about 0.1%, so a 0.5%
    # tolerance is 5 standard errors, yet far below the 12% discretisation effect being checked.
    kernel = SGLD(quadratic, torch.zeros(4, dtype=torch.float64), STEP, GAMMA, NBETA)
    generator = torch.Generator().manual_seed(0)
    state = kernel.init(torch.zeros(2000, 4, dtype=torch.float64))
    total = 0.0
    for t in range(1800):
        state, info = kernel.step(state, None, generator)
        if t >= 300:
            total += float(info.loss.mean()) * NBETA
    estimate = total / 1500
    assert abs(estimate / exact_llc() - 1) < 0.005, (estimate, exact_llc())
    # …and the plain continuous-time value (no 1/(1 − εa/4) factor) is clearly rejected
    continuous = float((0.5 * NBETA * H / (NBETA * H + GAMMA)).sum())
    assert abs(estimate / continuous - 1) > 0.05


def test_fixed_preconditioner_equals_rescaled_step():
    # A = c·1 with step ε is exactly plain SGLD with step c·ε, noise for noise.
    c = 0.25
    w0 = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    plain = SGLD(quadratic, torch.zeros(4, dtype=torch.float64), STEP * c, GAMMA, NBETA)
    pre = SGLD(quadratic, torch.zeros(4, dtype=torch.float64), STEP, GAMMA, NBETA,
               preconditioner=torch.full((4,), c, dtype=torch.float64))
    s1, s2 = plain.init(w0), pre.init(w0)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for _ in range(10):
        s1, i1 = plain.step(s1, None, g1, measure_acceptance=True)
        s2, i2 = pre.step(s2, None, g2, measure_acceptance=True)
    torch.testing.assert_close(s1.position, s2.position)
    torch.testing.assert_close(i1.acceptance, i2.acceptance)


def test_mala_acceptance_tracks_step_size():
    # On a Gaussian target the Langevin proposal is almost exact for tiny ε and poor for ε near the
    # stability limit 4/(t h + γ); acceptance must fall monotonically between them.
    means = []
    for fraction in (0.001, 0.1, 1.0, 3.0):
        step = fraction / (NBETA * 10 + GAMMA)
        kernel = SGLD(quadratic, torch.zeros(4, dtype=torch.float64), step, GAMMA, NBETA)
        generator = torch.Generator().manual_seed(2)
        state = kernel.init(torch.zeros(500, 4, dtype=torch.float64))
        accepted = []
        for _ in range(200):
            state, info = kernel.step(state, None, generator, measure_acceptance=True)
            accepted.append(float(info.acceptance.mean()))
        means.append(sum(accepted[50:]) / 150)
    assert means[0] > 0.999
    assert all(a > b for a, b in zip(means, means[1:])), means
    assert means[-1] < 0.8


def test_acceptance_is_exactly_one_for_the_exact_gaussian_move():
    # With γ = 0 and one dimension of curvature a, the ε → 0 limit leaves acceptance 1; the
    # first measured step (from w*) is a real measurement, not a zero.
    h = torch.tensor([1.0], dtype=torch.float64)
    kernel = SGLD(lambda w, b: (0.5 * (h * w**2).sum(-1), h * w), torch.zeros(1, dtype=torch.float64),
                  1e-8, 0.0, 1.0)
    state = kernel.init(torch.zeros(4, 1, dtype=torch.float64))
    _, info = kernel.step(state, None, torch.Generator().manual_seed(0), measure_acceptance=True)
    assert torch.all(info.acceptance > 0.9999)


def test_rmsprop_adapts_then_freezes():
    kernel = SGLD(quadratic, torch.zeros(4, dtype=torch.float64), 1e-3, GAMMA, NBETA, preconditioner=RMSprop())
    state = kernel.init(torch.zeros(2, 4, dtype=torch.float64))
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        state, _ = kernel.step(state, None, generator, adapt_preconditioner=True)
    frozen = state.square_avg.clone()
    assert torch.all(frozen > 0)
    for _ in range(20):
        state, _ = kernel.step(state, None, generator, adapt_preconditioner=False)
    torch.testing.assert_close(state.square_avg, frozen)
    assert torch.isfinite(state.position).all() and not math.isnan(float(state.position.sum()))
