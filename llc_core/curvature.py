"""A step size from the curvature at w*: the fallback default for models without a tuned one.

SGLD on a quadratic direction of curvature h is stable for ε h < 4 and biased by a factor
1/(1 − ε h/4) (REFERENCE.md §4, quadratic check). Taking ε = c / (nβ h_max + γ), with h_max the
largest Hessian eigenvalue of L_n at w*, keeps that bias below c/4 in every direction.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.func import grad, jvp

STEP_FRACTION = 0.02  # c: bias ≤ 0.5% on the stiffest direction
POWER_ITERATIONS = 30
SUBSET = 2048  # samples used for the Hessian-vector products


def top_hessian_eigenvalue(
    batch_loss: Callable[[Tensor, Tensor, Tensor], Tensor], w: Tensor, x: Tensor, y: Tensor, seed: int = 0
) -> float:
    """Largest |eigenvalue| of ∇²L at w by power iteration on Hessian-vector products."""
    x, y = x[:SUBSET], y[:SUBSET]
    grad_fn = grad(lambda v: batch_loss(v, x, y))
    generator = torch.Generator(device=w.device).manual_seed(seed)
    v = torch.randn(w.shape, generator=generator, device=w.device, dtype=w.dtype)
    v = v / v.norm()
    eigenvalue = 0.0
    for _ in range(POWER_ITERATIONS):
        hv = jvp(grad_fn, (w,), (v,))[1]
        norm = float(hv.norm())
        if norm == 0.0 or norm != norm:
            return 0.0 if norm == 0.0 else float("nan")
        eigenvalue, v = norm, hv / norm
    return eigenvalue


def step_size_from_curvature(top_eigenvalue: float, nbeta: float, localization: float) -> float:
    """ε = c / (nβ h_max + γ)."""
    return STEP_FRACTION / (nbeta * top_eigenvalue + localization)
