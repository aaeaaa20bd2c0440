"""Per-sample negative log-likelihoods −log p(y | x, w), up to constants that cancel in λ̂."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from llc_core.errors import LLCInputError

# (model output for a batch, targets for that batch) -> per-sample NLL, shape (batch,)
NLL = Callable[[Tensor, Tensor], Tensor]

LOSS_KINDS = ("gaussian", "cross_entropy")


def gaussian_nll(noise_scale: float = 1.0) -> NLL:
    """Gaussian model y ~ N(f(x, w), σ² I): −log p = ||y − f(x, w)||² / (2σ²) + const."""
    if not noise_scale > 0:
        raise LLCInputError(f"noise_scale σ = {noise_scale} must be > 0: pass the label noise std, e.g. 1.0")
    scale = 1.0 / (2.0 * noise_scale**2)

    def nll(output: Tensor, target: Tensor) -> Tensor:
        return scale * (output - target).pow(2).flatten(1).sum(1)

    return nll


def cross_entropy_nll(output: Tensor, target: Tensor) -> Tensor:
    """Categorical model: −log softmax(f(x, w))[y]."""
    return torch.nn.functional.cross_entropy(output, target, reduction="none")


def make_nll(kind: str, noise_scale: float = 1.0) -> NLL:
    if kind == "gaussian":
        return gaussian_nll(noise_scale)
    if kind == "cross_entropy":
        return cross_entropy_nll
    raise LLCInputError(f"unknown loss {kind!r}: use one of {', '.join(LOSS_KINDS)}")


def check_output_matches(kind: str, output: Tensor, target: Tensor) -> None:
    """Raise LLCInputError if a batch of model outputs cannot be scored against its targets."""
    if kind == "gaussian":
        if output.shape != target.shape:
            raise LLCInputError(
                f"model output has shape {tuple(output.shape)} but targets have shape {tuple(target.shape)}: "
                "for the Gaussian loss they must match (reshape the targets, e.g. to (n, 1))"
            )
        if not target.is_floating_point():
            raise LLCInputError("Gaussian loss needs floating-point targets: convert them with .float()")
    elif kind == "cross_entropy":
        if output.ndim != 2:
            raise LLCInputError(
                f"cross-entropy needs model output of shape (batch, classes), got {tuple(output.shape)}"
            )
        if target.ndim != 1 or target.is_floating_point():
            raise LLCInputError(
                f"cross-entropy needs integer class labels of shape (n,), got {target.dtype} {tuple(target.shape)}"
            )
        classes = output.shape[1]
        if int(target.min()) < 0 or int(target.max()) >= classes:
            raise LLCInputError(
                f"labels must lie in [0, {classes - 1}] for a model with {classes} outputs; "
                f"found labels in [{int(target.min())}, {int(target.max())}]"
            )
