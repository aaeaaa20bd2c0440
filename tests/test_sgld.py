"""The SGLD kernel alone, on an exactly solvable quadratic (docs/METHOD.md §4, quadratic check)."""

import math

import torch

from llc_core.bookkeeping import Divergence
from llc_core.sampling.sgld import SGLD, RMSprop, local_rmsprop

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


def test_local_rmsprop_follows_its_definition():
    # Hitchcock & Hoogland's variant (docs/METHOD.md §7), step by step against a hand computation:
    # V₀ = 1, V ← αV + (1 − α) g⊙g with g = nβ∇L_B (not ∇U: the localization term is left out),
    # V̂ = V/(1 − α^t), A = 1/(√V̂ + 1e-8), and the move w − (ε/2) A ∇U + √(εA) ξ.
    rms = local_rmsprop()
    assert (rms.alpha, rms.delta, rms.loss_only, rms.initial, rms.bias_correction) == (0.999, 1e-8, True, 1.0, True)
    w_star = torch.tensor([0.3, -0.2, 0.1, 0.0], dtype=torch.float64)
    gamma, step = 50.0, 1e-4
    kernel = SGLD(quadratic, w_star, step, gamma, NBETA, preconditioner=rms)
    w = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    state = kernel.init(w)
    generator, replay = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    v = torch.ones(3, 4, dtype=torch.float64)
    for t in range(1, 6):
        g = NBETA * H * w  # nβ ∇L_B; ∇U adds γ (w − w*)
        v = 0.999 * v + 0.001 * g.square()
        a = 1 / ((v / (1 - 0.999**t)).sqrt() + 1e-8)
        noise = torch.randn(w.shape, generator=replay, dtype=torch.float64)
        w = w - (step / 2) * a * (g + gamma * (w - w_star)) + (step * a).sqrt() * noise
        state, _ = kernel.step(state, None, generator)
        torch.testing.assert_close(state.position, w)
        torch.testing.assert_close(rms.precondition(state.square_avg, state.count), a)
    assert state.count.tolist() == [5, 5, 5]


def test_local_rmsprop_chain_sent_back_to_w_star_starts_afresh():
    # A diverged chain is reset (bookkeeping.Divergence): its S and count go to 0, so V̂ restarts
    # from V₀ = 1 rather than from 0 (which would make A = 1e8 and blow the chain up again).
    kernel = SGLD(quadratic, torch.zeros(4, dtype=torch.float64), 1e-4, GAMMA, NBETA, preconditioner=local_rmsprop())
    state = kernel.init(torch.ones(2, 4, dtype=torch.float64))
    generator = torch.Generator().manual_seed(0)
    for _ in range(10):
        state, _ = kernel.step(state, None, generator)
    divergence = Divergence.for_run(torch.zeros(4, dtype=torch.float64), torch.ones(2).numpy(), 0.0)
    state = divergence.reset(state, torch.tensor([True, False]))
    assert state.count.tolist() == [0, 10] and float(state.square_avg[0].abs().sum()) == 0
    fresh = kernel.init(torch.zeros(1, 4, dtype=torch.float64))
    state, _ = kernel.step(state, None, generator)
    fresh, _ = kernel.step(fresh, None, torch.Generator().manual_seed(0))
    # at w* the loss gradient is 0: V = α·1, V̂ = α/(1 − α), the same as a chain that never moved
    torch.testing.assert_close(local_rmsprop().precondition(state.square_avg[:1], state.count[:1]),
                               local_rmsprop().precondition(fresh.square_avg, fresh.count))


def test_local_rmsprop_samples_the_exact_stationary_value_once_frozen():
    # Adapted for 300 steps, then frozen: SGLD with a fixed diagonal A, whose stationary value on the
    # quadratic is ½ Σ [t h_i/(t h_i + γ)] / (1 − ε A_i (t h_i + γ)/4) per chain (docs/METHOD.md §4 in
    # A-whitened coordinates). 1000 chains × 1500 draws: the standard error is about 0.15%, so 1%
    # is 6 of them, while ε is set so that the discretisation factor is ≈ 10% (clearly resolved).
    kernel = SGLD(quadratic, torch.zeros(4, dtype=torch.float64), 0.0, GAMMA, NBETA, preconditioner=local_rmsprop())
    a_scale = NBETA * H + GAMMA
    kernel = SGLD(quadratic, torch.zeros(4, dtype=torch.float64), 0.8 / float(a_scale.max().sqrt()), GAMMA, NBETA,
                  preconditioner=local_rmsprop())
    generator = torch.Generator().manual_seed(1)
    state = kernel.init(torch.zeros(1000, 4, dtype=torch.float64))
    for _ in range(300):
        state, _ = kernel.step(state, None, generator, adapt_preconditioner=True)
    frozen = local_rmsprop().precondition(state.square_avg, state.count)
    total = torch.zeros(1000, dtype=torch.float64)
    for _ in range(1500):
        state, info = kernel.step(state, None, generator, adapt_preconditioner=False)
        total += info.loss * NBETA
    exact = (0.5 * (NBETA * H / a_scale) / (1 - kernel.step_size * frozen * a_scale / 4)).sum(-1)
    factor = float((exact / float((0.5 * NBETA * H / a_scale).sum())).mean())
    assert factor > 1.05, factor  # the discretisation effect being checked is visible
    assert abs(float(total.mean()) / 1500 / float(exact.mean()) - 1) < 0.01


def test_local_rmsprop_acceptance_uses_the_preconditioned_proposal():
    # The MALA acceptance of a preconditioned move, against a hand computation with the proposal
    # N(w − (ε/2) A ∇U(w), εA) and the A of that step, at an ε large enough that it is well below 1.
    step = 0.1
    kernel = SGLD(quadratic, torch.zeros(4, dtype=torch.float64), step, GAMMA, NBETA, preconditioner=local_rmsprop())
    state = kernel.init(torch.full((8, 4), 0.05, dtype=torch.float64))
    generator = torch.Generator().manual_seed(4)
    for _ in range(20):
        start = state
        state, info = kernel.step(state, None, generator, measure_acceptance=True)
    a = local_rmsprop().precondition(state.square_avg, state.count)  # the A the last step used
    assert float(a.max()) < 0.1  # far from 1: a plain proposal density would give another number

    def potential(w):
        return 0.5 * NBETA * (H * w**2).sum(-1) + 0.5 * GAMMA * w.square().sum(-1)

    def log_q(to, frm):
        mean = frm - (step / 2) * a * (NBETA * H * frm + GAMMA * frm)
        return -((to - mean).square() / (2 * step * a)).sum(-1)

    w, new_w = start.position, state.position
    expected = torch.exp(torch.clamp(potential(w) - potential(new_w) + log_q(w, new_w) - log_q(new_w, w), max=0.0))
    assert float(expected.mean()) < 0.97  # the check is not a trivial 1 = 1
    torch.testing.assert_close(info.acceptance, expected)


def test_step_heat_is_the_first_order_formula_per_chain_with_masks_and_preconditioners():
    # docs/METHOD.md §8: (ε/8)(∇U·A∇U − γ tr A) over the moving coordinates, exactly, per chain
    w = torch.tensor([[0.1, -0.2, 0.3, 0.0], [0.05, 0.0, -0.1, 0.2]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    a = torch.tensor([1.0, 2.0, 0.5, 4.0], dtype=torch.float64)
    for precond, kept in ((None, mask), (a, mask), (None, None)):
        kernel = SGLD(quadratic, torch.zeros(4, dtype=torch.float64), STEP, GAMMA, NBETA, precond, kept)
        _, info = kernel.step(kernel.init(w), None, torch.Generator().manual_seed(0), measure_step_heat=True)
        moving = torch.ones_like(w) if kept is None else kept
        grad_u = (NBETA * H * w + GAMMA * w) * moving
        weights = (torch.ones(4, dtype=torch.float64) if precond is None else precond) * moving
        expected = STEP * ((grad_u**2 * weights).sum(-1) - GAMMA * weights.sum(-1)) / 8
        assert torch.allclose(info.step_heat, expected, rtol=1e-12), (precond, kept)
