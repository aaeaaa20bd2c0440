"""A model as a function of one flat parameter vector w, the shape every kernel samples.

`copy_parameters` takes w* out of a module (a copy: the user's module is never touched), and
`model_function` checks the data against the model and gives L_B(w) on a minibatch and L_n(w*) on
all data (`batching.py` then runs it for all chains at once).
"""

from __future__ import annotations

import contextlib
import copy
import math
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from llc_core import defaults
from llc_core.errors import LLCInputError
from llc_core.losses import check_output_matches, make_nll


# (w (d,), x_B, y_B) -> L_B(w), the mean per-sample negative log-likelihood on the batch
BatchLoss = Callable[[Tensor, Tensor, Tensor], Tensor]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" picks CUDA when present, else the CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise LLCInputError(f"unknown device {device!r}: use \"auto\", \"cpu\" or \"cuda\"") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise LLCInputError("device \"cuda\" was asked for but no CUDA GPU is available: use \"auto\" or \"cpu\"")
    return resolved


def available_devices() -> list[str]:
    return ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "float64": torch.float64}
    if dtype not in table:
        raise LLCInputError(f"dtype {dtype!r} is not supported: use \"float32\" or \"float64\"")
    return table[dtype]


class FlatParams:
    """A module's parameters as one flat vector w of length d, and back to a name → tensor dict."""

    def __init__(self, params: Mapping[str, Tensor]):
        self.names = list(params)
        self.shapes = [tuple(p.shape) for p in params.values()]
        self.sizes = [p.numel() for p in params.values()]
        self.num_params = sum(self.sizes)

    def flatten(self, params: Mapping[str, Tensor]) -> Tensor:
        return torch.cat([params[name].reshape(-1) for name in self.names])

    def unflatten(self, w: Tensor) -> dict[str, Tensor]:
        return {
            name: piece.reshape(shape)
            for name, piece, shape in zip(self.names, torch.split(w, self.sizes), self.shapes)
        }


class Parameters(NamedTuple):
    """A private copy of the module on the run's device and dtype, in eval mode, and w* by name and
    as layout; `mode` says how the copy is evaluated and why (RunResult.model_mode)."""

    module: nn.Module
    w_star: dict[str, Tensor]
    flat: FlatParams
    mode: dict[str, Any]


DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def evaluation_mode(model: nn.Module) -> dict[str, Any]:
    """Why the run evaluates the module in eval mode, with what that changes for this module.

    The posterior is over weights: dropout masks would add noise that is not in the likelihood, and a
    normalisation layer in train mode makes each sample's loss depend on the rest of its batch and
    would overwrite its running statistics. In eval mode dropout is off and normalisation uses the
    running statistics stored with the checkpoint, which stay frozen (they are buffers, not sampled).
    """
    dropout = sum(isinstance(m, DROPOUT_TYPES) and m.p > 0 for m in model.modules())
    running = sum(getattr(m, "running_mean", None) is not None for m in model.modules())
    changes = []
    if dropout:
        changes.append(f"{dropout} dropout layer(s) off")
    if running:
        changes.append(f"{running} normalisation layer(s) on their stored running statistics, frozen")
    return {
        "mode": "eval", "module_was_training": any(m.training for m in model.modules()),
        "dropout_layers": int(dropout), "running_statistics_layers": int(running),
        "why": "sampled in eval mode: the posterior is over the weights alone, so dropout is off and "
               "normalisation layers use the checkpoint's running statistics, never updated"
               + (f" ({'; '.join(changes)})" if changes else "") + "; the caller's module is not changed",
    }


_ATTENTION_LOCK = threading.Lock()
_attention_runs = 0
_attention_settings = contextlib.ExitStack()


@contextlib.contextmanager
def differentiable_attention() -> Iterator[None]:
    """Attention as plain operators while a run samples.

    In eval mode nn.MultiheadAttention and nn.TransformerEncoderLayer take a fused "fast path" that
    autograd cannot differentiate, and the fused CPU flash kernel of scaled_dot_product_attention has
    no forward-mode derivative and no vmap batching rule; the math kernel has all three. The
    switches are process-wide, so they are set by the first of concurrent runs and restored by the
    last.
    """
    global _attention_runs
    with _ATTENTION_LOCK:
        if _attention_runs == 0:
            fastpath = torch.backends.mha.get_fastpath_enabled()
            _attention_settings.callback(torch.backends.mha.set_fastpath_enabled, fastpath)
            torch.backends.mha.set_fastpath_enabled(False)
            _attention_settings.enter_context(sdpa_kernel([SDPBackend.MATH]))
        _attention_runs += 1
    try:
        yield
    finally:
        with _ATTENTION_LOCK:
            _attention_runs -= 1
            if _attention_runs == 0:
                _attention_settings.close()


@dataclass(frozen=True)
class ModelFunction:
    """L as a function of the flat w, on the run's device: what the kernels and bookkeeping need."""

    flat: FlatParams
    w_star: Tensor  # w*, (d,)
    x: Tensor
    y: Tensor
    batch_loss: BatchLoss
    init_loss: float  # L_n(w*), over all n samples

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_params(self) -> int:
        return self.flat.num_params


def check_data(model: nn.Module, inputs: Tensor, targets: Tensor) -> int:
    """n, after checking that the model is a module and the data are finite tensors of n ≥ 2 rows."""
    if not isinstance(model, nn.Module):
        raise LLCInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(inputs, Tensor) or not isinstance(targets, Tensor):
        raise LLCInputError("inputs and targets must be torch tensors")
    n = inputs.shape[0] if inputs.ndim else 0
    if n < 2 or targets.ndim == 0 or targets.shape[0] != n:
        raise LLCInputError(
            f"inputs ({tuple(inputs.shape)}) and targets ({tuple(targets.shape)}) must share a first "
            "dimension n ≥ 2 (one row per sample)"
        )
    check_finite("inputs", inputs)
    check_finite("targets", targets)
    return n


def copy_parameters(model: nn.Module, w_star: Mapping[str, Tensor] | None, device: torch.device,
                    dtype: torch.dtype) -> Parameters:
    """w* (the module's own parameters unless `w_star` gives them), checked finite, on device, from
    a copy of the module in eval mode (`evaluation_mode` says why)."""
    mode = evaluation_mode(model)
    module = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    params = {k: v.detach() for k, v in module.named_parameters()}
    if w_star is not None:
        params = checked_w_star(params, w_star)
    params = {k: v.to(device=device, dtype=dtype) for k, v in params.items()}
    for name, value in params.items():
        check_finite(f"weight {name!r} of w*", value)
    flat = FlatParams(params)
    if flat.num_params == 0:
        raise LLCInputError("the model has no parameters to sample")
    return Parameters(module, params, flat, mode)


def model_function(parameters: Parameters, inputs: Tensor, targets: Tensor, *, loss: str, noise_scale: float,
                   class_weights: Sequence[float] | None = None) -> ModelFunction:
    """L_B(w) = mean NLL of the module at flat w on a batch; checks that the data fit the model."""
    module, params, flat, _ = parameters
    dtype = flat_dtype(params)
    device = params[flat.names[0]].device
    x = inputs.to(device=device, dtype=dtype if inputs.is_floating_point() else inputs.dtype)
    y = targets.to(device=device, dtype=dtype if targets.is_floating_point() else targets.dtype)
    for what, cast in (("inputs", x), ("targets", y)):  # finite before the cast (check_data), maybe not after
        if cast.is_floating_point() and not bool(torch.isfinite(cast).all()):
            raise LLCInputError(f"the {what} hold values beyond {str(dtype).replace('torch.', '')}'s range: rescale "
                                "the data, or run with dtype \"float64\"")
    nll = make_nll(loss, noise_scale, class_weights)
    buffers = {k: v for k, v in module.named_buffers()}

    def forward(w_flat: Tensor, xb: Tensor) -> Tensor:
        return functional_call(module, (flat.unflatten(w_flat), buffers), (xb,))

    check_model_runs(forward, flat.flatten(params), x[:2], y[:2], loss)

    def batch_loss(w_flat: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
        return nll(forward(w_flat, xb), yb).mean()

    w_star = flat.flatten(params)
    init_loss = full_loss(batch_loss, w_star, x, y)
    if not math.isfinite(init_loss):
        raise LLCInputError(f"the loss at w* is {init_loss}: check the weights and data for overflow")
    return ModelFunction(flat, w_star, x, y, batch_loss, init_loss)


def flat_dtype(params: Mapping[str, Tensor]) -> torch.dtype:
    return next(iter(params.values())).dtype


def full_loss(batch_loss: BatchLoss, w: Tensor, x: Tensor, y: Tensor) -> float:
    """L_n(w*) over the whole dataset, exactly, in chunks so that large n fits in memory."""
    total, n = 0.0, x.shape[0]
    with torch.no_grad():
        for start in range(0, n, defaults.FULL_LOSS_CHUNK):
            xb, yb = x[start:start + defaults.FULL_LOSS_CHUNK], y[start:start + defaults.FULL_LOSS_CHUNK]
            total += float(batch_loss(w, xb, yb).double()) * xb.shape[0]
    return total / n


def check_finite(what: str, tensor: Tensor) -> None:
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise LLCInputError(f"{what} contain {bad} NaN/inf value(s): clean or drop them before estimating")


def checked_w_star(params: dict[str, Tensor], w_star: Mapping[str, Tensor]) -> dict[str, Tensor]:
    missing = sorted(set(params) - set(w_star))
    unexpected = sorted(set(w_star) - set(params))
    if missing or unexpected:
        raise LLCInputError(f"w_star does not match the model: missing {missing}, unexpected {unexpected}")
    for name, value in params.items():
        if tuple(w_star[name].shape) != tuple(value.shape):
            raise LLCInputError(
                f"w_star[{name!r}] has shape {tuple(w_star[name].shape)} but the model expects {tuple(value.shape)}"
            )
    return {name: torch.as_tensor(w_star[name]).detach() for name in params}


def check_model_runs(forward, w: Tensor, xb: Tensor, yb: Tensor, loss: str) -> None:
    try:
        with torch.no_grad():
            out = forward(w, xb)
    except Exception as err:  # any failure here means the data does not fit the model
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        fix = ("the inputs are a vector, one number per sample: for a model whose first layer takes one "
               "feature pass inputs.reshape(-1, 1)" if xb.ndim == 1 else
               "check that the data's columns match the model's first layer")
        raise LLCInputError(
            f"the model cannot take inputs of shape {tuple(xb.shape[1:])} per sample ({first_line}): {fix}"
        ) from None
    check_output_matches(loss, out, yb)
