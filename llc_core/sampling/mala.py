"""Full-batch MALA on the localized tempered posterior: the exact baseline for SGLD (paper App. M).

The proposal is SGLD's Langevin move on the whole dataset,

    w' = w − (ε/2) A ∇U(w) + √(εA) ξ,   U(w) = nβ L_n(w) + (γ/2) ||w − w*||²,

and w' is accepted with probability min(1, exp(U(w) − U(w') + log q(w|w') − log q(w'|w))), so the
chain samples the posterior exactly at any ε (a large ε only costs acceptance). The kernel has the
same `init` / `step` interface as `sgld.SGLD`; the loss and gradient at the current position are
carried in the state, so a step costs one gradient evaluation, as an SGLD step does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from llc_core.sampling.sgld import (SGLD, LangevinMove, LossAndGrad, RMSprop, SGLDInfo, mala_acceptance, per_chain_column,
                                    sqrt_of)


class MALAState(NamedTuple):
    position: Tensor  # w, (C, d)
    square_avg: Tensor | None  # kept for the shared interface; MALA's preconditioner is fixed
    loss: Tensor | None = None  # L_n(w), (C,); None until the first step computes it
    grad_potential: Tensor | None = None  # ∇U(w), (C, d)


@dataclass(frozen=True)
class MALA:
    """Metropolis-adjusted Langevin kernel. The batch given to `step` must be the full dataset.

    step_size: ε, localization: γ, nbeta: nβ (floats or (C,) tensors, as in SGLD).
    preconditioner: None or a fixed diagonal A of shape (d,) (an adaptive one would break detailed
    balance).
    """

    loss_and_grad: LossAndGrad
    w_star: Tensor
    step_size: float | Tensor
    localization: float | Tensor
    nbeta: float | Tensor
    preconditioner: Tensor | None = None

    def __post_init__(self):
        if isinstance(self.preconditioner, RMSprop):
            raise ValueError("MALA takes a fixed preconditioner only")

    @property
    def _langevin(self) -> SGLD:
        return SGLD(self.loss_and_grad, self.w_star, self.step_size, self.localization, self.nbeta,
                    self.preconditioner)

    def init(self, position: Tensor) -> MALAState:
        return MALAState(position, None)

    def step(
        self,
        state: MALAState,
        batch: Any,
        generator: torch.Generator,
        *,
        measure_acceptance: bool = True,
        adapt_preconditioner: bool = False,
        measure_step_heat: bool = False,  # the shared interface: accept/reject leaves no heat to measure
    ) -> tuple[MALAState, SGLDInfo]:
        """One accept/reject move of every chain; info.loss is L_n at the position the step started
        from and info.acceptance the acceptance probability (always measured: it is the algorithm)."""
        langevin = self._langevin
        if state.loss is None:
            loss, grad = self.loss_and_grad(state.position, batch)
            state = state._replace(loss=loss, grad_potential=langevin.grad_potential(state.position, grad))
        w, loss, grad_u = state.position, state.loss, state.grad_potential

        eps = per_chain_column(self.step_size)
        scale = eps if self.preconditioner is None else eps * self.preconditioner
        noise = torch.randn(w.shape, generator=generator, device=w.device, dtype=w.dtype)
        proposal = w - (scale / 2) * grad_u + sqrt_of(scale) * noise
        new_loss, new_grad = self.loss_and_grad(proposal, batch)
        new_grad_u = langevin.grad_potential(proposal, new_grad)
        acceptance = mala_acceptance(langevin.potential(w, loss), langevin.potential(proposal, new_loss),
                                     LangevinMove(w, proposal, noise), new_grad_u, eps, self.preconditioner)
        uniform = torch.rand(acceptance.shape, generator=generator, device=w.device, dtype=acceptance.dtype)
        accept = uniform < acceptance
        new_state = MALAState(
            torch.where(accept[:, None], proposal, w), None,
            torch.where(accept, new_loss, loss), torch.where(accept[:, None], new_grad_u, grad_u),
        )
        return new_state, SGLDInfo(loss, acceptance)

