"""Tests of llc_core.truth.theory against every worked value of docs/METHOD.md section 4."""

from __future__ import annotations

import itertools
import math
import time
from fractions import Fraction

import pytest

from llc_core.truth.theory import (
    Theory,
    deep_linear_network,
    deep_linear_network_local,
    finite_n_target,
    normal_crossing,
    potential,
    reduced_rank_regression,
    regular,
    tanh_one_hidden,
)

# --------------------------------------------------------------------------- normal crossing

# docs/METHOD.md §4 normal-crossing table: K = Π w_j^(2 k_j) -> (λ, m). Its first row,
# w1^2 + w2^2, is a sum rather than a monomial and is tested as a regular model below;
# the w^(2k) row is test_single_monomial.
NORMAL_CROSSING_TABLE = [
    ([1, 1], Fraction(1, 2), 2, "(w1 w2)^2"),
    ([2], Fraction(1, 4), 1, "w^4"),
    ([1, 2], Fraction(1, 4), 1, "w1^2 w2^4"),
    ([1, 1, 1], Fraction(1, 2), 3, "(w1 w2 w3)^2"),
]


def test_sum_of_squares_is_regular() -> None:
    # w1^2 + w2^2 is not a monomial: it is a regular model with d = 2 (λ = 1, m = 1).
    th = regular(2)
    assert th.llc == Fraction(1) and th.multiplicity == 1


@pytest.mark.parametrize("powers, lam, m, label", NORMAL_CROSSING_TABLE)
def test_normal_crossing_table(powers: list[int], lam: Fraction, m: int, label: str) -> None:
    th = normal_crossing(powers)
    assert isinstance(th, Theory)
    assert isinstance(th.llc, Fraction)
    assert th.llc == lam, label
    assert th.multiplicity == m, label
    pot = potential(powers)
    assert (pot.llc, pot.multiplicity) == (lam, m), label


@pytest.mark.parametrize("k", range(1, 8))
def test_single_monomial(k: int) -> None:
    assert normal_crossing([k]) == Theory(Fraction(1, 2 * k), 1, normal_crossing([k]).source)
    assert potential([k]).llc == Fraction(1, 2 * k)
    assert potential([k]).multiplicity == 1


def test_normal_crossing_prior_powers() -> None:
    # λ = min (h_j + 1) / (2 k_j): (0+1)/2 = 1/2 vs (1+1)/4 = 1/2 -> tie, m = 2.
    th = normal_crossing([1, 2], prior_powers=[0, 1])
    assert th.llc == Fraction(1, 2) and th.multiplicity == 2
    th = normal_crossing([1, 1], prior_powers=[2, 0])
    assert th.llc == Fraction(1, 2) and th.multiplicity == 1
    # Coordinates with k_j = 0 are ignored, whatever their prior power.
    th = normal_crossing([0, 3], prior_powers=[0, 0])
    assert th.llc == Fraction(1, 6) and th.multiplicity == 1


def test_potential_ignores_zero_powers() -> None:
    assert potential([0, 1, 0, 1]) == Theory(Fraction(1, 2), 2, potential([1, 1]).source)
    assert potential([0, 2]).llc == Fraction(1, 4)


# --------------------------------------------------------------------------- deep linear networks

DLN_TABLE = [
    ([1, 1, 1], 0, Fraction(1, 2), 2),
    ([2, 1, 2], 0, Fraction(1), 2),
    ([1, 2, 1], 0, Fraction(1, 2), 1),
    ([2, 2, 2], 0, Fraction(3, 2), 1),
    ([2, 2, 2, 2, 2], 0, Fraction(3, 2), 5),
    ([5, 3, 5], 0, Fraction(13, 2), 2),
    ([10, 10, 10, 10], 3, Fraction(42), 3),
    ([100, 100, 100, 100, 100], 50, Fraction(9063, 2), 5),  # 4531.5
]


@pytest.mark.parametrize("widths, rank, lam, m", DLN_TABLE)
def test_dln_table(widths: list[int], rank: int, lam: Fraction, m: int) -> None:
    th = deep_linear_network(widths, rank)
    assert isinstance(th.llc, Fraction)
    assert th.llc == lam
    assert th.multiplicity == m


def test_dln_big_value_is_4531_5() -> None:
    assert deep_linear_network([100] * 5, 50).llc == Fraction(45315, 10)


def test_dln_single_matrix_is_regular_for_every_rank() -> None:
    for h0, h1 in itertools.product(range(1, 9), repeat=2):
        for r in range(min(h0, h1) + 1):
            th = deep_linear_network([h0, h1], r)
            assert th.llc == Fraction(h0 * h1, 2), (h0, h1, r)
            assert th.multiplicity == 1


def test_dln_formula_always_applies_and_is_sane() -> None:
    # Aoyagi's admissible Σ must exist for every architecture (the function raises
    # RuntimeError otherwise); λ is positive (or 0 never), at most d/2, and invariant
    # under transposition (reversing the widths).
    for depth in (2, 3, 4):
        for widths in itertools.product(range(1, 5), repeat=depth + 1):
            d = sum(a * b for a, b in zip(widths, widths[1:]))
            for r in range(min(widths) + 1):
                th = deep_linear_network(widths, r)
                assert 0 < th.llc <= Fraction(d, 2), (widths, r)
                assert th.multiplicity >= 1
                rev = deep_linear_network(widths[::-1], r)
                assert (rev.llc, rev.multiplicity) == (th.llc, th.multiplicity)


# --------------------------------------------------------------------------- local λ of a DLN at w*


def _ranks_of(matrices):
    """segment_rank(i, j) = rank of W_j ··· W_i (1-based) for numpy matrices W_1 … W_M."""
    import numpy as np

    def segment_rank(i: int, j: int) -> int:
        product = matrices[i - 1]
        for w in matrices[i:j]:
            product = w @ product
        return int(np.linalg.matrix_rank(product))

    return segment_rank


def _random_matrix(rng, rows: int, cols: int, rank: int):
    return rng.standard_normal((rows, rank)) @ rng.standard_normal((rank, cols))


def test_local_dln_zero_matrix_between_full_rank_ones_is_regular_like():
    # dln-10k seed 16's structure: only W5 (73x32) is zero. K ≍ ||W5 B||² with B = W4W3W2W1 of
    # rank 6, a non-degenerate quadratic in 73·6 directions: λ(w*) = 219, against Aoyagi's 30.
    import numpy as np

    rng = np.random.default_rng(0)
    widths = [19, 94, 10, 6, 32, 73, 98]
    mats = [_random_matrix(rng, b, a, min(a, b)) for a, b in zip(widths, widths[1:])]
    mats[4] = np.zeros((73, 32))
    local = deep_linear_network_local(widths, _ranks_of(mats))
    assert local.llc == 219 and local.multiplicity == 1
    assert deep_linear_network(widths, 0).llc == 30


def test_local_dln_peels_an_injective_last_layer():
    # widths 5,3,5: W1 of rank 1, W2 (5x3) injective. Adapted coordinates give
    # K ≍ ||h - h*||² + ||C h*||², C 2x3 and rank(h*) = 1: 2·1/2 + 3·5/2 = 17/2 (Aoyagi: 8).
    import numpy as np

    rng = np.random.default_rng(1)
    mats = [_random_matrix(rng, 3, 5, 1), _random_matrix(rng, 5, 3, 3)]
    local = deep_linear_network_local([5, 3, 5], _ranks_of(mats))
    assert local.llc == Fraction(17, 2)
    # the transposed network (its first layer surjective) peels the same amount
    flipped = [m.T for m in mats[::-1]]
    assert deep_linear_network_local([5, 3, 5], _ranks_of(flipped)).llc == Fraction(17, 2)


def test_local_dln_scalar_chains_match_hand_computation():
    # widths 1,1,2: f = b·a. a* = 0, b* ≠ 0: K ≍ a², λ = 1/2. a* ≠ 0, b* = 0: K ≍ |b|², λ = 1.
    # both 0: K = a²|b|², λ = 1/2 (Aoyagi's global value).
    import numpy as np

    b = np.array([[1.0], [2.0]])
    assert deep_linear_network_local([1, 1, 2], _ranks_of([np.zeros((1, 1)), b])).llc == Fraction(1, 2)
    assert deep_linear_network_local([1, 1, 2], _ranks_of([np.ones((1, 1)), np.zeros((2, 1))])).llc == 1
    both = deep_linear_network_local([1, 1, 2], _ranks_of([np.zeros((1, 1)), np.zeros((2, 1))]))
    assert both.llc == Fraction(1, 2) == deep_linear_network([1, 1, 2], 0).llc


@pytest.mark.parametrize("widths, rank, lam, m", DLN_TABLE)
def test_local_dln_at_the_deepest_point_is_aoyagis_value(widths, rank, lam, m):
    # every matrix of rank r: w* lies in the deepest stratum, where λ(w*) is the global λ
    import numpy as np

    rng = np.random.default_rng(2)
    mats = [_random_matrix(rng, b, a, rank) for a, b in zip(widths, widths[1:])]
    local = deep_linear_network_local(widths, _ranks_of(mats))
    assert (local.llc, local.multiplicity) == (lam, m)


def test_local_dln_is_between_the_global_value_and_half_the_dimension():
    # λ(w*) >= min over the true set (Aoyagi) and <= d/2, on random rank patterns; None only when
    # two or more rank-deficient blocks of different ranks remain.
    import numpy as np

    rng = np.random.default_rng(3)
    known = unknown = 0
    for _ in range(300):
        depth = int(rng.integers(1, 5))
        widths = [int(h) for h in rng.integers(1, 7, depth + 1)]
        mats = []
        for a, b in zip(widths, widths[1:]):
            full = min(a, b)
            mats.append(_random_matrix(rng, b, a, int(rng.integers(0, full + 1)) if rng.random() < 0.5 else full))
        segment_rank = _ranks_of(mats)
        local = deep_linear_network_local(widths, segment_rank)
        if local is None:
            unknown += 1
            continue
        known += 1
        d = sum(a * b for a, b in zip(widths, widths[1:]))
        glob = deep_linear_network(widths, segment_rank(1, len(mats)))
        assert glob.llc <= local.llc <= Fraction(d, 2), (widths, [np.linalg.matrix_rank(m) for m in mats])
    assert known > 200 and unknown > 0


def test_rrr_agrees_with_dln_on_every_small_two_matrix_case() -> None:
    count = 0
    for m_in, h, n_out in itertools.product(range(1, 9), repeat=3):
        for r in range(min(m_in, h, n_out) + 1):
            rrr = reduced_rank_regression(m_in, h, n_out, r)
            dln = deep_linear_network([m_in, h, n_out], r)
            assert rrr.llc == dln.llc, (m_in, h, n_out, r, rrr, dln)
            assert rrr.multiplicity == dln.multiplicity, (m_in, h, n_out, r, rrr, dln)
            assert isinstance(rrr.llc, Fraction)
            count += 1
    assert count == 1808  # 8^3 width triples x every rank 0..min width


# --------------------------------------------------------------------------- tanh, regular

@pytest.mark.parametrize(
    "hidden, lam, m",
    [
        (1, Fraction(1, 2), 2),
        (2, Fraction(2, 3), 1),
        (3, Fraction(5, 6), 1),
        (4, Fraction(1), 2),
        (5, Fraction(11, 10), 1),
    ],
)
def test_tanh_one_hidden(hidden: int, lam: Fraction, m: int) -> None:
    th = tanh_one_hidden(hidden)
    assert th.llc == lam
    assert th.multiplicity == m


@pytest.mark.parametrize("d", [1, 2, 3, 10, 101])
def test_regular(d: int) -> None:
    th = regular(d)
    assert th.llc == Fraction(d, 2)
    assert th.multiplicity == 1


# --------------------------------------------------------------------------- finite-n target

# docs/METHOD.md §4 finite-n table. It is printed to 3 decimal places, so a correct value may
# differ from the printed one by up to 0.0005 from rounding; 0.0015 leaves room for that
# while still catching any real error (the values move by ~0.03 per decade of n).
FINITE_N_TABLE = {
    (1, 1): [0.356, 0.388, 0.424, 0.449],
    (1, 2): [0.209, 0.227, 0.242, 0.249],
    (1, 1, 1): [0.239, 0.290, 0.352, 0.400],
}
NS = [10**3, 10**4, 10**6, 10**9]


@pytest.mark.parametrize("powers", list(FINITE_N_TABLE))
def test_finite_n_table(powers: tuple[int, ...]) -> None:
    for n, expected in zip(NS, FINITE_N_TABLE[powers]):
        got = finite_n_target(list(powers), n)
        assert abs(got - expected) <= 0.0015, (powers, n, got, expected)
        # And it is below λ (m > 1 or unequal exponents).
        assert got < float(potential(list(powers)).llc)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("n", NS)
def test_finite_n_one_dimensional_is_exact(k: int, n: int) -> None:
    # On [-1, 1], t E_t[w^(2k)] = 1/(2k) minus a boundary term ~ e^{-t}, negligible here.
    assert abs(finite_n_target([k], n) - 1 / (2 * k)) <= 1e-6


def test_finite_n_zero_powers_drop_out() -> None:
    assert finite_n_target([1, 0, 1], 10**4) == pytest.approx(
        finite_n_target([1, 1], 10**4), rel=1e-9
    )


def test_finite_n_approaches_lambda_from_below() -> None:
    values = [finite_n_target([1, 1], n) for n in (10**3, 10**6, 10**12, 10**20)]
    assert values == sorted(values)
    assert values[-1] < 0.5


def test_finite_n_small_n_boundary_term_is_visible() -> None:
    # At tiny t the [-1, 1] boundary matters and the 1-D value falls below 1/(2k).
    assert finite_n_target([1], 2) < 0.5 - 1e-3


def test_finite_n_is_fast() -> None:
    start = time.perf_counter()
    finite_n_target([1, 1, 1], 10**9)
    assert time.perf_counter() - start < 1.0


# --------------------------------------------------------------------------- ValueErrors

@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: normal_crossing([]), "empty"),
        (lambda: normal_crossing([0, 0]), "all powers are 0"),
        (lambda: normal_crossing([1, -1]), "negative"),
        (lambda: normal_crossing([1, 1], prior_powers=[0]), "prior_powers has 1"),
        (lambda: normal_crossing([1, 1], prior_powers=[0, -1]), "negative"),
        (lambda: normal_crossing([1.5]), "integer"),
        (lambda: potential([0, 0, 0]), "all powers are 0"),
        (lambda: potential([2, -3]), "negative"),
        (lambda: deep_linear_network([3], 0), "at least 2"),
        (lambda: deep_linear_network([], 0), "at least 2"),
        (lambda: deep_linear_network([3, 0, 3], 0), "width must be >= 1"),
        (lambda: deep_linear_network([3, 2, 3], 3), "larger than the smallest width"),
        (lambda: deep_linear_network([3, 2, 3], -1), "negative"),
        (lambda: reduced_rank_regression(3, 2, 3, 3), "larger than the smallest width"),
        (lambda: reduced_rank_regression(3, 0, 3, 0), "hidden = 0"),
        (lambda: reduced_rank_regression(0, 2, 3, 0), "input_dim = 0"),
        (lambda: reduced_rank_regression(3, 2, 3, -1), "negative"),
        (lambda: tanh_one_hidden(0), "at least 1 hidden unit"),
        (lambda: tanh_one_hidden(-2), "at least 1 hidden unit"),
        (lambda: regular(0), "at least 1 parameter"),
        (lambda: finite_n_target([0, 0], 1000), "all powers are 0"),
        (lambda: finite_n_target([1, -1], 1000), "negative"),
        (lambda: finite_n_target([1], 1), "n = 1"),
        (lambda: finite_n_target([1], 0), "> 1"),
    ],
)
def test_value_errors(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


# --------------------------------------------------------------------------- finite-n target, sampler's prior

from llc_core.truth.theory import finite_n_target_prior  # noqa: E402


@pytest.mark.parametrize("powers", [(1,), (2,), (3,), (1, 1), (1, 2), (1, 1, 1)])
@pytest.mark.parametrize("n", [1_000, 10_000, 1_000_000])
def test_prior_target_with_uniform_prior_reproduces_the_exact_target(powers, n):
    # The grid convolution against the exact (mpmath, partial-fraction) target: 1e-3 relative
    # is the grid's resolution (measured 2e-4 .. 8e-4).
    t = n / math.log(n)
    assert finite_n_target_prior(list(powers), t, "uniform") == pytest.approx(finite_n_target(list(powers), n), rel=1e-3)


@pytest.mark.parametrize("t, gamma", [(100.0, 1.0), (543.0, 1.0), (1e4, 10.0)])
def test_prior_target_gaussian_quadratic_is_exact(t, gamma):
    # K = w², prior N(0, 1/γ): the posterior is N(0, 1/(2t + γ)), so t·E[K] = t / (2t + γ) exactly.
    assert finite_n_target_prior([1], t, "gaussian", gamma) == pytest.approx(t / (2 * t + gamma), rel=1e-4)


def test_prior_target_gaussian_localization_pulls_below_lambda():
    # in 1-D the γ = 1 Gaussian tilts w towards 0, so the target sits below the flat-prior one
    # (which is 1/(2k) up to e^{-t}); products differ the other way too: their valleys reach past
    # the box [-1, 1] under a Gaussian, so no ordering is asserted for them.
    for powers in ([2], [3]):
        assert finite_n_target_prior(powers, 543.0, "gaussian", 1.0) < finite_n_target_prior(powers, 543.0, "uniform")


def test_prior_target_errors():
    with pytest.raises(ValueError, match="t ="):
        finite_n_target_prior([1], -1.0)
    with pytest.raises(ValueError, match="prior"):
        finite_n_target_prior([1], 10.0, "laplace")
    with pytest.raises(ValueError, match="localization"):
        finite_n_target_prior([1], 10.0, "gaussian", 0.0)
