"""The math behind the Learn page: 2-D potentials, their sublevel-set volumes, and a live SGLD cloud.

No Streamlit here. A classroom potential is K(w1, w2) on the plane with K(0) = 0 at the true
parameter w* = 0, in one of two families:

- product: K = w1^(2a) · w2^(2b)   (a normal crossing; b = 0 gives the one-variable K = w1^(2a))
- sum:     K = w1^(2a) + w2^(2b)   (a and b ≥ 1; a = b = 1 is the regular case λ = 1)

For these, the volume V(ε) of the sublevel set {K < ε} inside the prior box [−1, 1]² scales as
c · ε^λ · (−log ε)^(m−1) (Watanabe), and a sampler of exp(−nβ K) measures λ̂ = nβ · E[K]
(docs/METHOD.md §1, §4): L_n(w) − L_n(w*) is K itself here.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction

import mpmath
import numpy as np
import torch
from torch import Tensor

from llc_core.truth import theory
from llc_core.errors import LLCInputError
from llc_core.sampling.sgld import SGLD, SGLDState

FAMILIES = ("product", "sum")
MAX_EXPONENT = 6  # a, b ≤ 6: K = w^12 is already flat enough to make the picture uninformative

# A chain this far from w* has blown up: the plot shows [−1.5, 1.5]², and exp(−nβ K) is negligible
# long before |w| = 50 for every classroom potential at the nβ the page offers.
BLOW_UP_RADIUS = 50.0


@dataclass(frozen=True)
class Potential2D:
    """K(w1, w2) = w1^(2a) · w2^(2b) ("product") or w1^(2a) + w2^(2b) ("sum")."""

    family: str
    a: int
    b: int

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise LLCInputError(f"unknown potential family {self.family!r}: use \"product\" or \"sum\"")
        for name, k in (("a", self.a), ("b", self.b)):
            if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= MAX_EXPONENT:
                raise LLCInputError(f"exponent {name} = {k!r} must be a whole number between 0 and {MAX_EXPONENT}")
        if self.family == "product" and self.a == 0 and self.b == 0:
            raise LLCInputError("both exponents are 0, so K is constant: make at least one exponent ≥ 1")
        if self.family == "sum" and (self.a == 0 or self.b == 0):
            raise LLCInputError("a sum w1^(2a) + w2^(2b) needs a ≥ 1 and b ≥ 1 (otherwise K(0) ≠ 0)")

    # ------------------------------------------------------------------ naming and theory

    @property
    def slug(self) -> str:
        """A URL-safe name, e.g. "product-1-2"; `from_slug` reads it back."""
        return f"{self.family}-{self.a}-{self.b}"

    @classmethod
    def from_slug(cls, slug: str) -> "Potential2D":
        parts = str(slug).split("-")
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            raise LLCInputError(f"potential {slug!r} is not of the form FAMILY-a-b, e.g. product-1-2")
        return cls(parts[0], int(parts[1]), int(parts[2]))

    @property
    def label(self) -> str:
        """K written with Unicode superscripts, e.g. "w1² w2⁴"."""
        def power(var: str, k: int) -> str:
            return var + _superscript(2 * k) if k else ""
        if self.family == "sum":
            return f"{power('w1', self.a)} + {power('w2', self.b)}"
        if self.b == 0:
            return power("w", self.a)
        if self.a == 0:
            return power("w", self.b)
        if self.a == self.b:
            return f"(w1 w2){_superscript(2 * self.a)}"
        return f"{power('w1', self.a)} {power('w2', self.b)}"

    @property
    def theory(self) -> theory.Theory:
        """Exact λ and m: the normal-crossing formula for a product; Σ 1/(2k_j), m = 1 for a sum."""
        if self.family == "product":
            return theory.potential([self.a, self.b])
        return theory.Theory(llc=Fraction(1, 2 * self.a) + Fraction(1, 2 * self.b), multiplicity=1,
                             source="sum of independent terms: λ = Σ 1/(2k_j)")

    # ------------------------------------------------------------------ values

    def value(self, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
        """K on numpy arrays (broadcast)."""
        w1, w2 = np.asarray(w1, dtype=float), np.asarray(w2, dtype=float)
        first, second = w1 ** (2 * self.a), w2 ** (2 * self.b)
        return first * second if self.family == "product" else first + second

    def value_and_grad(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """K and ∇K for positions of shape (C, 2), analytic (no autograd in the sampler loop)."""
        w1, w2 = w[:, 0], w[:, 1]
        first, second = w1 ** (2 * self.a), w2 ** (2 * self.b)
        d_first = 2 * self.a * w1 ** (2 * self.a - 1) if self.a else torch.zeros_like(w1)
        d_second = 2 * self.b * w2 ** (2 * self.b - 1) if self.b else torch.zeros_like(w2)
        if self.family == "product":
            return first * second, torch.stack([d_first * second, first * d_second], dim=1)
        return first + second, torch.stack([d_first, d_second], dim=1)

    def half_width(self, w1: np.ndarray, level: float) -> np.ndarray:
        """h(w1) = sup{|w2| ≤ 1 : K(w1, w2) < level}: {K < level} ∩ box = {|w2| < h(|w1|)}.

        K grows with |w2| at fixed w1 in both families, so the sublevel set is an interval in w2.
        """
        w1 = np.abs(np.asarray(w1, dtype=float))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            first = w1 ** (2 * self.a)
            if self.family == "product":
                if self.b == 0:
                    h = np.where(first < level, 1.0, 0.0)
                else:
                    h = np.where(first > 0, (level / first) ** (1.0 / (2 * self.b)), np.inf)
            else:
                room = level - first
                h = np.where(room > 0, np.abs(room) ** (1.0 / (2 * self.b)), 0.0)
        return np.clip(h, 0.0, 1.0)


def _superscript(k: int) -> str:
    return str(k).translate(str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹"))


# The Learn page's menu: (menu label, potential). Custom exponents come on top of these.
MENU: list[Potential2D] = [
    Potential2D("product", 1, 2),  # w1² w2⁴: λ = 1/4, m = 1 (exponents differ)
    Potential2D("product", 1, 1),  # (w1 w2)²: λ = 1/2, m = 2
    Potential2D("sum", 1, 1),  # w1² + w2²: regular, λ = d/2 = 1
    Potential2D("product", 2, 0),  # w⁴: λ = 1/4 in a single direction
    Potential2D("sum", 1, 2),  # w1² + w2⁴: λ = 1/2 + 1/4
]


# ---------------------------------------------------------------------- grids and volumes


def potential_grid(potential: Potential2D, extent: float = 1.5, resolution: int = 41,
                   floor: float = 1e-8) -> dict[str, np.ndarray]:
    """K on a square grid of cell centres over [−extent, extent]², flattened for a heatmap.

    Returns w1, w2 (cell centres), log10K (clipped below at log10(floor): K is 0 on the axes of a
    product), and the cell size.
    """
    edges = np.linspace(-extent, extent, resolution + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    w1, w2 = np.meshgrid(centres, centres, indexing="xy")
    k = potential.value(w1, w2)
    return {
        "w1": w1.ravel(), "w2": w2.ravel(),
        "log10K": np.log10(np.maximum(k, floor)).ravel(),
        "cell": np.full(w1.size, edges[1] - edges[0]),
    }


def sublevel_band(potential: Potential2D, level: float, points: int = 401) -> dict[str, np.ndarray]:
    """The set {K < level} inside the box [−1, 1]² as a band w1 ↦ (−h(w1), h(w1)) for an area chart."""
    w1 = np.linspace(-1.0, 1.0, points)
    h = potential.half_width(w1, level)
    return {"w1": w1, "lower": -h, "upper": h}


_GAUSS_NODES, _GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(256)


def _gauss(f, lo: float, hi: float) -> float:
    """∫_lo^hi f by 256-point Gauss-Legendre."""
    if hi <= lo:
        return 0.0
    x = (hi - lo) / 2 * _GAUSS_NODES + (hi + lo) / 2
    return float((hi - lo) / 2 * np.sum(_GAUSS_WEIGHTS * f(x)))


def sublevel_volume(potential: Potential2D, level: float) -> float:
    """V(ε) = area of {w ∈ [−1, 1]² : K(w) < ε}, by quadrature of the half width.

    V(ε) = 4 ∫_0^1 h(w1) dw1. h changes character at w0 = ε^(1/(2a)) (where w1^(2a) alone reaches
    ε), so the integral is split there; beyond w0 a product's h decays like a power of w1, which a
    logarithmic substitution w1 = w0·e^u integrates accurately.
    """
    if not level > 0:
        raise LLCInputError(f"level ε = {level!r} must be > 0")
    if potential.a == 0:  # K depends on w2 only: swap the roles of the two coordinates
        potential = Potential2D(potential.family, potential.b, 0)
    w0 = min(level ** (1.0 / (2 * potential.a)), 1.0)
    inner = _gauss(lambda w: potential.half_width(w, level), 0.0, w0)
    outer = 0.0
    if w0 < 1.0 and potential.family == "product":
        outer = _gauss(lambda u: potential.half_width(w0 * np.exp(u), level) * w0 * np.exp(u), 0.0, -math.log(w0))
    return 4.0 * (inner + outer)


@dataclass
class VolumeFit:
    """V(ε) on a log grid of levels and the least-squares slope of log V against log ε.

    corrected_slope fits log V − (m − 1)·log(−log ε) instead, removing the logarithmic factor of a
    multiplicity m > 1, so it lands on λ where the plain slope falls short of it.
    """

    levels: np.ndarray
    volumes: np.ndarray
    slope: float
    intercept: float
    corrected_slope: float
    multiplicity: int


def volume_scaling(potential: Potential2D, smallest: float = 1e-8, largest: float = 1e-2,
                   points: int = 25) -> VolumeFit:
    """V(ε) for ε log-spaced in [smallest, largest] and the fitted log-log slopes."""
    if not 0 < smallest < largest < 1:
        raise LLCInputError(f"levels must satisfy 0 < smallest < largest < 1, got {smallest}, {largest}")
    levels = np.geomspace(smallest, largest, points)
    volumes = np.array([sublevel_volume(potential, float(e)) for e in levels])
    log_e, log_v = np.log(levels), np.log(volumes)
    slope, intercept = np.polyfit(log_e, log_v, 1)
    m = potential.theory.multiplicity
    corrected, _ = np.polyfit(log_e, log_v - (m - 1) * np.log(-log_e), 1)
    return VolumeFit(levels, volumes, float(slope), float(intercept), float(corrected), m)


# ---------------------------------------------------------------------- finite-n targets


def n_for_nbeta(nbeta: float) -> float:
    """The n with n / log n = nβ (n > e), so that an nβ can be read as a sample size at β* = 1/log n."""
    if not nbeta > math.e:
        raise LLCInputError(f"nβ = {nbeta} must exceed e ≈ 2.72 to correspond to a sample size n")
    lo, hi = 1.0, max(2.0, 2 * math.log(nbeta) + 10)  # in log n; n/log n = nβ has log n < 2 log nβ + 10
    for _ in range(200):
        mid = (lo + hi) / 2
        if math.exp(mid) / mid < nbeta:
            lo = mid
        else:
            hi = mid
    return math.exp((lo + hi) / 2)


def finite_target(potential: Potential2D, nbeta: float, localization: float | None = None) -> float | None:
    """Exact t·E_t[K] at t = nβ: what λ̂ = nβ·E[K] of a perfect sampler converges to.

    localization None: for the density ∝ exp(−t K) on the prior box [−1, 1]² (SLT's finite-n
    target). localization γ: for exp(−t K − (γ/2)|w|²) on the whole plane, the posterior SGLD
    actually samples, so the gap between a cloud's λ̂ and this target is the sampler's own error.
    None when that posterior cannot be normalized (γ = 0 and K vanishes on whole lines).

    Products use `theory.finite_n_target` / `theory.finite_n_target_prior`. A sum is separable: one
    term w^(2k) gives γ(s + 1, t)/γ(s, t), s = 1/(2k), on the box, and a 1-D quadrature with γ.
    """
    if not nbeta > 0:
        raise LLCInputError(f"nβ = {nbeta!r} must be > 0")
    if localization is not None and not (math.isfinite(localization) and localization >= 0):
        raise LLCInputError(f"γ = {localization!r} must be a finite number ≥ 0")
    active = [k for k in (potential.a, potential.b) if k]
    if potential.family == "product":
        if localization is None:
            return theory.finite_n_target([potential.a, potential.b], n_for_nbeta(nbeta))
        if localization > 0:
            return theory.finite_n_target_prior([potential.a, potential.b], nbeta, "gaussian", localization)
        if len(active) > 1:
            return None  # exp(−t K) is constant along the axes: no finite mass without γ
    return float(sum(_term_target(k, nbeta, localization) for k in active))


def _term_target(k: int, t: float, localization: float | None) -> float:
    """t·E[w^(2k)] for one coordinate, on [−1, 1] (localization None) or on R with exp(−γw²/2)."""
    with mpmath.workdps(30):
        s = mpmath.mpf(1) / (2 * k)
        if localization is None:
            return float(mpmath.gammainc(s + 1, 0, t) / mpmath.gammainc(s, 0, t))
        t, gamma = mpmath.mpf(t), mpmath.mpf(localization)
        width = t ** (-s)  # where t·w^(2k) reaches 1
        points = [0, width, 4 * width, 16 * width, mpmath.inf]

        def weight(w):
            return mpmath.exp(-t * w ** (2 * k) - gamma * w * w / 2)

        mass = mpmath.quad(weight, points)
        return float(mpmath.quad(lambda w: t * w ** (2 * k) * weight(w), points) / mass)


# ---------------------------------------------------------------------- SGLD cloud


def cloud_llc(potential: Potential2D, positions: np.ndarray, nbeta: float) -> float:
    """λ̂ of a sample cloud: nβ · mean K over its points (K(w*) = 0)."""
    positions = np.asarray(positions, dtype=float).reshape(-1, 2)
    return float(nbeta * potential.value(positions[:, 0], positions[:, 1]).mean())


@dataclass(frozen=True)
class CloudSettings:
    """The sampler knobs of the Learn page."""

    nbeta: float
    localization: float
    step_size: float

    def validate(self) -> None:
        for name, value in (("nβ", self.nbeta), ("step size ε", self.step_size)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise LLCInputError(f"{name} = {value!r} must be a finite number > 0")
        if not (math.isfinite(self.localization) and self.localization >= 0):
            raise LLCInputError(f"γ = {self.localization!r} must be a finite number ≥ 0")


@dataclass
class CloudStats:
    """What the page shows after a batch of steps."""

    llc: float | None  # λ̂ = nβ·mean K over the counted draws (after settling, within the window)
    llc_se: float | None  # across chains
    draws: int  # steps per chain counted in λ̂
    settling: int  # steps still to discard before λ̂ starts counting
    acceptance: float | None  # mean MALA acceptance since the last settings change
    blow_ups: int  # chains reset to w* since the last settings change


@dataclass
class CloudSampler:
    """C chains of SGLD on exp(−nβ K(w) − (γ/2)|w|²) in the plane, advanced a batch at a time.

    Built on `llc_core.sampling.sgld.SGLD`; the chains start at w* = 0, as the estimator's do. Changing the
    settings keeps the chains where they are (so a student sees the cloud react) but restarts the
    λ̂ average after `settle_steps`. With a `window`, λ̂ averages only the most recent `window`
    steps, so it follows a cloud that is still spreading out instead of remembering its start. A
    chain that blows up (non-finite, or beyond BLOW_UP_RADIUS) is put back at w* and counted.
    """

    potential: Potential2D
    chains: int = 12
    seed: int = 0
    settle_steps: int = 500
    window: int | None = None
    trail_length: int = 60  # positions kept per chain for the picture
    trail_every: int = 5  # one kept position every this many steps
    mala_every: int = 10
    settings: CloudSettings | None = None
    steps_done: int = 0
    _state: SGLDState | None = field(default=None, repr=False)
    _generator: torch.Generator | None = field(default=None, repr=False)
    _trail: list[np.ndarray] = field(default_factory=list, repr=False)
    _counted_k: deque = field(default_factory=deque, repr=False)  # K per counted step, (chains,) each
    _sum_k: np.ndarray | None = field(default=None, repr=False)
    _counted: int = 0
    _since_change: int = 0
    _acc_sum: float = 0.0
    _acc_count: int = 0
    _blow_ups: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.chains, int) or self.chains < 1:
            raise LLCInputError(f"chains = {self.chains!r} must be a whole number ≥ 1")
        self._generator = torch.Generator().manual_seed(int(self.seed))
        self._w_star = torch.zeros(2, dtype=torch.float64)
        self._reset_stats()

    def _reset_stats(self) -> None:
        self._counted_k = deque()
        self._sum_k = np.zeros(self.chains)
        self._counted = 0
        self._since_change = 0
        self._acc_sum, self._acc_count, self._blow_ups = 0.0, 0, 0

    def _kernel(self, settings: CloudSettings) -> SGLD:
        potential = self.potential

        def loss_and_grad(w: Tensor, batch: object) -> tuple[Tensor, Tensor]:
            return potential.value_and_grad(w)

        return SGLD(loss_and_grad=loss_and_grad, w_star=self._w_star, step_size=float(settings.step_size),
                    localization=float(settings.localization), nbeta=float(settings.nbeta))

    def advance(self, steps: int, settings: CloudSettings) -> CloudStats:
        """Run `steps` SGLD steps of every chain under `settings`."""
        settings.validate()
        if settings != self.settings:
            self.settings = settings
            self._reset_stats()
        kernel = self._kernel(settings)
        if self._state is None:
            self._state = kernel.init(self._w_star.expand(self.chains, 2).clone())
        state = self._state
        for _ in range(int(steps)):
            measure = (self.steps_done + 1) % self.mala_every == 0
            state, info = kernel.step(state, None, self._generator, measure_acceptance=measure)
            position = state.position
            bad = ~torch.isfinite(position).all(1) | (position.abs().amax(1) > BLOW_UP_RADIUS)
            if bool(bad.any()):
                self._blow_ups += int(bad.sum())
                state = state._replace(position=torch.where(bad[:, None], self._w_star, position))
            self.steps_done += 1
            self._since_change += 1
            if self._since_change > self.settle_steps:
                k = info.loss.numpy().copy()
                self._sum_k += k
                self._counted += 1
                if self.window is not None:
                    self._counted_k.append(k)
                    if len(self._counted_k) > self.window:
                        self._sum_k -= self._counted_k.popleft()
                        self._counted -= 1
            if info.acceptance is not None:
                self._acc_sum += float(info.acceptance.mean())
                self._acc_count += 1
            if self.steps_done % self.trail_every == 0:
                self._trail.append(state.position.numpy().copy())
                if len(self._trail) > self.trail_length:
                    self._trail.pop(0)
        self._state = state
        return self.stats()

    def stats(self) -> CloudStats:
        llc = se = None
        if self._counted and self.settings is not None:
            per_chain = self.settings.nbeta * self._sum_k / self._counted
            llc = float(per_chain.mean())
            se = float(per_chain.std(ddof=1) / math.sqrt(self.chains)) if self.chains > 1 else None
        return CloudStats(
            llc=llc, llc_se=se, draws=self._counted,
            settling=max(0, self.settle_steps - self._since_change),
            acceptance=self._acc_sum / self._acc_count if self._acc_count else None,
            blow_ups=self._blow_ups,
        )

    def positions(self) -> np.ndarray:
        """Current positions, shape (chains, 2)."""
        if self._state is None:
            return np.zeros((self.chains, 2))
        return self._state.position.numpy().copy()

    def trail(self) -> np.ndarray:
        """Recent positions, shape (kept, chains, 2), oldest first."""
        if not self._trail:
            return np.zeros((0, self.chains, 2))
        return np.stack(self._trail)


def sample_cloud(potential: Potential2D, settings: CloudSettings, steps: int, chains: int = 12,
                 seed: int = 0, settle_steps: int | None = None) -> tuple[CloudSampler, CloudStats]:
    """Run a fresh CloudSampler for `steps` steps (the first `settle_steps`, default half, discarded)."""
    if not isinstance(steps, int) or steps < 2:
        raise LLCInputError(f"steps = {steps!r} must be a whole number ≥ 2")
    settle = steps // 2 if settle_steps is None else settle_steps
    sampler = CloudSampler(potential, chains=chains, seed=seed, settle_steps=settle)
    return sampler, sampler.advance(steps, settings)
