"""Theoretical learning coefficients: the single home for every closed-form ground truth.

Symbols follow the papers (see ``docs/METHOD.md`` §4):

* ``λ`` (``llc``) -- the (local) learning coefficient, the real log canonical threshold;
* ``m`` (``multiplicity``) -- its multiplicity (the order of the pole of the zeta function);
* ``K(w)`` -- the population loss difference ``L(w) - L(w*)``;
* ``t = nβ* = n / log n`` -- the inverse temperature used by the LLC estimator.

Every ``λ`` is returned as an exact :class:`fractions.Fraction`. This module imports no torch
and no UI code: only the standard library and mpmath (for :func:`finite_n_target`).
"""

from __future__ import annotations

import functools
import math
import operator
from fractions import Fraction
from typing import Sequence

import mpmath

from llc_core.problem import Theory

__all__ = [
    "Theory",
    "normal_crossing",
    "potential",
    "deep_linear_network",
    "deep_linear_network_local",
    "reduced_rank_regression",
    "tanh_one_hidden",
    "regular",
    "finite_n_target",
    "finite_n_target_prior",
]


# --------------------------------------------------------------------------- validation helpers


def _as_int(value: object, name: str) -> int:
    """Return ``value`` as an ``int``; raise ``ValueError`` if it is not an integer."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got the bool {value!r}; pass an int.")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        pass
    if isinstance(value, (float, Fraction)) and float(value).is_integer():
        return int(value)
    raise ValueError(f"{name} must be an integer, got {value!r}; pass a whole number.")


def _as_int_list(values: Sequence[int], name: str) -> list[int]:
    if isinstance(values, (str, bytes)):
        raise ValueError(f"{name} must be a sequence of integers, got the string {values!r}.")
    try:
        items = list(values)
    except TypeError:
        raise ValueError(
            f"{name} must be a sequence of integers, got {values!r}; pass e.g. [1, 2]."
        ) from None
    return [_as_int(v, f"{name}[{i}]") for i, v in enumerate(items)]


def _check_powers(powers: Sequence[int], name: str = "powers") -> list[int]:
    ks = _as_int_list(powers, name)
    if not ks:
        raise ValueError(f"{name} is empty; give at least one exponent, e.g. [1] for K(w) = w^2.")
    negative = [(i, k) for i, k in enumerate(ks) if k < 0]
    if negative:
        i, k = negative[0]
        raise ValueError(
            f"{name}[{i}] = {k} is negative; exponents must be >= 0 "
            f"(use 0 for a direction the loss does not depend on)."
        )
    if all(k == 0 for k in ks):
        raise ValueError(
            f"all {name} are 0, so K(w) is constant and has no singularity to measure; "
            f"make at least one exponent positive."
        )
    return ks


# --------------------------------------------------------------------------- closed forms


def normal_crossing(
    powers: Sequence[int], prior_powers: Sequence[int] | None = None
) -> Theory:
    """Normal crossing ``K(w) = Π_j w_j^(2 k_j)`` with prior ``φ(w) ∝ Π_j |w_j|^(h_j)``.

    ``λ = min_{j: k_j > 0} (h_j + 1) / (2 k_j)`` and ``m`` = the number of ``j`` attaining the
    minimum (Watanabe 2009, the standard form of resolution of singularities).

    Args:
        powers: the ``k_j >= 0``; coordinates with ``k_j = 0`` do not enter ``K``.
        prior_powers: the ``h_j >= 0``, same length as ``powers``; default all 0 (a prior that is
            positive and smooth at 0).
    """
    ks = _check_powers(powers)
    if prior_powers is None:
        hs = [0] * len(ks)
    else:
        hs = _as_int_list(prior_powers, "prior_powers")
        if len(hs) != len(ks):
            raise ValueError(
                f"prior_powers has {len(hs)} entries but powers has {len(ks)}; "
                f"give one prior exponent h_j per coordinate."
            )
        negative = [(i, h) for i, h in enumerate(hs) if h < 0]
        if negative:
            i, h = negative[0]
            raise ValueError(
                f"prior_powers[{i}] = {h} is negative; the prior |w|^h must be integrable near 0, "
                f"so use h >= 0."
            )
    ratios = [Fraction(h + 1, 2 * k) for k, h in zip(ks, hs) if k > 0]
    lam = min(ratios)
    mult = sum(1 for q in ratios if q == lam)
    return Theory(llc=lam, multiplicity=mult, source="normal crossing (Watanabe 2009)")


def potential(powers: Sequence[int]) -> Theory:
    """The dataset model ``f(x, w) = x · Π_j w_j^(p_j)`` with true parameter ``w* = 0``.

    With ``x ~ N(0, 1)`` and labels ``y = f(x, w*) = 0``, ``L(w) - L(w*)`` is a positive multiple of
    ``Π_j w_j^(2 p_j)``, a normal crossing with ``k_j = p_j`` and a flat prior, so
    ``λ = min_{j: p_j > 0} 1 / (2 p_j)``. Coordinates with ``p_j = 0`` are ignored directions.

    Raises:
        ValueError: if any ``p_j`` is negative or all are 0.
    """
    ks = _check_powers(powers)
    nc = normal_crossing(ks)
    return Theory(
        llc=nc.llc,
        multiplicity=nc.multiplicity,
        source="normal crossing potential x·Πw^p (Watanabe 2009)",
    )


def _check_widths_rank(widths: Sequence[int], rank: int) -> tuple[list[int], int]:
    hs = _as_int_list(widths, "widths")
    if len(hs) < 2:
        raise ValueError(
            f"widths has {len(hs)} entries; a linear network needs at least 2 "
            f"(input width and output width, e.g. [3, 4] for one 4x3 matrix)."
        )
    small = [(i, h) for i, h in enumerate(hs) if h < 1]
    if small:
        i, h = small[0]
        raise ValueError(f"widths[{i}] = {h}; every layer width must be >= 1.")
    r = _as_int(rank, "rank")
    if r < 0:
        raise ValueError(f"rank = {r} is negative; the rank of the true product matrix is >= 0.")
    if r > min(hs):
        raise ValueError(
            f"rank = {r} is larger than the smallest width {min(hs)}; the product of the layer "
            f"matrices has rank <= min(widths), so use a rank between 0 and {min(hs)}."
        )
    return hs, r


def deep_linear_network(widths: Sequence[int], rank: int) -> Theory:
    """Deep linear network ``W_M ··· W_1`` (Aoyagi 2024), any depth ``M >= 1`` and any rank.

    Widths ``H_0`` (input), ``H_1``, ..., ``H_M`` (output); ``r`` = rank of the true product.
    With ``Δ_j = H_j - r`` sorted ascending, ``Σ`` is the shortest prefix of ``ℓ + 1 >= 2``
    elements with

    (i)   ``max_Σ Δ < min_{not Σ} Δ``,
    (ii)  ``S := Σ_{j∈Σ} Δ_j >= ℓ · max_Σ Δ``,
    (iii) ``S < ℓ · min_{not Σ} Δ``

    ((i), (iii) vacuous when ``Σ`` is everything). With ``a = S mod ℓ``::

        λ = [r(H_0 + H_M) - r²]/2 + a(ℓ - a)/(4ℓ) - (ℓ(ℓ-1)/4)(S/ℓ)² + ½ Σ_{i<j∈Σ} Δ_i Δ_j
        m = a(ℓ - a) + 1

    For one matrix (``M = 1``) the only candidate is ``Σ`` = both widths, ``ℓ = 1``, ``a = 0``, and
    the formula reduces to ``[rH_0 + rH_1 - r² + (H_0 - r)(H_1 - r)]/2 = H_0 H_1 / 2`` for every
    rank, as it must (a single matrix is a regular model), so no special case is needed.

    Raises:
        ValueError: fewer than 2 widths, a width < 1, or a rank outside ``0..min(widths)``.
    """
    hs, r = _check_widths_rank(widths, rank)
    deltas = sorted(h - r for h in hs)
    n = len(deltas)
    for size in range(2, n + 1):
        sigma = deltas[:size]
        rest = deltas[size:]
        ell = size - 1
        s = sum(sigma)
        mx = sigma[-1]
        if rest:
            mn = rest[0]
            if not (mx < mn):  # (i)
                continue
            if not (s < ell * mn):  # (iii)
                continue
        if not (s >= ell * mx):  # (ii)
            continue
        a = s % ell
        pair_sum = (s * s - sum(d * d for d in sigma)) // 2  # Σ_{i<j} Δ_i Δ_j
        lam = (
            Fraction(r * (hs[0] + hs[-1]) - r * r, 2)
            + Fraction(a * (ell - a), 4 * ell)
            - Fraction(ell * (ell - 1), 4) * Fraction(s, ell) ** 2
            + Fraction(pair_sum, 2)
        )
        return Theory(
            llc=lam,
            multiplicity=a * (ell - a) + 1,
            source="Aoyagi 2024 (deep linear network)",
        )
    # Aoyagi proves such a Σ always exists; reaching here would be a bug in this function.
    raise RuntimeError(f"no admissible set Σ found for widths={hs}, rank={r} (bug)")


def deep_linear_network_local(widths: Sequence[int], segment_rank) -> Theory | None:
    """The *local* learning coefficient ``λ(w*)`` of a deep linear network at a true point ``w*``.

    Aoyagi's formula (:func:`deep_linear_network`) is the global ``λ``: the minimum of ``λ(w)`` over
    every true parameter. At a given ``w*`` the LLC can be larger. For example, with every matrix
    full rank except one zero matrix, ``K`` is a non-degenerate quadratic in that matrix's
    directions and ``λ(w*)`` is regular-like, far above the global value. So the truth for a DLN
    depends on the ranks at ``w*``, which ``segment_rank(i, j)`` gives: the rank of
    ``W_j* ··· W_i*`` for ``1 <= i <= j <= M`` (layer ``k`` maps ``H_{k-1} -> H_k``).

    The reduction (each step keeps ``λ`` and ``m``; ``K`` is equivalent to ``||W_M···W_1 - P*||²``):

    * **merge**: if block ``b`` is injective at ``w*`` (rank = its input width) and not last, the map
      ``(V_{b+1}, V_b) -> V_{b+1} V_b`` is a submersion there, so ``K`` is locally a function of the
      product plus free coordinates: replace the two blocks by their product. Likewise a surjective
      block (rank = output width) merges with the block before it.
    * **peel**: if the last block is injective (``H_out >= H_in``), in adapted coordinates
      ``K ≍ ||h - h*||² + ||C h*||²`` with ``C`` of size ``(H_out - H_in) × H_in``: the ``C`` part is
      a regular quadratic of rank ``(H_out - H_in)·r``, which adds ``(H_out - H_in)·r/2`` and leaves
      the network without its last block. A surjective first block peels the same way.
    * **end**: one block left is a single matrix, regular: ``λ += H_in·H_out/2``. Several blocks
      left, each of rank ``r`` (the product's rank): ``w*`` lies in the deepest stratum of the true
      set (every true point has rank ``>= r`` in every block, and this stratum is in the closure of
      all the others), where the local ``λ`` equals Aoyagi's global value for those widths.

    Returns ``None`` when the reduction stops at blocks of unequal ranks above ``r``, a case no
    closed form here covers. ``segment_rank`` is asked about each segment at most once.
    """
    segment_rank = functools.cache(segment_rank)
    hs = _as_int_list(widths, "widths")
    if len(hs) < 2:
        raise ValueError(f"widths has {len(hs)} entries; a linear network needs at least 2")
    # a block is (first layer, last layer) of the original network, 1-based
    blocks = [(k, k) for k in range(1, len(hs))]
    r = _as_int(segment_rank(1, len(hs) - 1), "rank")
    extra = Fraction(0)

    def shape(block: tuple[int, int]) -> tuple[int, int, int]:
        first, last = block
        return hs[first - 1], hs[last], _as_int(segment_rank(first, last), "rank")

    while len(blocks) > 1:
        changed = False
        for b, block in enumerate(blocks):
            h_in, h_out, rank = shape(block)
            if rank == h_in and b + 1 < len(blocks):
                blocks[b:b + 2] = [(block[0], blocks[b + 1][1])]
                changed = True
                break
            if rank == h_out and b > 0:
                blocks[b - 1:b + 1] = [(blocks[b - 1][0], block[1])]
                changed = True
                break
        if changed:
            continue
        h_in, h_out, rank = shape(blocks[-1])
        if rank == h_in:
            extra += Fraction((h_out - h_in) * r, 2)
            blocks.pop()
            continue
        h_in, h_out, rank = shape(blocks[0])
        if rank == h_out:
            extra += Fraction((h_in - h_out) * r, 2)
            blocks.pop(0)
            continue
        break
    if len(blocks) == 1:
        h_in, h_out, _ = shape(blocks[0])
        return Theory(llc=extra + Fraction(h_in * h_out, 2), multiplicity=1,
                      source="local λ of a deep linear network (reduces to one matrix: regular)")
    if any(shape(block)[2] != r for block in blocks):
        return None
    reduced = [hs[blocks[0][0] - 1]] + [hs[last] for _, last in blocks]
    core = deep_linear_network(reduced, r)
    return Theory(llc=extra + core.llc, multiplicity=core.multiplicity,
                  source=f"local λ of a deep linear network (reduces to Aoyagi on widths {reduced})")


def reduced_rank_regression(input_dim: int, hidden: int, output_dim: int, rank: int) -> Theory:
    """Reduced-rank regression ``y = B A x`` (Aoyagi & Watanabe 2005).

    Input ``M``, hidden ``H``, output ``N``, true rank ``r``:

    * if ``N + r <= M + H``, ``M + r <= N + H`` and ``H + r <= M + N``:
      ``λ = [2(H + r)(M + N) - (M - N)² - (H + r)² + δ] / 8`` with ``δ = 0, m = 1`` when
      ``M + H + N + r`` is even and ``δ = 1, m = 2`` when it is odd;
    * else if ``M + H < N + r``: ``λ = (HM - Hr + Nr) / 2``;
    * else if ``N + H < M + r``: ``λ = (HN - Hr + Mr) / 2``;
    * else (``M + N < H + r``): ``λ = MN / 2``; ``m = 1`` in these three cases.

    Agrees with :func:`deep_linear_network` on ``[M, H, N]``.
    """
    M, H, N = (
        _as_int(input_dim, "input_dim"),
        _as_int(hidden, "hidden"),
        _as_int(output_dim, "output_dim"),
    )
    for name, v in (("input_dim", M), ("hidden", H), ("output_dim", N)):
        if v < 1:
            raise ValueError(f"{name} = {v}; every dimension must be >= 1.")
    _, r = _check_widths_rank([M, H, N], rank)
    src = "Aoyagi & Watanabe 2005 (reduced-rank regression)"
    if N + r <= M + H and M + r <= N + H and H + r <= M + N:
        odd = (M + H + N + r) % 2
        lam = Fraction(2 * (H + r) * (M + N) - (M - N) ** 2 - (H + r) ** 2 + odd, 8)
        return Theory(llc=lam, multiplicity=2 if odd else 1, source=src)
    if M + H < N + r:
        return Theory(llc=Fraction(H * M - H * r + N * r, 2), multiplicity=1, source=src)
    if N + H < M + r:
        return Theory(llc=Fraction(H * N - H * r + M * r, 2), multiplicity=1, source=src)
    return Theory(llc=Fraction(M * N, 2), multiplicity=1, source=src)


def tanh_one_hidden(hidden: int) -> Theory:
    """One-hidden-layer tanh net, 1 input, 1 output, ``H`` hidden units, no biases, true function 0.

    With ``x ~ U[-1, 1]`` and ``i = ⌊√H⌋``: ``λ = (H + i² + i) / (4i + 2)``, ``m = 2`` if ``i² = H``
    else ``1`` (Watanabe 2009; Aoyagi's result for this architecture).
    """
    h = _as_int(hidden, "hidden")
    if h < 1:
        raise ValueError(f"hidden = {h}; the network needs at least 1 hidden unit.")
    i = math.isqrt(h)
    return Theory(
        llc=Fraction(h + i * i + i, 4 * i + 2),
        multiplicity=2 if i * i == h else 1,
        source="Watanabe 2009 (one-hidden-layer tanh, zero truth)",
    )


def regular(num_params: int) -> Theory:
    """Regular (identifiable, non-degenerate Fisher information) model: ``λ = d/2``, ``m = 1``."""
    d = _as_int(num_params, "num_params")
    if d < 1:
        raise ValueError(f"num_params = {d}; a regular model has at least 1 parameter.")
    return Theory(llc=Fraction(d, 2), multiplicity=1, source="regular model (d/2)")


def weight_refined_linear_factor(rank_after: int, rank_before: int) -> Theory:
    """Weight-refined λ of one factor W_k of a deep linear network, the others frozen at w*:
    ``λ = rank(A)·rank(B)/2`` with A the product of the factors after W_k and B the product of those
    before it (identity when there are none). K = E||A (W_k − W_k*) B x||²/2 is quadratic in W_k and
    its Hessian has rank rank(A)·rank(B) for inputs of full covariance (Wang et al., arXiv 2410.02984,
    define the refined LLC; this closed form is the regular case of it)."""
    a, b = _as_int(rank_after, "rank_after"), _as_int(rank_before, "rank_before")
    if a < 1 or b < 1:
        raise ValueError(f"ranks {a}, {b}: a factor between products of rank 0 does not change K (λ = 0)")
    return Theory(llc=Fraction(a * b, 2), multiplicity=1, source="weight-refined linear factor (rank(A)·rank(B)/2)")


# --------------------------------------------------------------------------- finite-n target

_DPS = 30  # working precision of the quadrature (decimal digits); cheap and cancellation-proof


def _hypoexp_terms(powers: list[int]) -> list[tuple[Fraction, Fraction, int]]:
    """Density of ``Y = -log K(w)`` for ``w`` uniform on ``[0, 1]^d``, ``K = Π w_j^(2 p_j)``.

    ``-log w_j ~ Exp(1)``, so ``Y = Σ_j 2 p_j (-log w_j)`` is a sum of independent exponentials
    with rates ``c_j = 1/(2 p_j)``. Its Laplace transform ``Π_j c_j / (c_j + s)`` is expanded in
    partial fractions (exactly, with Fractions) so that

        f_Y(y) = Σ_terms  A · y^(k-1) e^(-c y) / (k-1)!

    Returns the list of ``(A / (k-1)!, c, k - 1)``.
    """
    rate_mult: dict[Fraction, int] = {}
    for p in powers:
        if p > 0:
            c = Fraction(1, 2 * p)
            rate_mult[c] = rate_mult.get(c, 0) + 1
    const = Fraction(1)
    for c, nmult in rate_mult.items():
        const *= c**nmult
    terms: list[tuple[Fraction, Fraction, int]] = []
    for ci, ni in rate_mult.items():
        # G_i(ε) = Π_{j≠i} (c_j - c_i + ε)^(-n_j), as a power series in ε to order n_i - 1.
        series = [Fraction(1)] + [Fraction(0)] * (ni - 1)
        for cj, nj in rate_mult.items():
            if cj == ci:
                continue
            d = cj - ci
            factor = [
                (-1) ** q * math.comb(nj + q - 1, q) / d ** (nj + q) for q in range(ni)
            ]
            series = [
                sum((series[a] * factor[q - a] for a in range(q + 1)), Fraction(0))
                for q in range(ni)
            ]
        for k in range(1, ni + 1):
            coef = const * series[ni - k]  # coefficient of 1/(s + c_i)^k
            terms.append((coef / math.factorial(k - 1), ci, k - 1))
    return terms


def finite_n_target(powers: Sequence[int], n: int) -> float:
    """Exact finite-n target ``t · E_t[K]`` for the monomial potential, ``t = n / log n``.

    ``K(w) = Π_j w_j^(2 p_j)`` on the uniform prior over ``[-1, 1]^d`` (coordinates with
    ``p_j = 0`` drop out), with density ``∝ exp(-t K(w))`` and no localization. This is what a
    perfect sampler's ``λ̂ = nβ (E[L_n] - L_n(w*))`` converges to for the ``potential`` model at
    ``β* = 1/log n``; it lies below ``λ`` by about ``(m - 1)/log t`` when ``m > 1``.

    Method: by symmetry restrict to ``[0, 1]^d``; ``Y = -log K`` has a hypoexponential density
    ``f_Y`` (exact partial fractions, :func:`_hypoexp_terms`), so with ``Z(t) = ∫ exp(-t e^{-y})
    f_Y(y) dy``, ``t E_t[K] = t ∫ e^{-y} exp(-t e^{-y}) f_Y(y) dy / Z(t)`` -- two 1-D integrals done
    by tanh-sinh quadrature (mpmath, 30 digits), split at ``y = log t`` where the weight
    ``exp(-t e^{-y})`` switches on. For 1-D ``w^(2k)`` this gives ``1/(2k)`` minus the boundary term
    ``~ e^{-t}``.

    Args:
        powers: the ``p_j >= 0`` (not all 0).
        n: number of samples, ``n >= 2`` (so that ``log n > 0``).
    """
    ps = _check_powers(powers)
    n_val = float(n)
    if not math.isfinite(n_val) or n_val <= 1:
        raise ValueError(f"n = {n!r}; the sample size must be a finite number > 1 so log n > 0.")
    terms = _hypoexp_terms(ps)
    with mpmath.workdps(_DPS):
        t = mpmath.mpf(n_val) / mpmath.log(n_val)
        logt = mpmath.log(t)
        mterms = [(mpmath.mpf(a.numerator) / a.denominator,
                   mpmath.mpf(c.numerator) / c.denominator, k) for a, c, k in terms]
        c_min = min(c for _, c, _ in mterms)

        def density(y: mpmath.mpf) -> mpmath.mpf:
            return mpmath.fsum(a * y**k * mpmath.exp(-c * y) for a, c, k in mterms)

        def z_integrand(y: mpmath.mpf) -> mpmath.mpf:
            return mpmath.exp(-t * mpmath.exp(-y)) * density(y)

        def k_integrand(y: mpmath.mpf) -> mpmath.mpf:
            s = t * mpmath.exp(-y)  # s = t K
            return s * mpmath.exp(-s) * density(y)

        # Below y0 the weight exp(-t e^{-y}) < e^{-1000}: negligible against Z(t).
        y0 = max(mpmath.mpf(0), logt - mpmath.log(1000))
        pts = [y0]
        for offset in (0, 4, 1 / c_min, 10 / c_min):
            q = logt + offset
            if q > pts[-1]:
                pts.append(q)
        pts.append(mpmath.inf)
        z = mpmath.quad(z_integrand, pts)
        num = mpmath.quad(k_integrand, pts)
        return float(num / z)


# --------------------------------------------------------------------------- finite-n target, sampler's prior

_GRID_STEP = 0.004  # spacing of the log|w| grid (the integrand varies on a scale of 1 in log K)


def _log_abs_density(prior: str, localization: float, p: int, step: float) -> tuple[float, "object"]:
    """Density of ``v = 2p · log|w|`` on a uniform grid, for ``w`` from the prior; returns (start, values).

    prior ``"uniform"``: ``w ~ U[-1, 1]`` (``u = log|w|`` has density ``e^u`` on ``u < 0``);
    prior ``"gaussian"``: ``w ~ N(0, 1/γ)`` (density of ``u`` ∝ ``e^u exp(-γ e^{2u} / 2)``).
    The left tail ``∝ e^{v/(2p)}`` is followed until it is below 1e-16 of the peak.
    """
    import numpy as np

    scale = 2 * p
    if prior == "uniform":
        hi_u = 0.0
    else:
        hi_u = 0.5 * math.log(80.0 / localization)  # γ e^{2u}/2 = 40 there: the tail is gone
    lo_u = hi_u - 40.0
    u = np.arange(lo_u, hi_u + step / scale, step / scale)
    if prior == "uniform":
        log_f = u
    else:
        log_f = u - 0.5 * localization * np.exp(2 * u)
    f = np.exp(log_f - log_f.max())
    f /= f.sum() * step  # a density in v = scale · u on the grid spacing `step`
    return float(u[0] * scale), f


def finite_n_target_prior(
    powers: Sequence[int], t: float, prior: str = "gaussian", localization: float = 1.0
) -> float:
    """``t · E[K]`` under the density ∝ ``exp(-t K(w)) · prior(w)``, ``K = Π_j w_j^(2 p_j)``.

    This is what a perfect sampler of the ``potential`` model converges to, for the sampler's own
    prior: ``prior="gaussian"`` is the localization term ``exp(-γ ||w - w*||² / 2)`` around ``w* = 0``
    over all of ``R^d`` (what SGLD samples), ``prior="uniform"`` the uniform prior on ``[-1, 1]^d``
    of :func:`finite_n_target` (which it reproduces to ~1e-5, a check of this method). ``t`` is the
    effective inverse temperature multiplying ``K`` in the exponent: for the dataset model,
    ``nβ (L_n(w) - L_n(0)) = nβ · mean(x²)/2 · K(w)``, so ``t = nβ · mean(x²) / 2``.

    Method: with ``v_j = 2 p_j log|w_j|`` (independent), ``s = log K = Σ v_j``; the density of ``s``
    is the convolution of the densities of the ``v_j`` on a common grid (FFT), and
    ``t E[K] = ∫ t e^s e^{-t e^s} f_S(s) ds / ∫ e^{-t e^s} f_S(s) ds``. Coordinates with ``p_j = 0``
    do not enter ``K`` and drop out.
    """
    import numpy as np

    ps = [p for p in _check_powers(powers) if p > 0]
    if not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0):
        raise ValueError(f"t = {t!r} must be a finite number > 0")
    if prior not in ("gaussian", "uniform"):
        raise ValueError(f"prior = {prior!r}: use 'gaussian' or 'uniform'")
    if prior == "gaussian" and not (math.isfinite(localization) and localization > 0):
        raise ValueError(f"localization γ = {localization!r} must be > 0 for a Gaussian prior")
    step = _GRID_STEP
    start, density = 0.0, None
    for p in ps:
        a, f = _log_abs_density(prior, localization, p, step)
        if density is None:
            start, density = a, f
        else:
            size = len(density) + len(f) - 1
            nfft = 1 << (size - 1).bit_length()
            conv = np.fft.irfft(np.fft.rfft(density, nfft) * np.fft.rfft(f, nfft), nfft)[:size] * step
            start, density = start + a, np.clip(conv, 0.0, None)
    s = start + step * np.arange(len(density))
    x = np.exp(s + math.log(t))  # t K
    weight = np.exp(-x) * density
    return float((x * weight).sum() / weight.sum())
