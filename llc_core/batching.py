"""How the chains of a run share one computation: L_B and ∇L_B for C chains at once.

`batched_loss_and_grad` turns a loss of one flat parameter vector into the function a kernel calls,
(w (C, d), batch) -> (L_B (C,), ∇L_B (C, d)), with the chains as a vmapped batch dimension.

How it batches is fixed on the first call, from the operators the model calls on chain 0's batch:

- a model that calls none of `CHAIN_KERNEL_OPERATORS` (MLPs, DLNs, the potentials) runs as before:
  its forward pass vmapped and one autograd call for all chains up to SMALL_MODEL_PARAMS
  parameters, `vmap(grad(...))` above;
- a model that convolves, pools or attends, on the CPU, runs its vmapped forward pass under
  `ChainKernels`, which computes those operators for all chains at once in layouts PyTorch's CPU
  kernels handle well, then one autograd call. (On a GPU it keeps the plain path: not measured there.)

Why: what such a model's step cost was PyTorch's CPU kernels themselves, which a per-chain loop (and
devinterp) pays as well, so choosing between vmap(grad), a vmapped forward and a loop over chains
changed its step by 15% at most (benchmarks/bench_architectures.py --gradients). max_pool2d on small
NCHW images costs ~25 ns per output element, 5-15x its channels-last time; vmap runs a convolution
with per-chain weights as a grouped NCHW convolution, 2-3x slower than channels-last; and in
attention, PyTorch's softmax over rows of a few keys and the backward of the packed q/k/v
projection's indexing took about a quarter of a step. Folding the chains into the channels of one
channels-last grouped convolution keeps the activations channels-last, chains and channels
innermost, through the activation function into the pooling, where they are the vectorised
dimension (2x on the benchmark's CNN); attention is written out (1.2-1.6x on its transformer).

The choice is made from the model's operators and not by timing candidates, so that a seeded run
gives the same numbers bit for bit every time: the candidates differ in float rounding (vmap(grad)
and the vmapped forward differ by ~1e-8 in an MLP's gradients), and a timing that came out the other
way on a busy machine would change a run's result.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import grad_and_value, vmap
from torch.overrides import TorchFunctionMode

from llc_core.model_function import BatchLoss

# Below this many parameters a step is dominated by fixed per-call costs, and vmapping only the
# forward pass (then one autograd call for all chains) beats vmap(grad(...)) by 15-45%; above it
# vmap(grad(...)) is 5-10% faster (benchmarks/bench_engine.py). The choice depends on d alone, so a
# run is reproducible.
SMALL_MODEL_PARAMS = 20_000

LossAndGrad = Callable[[Tensor, tuple[Tensor, Tensor]], tuple[Tensor, Tensor]]


def batched_loss_and_grad(batch_loss: BatchLoss, full_batch: bool, num_params: int) -> LossAndGrad:
    """(w (C, d), (x, y)) -> (L_B per chain, ∇L_B per chain), chains as a vmapped batch dimension."""
    in_dims = (0, None, None) if full_batch else (0, 0, 0)
    return ChainBatching(batch_loss, in_dims, num_params)


class ChainBatching:
    """The batched L_B and ∇L_B; on the first call it looks at the operators the model calls and
    keeps the way of batching that suits them (module docstring)."""

    def __init__(self, batch_loss: BatchLoss, in_dims: tuple, num_params: int):
        self.batch_loss, self.in_dims, self.num_params = batch_loss, in_dims, num_params
        self.run: LossAndGrad | None = None
        self.kind: str | None = None  # "chain kernels", "vmap forward" or "vmap grad", once chosen

    def __call__(self, w: Tensor, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        if self.run is None:
            self.kind, self.run = self.choose(w, batch)
        return self.run(w, batch)

    def choose(self, w: Tensor, batch: tuple[Tensor, Tensor]) -> tuple[str, LossAndGrad]:
        # measured on the CPU only: a GPU keeps the plain path until the chain kernels are timed there
        on_cpu = w.device.type == "cpu"
        if on_cpu and CHAIN_KERNEL_OPERATORS & operators_called(self.batch_loss, w, batch, self.in_dims):
            return "chain kernels", vmapped_forward(self.batch_loss, self.in_dims, ChainKernels)
        if self.num_params <= SMALL_MODEL_PARAMS:
            return "vmap forward", vmapped_forward(self.batch_loss, self.in_dims, None)
        return "vmap grad", vmapped_grad(self.batch_loss, self.in_dims)


def vmapped_forward(batch_loss: BatchLoss, in_dims: tuple, mode: type[TorchFunctionMode] | None) -> LossAndGrad:
    """The forward pass vmapped over chains (under `mode`, if given), then one autograd call."""
    forward = vmap(batch_loss, in_dims=in_dims)

    def loss_and_grad(w: Tensor, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            w = w.detach().requires_grad_(True)
            if mode is None:
                loss = forward(w, *batch)
            else:
                with mode():
                    loss = forward(w, *batch)
            # chains do not interact, so the gradient of the sum is each chain's own gradient
            (grad,) = torch.autograd.grad(loss.sum(), w)
        return loss.detach(), grad

    return loss_and_grad


def vmapped_grad(batch_loss: BatchLoss, in_dims: tuple) -> LossAndGrad:
    grad_fn = vmap(grad_and_value(batch_loss), in_dims=in_dims)

    def loss_and_grad(w: Tensor, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        grad, value = grad_fn(w, *batch)
        return value, grad

    return loss_and_grad


class OperatorRecorder(TorchFunctionMode):
    """Notes every torch function called at the top level (not those called inside another)."""

    def __init__(self):
        super().__init__()
        self.called: set = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.called.add(func)
        return func(*args, **(kwargs or {}))


def operators_called(batch_loss: BatchLoss, w: Tensor, batch: tuple[Tensor, Tensor], in_dims: tuple) -> set:
    """The torch functions that chain 0's loss calls on its batch (one forward pass, no randomness)."""
    x, y = (t[0] if dim == 0 else t for t, dim in zip(batch, in_dims[1:]))
    recorder = OperatorRecorder()
    with torch.no_grad(), recorder:
        batch_loss(w[0], x, y)
    return recorder.called


# --------------------------------------------------------------------------- chain kernels
# Under `ChainKernels` these functions go to an autograd.Function whose `vmap` rule gets the
# physical tensors, chains included. Those rules run ordinary torch operators, which autograd records,
# so the one autograd call after the forward pass differentiates them; `backward` is never reached
# (a call whose inputs are not batched does not depend on w).


def per_chain(t: Tensor, dim: int | None, chains: int) -> Tensor:
    """The physical tensor with the chains first; a tensor shared by all chains is expanded (a view)."""
    return t.expand(chains, *t.shape) if dim is None else t.movedim(dim, 0)


class SharedOnly(torch.autograd.Function):
    """The parts of an autograd.Function used without batched inputs: the plain operator."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError("chain kernels are differentiated through their vmap rule only")


class ChainConv2d(SharedOnly):
    """F.conv2d with per-chain weights as one grouped convolution, the chains folded into the
    channels, in channels-last; the output stays channels-last with chains and channels innermost."""

    @staticmethod
    def forward(x, weight, bias, options):
        return F.conv2d(x, weight, bias, *options)

    @staticmethod
    def vmap(info, in_dims, x, weight, bias, options):
        chains, (x_dim, w_dim, b_dim, _) = info.batch_size, in_dims
        stride, padding, dilation, groups = options
        if w_dim is None:  # a fixed filter: the chains are more images of one convolution
            x = per_chain(x, x_dim, chains)
            out = F.conv2d(x.flatten(0, 1), weight, None, stride, padding, dilation, groups)
            out = out.unflatten(0, x.shape[:2])
            return out if bias is None else out + per_chain(bias, b_dim, chains)[:, None, :, None, None], 0
        weight = weight.movedim(w_dim, 0)
        c_out = weight.shape[1]
        folded_weight = weight.flatten(0, 1).contiguous(memory_format=torch.channels_last)
        folded_bias = None if bias is None else per_chain(bias, b_dim, chains).flatten()
        if x_dim is None and groups == 1:  # a shared input: the chains are more output channels
            folded_x, folded_groups = x.contiguous(memory_format=torch.channels_last), 1
        else:
            x = per_chain(x, x_dim, chains)  # (C, N, C_in, H, W)
            n, c_in, height, width = x.shape[1:]
            # memory (N, H, W, C, C_in): free when x came from a chain convolution
            folded_x = x.permute(1, 3, 4, 0, 2).contiguous().view(n, height, width, chains * c_in).permute(0, 3, 1, 2)
            folded_groups = groups * chains
        out = F.conv2d(folded_x, folded_weight, folded_bias, stride, padding, dilation, folded_groups)
        out = out.contiguous(memory_format=torch.channels_last)  # no copy when the kernel chose it
        return out.unflatten(1, (chains, c_out)), 1


def chains_in_channels(x: Tensor, dim: int | None) -> Tensor | None:
    """A physical (N, C, channels, H, W) tensor laid out as (N, H, W, C, channels) in memory, as
    one channels-last (N, C·channels, H, W) view; None for any other layout."""
    if dim is None or x.dim() != 5:
        return None
    x = x.movedim(dim, 1)
    if not x.permute(0, 3, 4, 1, 2).is_contiguous():
        return None
    return x.flatten(1, 2)


class GradChannelsLast(torch.autograd.Function):
    """Identity whose backward hands the gradient on in channels-last: a pooling's backward given an
    NCHW gradient copies its whole input gradient to NCHW and back (three quarters of its cost)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous(memory_format=torch.channels_last)


class ChainPool2d(SharedOnly):
    """max_pool2d or avg_pool2d (`pool`, its options bound) over all chains at once: channels-last with
    chains and channels together when the input comes that way from a chain convolution, otherwise
    as vmap does it (the chains join the batch dimension)."""

    @staticmethod
    def forward(x, pool):
        return pool(x)

    @staticmethod
    def vmap(info, in_dims, x, pool):
        folded = chains_in_channels(x, in_dims[0])
        if folded is None:
            x = x.movedim(in_dims[0], 0)
            return pool(x.flatten(0, 1)).unflatten(0, x.shape[:2]), 0
        out = GradChannelsLast.apply(pool(folded))
        return out.unflatten(1, (info.batch_size, -1)), 1


# --------------------------------------------------------------------------- attention


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float) -> tuple[Tensor, Tensor]:
    """softmax(q kᵀ · scale + mask) v and the weights, for (..., L, E) queries and (..., S, E) keys.

    The softmax is written out: PyTorch's CPU softmax over rows of a few keys took 5x as long. The
    row maximum is subtracted without a gradient (the softmax does not depend on it); a boolean mask
    marks what may not be attended to, and a row with nothing left to attend to gets zero weights, as
    PyTorch's attention gives it."""
    scores = (q @ k.transpose(-2, -1)) * scale
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    top = scores.detach().amax(-1, keepdim=True)
    if mask is not None:
        top = top.masked_fill(top == float("-inf"), 0.0)
    e = (scores - top).exp()
    total = e.sum(-1, keepdim=True)
    weights = e / (total if mask is None else total.clamp_min(torch.finfo(e.dtype).tiny))
    return weights @ v, weights


def causal_mask(length: int, keys: int, device: torch.device) -> Tensor:
    """True where a query may not attend: keys after it, the mask aligned at the top left as PyTorch's
    is_causal has it."""
    return torch.ones(length, keys, dtype=torch.bool, device=device).triu(1)


SDPA_PARAMETERS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


def scaled_dot_product_attention(args: tuple, kwargs: dict) -> Tensor | None:
    """F.scaled_dot_product_attention by `attention`; None (PyTorch's own) with dropout, grouped-query
    attention, or a mask together with is_causal (which PyTorch refuses)."""
    bound = {**dict(zip(SDPA_PARAMETERS, args)), **kwargs}
    q, k, v, mask = bound["query"], bound["key"], bound["value"], bound.get("attn_mask")
    causal = bound.get("is_causal", False)
    if bound.get("dropout_p", 0.0) or bound.get("enable_gqa", False) or (causal and mask is not None):
        return None
    if causal:
        mask = causal_mask(q.shape[-2], k.shape[-2], q.device)
    scale = bound.get("scale")
    return attention(q, k, v, mask, q.shape[-1] ** -0.5 if scale is None else scale)[0]


MHA_PARAMETERS = tuple(inspect.signature(F.multi_head_attention_forward).parameters)


def multi_head_attention(args: tuple, kwargs: dict) -> tuple[Tensor, Tensor | None] | None:
    """F.multi_head_attention_forward for self-attention with one packed projection (what
    nn.MultiheadAttention and nn.TransformerEncoderLayer use), no dropout, no key padding mask and at
    most one (L, L) mask; None for anything else, which then runs as PyTorch has it."""
    b = {**dict(zip(MHA_PARAMETERS, args)), **kwargs}
    x = b["query"]
    mask = b.get("attn_mask")
    if (not (x is b["key"] is b["value"]) or x.dim() != 3 or b.get("use_separate_proj_weight")
            or b["in_proj_weight"] is None or b["bias_k"] is not None or b["bias_v"] is not None
            or b["add_zero_attn"] or (b["dropout_p"] and b.get("training", True))
            or b.get("key_padding_mask") is not None or (mask is not None and mask.dim() != 2)
            or (b.get("is_causal") and mask is None)):
        return None
    x = x.transpose(0, 1)  # (N, L, E): nn.MultiheadAttention's batch_first layout, no copy
    batch, length, width = x.shape
    heads = b["num_heads"]
    if b.get("is_causal"):  # PyTorch takes the hint (with a mask, which it insists on) as a causal mask
        mask = causal_mask(length, length, x.device)
    qkv = F.linear(x, b["in_proj_weight"], b["in_proj_bias"])
    q, k, v = (t.unflatten(-1, (heads, width // heads)).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    out, weights = attention(q, k, v, mask, (width // heads) ** -0.5)  # (N, H, L, E/H), (N, H, L, L)
    out = F.linear(out.transpose(1, 2).reshape(batch, length, width), b["out_proj_weight"],
                   b["out_proj_bias"]).transpose(0, 1)
    if not b.get("need_weights", True):
        return out, None
    return out, weights.mean(1) if b.get("average_attn_weights", True) else weights


# --------------------------------------------------------------------------- the mode


def bound_pool(func, args: tuple, kwargs: dict) -> Callable[[Tensor], Tensor] | None:
    """max_pool2d or avg_pool2d with every argument but the input bound; None for a call that
    returns indices."""
    names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices") if func in MAX_POOL2D \
        else ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
    options = {**dict(zip(names, args[1:])), **kwargs}
    if options.pop("return_indices", False):
        return None
    return functools.partial(func, **options)


def conv_options(args: tuple, kwargs: dict) -> tuple:
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    bound = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1, **dict(zip(names, args)), **kwargs}
    return bound["input"], bound["weight"], bound["bias"], (bound["stride"], bound["padding"], bound["dilation"],
                                                              bound["groups"])


class ChainKernels(TorchFunctionMode):
    """While a vmapped forward pass runs: 2-D convolutions and pooling and attention by the chain
    kernels above; every other function, and every call they do not cover, as PyTorch has it.

    A linear layer stays vmap's: a baddbmm per layer was 1.7x vmap's rule alone, but 10% slower in
    the benchmark's models; a layer norm with its affine map written out gained nothing either."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = chain_kernel(func, args, kwargs)
        if out is not None:
            return out
        try:
            return func(*args, **kwargs)
        except RuntimeError as err:
            # An operator that asks vmap whether its input is channels-last fails (vmap cannot say)
            # on the channels-last activations a chain convolution hands on: group_norm does. The
            # question comes before any work, so the call is made again on the standard layout (not
            # for an in-place or out= call, which must write to the tensors it was given).
            standard = tuple(a.contiguous() if isinstance(a, Tensor) and a.dim() >= 4 else a for a in args)
            in_place = getattr(func, "__name__", "").endswith("_") or "out" in kwargs
            if "is_contiguous" not in str(err) or in_place or all(s is a for s, a in zip(standard, args)):
                raise
            return func(*standard, **kwargs)


aten = torch.ops.aten
# Each operator as a module's forward calls it, and as a torch.export program (.pt2) calls it
CONV2D = frozenset({F.conv2d, aten.conv2d.default, aten.conv2d.padding})
MAX_POOL2D = frozenset({F.max_pool2d, aten.max_pool2d.default})
AVG_POOL2D = frozenset({F.avg_pool2d, aten.avg_pool2d.default})
SDPA = frozenset({F.scaled_dot_product_attention, aten.scaled_dot_product_attention.default})


def chain_kernel(func, args: tuple, kwargs: dict) -> Any:
    """The chain kernel's result for this call, or None when it has none."""
    if func in CONV2D:
        x, weight, bias, options = conv_options(args, kwargs)
        return ChainConv2d.apply(x, weight, bias, options) if x.dim() == 4 else None
    if (func in MAX_POOL2D or func in AVG_POOL2D) and args:  # (an input given by keyword: PyTorch's)
        pool = bound_pool(func, args, kwargs)
        return None if pool is None or args[0].dim() != 4 else ChainPool2d.apply(args[0], pool)
    if func is F.multi_head_attention_forward:
        return multi_head_attention(args, kwargs)
    if func in SDPA:
        return scaled_dot_product_attention(args, kwargs)
    return None


# A model that calls one of these runs under ChainKernels; the others keep the path that their
# recorded results (tests/test_same_results.py) were computed on.
CHAIN_KERNEL_OPERATORS = CONV2D | MAX_POOL2D | AVG_POOL2D | SDPA | {F.multi_head_attention_forward}
