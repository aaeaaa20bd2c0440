"""llc_core.truth.classroom: volumes against closed forms, finite-n targets, and the 2-D SGLD cloud."""

import math

import numpy as np
import pytest
import torch

from llc_core import LLCInputError
from llc_core.truth import theory
from llc_core.truth.classroom import (MENU, CloudSampler, CloudSettings, Potential2D, cloud_llc, finite_target,
                                n_for_nbeta, potential_grid, sample_cloud, sublevel_band, sublevel_volume,
                                volume_scaling)


def exact_product_volume(a: int, b: int, level: float) -> float:
    """Area of {w1^(2a) w2^(2b) < ε} in [−1, 1]²: 4·P(Y > −log ε) with Y = 2a·E1 + 2b·E2 (hypoexponential)."""
    y = -math.log(level)
    if b == 0:
        return 4 * level ** (1 / (2 * a))
    c1, c2 = 1 / (2 * a), 1 / (2 * b)
    if a == b:
        return 4 * math.exp(-c1 * y) * (1 + c1 * y)
    return 4 * (c2 * math.exp(-c1 * y) - c1 * math.exp(-c2 * y)) / (c2 - c1)


@pytest.mark.parametrize("a, b", [(1, 2), (1, 1), (2, 0), (2, 3), (3, 3)])
@pytest.mark.parametrize("level", [1e-8, 1e-4, 0.3])
def test_product_volume_matches_closed_form(a, b, level):
    expected = exact_product_volume(a, b, level)
    assert sublevel_volume(Potential2D("product", a, b), level) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("a, b", [(1, 1), (1, 2), (2, 3)])
def test_sum_volume_matches_beta_function(a, b):
    # ∫_0^{ε^(1/2a)} (ε − w^(2a))^(1/2b) dw = ε^(1/2a + 1/2b) · B(1/2a, 1/2b + 1) / (2a)
    level = 1e-3
    s, r = 1 / (2 * a), 1 / (2 * b)
    beta = math.gamma(s) * math.gamma(r + 1) / math.gamma(s + r + 1)
    expected = 4 * level ** (s + r) * beta * s
    assert sublevel_volume(Potential2D("sum", a, b), level) == pytest.approx(expected, rel=1e-4)
    if a == b == 1:
        assert expected == pytest.approx(math.pi * level)


def test_volume_matches_monte_carlo():
    w = np.random.default_rng(0).uniform(-1, 1, size=(400_000, 2))
    for potential in MENU:
        monte_carlo = 4 * np.mean(potential.value(w[:, 0], w[:, 1]) < 0.05)
        assert sublevel_volume(potential, 0.05) == pytest.approx(monte_carlo, rel=0.03)


@pytest.mark.parametrize("potential", MENU, ids=lambda p: p.slug)
def test_fitted_slope_approaches_lambda(potential):
    fit = volume_scaling(potential)
    lam = float(potential.theory.llc)
    # m = 1: the slope is λ up to sub-leading powers; m > 1: only after removing (−log ε)^(m−1)
    assert fit.corrected_slope == pytest.approx(lam, abs=0.03)
    if potential.theory.multiplicity > 1:
        assert fit.slope < lam - 0.05
    else:
        assert fit.slope == pytest.approx(lam, abs=0.02)


def test_theory_of_the_menu():
    llc = {p.slug: (p.theory.llc, p.theory.multiplicity) for p in MENU}
    assert llc["product-1-2"] == (0.25, 1)
    assert llc["product-1-1"] == (0.5, 2)
    assert llc["sum-1-1"] == (1, 1)
    assert llc["product-2-0"] == (0.25, 1)
    assert llc["sum-1-2"] == (0.75, 1)


def test_labels_and_slugs_round_trip():
    assert [p.label for p in MENU[:4]] == ["w1² w2⁴", "(w1 w2)²", "w1² + w2²", "w⁴"]
    for potential in MENU + [Potential2D("product", 3, 1)]:
        assert Potential2D.from_slug(potential.slug) == potential


@pytest.mark.parametrize("slug", ["product-0-0", "sum-0-1", "cubic-1-1", "product-1", "product-x-1", "product-9-1"])
def test_bad_potentials_raise_input_errors(slug):
    with pytest.raises(LLCInputError):
        Potential2D.from_slug(slug)


def test_n_for_nbeta_inverts_n_over_log_n():
    for n in (20.0, 1e4, 1e9):
        assert n_for_nbeta(n / math.log(n)) == pytest.approx(n, rel=1e-9)
    with pytest.raises(LLCInputError):
        n_for_nbeta(2.0)


def test_finite_targets():
    n = 1e4
    t = n / math.log(n)
    assert finite_target(Potential2D("product", 1, 2), t) == pytest.approx(theory.finite_n_target([1, 2], n), rel=1e-9)
    assert finite_target(Potential2D("product", 1, 2), t) == pytest.approx(0.227, abs=0.001)  # docs/METHOD.md §4 table
    assert finite_target(Potential2D("product", 1, 1), t) == pytest.approx(0.388, abs=0.001)
    assert finite_target(Potential2D("sum", 1, 1), t) == pytest.approx(1.0, abs=1e-9)  # regular: d/2
    assert finite_target(Potential2D("sum", 1, 2), t) == pytest.approx(0.75, abs=1e-6)


def test_finite_targets_of_the_localized_posterior():
    # products: theory.finite_n_target_prior; sums: 1-D quadratures, exact for the quadratic one
    assert finite_target(Potential2D("product", 1, 2), 1000.0, 1.0) == pytest.approx(
        theory.finite_n_target_prior([1, 2], 1000.0, "gaussian", 1.0))
    assert finite_target(Potential2D("sum", 1, 1), 1000.0, 1.0) == pytest.approx(2000 / 2001, rel=1e-9)
    assert finite_target(Potential2D("sum", 2, 1), 1000.0, 0.0) == pytest.approx(0.75, rel=1e-9)
    assert finite_target(Potential2D("product", 2, 0), 1000.0, 0.0) == pytest.approx(0.25, rel=1e-9)
    assert finite_target(Potential2D("product", 1, 1), 1000.0, 0.0) is None  # improper without γ
    singular = Potential2D("product", 1, 2)
    assert finite_target(singular, 1000.0, 10.0) < finite_target(singular, 1000.0, 1.0)


def test_grid_and_band_shapes():
    grid = potential_grid(MENU[0], extent=1.5, resolution=10)
    assert all(len(v) == 100 for v in grid.values())
    assert grid["log10K"].min() >= -8
    band = sublevel_band(Potential2D("sum", 1, 1), 0.25, points=5)
    np.testing.assert_allclose(band["upper"], [0, 0, 0.5, 0, 0], atol=1e-12)
    np.testing.assert_allclose(band["lower"], -band["upper"])


def test_value_and_grad_match_autograd():
    w = torch.tensor([[0.3, -0.7], [-1.2, 0.4], [0.0, 0.5]], dtype=torch.float64, requires_grad=True)
    for potential in MENU + [Potential2D("product", 0, 2)]:
        value, grad = potential.value_and_grad(w.detach())
        numpy_value = potential.value(w.detach()[:, 0].numpy(), w.detach()[:, 1].numpy())
        np.testing.assert_allclose(value.numpy(), numpy_value, rtol=1e-12)
        (auto,) = torch.autograd.grad(potential.value_and_grad(w)[0].sum(), w)
        np.testing.assert_allclose(grad.numpy(), auto.numpy(), rtol=1e-10, atol=1e-12)


def test_cloud_matches_the_exact_quadratic_stationary_value():
    # K = w1² + w2² = ½ Σ h δ², h = 2: t·E[K] = Σ ½ [t h/(t h + γ)] / (1 − ε (t h + γ)/4) (docs/METHOD.md §4)
    t, gamma, eps = 1000.0, 1.0, 1e-4
    _, stats = sample_cloud(Potential2D("sum", 1, 1), CloudSettings(t, gamma, eps), steps=6000, chains=16,
                            settle_steps=300)
    exact = 2 * 0.5 * (t * 2 / (t * 2 + gamma)) / (1 - eps * (t * 2 + gamma) / 4)
    assert stats.llc == pytest.approx(exact, rel=0.05)
    assert stats.draws == 5700 and stats.settling == 0 and stats.blow_ups == 0
    assert 0.9 < stats.acceptance <= 1.0


def test_cloud_estimates_the_singular_target():
    _, stats = sample_cloud(Potential2D("product", 1, 2), CloudSettings(1000.0, 1.0, 3e-4), steps=4000, seed=1)
    target = finite_target(Potential2D("product", 1, 2), 1000.0, 1.0)
    assert stats.llc == pytest.approx(target, abs=4 * stats.llc_se + 0.02)


def test_large_localization_pulls_the_cloud_in():
    potential = Potential2D("product", 1, 2)
    loose = sample_cloud(potential, CloudSettings(1000.0, 1.0, 3e-4), steps=2000)[0]
    tight = sample_cloud(potential, CloudSettings(1000.0, 300.0, 3e-4), steps=2000)[0]
    assert np.abs(tight.trail()).mean() < 0.5 * np.abs(loose.trail()).mean()


def test_blow_up_is_caught_and_chains_restart():
    sampler, stats = sample_cloud(Potential2D("sum", 1, 1), CloudSettings(1000.0, 1.0, 0.01), steps=200)
    assert stats.blow_ups > 0
    assert np.all(np.isfinite(sampler.positions()))


def test_sampler_keeps_chains_but_restarts_the_average_when_settings_change():
    sampler = CloudSampler(Potential2D("product", 1, 1), chains=4, settle_steps=50)
    sampler.advance(200, CloudSettings(1000.0, 1.0, 3e-4))
    before = sampler.positions()
    stats = sampler.advance(10, CloudSettings(1000.0, 10.0, 3e-4))
    assert stats.llc is None and stats.settling == 40
    assert np.abs(sampler.positions() - before).max() < 1.0  # moved on from where they were
    assert sampler.trail().shape == (42, 4, 2)
    with pytest.raises(LLCInputError):
        sampler.advance(1, CloudSettings(-1.0, 1.0, 1e-4))


def test_window_averages_only_the_latest_steps():
    sampler = CloudSampler(Potential2D("sum", 1, 1), chains=4, settle_steps=10, window=50)
    stats = sampler.advance(200, CloudSettings(1000.0, 1.0, 1e-4))
    assert stats.draws == 50
    recent = np.array(list(sampler._counted_k))
    assert stats.llc == pytest.approx(1000.0 * recent.mean())


def test_cloud_llc():
    positions = np.array([[1.0, 0.5], [0.5, 1.0]])
    assert cloud_llc(Potential2D("product", 1, 1), positions, 8.0) == pytest.approx(8 * 0.25)
