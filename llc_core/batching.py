"""How the chains of a run share one computation: L_B and ∇L_B for C chains at once.

`batched_loss_and_grad` turns a loss of one flat parameter vector into the function a kernel calls,
(w (C, d), batch) -> (L_B (C,), ∇L_B (C, d)), with the chains as a vmapped batch dimension.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import grad_and_value, vmap

from llc_core.model_function import BatchLoss


# Below this many parameters a step is dominated by fixed per-call costs, and vmapping only the
# forward pass (then one autograd call for all chains) beats vmap(grad(...)) by 15-45%; above it
# vmap(grad(...)) is 5-10% faster (benchmarks/bench_engine.py). The choice depends on d alone, so a
# run is reproducible.
SMALL_MODEL_PARAMS = 20_000


def batched_loss_and_grad(batch_loss: BatchLoss, full_batch: bool, num_params: int):
    """(w (C, d), (x, y)) -> (L_B per chain, ∇L_B per chain), chains as a vmapped batch dimension."""
    in_dims = (0, None, None) if full_batch else (0, 0, 0)
    if num_params <= SMALL_MODEL_PARAMS:
        forward = vmap(batch_loss, in_dims=in_dims)

        def loss_and_grad(w: Tensor, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            with torch.enable_grad():
                w = w.detach().requires_grad_(True)
                loss = forward(w, *batch)
                # chains do not interact, so the gradient of the sum is each chain's own gradient
                (grad,) = torch.autograd.grad(loss.sum(), w)
            return loss.detach(), grad

        return loss_and_grad

    grad_fn = vmap(grad_and_value(batch_loss), in_dims=in_dims)

    def loss_and_grad(w: Tensor, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        grad, value = grad_fn(w, *batch)
        return value, grad

    return loss_and_grad
