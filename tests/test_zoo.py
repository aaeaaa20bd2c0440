"""The model zoo: every kind builds, knows its truth, honours its config fields and rejects bad ones."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from llc_core import DataConfig, LLCInputError, ModelConfig, RunConfig
from llc_core.truth import theory
from llc_core.truth.zoo import KINDS, build_problem, draw_dln

SMALL = DataConfig(n=600)


def test_kinds():
    assert set(KINDS) == {"potential", "dln", "rrr", "tanh", "mlp"}


def test_potential_is_the_normal_crossing_model():
    p = build_problem(ModelConfig(kind="potential", powers=[1, 2]), SMALL)
    assert p.truth.llc == Fraction(1, 4) and p.truth.multiplicity == 1
    assert float(p.targets.abs().max()) == 0.0  # noise-free labels of the truth w* = 0
    assert p.info["k_scale"] == pytest.approx(float(p.inputs.square().mean()) / 2)
    # the recommended step size follows the curvature of t·w² at the typical scale: 0.1 / (2t)
    t = 600 / math.log(600) * p.info["k_scale"]
    assert p.sampler_defaults["step_size"] == pytest.approx(0.1 / (2 * t))


def test_explicit_dln_keeps_its_old_config_shape():
    config = RunConfig.from_dict({"model": {"kind": "dln", "widths": [10, 10, 10, 10], "rank": 3, "seed": 0},
                                  "data": {"n": 600}})
    p = build_problem(config.model, config.data)
    assert p.truth.llc == Fraction(42) and p.truth.multiplicity == 3  # docs/METHOD.md §4 worked value
    assert p.num_params == 300
    product = p.model[2].weight @ p.model[1].weight @ p.model[0].weight
    assert int(torch.linalg.matrix_rank(product.double(), rtol=1e-4)) == 3  # float32 weights: a loose rtol
    # noise-free labels: w* fits the data up to float32 rounding
    with torch.no_grad():
        assert float((p.model(p.inputs) - p.targets).abs().max()) < 1e-3 * float(p.targets.abs().max())


def test_dln_weight_scales_give_the_same_truth_and_ranks():
    unit = build_problem(ModelConfig(kind="dln", widths=[6, 5, 4], rank=2, weight_scale="unit"), SMALL)
    fan = build_problem(ModelConfig(kind="dln", widths=[6, 5, 4], rank=2), SMALL)
    assert unit.truth == fan.truth
    ratio = unit.model[0].weight / fan.model[0].weight
    assert torch.allclose(ratio, torch.full_like(ratio, math.sqrt(6)), rtol=1e-5)


def test_random_dln_generator_follows_the_paper_and_is_reproducible():
    config = ModelConfig(kind="dln", layers=[2, 5], width_range=[5, 50], seed=3)
    a, b = build_problem(config, SMALL), build_problem(config, SMALL)
    assert a.info["widths"] == b.info["widths"] and a.truth == b.truth
    widths = a.info["widths"]
    assert 3 <= len(widths) <= 6 and all(5 <= h <= 50 for h in widths)
    product = a.model[0].weight.double()
    for layer in list(a.model)[1:]:
        product = layer.weight.double() @ product
    rank = int(torch.linalg.matrix_rank(product))
    assert a.info["rank"] == rank
    # seed 3 (widths 7-42-38-33-25, every factor full rank but the first): λ(w*) is that of one
    # regular 25x7 matrix, equal here to Aoyagi's global value, which the info keeps
    assert a.truth.llc == theory.deep_linear_network(widths, rank).llc == Fraction(175, 2)
    assert a.info["global_llc"] == 87.5 and a.info["truth"] == "λ(w*)"


def test_random_dln_truth_is_the_local_llc_not_aoyagis_lower_bound():
    # dln-1k seed 6: widths 36-50-25-27-8 with factor ranks 36, 4, 20, 8 and product rank 4.
    # Aoyagi's global λ is 121.5; at these weights λ(w*) = 144 (theory.deep_linear_network_local).
    p = build_problem(ModelConfig(kind="dln", layers=[2, 5], width_range=[5, 50], seed=6), SMALL)
    assert p.info["matrix_ranks"] == [36, 4, 20, 8]
    assert p.truth.llc == 144 and p.info["global_llc"] == 121.5
    # seed 8: factor ranks 2, 14, 7, 5, 16: no closed form, so no truth (and the reason says why)
    unknown = build_problem(ModelConfig(kind="dln", layers=[2, 5], width_range=[5, 50], seed=8), SMALL)
    assert unknown.truth is None and unknown.info["truth"].startswith("unknown")


def test_random_dln_makes_about_half_the_matrices_low_rank():
    low = total = 0
    for seed in range(40):
        widths, weights = draw_dln((2, 5), (5, 50), seed)
        for w in weights:
            total += 1
            low += int(torch.linalg.matrix_rank(w)) < min(w.shape)
    # each matrix is replaced w.p. 0.5 by one of rank U{0..min}; rank = min keeps it full, so the
    # expected low-rank share is a bit under 0.5. Over ~140 matrices, 0.3-0.6 is a > 4σ band.
    assert 0.3 < low / total < 0.6


def test_rrr_agrees_with_the_two_matrix_dln():
    p = build_problem(ModelConfig(kind="rrr", input_dim=5, hidden=3, output_dim=4, rank=2), SMALL)
    assert p.truth.llc == theory.reduced_rank_regression(5, 3, 4, 2).llc == theory.deep_linear_network([5, 3, 4], 2).llc
    assert [tuple(layer.weight.shape) for layer in p.model] == [(3, 5), (4, 3)]


@pytest.mark.parametrize("hidden, lam", [(1, Fraction(1, 2)), (2, Fraction(2, 3)), (3, Fraction(5, 6)),
                                         (4, Fraction(1)), (5, Fraction(11, 10))])
def test_tanh(hidden, lam):
    p = build_problem(ModelConfig(kind="tanh", hidden=hidden), SMALL)
    assert p.truth.llc == lam
    assert p.num_params == 2 * hidden
    assert all(float(q.abs().max()) == 0.0 for q in p.model.parameters())  # w* = 0, true function 0
    assert float(p.inputs.min()) >= -1 and float(p.inputs.max()) <= 1


def test_mlp_regression_and_classification_have_no_truth():
    reg = build_problem(ModelConfig(kind="mlp", input_dim=3, hidden=[8, 8], output_dim=2, seed=1), SMALL)
    assert reg.truth is None and reg.loss == "gaussian" and reg.targets.shape == (600, 2)
    with torch.no_grad():
        assert torch.allclose(reg.model(reg.inputs), reg.targets)
    cls = build_problem(ModelConfig(kind="mlp", input_dim=3, hidden=8, output_dim=4, task="classification"), SMALL)
    assert cls.truth is None and cls.loss == "cross_entropy"
    assert cls.targets.dtype == torch.int64 and int(cls.targets.max()) < 4
    again = build_problem(ModelConfig(kind="mlp", input_dim=3, hidden=8, output_dim=4, task="classification"), SMALL)
    assert torch.equal(cls.targets, again.targets)


def test_trained_point_moves_w_star_and_keeps_the_truth():
    true = build_problem(ModelConfig(kind="dln", widths=[4, 3, 4], rank=2), SMALL)
    trained = build_problem(ModelConfig(kind="dln", widths=[4, 3, 4], rank=2, train_steps=300), SMALL)
    assert trained.truth == true.truth
    assert trained.info["trained"] and trained.info["train_steps"] == 300
    assert not torch.equal(trained.model[0].weight, true.model[0].weight)
    # SGD got most of the way to the noise-free fit: far below the loss of a fresh init
    assert trained.info["train_loss"] < 0.05 * float(true.targets.square().sum(1).mean() / 2)


@pytest.mark.parametrize("model, words", [
    ({"kind": "dln"}, "widths"),
    ({"kind": "dln", "widths": [3, 3], "layers": [2, 3], "width_range": [2, 4]}, "not both"),
    ({"kind": "dln", "layers": [3, 2], "width_range": [5, 50]}, "layers"),
    ({"kind": "dln", "layers": [2, 5], "width_range": [5, 50], "rank": 2}, "rank"),
    ({"kind": "dln", "widths": [3, 3], "weight_scale": "huge"}, "weight_scale"),
    ({"kind": "dln", "widths": [3, 3], "powers": [1]}, "does not use"),
    ({"kind": "potential", "hidden": 3}, "does not use"),
    ({"kind": "tanh", "hidden": 0}, "hidden"),
    ({"kind": "rrr", "input_dim": 3, "hidden": 2}, "output_dim"),
    ({"kind": "rrr", "input_dim": 3, "hidden": 2, "output_dim": 3, "rank": 3}, "rank"),
    ({"kind": "mlp", "task": "ranking"}, "task"),
    ({"kind": "mlp", "hidden": [4, 0]}, "hidden"),
    ({"kind": "nope"}, "unknown model kind"),
])
def test_bad_model_configs_name_the_field(model, words):
    with pytest.raises(LLCInputError, match=words):
        config = RunConfig.from_dict({"model": model, "data": {"n": 100}})
        build_problem(config.model, config.data)


def test_unknown_model_field_is_rejected_by_the_config():
    with pytest.raises(LLCInputError, match="unknown key"):
        RunConfig.from_dict({"model": {"kind": "tanh", "hiddden": 3}})


def test_step_size_rule_matches_the_recommended_step_at_the_default_nbeta():
    # Toy kinds recommend their rule's ε at nβ = n / log n, γ = 1; the rule lets a runner recompute it
    # for a user's own nβ (a larger nβ must give a smaller ε). The DLN recommends "auto", and its rule
    # is where calibration starts.
    for model in (ModelConfig(kind="potential", powers=[2]), ModelConfig(kind="tanh", hidden=2)):
        p = build_problem(model, SMALL)
        nbeta = p.sampler_defaults["nbeta"]
        assert p.step_size_rule(nbeta, 1.0) == pytest.approx(p.sampler_defaults["step_size"])
        assert p.step_size_rule(4 * nbeta, 1.0) < p.sampler_defaults["step_size"]
    p = build_problem(ModelConfig(kind="dln", widths=[5, 4, 3], rank=2), SMALL)
    nbeta = p.sampler_defaults["nbeta"]
    assert p.sampler_defaults["step_size"] == "auto"
    assert 0 < p.step_size_rule(4 * nbeta, 1.0) < p.step_size_rule(nbeta, 1.0)
