"""SGLD on the localized tempered posterior, as an `init` and a pure `step` (docs/METHOD.md §1-2).

Positions are flat parameter vectors with the chains as the leading dimension, shape (C, d). With
the potential

    U(w) = nβ L_B(w) + (γ/2) ||w − w*||²

one step is

    w ← w − (ε/2) A ∇U(w) + N(0, ε A)

with A = 1 (plain SGLD), a fixed diagonal A, or an RMSprop preconditioner A = 1/(δ + √V̂) in one of
two variants (docs/METHOD.md §1, §7): pSGLD's, V ← αV + (1 − α) ∇U ⊙ ∇U from V = 0 (α = 0.99,
δ = 0.1), and the local one of Hitchcock & Hoogland (arXiv 2507.21449), V from g = nβ∇L_B alone,
V₀ = 1, bias-corrected V̂ = V/(1 − α^t), α = 0.999, δ = 1e-8. Both drop the Γ correction, which is
harmless here: the preconditioner adapts during burn-in only and is frozen for the draws. ε, γ and nβ are numbers shared by all
chains, or tensors of shape (C,) with one value per chain (a calibration sweep runs its grid cells as
chains of one batched computation). The step can also measure the MALA
acceptance probability of its own move (paper App. H.1): the Langevin proposal's Metropolis ratio,
with both losses taken on the same minibatch and the preconditioner in the proposal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor

# (positions (C, d), minibatch) -> (L_B per chain (C,), ∇L_B per chain (C, d))
LossAndGrad = Callable[[Tensor, Any], tuple[Tensor, Tensor]]


class SGLDState(NamedTuple):
    position: Tensor  # w, (C, d)
    square_avg: Tensor | None  # RMSprop's S, (C, d) (see RMSprop); None unless the preconditioner is RMSprop
    count: Tensor | None = None  # RMSprop updates of each chain, (C,); only for a bias-corrected RMSprop


class SGLDInfo(NamedTuple):
    loss: Tensor  # L_B(w) at the position the step started from, (C,)
    acceptance: Tensor | None  # MALA acceptance probability of the move, (C,), when measured
    grad_potential: Tensor | None = None  # ∇U_B at that position, (C, d), when asked for (keep_grad)
    step_heat: Tensor | None = None  # the step's first-order heat (ε/8)(||∇U_B||²_A − γ tr A), (C,), when asked for


@dataclass(frozen=True)
class RMSprop:
    """An adaptive diagonal preconditioner A = 1/(δ + √V̂): α is the decay of V, δ keeps A bounded.

    The defaults are pSGLD's (Li et al. 2016): V from ∇U, V₀ = 0, no bias correction.
    `loss_only` takes V from g = nβ∇L_B alone (the localization term left out), `initial` is V₀ and
    `bias_correction` divides by 1 − α^t: Hitchcock & Hoogland's variant (`local_rmsprop`). The state
    keeps S = (1 − α) Σ_s α^(t−s) g_s² (started at 0) and each chain's count t, so that
    V = α^t V₀ + S and V̂ = V/(1 − α^t); a chain sent back to w* (S = 0, t = 0) starts afresh.
    """

    alpha: float = 0.99
    delta: float = 0.1
    loss_only: bool = False
    initial: float = 0.0
    bias_correction: bool = False

    @property
    def counted(self) -> bool:
        """Whether A depends on the number of updates (V₀ ≠ 0 or bias correction)."""
        return self.bias_correction or self.initial != 0.0

    def precondition(self, square_avg: Tensor, count: Tensor | None) -> Tensor:
        """A = 1/(δ + √V̂) per chain and parameter, (C, d)."""
        if not self.counted:
            return 1.0 / (self.delta + square_avg.sqrt())
        decay = (self.alpha ** count.to(square_avg.dtype))[:, None]
        second_moment = square_avg + self.initial * decay
        if self.bias_correction:
            # 1 − α^t, with t ≥ 1 after the first update; a chain with t = 0 (no update yet) uses V₀
            second_moment = torch.where(decay < 1, second_moment / (1 - decay).clamp_min(1e-30),
                                        torch.full_like(second_moment, self.initial))
        return 1.0 / (self.delta + second_moment.sqrt())


def local_rmsprop(initial: float = 1.0) -> RMSprop:
    """Hitchcock & Hoogland's RMSprop-SGLD (arXiv 2507.21449): α = 0.999, δ = 1e-8, V from nβ∇L_B
    only, V₀ = `initial` (theirs: 1), bias-corrected; config preconditioner "rmsprop-local"."""
    return RMSprop(alpha=0.999, delta=1e-8, loss_only=True, initial=float(initial), bias_correction=True)


@dataclass(frozen=True)
class SGLD:
    """SGLD kernel for the localized tempered posterior around w*.

    loss_and_grad: minibatch loss L_B and its gradient, vmapped over chains.
    w_star: w*, shape (d,). step_size: ε. localization: γ. nbeta: nβ (each a float, or one value per
    chain as a (C,) tensor). preconditioner: None, a fixed diagonal A of shape (d,), or an RMSprop.
    mask: None, or (C, d) with 1 where a chain moves and 0 where it stays at w* (a weight-refined
    LLC samples only some parameters; chains of several refinements share one computation).
    """

    loss_and_grad: LossAndGrad
    w_star: Tensor
    step_size: float | Tensor
    localization: float | Tensor
    nbeta: float | Tensor
    preconditioner: Tensor | RMSprop | None = None
    mask: Tensor | None = None

    def init(self, position: Tensor) -> SGLDState:
        rmsprop = self.preconditioner if isinstance(self.preconditioner, RMSprop) else None
        square_avg = torch.zeros_like(position) if rmsprop is not None else None
        count = torch.zeros(position.shape[0], device=position.device) if rmsprop and rmsprop.counted else None
        return SGLDState(position, square_avg, count)

    def step(
        self,
        state: SGLDState,
        batch: Any,
        generator: torch.Generator,
        *,
        measure_acceptance: bool = False,
        adapt_preconditioner: bool = True,
        keep_grad: bool = False,
        measure_step_heat: bool = False,
    ) -> tuple[SGLDState, SGLDInfo]:
        """One SGLD move of every chain. Randomness comes only from `generator`. `keep_grad` returns
        ∇U_B of the starting position in the info (for the minibatch-noise measurement), `measure_step_heat`
        the first-order heat of the move (`step_heat`)."""
        w = state.position
        loss, grad = self.loss_and_grad(w, batch)
        grad_u = self.masked(self.grad_potential(w, grad))

        square_avg, count = state.square_avg, state.count
        if isinstance(self.preconditioner, RMSprop):
            rmsprop = self.preconditioner
            if adapt_preconditioner:
                g = self.loss_gradient(w, grad_u) if rmsprop.loss_only else grad_u
                square_avg = square_avg * rmsprop.alpha + (1 - rmsprop.alpha) * g.square()
                count = None if count is None else count + 1
            precond = rmsprop.precondition(square_avg, count)
        else:
            precond = self.preconditioner  # a fixed (d,) tensor, or None for A = 1

        eps = per_chain_column(self.step_size)
        noise = self.masked(torch.randn(w.shape, generator=generator, device=w.device, dtype=w.dtype))
        if precond is None and isinstance(eps, float):
            new_w = torch.add(w, grad_u, alpha=-eps / 2).add_(noise, alpha=eps**0.5)
        else:
            scale = eps if precond is None else eps * precond
            new_w = w - (scale / 2) * grad_u + sqrt_of(scale) * noise

        acceptance = None
        if measure_acceptance:
            acceptance = self.acceptance(LangevinMove(w, new_w, noise), loss, precond, batch)
        step_heat = self.step_heat(grad_u, precond) if measure_step_heat else None
        return SGLDState(new_w, square_avg, count), SGLDInfo(loss, acceptance, grad_u if keep_grad else None, step_heat)

    def step_heat(self, grad_u: Tensor, precond: Tensor | None) -> Tensor:
        """(ε/8)(||∇U_B(w)||²_A − γ tr A) per chain, (C,) in float64: what discretization and minibatch
        noise add to nβ·E[L] at first order in ε (docs/METHOD.md §8).

        The chain samples exp(−U + (ε/8)||∇U||² − (ε/4)ΔU) to first order in ε (the modified
        potential of the Euler-Maruyama step), which on a quadratic direction of curvature k raises
        nβ·E[L] by ε nβ h/8; summed, (ε/8) nβ tr(H) = (ε/8)(E||∇U||² − γ d), since E||∇U||² = E[ΔU]
        under the posterior. A minibatch gradient adds its noise's trace to ||∇U_B||² and, as
        heat, the same ε tr(Σ_ξ)/8 (minibatch_heat), so the mean of this over the draws is both.
        With a preconditioner, the same in A-whitened coordinates; frozen coordinates count nothing.
        """
        if precond is None:  # A = 1: tr A counts the moving coordinates; one pass, no (C, d) copy
            energy = torch.linalg.vector_norm(grad_u, dim=-1).double().square()
            trace = (self.mask.double().sum(-1) if self.mask is not None
                     else torch.full_like(energy, grad_u.shape[-1]))
        else:
            weights = torch.as_tensor(precond).double().expand_as(grad_u)
            energy = (grad_u.double().square() * weights).sum(-1)
            trace = (weights * self.mask).sum(-1) if self.mask is not None else weights.sum(-1)
        return _as_double(self.step_size) * (energy - _as_double(self.localization) * trace) / 8

    def minibatch_heat(self, state: SGLDState, info: SGLDInfo, other_batch: Any) -> Tensor:
        """ε nβ² ||∇L_B1 − ∇L_B2||² / 16 per chain, (C,): the λ̂ that minibatch gradient noise adds.

        A step's gradient error ξ = nβ(∇L_B − ∇L_n) adds variance ε²Σ_ξ/4 to the injected noise εI,
        which heats each direction by a factor 1 + εΣ_ξ,ii/4, i.e. nβ·E[L] by ε tr(Σ_ξ)/8 (exact for a
        quadratic). Two independent minibatches at one point give E||ξ_1 − ξ_2||² = 2 tr(Σ_ξ). The
        MALA acceptance cannot see this heat: it compares the two points on one minibatch. With a
        preconditioner A the step adds ε²AΣ_ξA/4 to the injected εA, so the heat is ε tr(AΣ_ξ)/8 (the
        same formula in A-whitened coordinates). `info` must come from the step with `keep_grad`,
        `state` the state that step started from.
        """
        _, grad = self.loss_and_grad(state.position, other_batch)
        # ∇U on both batches share the localization term, which cancels in the difference
        difference = (info.grad_potential - self.masked(self.grad_potential(state.position, grad))).double().square()
        if isinstance(self.preconditioner, RMSprop):
            if self.preconditioner.counted:
                difference = difference * self.preconditioner.precondition(state.square_avg.double(), state.count)
            else:
                difference = difference / (self.preconditioner.delta + state.square_avg.double().sqrt())
        elif self.preconditioner is not None:
            difference = difference * self.preconditioner.double()
        eps = self.step_size if isinstance(self.step_size, Tensor) else float(self.step_size)
        return eps * difference.sum(-1) / 16

    def loss_gradient(self, w: Tensor, grad_u: Tensor) -> Tensor:
        """nβ ∇L_B from ∇U = nβ ∇L_B + γ (w − w*) (masked like ∇U: frozen coordinates sit at w*)."""
        localization = per_chain_column(self.localization)
        if isinstance(localization, float) and not localization:
            return grad_u
        return grad_u - localization * (w - self.w_star)

    def masked(self, value: Tensor) -> Tensor:
        """`value` (C, d) with the frozen coordinates of each chain set to 0 (unchanged without a mask)."""
        return value if self.mask is None else value * self.mask

    def grad_potential(self, w: Tensor, grad_loss: Tensor) -> Tensor:
        """∇U = nβ ∇L_B + γ (w − w*), overwriting `grad_loss`; the localization term is analytic, so
        autograd never sees it."""
        # in place on the fresh gradient tensor: one pass less over (C, d) per step on large models
        grad_u = grad_loss.mul_(per_chain_column(self.nbeta))
        localization = per_chain_column(self.localization)
        if isinstance(localization, float):
            if localization:
                grad_u.add_(w, alpha=localization).sub_(self.w_star, alpha=localization)
        else:
            grad_u.add_((w - self.w_star) * localization)
        return grad_u

    def potential(self, w: Tensor, loss: Tensor) -> Tensor:
        """U(w) = nβ L + (γ/2) ||w − w*||² per chain, in float64."""
        nbeta, localization = _as_double(self.nbeta), _as_double(self.localization)
        return nbeta * loss.double() + 0.5 * localization * (w - self.w_star).double().square().sum(-1)

    def acceptance(self, move: "LangevinMove", loss: Tensor, precond: Tensor | None, batch: Any) -> Tensor:
        """MALA acceptance min(1, exp(U(w) − U(w') + log q(w|w') − log q(w'|w))) per chain.

        Same minibatch at both points; with a preconditioner A the proposal is
        N(w − (ε/2) A ∇U(w), ε A), so log q(w'|w) = −||ξ||²/2 for the noise ξ actually drawn.
        """
        new_loss, new_grad = self.loss_and_grad(move.end, batch)
        new_grad_u = self.masked(self.grad_potential(move.end, new_grad))
        return mala_acceptance(self.potential(move.start, loss), self.potential(move.end, new_loss), move, new_grad_u,
                               per_chain_column(self.step_size), precond)


class LangevinMove(NamedTuple):
    """A Langevin proposal w' = w − (ε/2) A ∇U(w) + √(εA) ξ, (C, d) each."""

    start: Tensor  # w
    end: Tensor  # w'
    noise: Tensor  # ξ ~ N(0, I), as drawn


def mala_acceptance(potential: Tensor, new_potential: Tensor, move: LangevinMove, new_grad_u: Tensor,
                    step_size: float | Tensor, precond: Tensor | None) -> Tensor:
    """min(1, exp(U(w) − U(w') + log q(w|w') − log q(w'|w))) per chain, for the Langevin proposal
    w' = w − (ε/2) A ∇U(w) + √(εA) ξ that drew `noise` ξ (so log q(w'|w) = −||ξ||²/2 + const)."""
    w, new_w, noise = move
    scale = step_size if precond is None else step_size * precond
    back = w - new_w + (scale / 2) * new_grad_u
    var = scale if isinstance(scale, float) else scale.double()
    log_q_back = -(back.double().square() / (2 * var)).sum(-1)
    log_q_forward = -0.5 * noise.double().square().sum(-1)
    # the proposal's normalising constant depends only on εA, which both directions share within a
    # step, so it cancels
    log_ratio = potential - new_potential + log_q_back - log_q_forward
    acceptance = torch.exp(torch.clamp(log_ratio, max=0.0))
    return torch.nan_to_num(acceptance, nan=0.0)  # a NaN ratio is a failed step: reject it


def per_chain_column(value: float | Tensor) -> float | Tensor:
    """A per-chain (C,) setting as a (C, 1) column that broadcasts over parameters; numbers pass."""
    return value[:, None] if isinstance(value, Tensor) else float(value)


def _as_double(value: float | Tensor) -> float | Tensor:
    return value.double() if isinstance(value, Tensor) else float(value)


def sqrt_of(value: float | Tensor) -> float | Tensor:
    return value.sqrt() if isinstance(value, Tensor) else value**0.5
