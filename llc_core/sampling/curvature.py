"""A step size from the curvature at w*: the fallback default for models without a tuned one.

SGLD on a quadratic direction of curvature h is stable for ε h < 4 and biased by a factor
1/(1 − ε h/4) (docs/METHOD.md §4, quadratic check). Taking ε = c / (nβ h_max + γ), with h_max the
largest Hessian eigenvalue of L_n at w*, keeps that bias below c/4 in every direction.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.func import grad, jvp, vjp

from llc_core.errors import LLCInputError

STEP_FRACTION = 0.02  # c: bias ≤ 0.5% on the stiffest direction
POWER_ITERATIONS = 30
SUBSET = 2048  # samples used for the Hessian-vector products


def top_hessian_eigenvalue(
    batch_loss: Callable[[Tensor, Tensor, Tensor], Tensor], w: Tensor, x: Tensor, y: Tensor, seed: int = 0
) -> float:
    """Largest |eigenvalue| of ∇²L at w by power iteration on Hessian-vector products."""
    hessian_times = HessianVectorProduct(batch_loss, w, x[:SUBSET], y[:SUBSET])
    generator = torch.Generator(device=w.device).manual_seed(seed)
    v = torch.randn(w.shape, generator=generator, device=w.device, dtype=w.dtype)
    v = v / v.norm()
    eigenvalue = 0.0
    for _ in range(POWER_ITERATIONS):
        hv = hessian_times(v)
        norm = float(hv.norm())
        if norm == 0.0 or norm != norm:
            return 0.0 if norm == 0.0 else float("nan")
        eigenvalue, v = norm, hv / norm
    return eigenvalue


class HessianVectorProduct:
    """v ↦ ∇²L(w) v on the batch (x, y).

    Forward-over-reverse (a jvp of the gradient) is cheapest, but some operators have no forward-mode
    derivative (fused attention kernels, custom autograd Functions). The first product tries it, then
    reverse-over-reverse (a vjp of the gradient: H is symmetric), then a central difference of two
    gradients, which needs first derivatives only; the first that works is kept (`method`).
    """

    def __init__(self, batch_loss: Callable[[Tensor, Tensor, Tensor], Tensor], w: Tensor, x: Tensor, y: Tensor):
        self.grad_fn = grad(lambda v: batch_loss(v, x, y))
        self.w = w
        self.method: str | None = None

    def __call__(self, v: Tensor) -> Tensor:
        if self.method is not None:
            return getattr(self, self.method)(v)
        failures = []
        for method in ("forward_over_reverse", "reverse_over_reverse", "central_difference"):
            try:
                hv = getattr(self, method)(v)
            except (NotImplementedError, RuntimeError) as err:  # an operator without that derivative
                text = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
                failures.append(f"{method}: {text}")
                continue
            if method == "reverse_over_reverse" and not self.agrees_with_difference(v, hv):
                continue
            self.method = method
            return hv
        raise LLCInputError("cannot differentiate the model's loss to measure its curvature ("
                            + "; ".join(failures) + "): give a fixed step_size instead of \"auto\"")

    def agrees_with_difference(self, v: Tensor, hv: Tensor) -> bool:
        """A backward marked once-differentiable gives zeros, not an error, when differentiated again
        under torch.func: check the second-order product against differences of gradients once."""
        try:
            reference = self.central_difference(v)
        except (NotImplementedError, RuntimeError):
            return True
        return float((hv - reference).norm()) <= 0.1 * float(reference.norm()) + 1e-12

    def forward_over_reverse(self, v: Tensor) -> Tensor:
        return jvp(self.grad_fn, (self.w,), (v,))[1]

    def reverse_over_reverse(self, v: Tensor) -> Tensor:
        return vjp(self.grad_fn, self.w)[1](v)[0]

    def central_difference(self, v: Tensor) -> Tensor:
        # h balances truncation (∝ h²) against rounding (∝ eps/h) for a unit-scale v
        h = torch.finfo(self.w.dtype).eps ** (1 / 3) * max(1.0, float(self.w.abs().max()))
        return (self.grad_fn(self.w + h * v) - self.grad_fn(self.w - h * v)) / (2 * h)


def step_size_from_curvature(top_eigenvalue: float, nbeta: float, localization: float) -> float:
    """ε = c / (nβ h_max + γ)."""
    return STEP_FRACTION / (nbeta * top_eigenvalue + localization)


# ----------------------------------------------------------------------------- spread-aware rule
#
# SGLD's stationary excess of nβ·E[L] on a quadratic direction of curvature h (docs/METHOD.md §4) is
# ½ (1/(1 − ε t h/4) − 1) ≈ ε t h/8 (t = nβ). Summed over directions and divided by λ ≈ (number of
# stiff directions)/2, the relative bias is ≈ ε t ⟨h⟩/4, with ⟨h⟩ the mean curvature; a model whose
# spectrum is spread (deep linear networks: a few very stiff directions, many soft ones) can take
# a step far larger than c/(t h_max) allows, which is what it needs to equilibrate its soft
# directions in a few thousand steps. The rule:
#
#     ε = min( STABILITY / (t h_max + γ),  4 BIAS / (t ⟨h⟩ + γ) ),   ⟨h⟩ = tr(H²)/tr(H)
#
# ⟨h⟩ = tr(H²)/tr(H) is the curvature-weighted mean (≥ the plain mean over non-zero directions, so
# the bias estimate errs high); both traces come from Hutchinson probes. On a uniform spectrum
# (one full matrix, a regular model) it gives ε t h = 4·BIAS, a 5% bias; on the random DLNs of the
# validation suites ⟨h⟩ ≪ h_max and STABILITY binds (ε t h_max = 1: the stiffest direction stays
# far inside the stability limit ε t h < 4 and the MALA acceptance stays ≈ 0.85-0.95).

STABILITY = 1.0
BIAS = 0.05
PROBES = 8
LARGE_MODEL = 100_000  # above this many parameters the curvature uses SMALL_SUBSET samples (cost ∝ d · samples)
SMALL_SUBSET = 256


def hessian_traces(
    batch_loss: Callable[[Tensor, Tensor, Tensor], Tensor], w: Tensor, x: Tensor, y: Tensor, *,
    probes: int = PROBES, seed: int = 0, subset: int = SUBSET,
) -> tuple[float, float]:
    """Hutchinson estimates of tr(H) and tr(H²) of ∇²L at w (Rademacher probes)."""
    hessian_times = HessianVectorProduct(batch_loss, w, x[:subset], y[:subset])
    generator = torch.Generator(device=w.device).manual_seed(seed + 1)
    tr, tr2 = 0.0, 0.0
    for _ in range(probes):
        v = torch.randint(0, 2, w.shape, generator=generator, device=w.device).to(w.dtype) * 2 - 1
        hv = hessian_times(v)
        tr += float((v * hv).sum()) / probes
        tr2 += float(hv.square().sum()) / probes
    return tr, tr2


def spread_aware_step_size(
    batch_loss: Callable[[Tensor, Tensor, Tensor], Tensor], w: Tensor, x: Tensor, y: Tensor,
    nbeta: float, localization: float, *, seed: int = 0,
) -> tuple[float, dict[str, float]]:
    """ε from the rule above; also returns the curvature numbers it used (h_max, ⟨h⟩)."""
    subset = SMALL_SUBSET if w.numel() > LARGE_MODEL else SUBSET
    top = top_hessian_eigenvalue(batch_loss, w, x[:subset], y[:subset], seed=seed)
    tr, tr2 = hessian_traces(batch_loss, w, x, y, seed=seed, subset=subset)
    mean = tr2 / tr if tr > 0 and tr2 > 0 else top
    mean = min(mean, top) if top > 0 else mean
    step = min(STABILITY / (nbeta * top + localization), 4 * BIAS / (nbeta * mean + localization))
    return step, {"h_max": top, "h_mean": mean}
