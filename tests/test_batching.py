"""Every way of batching the chains (llc_core/batching.py) gives each chain's own loss and gradient.

For an MLP, CNNs (max and average pooling, a grouped convolution with "same" padding and no bias, a
normalisation layer between convolution and pooling) and attention blocks (nn.MultiheadAttention
with weights and a causal mask, F.scaled_dot_product_attention, nn.TransformerEncoderLayer), and a
CNN and an attention block as torch.export programs (aten operators, as a .pt2 checkpoint runs), the
losses and gradients of C chains from `vmap forward`, `vmap grad` and `chain kernels` match a loop
that runs one chain after another with plain autograd, within float rounding; with each chain on its
own minibatch and with all chains on the full batch. Also: which way a model gets, that the CNN's
pooling does see the chains folded into its channels (the layout the speed comes from), and that a
call whose inputs do not depend on w runs PyTorch's operator.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

import llc_core.batching as batching
from llc_core.batching import (SMALL_MODEL_PARAMS, ChainConv2d, ChainKernels, batched_loss_and_grad, vmapped_forward,
                               vmapped_grad)
from llc_core.files.checkpoint import samplable_program
from llc_core.model_function import FlatParams

CHAINS = 3
ROWS = 12


@pytest.fixture(autouse=True)
def no_fused_attention_path():
    # in eval mode nn.MultiheadAttention may take a fused path that autograd cannot differentiate
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    yield
    torch.backends.mha.set_fastpath_enabled(before)


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1, stride=1)
        self.head = nn.Linear(6 * 2 * 2, 5)

    def forward(self, x):
        h = F.max_pool2d(torch.relu(self.conv1(x)), 2)
        h = F.avg_pool2d(torch.tanh(self.conv2(h)), 2)
        return self.head(h.flatten(1))


class GroupedCNN(nn.Module):
    """Two input channels, a grouped convolution with "same" padding and no bias, a GroupNorm before
    the pooling (so that the pooling does not get the folded layout), an overlapping pooling window."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding="same", groups=2, bias=False)
        self.norm = nn.GroupNorm(2, 4)
        self.conv2 = nn.Conv2d(4, 4, 2, stride=2)
        self.head = nn.Linear(4 * 3 * 3, 5)

    def forward(self, x):
        h = F.max_pool2d(torch.relu(self.norm(self.conv1(x))), 3, stride=1)
        return self.head(torch.relu(self.conv2(h)).flatten(1))


class Attention(nn.Module):
    """nn.MultiheadAttention with its weights and a causal mask, LayerNorm, then causal
    F.scaled_dot_product_attention on a hand-made projection."""

    def __init__(self, vocab=5, width=8):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.attention = nn.MultiheadAttention(width, 2, batch_first=True)
        self.norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens):
        h = self.embed(tokens)
        length = tokens.shape[1]
        mask = torch.ones(length, length, dtype=torch.bool).triu(1)
        out, weights = self.attention(h, h, h, attn_mask=mask)
        h = self.norm(h + out + weights[..., :1])
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        h = h + F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.head(h[:, -1])


class Transformer(nn.Module):
    def __init__(self, vocab=5, width=8):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.layer = nn.TransformerEncoderLayer(width, 2, 16, dropout=0.0, batch_first=True)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens):
        return self.head(self.layer(self.embed(tokens)).mean(1))


def make(name: str, dtype=torch.float32):
    torch.manual_seed(0)
    if name.startswith("exported "):
        # as a .pt2 checkpoint arrives: aten operators (aten.conv2d, aten.scaled_dot_product_attention)
        return make_exported(name.removeprefix("exported "))
    if name == "mlp":
        model = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 2))
        x, y = torch.randn(ROWS, 3), torch.randn(ROWS, 2)
    elif name in ("cnn", "grouped cnn"):
        model = CNN() if name == "cnn" else GroupedCNN()
        x, y = torch.randn(ROWS, 1 if name == "cnn" else 2, 8, 8), torch.randint(0, 5, (ROWS,))
    else:
        model = Attention() if name == "attention" else Transformer()
        x, y = torch.randint(0, 5, (ROWS, 6)), torch.randint(0, 5, (ROWS,))
    model = model.to(dtype).eval()
    x = x.to(dtype) if x.is_floating_point() else x
    y = y.to(dtype) if y.is_floating_point() else y
    params = {k: v.detach() for k, v in model.named_parameters()}
    flat = FlatParams(params)

    def batch_loss(w, xb, yb):
        out = functional_call(model, flat.unflatten(w), (xb,))
        return 0.5 * (out - yb).pow(2).sum(1).mean() if name == "mlp" else F.cross_entropy(out, yb)

    generator = torch.Generator().manual_seed(1)
    w = flat.flatten(params) + 0.1 * torch.randn(CHAINS, flat.num_params, generator=generator, dtype=dtype)
    return batch_loss, w, x, y


@functools.cache
def make_exported(name: str):
    batch_loss, w, x, y = make(name)
    torch.manual_seed(0)  # the weights of make(name)
    model = (CNN() if name == "cnn" else Attention()).eval()
    program = torch.export.export(model, (x[:4],), dynamic_shapes=({0: torch.export.Dim("batch")},))
    module = samplable_program(program.module())
    flat = FlatParams(dict(module.named_parameters()))
    assert flat.names == [n for n, _ in model.named_parameters()]

    def exported_loss(v, xb, yb):
        return F.cross_entropy(functional_call(module, flat.unflatten(v), (xb,)), yb)

    return exported_loss, w, x, y


def per_chain_loop(batch_loss, w, batch, full_batch):
    losses, grads = [], []
    for c in range(CHAINS):
        wc = w[c].clone().requires_grad_(True)
        x, y = batch if full_batch else (batch[0][c], batch[1][c])
        loss = batch_loss(wc, x, y)
        losses.append(loss.detach())
        grads.append(torch.autograd.grad(loss, wc)[0])
    return torch.stack(losses), torch.stack(grads)


def chain_batches(x, y):
    """A different minibatch per chain: (C, m, ...) each."""
    generator = torch.Generator().manual_seed(2)
    index = torch.stack([torch.randperm(ROWS, generator=generator)[:8] for _ in range(CHAINS)])
    return x[index], y[index]


VARIANTS = {
    "vmap forward": lambda loss, dims: vmapped_forward(loss, dims, None),
    "vmap grad": vmapped_grad,
    "chain kernels": lambda loss, dims: vmapped_forward(loss, dims, ChainKernels),
}


def assert_matches(got, want, dtype):
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=tolerance * 10, atol=tolerance * float(b.abs().max()))


@pytest.mark.parametrize("full_batch", [False, True], ids=["minibatch per chain", "full batch"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("name", ["mlp", "cnn", "grouped cnn", "attention", "transformer", "exported cnn",
                                  "exported attention"])
def test_every_variant_matches_a_loop_over_chains(name, variant, full_batch):
    batch_loss, w, x, y = make(name)
    batch = (x, y) if full_batch else chain_batches(x, y)
    dims = (0, None, None) if full_batch else (0, 0, 0)
    got = VARIANTS[variant](batch_loss, dims)(w, batch)
    assert_matches(got, per_chain_loop(batch_loss, w, batch, full_batch), torch.float32)


@pytest.mark.parametrize("name", ["cnn", "attention"])
def test_chain_kernels_in_float64(name):
    batch_loss, w, x, y = make(name, torch.float64)
    batch = chain_batches(x, y)
    got = vmapped_forward(batch_loss, (0, 0, 0), ChainKernels)(w, batch)
    assert_matches(got, per_chain_loop(batch_loss, w, batch, False), torch.float64)


def test_each_model_gets_its_way_of_batching():
    for name, kind in [("mlp", "vmap forward"), ("cnn", "chain kernels"), ("grouped cnn", "chain kernels"),
                       ("attention", "chain kernels"), ("transformer", "chain kernels"),
                       ("exported cnn", "chain kernels"), ("exported attention", "chain kernels")]:
        batch_loss, w, x, y = make(name)
        loss_and_grad = batched_loss_and_grad(batch_loss, False, w.shape[1])
        loss_and_grad(w, chain_batches(x, y))
        assert loss_and_grad.kind == kind, name
    big = nn.Linear(SMALL_MODEL_PARAMS, 1)
    flat = FlatParams(dict(big.named_parameters()))
    loss_and_grad = batched_loss_and_grad(
        lambda v, xb, yb: (functional_call(big, flat.unflatten(v), (xb,)) - yb).pow(2).mean(), True, flat.num_params)
    w = flat.flatten(dict(big.named_parameters())).detach().expand(2, -1)
    loss_and_grad(w, (torch.randn(3, SMALL_MODEL_PARAMS), torch.randn(3, 1)))
    assert loss_and_grad.kind == "vmap grad"


def test_the_pooling_gets_the_chains_folded_into_its_channels(monkeypatch):
    seen = []
    original = batching.chains_in_channels

    def spy(x, dim):
        folded = original(x, dim)
        seen.append(folded is not None and folded.is_contiguous(memory_format=torch.channels_last))
        return folded

    monkeypatch.setattr(batching, "chains_in_channels", spy)
    batch_loss, w, x, y = make("cnn")
    vmapped_forward(batch_loss, (0, 0, 0), ChainKernels)(w, chain_batches(x, y))
    assert seen == [True, True]  # both poolings follow a chain convolution and its activation


def test_a_call_that_does_not_depend_on_w_runs_pytorchs_operator():
    x, weight = torch.randn(2, 1, 5, 5), torch.randn(3, 1, 3, 3)
    assert torch.equal(ChainConv2d.apply(x, weight, None, (1, 1, 1, 1)), F.conv2d(x, weight, None, 1, 1, 1, 1))
