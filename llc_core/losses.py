"""Per-sample negative log-likelihoods −log p(y | x, w), up to constants that cancel in λ̂.

A sample is one row of the data, and n in nβ = n / log n counts rows: one (x, y) pair for regression
and classification, one whole sequence for language modelling ("next_token"), whose NLL is the mean
cross-entropy over its positions. Tokens of one sequence are not independent draws, so counting
them in n would overstate how much data pins w* down; a sequence is the i.i.d. unit. L_n is then the
usual per-token loss averaged over sequences.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from llc_core.errors import LLCInputError

# (model output for a batch, targets for that batch) -> per-sample NLL, shape (batch,)
NLL = Callable[[Tensor, Tensor], Tensor]

LOSS_KINDS = ("gaussian", "cross_entropy", "next_token")


def gaussian_nll(noise_scale: float = 1.0) -> NLL:
    """Gaussian model y ~ N(f(x, w), σ² I): −log p = ||y − f(x, w)||² / (2σ²) + const."""
    if not noise_scale > 0:
        raise LLCInputError(f"noise_scale σ = {noise_scale} must be > 0: pass the label noise std, e.g. 1.0")
    scale = 1.0 / (2.0 * noise_scale**2)

    def nll(output: Tensor, target: Tensor) -> Tensor:
        # reshape, not flatten(1): a model of one output may give shape (n,), matched by targets (n,)
        return scale * (output - target).pow(2).reshape(output.shape[0], -1).sum(1)

    return nll


def cross_entropy_nll(output: Tensor, target: Tensor) -> Tensor:
    """Categorical model: −log softmax(f(x, w))[y]."""
    return torch.nn.functional.cross_entropy(output, target, reduction="none")


def weighted_cross_entropy_nll(class_weights: Sequence[float]) -> NLL:
    """Categorical model with a weight per class: −c_y log softmax(f(x, w))[y] (weights > 0, e.g. to
    undo class imbalance; they rescale each sample's term, so they change the posterior's shape)."""
    try:
        weights = torch.as_tensor(list(class_weights), dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise LLCInputError(f"class_weights = {class_weights!r} must be a list of numbers > 0, one per class") from None
    if weights.ndim != 1 or not len(weights) or not bool(torch.isfinite(weights).all()) or bool((weights <= 0).any()):
        raise LLCInputError(f"class_weights = {list(class_weights)!r} must be a list of finite numbers > 0, one per class")

    def nll(output: Tensor, target: Tensor) -> Tensor:
        return torch.nn.functional.cross_entropy(output, target, weight=weights.to(output), reduction="none")

    return nll


def next_token_nll(output: Tensor, target: Tensor) -> Tensor:
    """Language model: output logits (batch, T, vocabulary), target token ids (batch, T); the NLL of a
    sequence is the mean over its T positions of −log softmax(logits[t])[target[t]]."""
    per_token = torch.nn.functional.cross_entropy(output.transpose(1, 2), target, reduction="none")
    return per_token.mean(1)


def make_nll(kind: str, noise_scale: float = 1.0, class_weights: Sequence[float] | None = None) -> NLL:
    if class_weights is not None and kind != "cross_entropy":
        raise LLCInputError(f"class_weights apply to the cross_entropy loss only, not {kind}")
    if kind == "gaussian":
        return gaussian_nll(noise_scale)
    if kind == "cross_entropy":
        return cross_entropy_nll if class_weights is None else weighted_cross_entropy_nll(class_weights)
    if kind == "next_token":
        return next_token_nll
    raise LLCInputError(f"unknown loss {kind!r}: use one of {', '.join(LOSS_KINDS)}")


def check_output_matches(kind: str, output: Tensor, target: Tensor) -> None:
    """Raise LLCInputError if a batch of model outputs cannot be scored against its targets."""
    checks = {"gaussian": _check_gaussian, "cross_entropy": _check_cross_entropy, "next_token": _check_next_token}
    if kind in checks:
        checks[kind](output, target)


def _check_gaussian(output: Tensor, target: Tensor) -> None:
    if not target.is_floating_point():
        raise LLCInputError(
            f"the targets are integers ({target.dtype}), like class labels: for classification use the "
            "cross_entropy loss; for regression convert them with .float()")
    if output.shape != target.shape:
        raise LLCInputError(
            f"model output has shape {tuple(output.shape)} but targets have shape {tuple(target.shape)}: "
            "for the Gaussian loss they must match (reshape the targets, e.g. to (n, 1))"
        )


def _check_cross_entropy(output: Tensor, target: Tensor) -> None:
    if output.ndim != 2:
        hint = " (a language model's logits (batch, T, vocabulary): use the next_token loss)" if output.ndim == 3 else ""
        raise LLCInputError(f"cross-entropy needs model output of shape (batch, classes), got {tuple(output.shape)}{hint}")
    if target.ndim != 1 or target.is_floating_point():
        raise LLCInputError(
            f"cross-entropy needs integer class labels of shape (n,), got {target.dtype} {tuple(target.shape)}"
        )
    _check_labels(output.shape[1], target, "labels", "outputs")


def _check_next_token(output: Tensor, target: Tensor) -> None:
    if output.ndim != 3:
        raise LLCInputError(f"the next_token loss needs logits of shape (batch, T, vocabulary), got {tuple(output.shape)}")
    if target.is_floating_point() or tuple(target.shape) != tuple(output.shape[:2]):
        raise LLCInputError(
            f"the next_token loss needs integer target tokens of shape (batch, T) = {tuple(output.shape[:2])}, got "
            f"{target.dtype} {tuple(target.shape)}: targets are the inputs shifted by one position")
    _check_labels(output.shape[2], target, "target tokens", "logits per position (the vocabulary)")


def _check_labels(classes: int, target: Tensor, what: str, outputs: str) -> None:
    if int(target.min()) < 0 or int(target.max()) >= classes:
        raise LLCInputError(
            f"{what} must lie in [0, {classes - 1}] for a model with {classes} {outputs}; "
            f"found {what} in [{int(target.min())}, {int(target.max())}]"
        )
