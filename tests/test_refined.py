"""Refined LLCs against exact values.

Deep linear network at a generic (full-rank) w*: moving only factor W_k, the others frozen at w*,
makes K quadratic in W_k, K = E||A (W_k − W_k*) B x||² / 2 with A the product of the factors after
W_k and B the product before it; its Hessian has rank rank(A)·rank(B), so the weight-refined λ is
rank(A)·rank(B)/2. A single linear layer whose inputs are confined to a k-dimensional subspace has
data-refined λ = k·H_out/2. Both are regular (quadratic) cases, where λ̂ is unbiased up to the SGLD
discretisation (a few %); the tolerance is 15%, as the DLN accuracy tests use for their 90th
percentile, seeded.
"""

from __future__ import annotations


import pytest
import torch
from torch import nn

from llc_core import LLCInputError, RunConfig, SamplerConfig, run
from llc_core.refine import head_groups, layer_groups, mask_from_patterns, parameter_shapes
from llc_core.studies.refined import estimate_groups

# ε a quarter of what "auto" calibrates here (acceptance 0.92 carries a ~10% discretisation bias on a
# regular model): bias ~3%, and the stiffest-to-softest curvature ratio is 1, so 1500 draws mix
SAMPLER = SamplerConfig(chains=4, steps=3000, burnin=0.5, batch_size=500, seed=0, step_size=2e-4)


def linear_network(widths, seed=0, n=5000):
    """Factors with all singular values 1 (orthogonal rows or columns): a nearly singular factor would
    make some directions flatter than the localization at this n, and λ̂ would see fewer of them."""
    torch.manual_seed(seed)
    model = nn.Sequential(*[nn.Linear(a, b, bias=False) for a, b in zip(widths[:-1], widths[1:])])
    for layer in model:
        nn.init.orthogonal_(layer.weight)
    x = torch.randn(n, widths[0])
    with torch.no_grad():
        y = model(x)  # noise-free: w* is then an exact minimum of L_n, not only of the population loss
    return model, x, y


def test_weight_refined_llc_of_each_factor_of_a_deep_linear_network():
    # widths 4-3-3-2, full rank: W1 moves alone → A = W3W2 (rank 2), B = I (rank 4): λ = 4;
    # W2 → A = W3 (2), B = W1 (3): λ = 3; W3 → A = I (2), B = W2W1 (3): λ = 3
    model, x, y = linear_network([4, 3, 3, 2])
    groups = layer_groups(model)
    assert list(groups) == ["0", "1", "2"]
    result, llcs = estimate_groups(model, x, y, SAMPLER, groups)
    exact = {"0": 4.0, "1": 3.0, "2": 3.0}
    for group in llcs:
        assert group.llc_mean == pytest.approx(exact[group.name], rel=0.15), (group.name, group.llc_mean, group.llc_se)
    assert [g.moving_params for g in llcs] == [12, 9, 6]


def test_frozen_parameters_stay_exactly_at_w_star_in_a_refined_run():
    config = RunConfig.from_dict({"model": {"kind": "dln", "widths": [4, 3, 2], "rank": 2, "seed": 0},
                                  "data": {"n": 2000}, "sampler": {"chains": 2, "steps": 300, "start_spread": 0.3},
                                  "refine": {"parameters": ["1.*"]}})
    result = run(config)
    assert result.refined["moving"] == ["1.weight"] and result.refined["moving_params"] == [6, 6]
    assert result.theoretical_llc is None  # the full model's λ does not apply to a refined LLC
    assert RunConfig.from_dict(config.to_dict()) == config


def test_data_refined_llc_of_a_linear_layer_on_a_subspace():
    # y = W x + noise, W 3×5; half the rows have inputs in the first k = 2 coordinates only: λ = k·H/2 = 3
    torch.manual_seed(1)
    model = nn.Linear(5, 3, bias=False)
    x = torch.randn(6000, 5)
    x[3000:, 2:] = 0.0
    nn.init.orthogonal_(model.weight)
    with torch.no_grad():
        y = model(x)
    from llc_core import estimate_llc
    from llc_core.refine import data_rows

    rows, what = data_rows(x, y, {"column": 4, "value": 0.0})
    assert len(rows) == 3000 and "3000 of 6000" in what
    result = estimate_llc(model, x[rows], y[rows], SAMPLER)
    assert result.n == 3000
    assert result.llc_mean == pytest.approx(3.0, rel=0.15)
    full = estimate_llc(model, x, y, SAMPLER)
    assert full.llc_mean == pytest.approx(7.5, rel=0.15)  # every direction: d/2 = 15/2


def test_attention_heads_are_sliced_from_the_fused_projection():
    model = nn.MultiheadAttention(8, 2, batch_first=True)
    heads = head_groups(model)
    assert list(heads) == ["attention.head0", "attention.head1"]
    head0 = heads["attention.head0"]
    assert int(head0["in_proj_weight"].sum()) == 3 * 4 * 8  # q, k, v rows of head 0, all columns
    assert bool(head0["in_proj_weight"][:4].all()) and not bool(head0["in_proj_weight"][4:8].any())
    assert int(head0["out_proj.weight"].sum()) == 8 * 4 and not bool(head0["out_proj.bias"].any())
    overlap = sum(int((a & b).sum()) for a, b in zip(head0.values(), heads["attention.head1"].values()))
    assert overlap == 0


def test_bad_refinements_get_one_clear_message():
    model, x, y = linear_network([3, 2])
    with pytest.raises(LLCInputError, match="no parameter matches"):
        mask_from_patterns(parameter_shapes(model), ["encoder.*"])
    with pytest.raises(LLCInputError, match="no nn.MultiheadAttention"):
        head_groups(model)
    config = {"model": {"kind": "dln", "widths": [3, 2], "seed": 0}, "data": {"n": 100}, "sampler": {"steps": 10}}
    with pytest.raises(LLCInputError, match="keeps 0 of 100 rows"):
        run(RunConfig.from_dict({**config, "refine": {"data": {"label": 12345.0}}}))
    with pytest.raises(LLCInputError, match="python -m llc_core refine"):
        run(RunConfig.from_dict({**config, "refine": {"groups": "layer"}}))


def test_twelve_groups_cost_far_less_than_twelve_runs():
    # 12 single-Linear groups of a 13-layer MLP: one computation of 12 × 4 chains against one full run
    # of 4 chains (the target: ≤ 3x on CPU); measured by benchmarks/bench_refined.py, here only
    # that the grouped run finishes and gives every group an estimate
    widths = [6] * 13
    model, x, y = linear_network(widths, n=2000)
    config = RunConfig(sampler=SamplerConfig(chains=2, steps=200, step_size=1e-4))
    result, llcs = estimate_groups(model, x, y, config.sampler, layer_groups(model))
    assert len(llcs) == 12 and all(g.llc_mean is not None for g in llcs)


def test_refine_command_prints_a_row_per_layer(tmp_path, capsys):
    from llc_core.cli import main

    path = tmp_path / "config.json"
    path.write_text('{"model": {"kind": "dln", "widths": [4, 3, 2], "rank": 2, "seed": 0}, "data": {"n": 500},'
                    ' "sampler": {"chains": 2, "steps": 100, "step_size": 1e-4}}')
    assert main(["refine", str(path), "--groups", "layer"]) == 0
    out = capsys.readouterr().out
    rows = out.splitlines()
    assert rows[0].startswith("group") and rows[1].split()[:2] == ["0", "12"] and rows[2].split()[:2] == ["1", "6"]
    assert main(["refine", str(path), "--groups", "[1, 2]"]) == 2
    assert "must be an object" in capsys.readouterr().err


# ---------------------------------------------------------------- data subsets: one run each, n and nβ their own


def test_data_subsets_per_label_each_run_on_its_rows_with_its_own_n_and_nbeta():
    import math

    from llc_core.studies.refined import run_groups

    config = RunConfig.from_dict({
        "model": {"kind": "mlp", "input_dim": 3, "hidden": [4], "output_dim": 3, "task": "classification", "seed": 0},
        "data": {"n": 300}, "sampler": {"chains": 2, "steps": 40, "step_size": 1e-3},
        "refine": {"subsets": "label"}})
    assert RunConfig.from_dict(config.to_dict()) == config  # the same JSON round trip as every run
    seen = []
    result = run_groups(config, on_group=seen.append)
    assert [g.name for g in seen] == [g.name for g in result.groups] == ["label 0", "label 1", "label 2"]
    assert sum(g.n for g in result.groups) == 300 and result.n == 300 and not result.partial
    for group in result.groups:
        assert group.nbeta == pytest.approx(group.n / math.log(group.n))  # nβ follows the subset's size
        assert group.data == f"rows with label {int(group.name[-1])}: {group.n} of 300 rows"  # what was refined
        assert group.moving_params == 3 * 4 + 4 + 4 * 3 + 3 and len(group.llc_per_chain) == 2 and group.verdicts
    assert result.by_data and "rows" in result.table() and result.to_dict()["nbeta"] is None
    named = run_groups(RunConfig.from_dict({**config.to_dict(), "refine": {"subsets": {
        "first": {"range": [0, 100]}, "class 2": {"label": 2}}}}))
    assert [(g.name, g.n) for g in named.groups] == [("first", 100), ("class 2", result.groups[2].n)]
    assert named.grouping == "subsets"


def test_a_stop_keeps_the_finished_subsets_and_drops_the_running_one():
    from llc_core.problem import Problem
    from llc_core.studies.refined import data_subsets, estimate_subsets

    model, x, y = linear_network([3, 2], n=400)
    problem = Problem(model, x, y)
    subsets = data_subsets(x, y, {"a": {"range": [0, 200]}, "b": {"range": [200, 400]}, "c": {"indices": [1, 5, 9]}})
    assert [len(rows) for rows, _ in subsets.values()] == [200, 200, 3]
    sampler = SamplerConfig(chains=2, steps=30, step_size=1e-4)
    finished = []
    groups, stopped = estimate_subsets(problem, RunConfig(), sampler, subsets, on_group=finished.append,
                                       stop=lambda: len(finished) >= 1)
    assert stopped and [g.name for g in groups] == ["a"] == [g.name for g in finished]
    assert groups[0].n == 200 and groups[0].data == "rows 0–199: 200 of 400 rows"


def test_bad_data_subsets_get_one_clear_message():
    from llc_core.refine import data_rows, label_subsets
    from llc_core.studies.refined import data_subsets

    model, x, y = linear_network([3, 2], n=100)
    labels = torch.arange(100) % 4
    assert list(label_subsets(labels)) == ["label 0", "label 1", "label 2", "label 3"]
    for targets, message in [(y, "2 values per row"), (torch.randn(100, 1), "real numbers, not class labels"),
                             (torch.zeros(100, dtype=torch.long), "the same label"),
                             (torch.arange(100), "100 different labels")]:
        with pytest.raises(LLCInputError, match=message):
            label_subsets(targets)
    for spec, message in [({"range": [50, 10]}, "0 ≤ start < stop ≤ 100"), ({"range": "0-9"}, "must be \\[start, stop\\]"),
                          ({"column": 7, "value": 1}, "column = 7 must be a whole number in \\[0, 3\\)"),
                          ({"label": "cat"}, "label = 'cat' must be a number"), ({"tokens": ["a"]}, "cannot select rows"),
                          ({"rows": 1}, "use indices, range"), ([1, 2], "must be one of")]:
        with pytest.raises(LLCInputError, match=message):
            data_rows(x, labels, spec)
    with pytest.raises(LLCInputError, match="data subset 'late'"):
        data_subsets(x, y, {"late": {"range": [0, 101]}})
    with pytest.raises(LLCInputError, match="use \"label\""):
        data_subsets(x, y, "layer")
    config = {"model": {"kind": "dln", "widths": [3, 2], "seed": 0}, "data": {"n": 100}, "sampler": {"steps": 10}}
    with pytest.raises(LLCInputError, match="every data subset: run `python -m llc_core refine`"):
        run(RunConfig.from_dict({**config, "refine": {"subsets": "label"}}))
    from llc_core.studies.refined import run_groups
    with pytest.raises(LLCInputError, match="subsets excludes refine.groups"):
        run_groups(RunConfig.from_dict({**config, "refine": {"subsets": "label", "groups": "layer"}}))


class TinyAttention(nn.Module):
    def __init__(self, width=8, heads=2, need_weights=False):
        super().__init__()
        self.attend = nn.MultiheadAttention(width, heads, batch_first=True)
        self.head = nn.Linear(width, 3)
        self.need_weights = need_weights

    def forward(self, x):
        out, _ = self.attend(x, x, x, need_weights=self.need_weights)
        return self.head(out)


@pytest.mark.parametrize("heads, need_weights", [(2, False), (4, True)])
def test_heads_are_found_inside_a_torch_export_program(heads, need_weights):
    """A .pt2 program has no nn.MultiheadAttention left: its heads are read off the graph (the module path it
    records, the query's shape at the attention), and sliced as in the eager model."""
    torch.manual_seed(0)
    model = TinyAttention(8, heads, need_weights).eval()
    x = torch.randn(4, 5, 8)
    program = torch.export.export(model, (x,)).module()
    assert not any(isinstance(m, nn.MultiheadAttention) for m in program.modules())
    eager, traced = head_groups(model), head_groups(program)
    assert list(traced) == list(eager) == [f"attend.head{h}" for h in range(heads)]
    for name in eager:
        for parameter, mask in eager[name].items():
            assert torch.equal(traced[name][parameter], mask), (name, parameter)


class TinyCausalTransformer(nn.Module):
    """scripts/make_examples.py's tiny transformer, smaller: embeddings, one causal encoder layer of 2 heads."""

    def __init__(self, vocabulary=5, length=6, width=8):
        super().__init__()
        self.embed = nn.Embedding(vocabulary, width)
        self.position = nn.Parameter(0.1 * torch.randn(length, width))
        self.layer = nn.TransformerEncoderLayer(width, 2, 16, dropout=0.0, batch_first=True)
        self.head = nn.Linear(width, vocabulary)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(length), persistent=False)

    def forward(self, tokens):
        length = tokens.shape[1]
        hidden = self.embed(tokens) + self.position[:length]
        return self.head(self.layer(hidden, src_mask=self.mask[:length, :length], is_causal=True))


def test_attention_heads_tracked_across_the_checkpoints_of_a_transformer_training_run(tmp_path):
    """A transformer trained here in a second, its checkpoints zipped as the Training run example is (the final one
    a .pt2 program, first; the others state dicts): every checkpoint gets the refined λ̂ of each head."""
    import io
    import zipfile

    import numpy as np
    from safetensors.torch import save

    from llc_core.studies.trajectory import TrajectoryConfig, run_trajectory

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    start, stride = torch.randint(0, 5, (64, 1), generator=generator), torch.randint(1, 3, (64, 1), generator=generator)
    tokens = (start + stride * torch.arange(7)) % 5
    model = TinyCausalTransformer()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    kept = {}
    for step in range(41):
        if step % 20 == 0:
            kept[step] = {name: p.detach().clone().contiguous() for name, p in model.named_parameters()}
        if step == 40:
            break
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(tokens[:, :-1]).transpose(1, 2), tokens[:, 1:]).backward()
        optimizer.step()
    model.eval()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # export the plain operators, as scripts/make_examples.py does
    try:
        program = io.BytesIO()
        torch.export.save(torch.export.export(model, (tokens[:4, :-1],), dynamic_shapes=({0: torch.export.Dim("batch")},)),
                          program)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    with zipfile.ZipFile(tmp_path / "run.zip", "w") as archive:
        archive.writestr("step_00040.pt2", program.getvalue())
        for step in (0, 20):
            archive.writestr(f"step_{step:05d}.safetensors", save(kept[step]))
    np.savez(tmp_path / "tokens.npz", tokens=tokens.numpy())
    study = {"checkpoint_paths": [str(tmp_path / "run.zip")], "data": {"path": str(tmp_path / "tokens.npz"), "loss": "next_token"},
             "sampler": {"chains": 2, "steps": 30, "step_size": 1e-3}, "refine": {"groups": "head"}}
    result = run_trajectory(TrajectoryConfig.from_dict(study))
    heads = ["layer.self_attn.head0", "layer.self_attn.head1"]
    assert [p.step for p in result.points] == [0, 20, 40] and result.groups == heads
    for point in result.points:
        assert list(point.groups) == heads
        assert all(value["llc"] is not None and np.isfinite(value["llc"]) and value["moving"] == 3 * 4 * 8 + 3 * 4 + 8 * 4
                   for value in point.groups.values())
    assert set(result.group_stages) == set(heads) and "layer.self_attn.head1" in result.group_table()
    # ε unset (the Training run page's default): the curvature rule at the final checkpoint, which must
    # keep the token ids integers for the embedding
    ruled = run_trajectory(TrajectoryConfig.from_dict({**study, "sampler": {"chains": 2, "steps": 30}, "refine": None}))
    assert len(ruled.points) == 3 and all(p.llc_mean is not None and np.isfinite(p.llc_mean) for p in ruled.points)
    with pytest.raises(LLCInputError, match="refine.subsets"):
        run_trajectory(TrajectoryConfig.from_dict({**study, "refine": {"subsets": "label"}}))
