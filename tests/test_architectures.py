"""Real architectures through the engine: attention, convolutions and pooling, normalisation layers,
embeddings, residual blocks and dropout, each trained here in seconds (nothing is downloaded).

For each: a run with the default sampler (ε "auto") finishes with a finite λ̂ > 0 and the acceptance
near its goal; the module is evaluated in eval mode with its buffers frozen, and the caller's module
is unchanged afterwards; and λ̂ agrees with a plain per-chain SGLD loop written here, at the same ε,
γ, nβ and steps, within 3 combined standard errors (independent chains, so that is a 3σ test of
"the engine samples the same posterior as textbook SGLD").
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from llc_core import SamplerConfig, estimate_llc
from llc_core.sampling.curvature import HessianVectorProduct, top_hessian_eigenvalue

STEPS = 600
CHAINS = 4


class TinyTransformer(nn.Module):
    """Embedding + one nn.TransformerEncoderLayer (dropout on) + a head: predicts the first token."""

    def __init__(self, vocab=6, width=16):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(torch.randn(5, width) * 0.1)
        self.layer = nn.TransformerEncoderLayer(width, 2, 32, dropout=0.1, batch_first=True)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens):
        return self.head(self.layer(self.embed(tokens) + self.position).mean(1))


class AttentionBlock(nn.Module):
    """Residual nn.MultiheadAttention + LayerNorm, then F.scaled_dot_product_attention by hand."""

    def __init__(self, vocab=6, width=12):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.attention = nn.MultiheadAttention(width, 2, dropout=0.1, batch_first=True)
        self.norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens):
        h = self.embed(tokens)
        h = self.norm(h + self.attention(h, h, h, need_weights=False)[0])
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        h = h + F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.head(h[:, -1])


class SmallCNN(nn.Module):
    """Conv → ReLU → MaxPool → Conv → GroupNorm → ReLU → AvgPool → Linear on 8×8 images."""

    def __init__(self, classes=4):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(4, 6, 3, padding=1), nn.GroupNorm(2, 6), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(6, classes)

    def forward(self, images):
        return self.head(self.features(images))


class NormalisedMLP(nn.Module):
    """Linear → BatchNorm1d → ReLU → Dropout → residual Linear → Linear: regression."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(3, 8)
        self.norm = nn.BatchNorm1d(8)
        self.drop = nn.Dropout(0.2)
        self.block = nn.Linear(8, 8)
        self.out = nn.Linear(8, 1)

    def forward(self, x):
        h = self.drop(F.relu(self.norm(self.inp(x))))
        return self.out(h + torch.tanh(self.block(h)))


def token_task(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 6, (n, 5), generator=g)
    return tokens, tokens[:, 0].clone()


def image_task(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(4, 1, 8, 8, generator=g)
    labels = torch.randint(0, 4, (n,), generator=g)
    return prototypes[labels] + 0.5 * torch.randn(n, 1, 8, 8, generator=g), labels


def regression_task(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return x, (x[:, :1] * x[:, 1:2] + 0.1 * torch.randn(n, 1, generator=g))


CASES = {
    "transformer": (TinyTransformer, token_task, "cross_entropy"),
    "attention": (AttentionBlock, token_task, "cross_entropy"),
    "cnn": (SmallCNN, image_task, "cross_entropy"),
    "batchnorm_mlp": (NormalisedMLP, regression_task, "gaussian"),
}


def train(name):
    build, task, loss = CASES[name]
    torch.manual_seed(0)
    model = build()
    x, y = task()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    objective = nn.CrossEntropyLoss() if loss == "cross_entropy" else nn.MSELoss()
    model.train()
    for _ in range(150):
        optimizer.zero_grad()
        objective(model(x), y).backward()
        optimizer.step()
    return model, x, y, loss  # left in train mode, as users often pass it


@pytest.fixture(scope="module", params=sorted(CASES))
def trained(request):
    return request.param, *train(request.param)


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, [m.training for m in model.modules()]


def test_default_run_keeps_the_module_and_reports_eval_mode(trained):
    name, model, x, y, loss = trained
    before, modes = snapshot(model)
    result = estimate_llc(model, x, y, SamplerConfig(chains=CHAINS, steps=STEPS), loss=loss, device="cpu")
    assert result.llc_mean is not None and math.isfinite(result.llc_mean) and result.llc_mean > 0, name
    assert not result.diverged_chains
    # "auto" aims at 0.92 for d ≥ 20; acceptance on the run's own minibatches reads near or above it
    assert 0.85 <= result.mala_acceptance_mean <= 1.0, (name, result.mala_acceptance_mean)
    assert result.model_mode["mode"] == "eval" and result.model_mode["module_was_training"] is True
    after, modes_after = snapshot(model)
    assert modes_after == modes and after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before), "the caller's module (or its buffers) changed"


def test_eval_mode_is_recorded_with_what_it_changes():
    _, model, x, y, loss = ("batchnorm_mlp", *train("batchnorm_mlp"))
    result = estimate_llc(model, x, y, SamplerConfig(step_size=1e-4, chains=2, steps=40), loss=loss, device="cpu")
    mode = result.model_mode
    assert mode["dropout_layers"] == 1 and mode["running_statistics_layers"] == 1
    assert "dropout layer(s) off" in mode["why"] and "running statistics" in mode["why"]


def plain_sgld(model, x, y, loss, settings):
    """Textbook SGLD, one chain after another: w ← w − ε/2 (nβ ∇L_B + γ (w − w*)) + √ε N(0, 1)."""
    step_size, localization, nbeta, batch, steps, burnin, chains = settings
    model = copy.deepcopy(model).eval()
    names = [n for n, _ in model.named_parameters()]
    w_star = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    objective = nn.CrossEntropyLoss() if loss == "cross_entropy" else (lambda out, t: 0.5 * (out - t).pow(2).sum(1).mean())
    torch.backends.mha.set_fastpath_enabled(False)  # as the engine does: the fused path has no derivative
    try:
        generator = torch.Generator().manual_seed(123)
        full = float(objective(functional_call(model, (w_star, buffers), (x,)), y))
        estimates = []
        for _ in range(chains):
            w = {n: v.clone() for n, v in w_star.items()}
            total = 0.0
            for t in range(steps):
                rows = torch.randperm(len(x), generator=generator)[:batch]
                params = {n: v.requires_grad_(True) for n, v in w.items()}
                value = objective(functional_call(model, (params, buffers), (x[rows],)), y[rows])
                grads = torch.autograd.grad(value, [params[n] for n in names])
                with torch.no_grad():
                    for n, g in zip(names, grads):
                        drift = nbeta * g + localization * (w[n] - w_star[n])
                        noise = torch.randn(w[n].shape, generator=generator)
                        w[n] = (w[n] - step_size / 2 * drift + math.sqrt(step_size) * noise).detach()
                if t >= burnin:
                    total += float(value)
            estimates.append(nbeta * (total / (steps - burnin) - full))
    finally:
        torch.backends.mha.set_fastpath_enabled(True)
    mean = sum(estimates) / len(estimates)
    se = math.sqrt(sum((e - mean) ** 2 for e in estimates) / (len(estimates) - 1) / len(estimates))
    return mean, se


def test_engine_agrees_with_a_plain_sgld_loop(trained):
    name, model, x, y, loss = trained
    nbeta, localization, batch, steps, chains = len(x) / math.log(len(x)), 1.0, 64, 400, 6
    # ε well inside the stability limit of the stiffest direction, as the curvature rule sets it
    step_size = 0.02 / (nbeta * top_hessian_eigenvalue(_batch_loss(model, loss), _flat(model), x, y) + localization)
    # the loop below is the plain estimator nβ(E[L_B] − L_n(w*)), without the heat correction
    sampler = SamplerConfig(step_size=step_size, localization=localization, nbeta=nbeta, batch_size=batch,
                            steps=steps, burnin=0.5, chains=chains, seed=1, heat_correction=False)
    engine = estimate_llc(model, x, y, sampler, loss=loss, device="cpu")
    loop_mean, loop_se = plain_sgld(model, x, y, loss, (step_size, localization, nbeta, batch, steps, steps // 2, chains))
    combined = math.sqrt(engine.llc_se ** 2 + loop_se ** 2)
    assert abs(engine.llc_mean - loop_mean) <= 3 * combined, (name, engine.llc_mean, loop_mean, combined)


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _batch_loss(model, loss):
    """L_B of flat parameters, on an eval-mode copy (what the curvature rule sees)."""
    model = copy.deepcopy(model).eval()
    shapes = [(n, p.shape, p.numel()) for n, p in model.named_parameters()]
    buffers = dict(model.named_buffers())

    def batch_loss(w, xb, yb):
        params, start = {}, 0
        for name, shape, size in shapes:
            params[name] = w[start:start + size].reshape(shape)
            start += size
        out = functional_call(model, (params, buffers), (xb,))
        return F.cross_entropy(out, yb) if loss == "cross_entropy" else 0.5 * (out - yb).pow(2).sum(1).mean()

    torch.backends.mha.set_fastpath_enabled(False)
    return batch_loss


class NoForwardDerivative(torch.autograd.Function):
    """x ↦ x³ with a backward that is itself differentiable, and no forward-mode rule."""

    @staticmethod
    def forward(x):
        return x ** 3

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return grad_out * 3 * x ** 2


class OnceDifferentiable(NoForwardDerivative):
    """x ↦ x³ whose backward cannot be differentiated again (nor has a forward-mode rule)."""

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return grad_out * 3 * x ** 2


@pytest.mark.parametrize("function, method", [
    (lambda w: w ** 3, "forward_over_reverse"),
    (NoForwardDerivative.apply, "reverse_over_reverse"),
    (OnceDifferentiable.apply, "central_difference"),
])
def test_hessian_vector_product_falls_back_when_a_derivative_is_missing(function, method):
    # L(w) = Σ w³ has H = diag(6 w): every fallback must give it
    w = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    product = HessianVectorProduct(lambda v, xb, yb: function(v).sum(), w, torch.zeros(1), torch.zeros(1))
    v = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert torch.allclose(product(v), 6 * w * v, rtol=1e-5)
    assert product.method == method


def test_inputs_of_one_column_given_as_vectors_get_a_clear_message():
    from llc_core import LLCInputError

    x, y = torch.randn(50), torch.randn(50)
    with pytest.raises(LLCInputError, match=r"reshape\(-1, 1\)"):
        estimate_llc(nn.Linear(1, 1), x, y[:, None], SamplerConfig(step_size=1e-4, steps=10, chains=2))
    # a model that maps (n,) to (n,) with targets (n,): one value per sample, a valid Gaussian loss
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(torch.ones(()))

        def forward(self, inputs):
            return self.a * inputs

    result = estimate_llc(Scale(), x, 2 * x, SamplerConfig(step_size=1e-4, steps=20, chains=2))
    assert result.llc_mean is not None
