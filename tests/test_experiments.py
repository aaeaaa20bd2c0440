"""The rescaling-invariance experiment and the SGLD-vs-MALA comparison (llc_core/studies/experiments.py)."""

import json
import math

import pytest
import torch

from llc_core import LLCInputError
from llc_core.studies import experiments
from llc_core.cli import main
from llc_core.config import DataConfig, ModelConfig, RunConfig, SamplerConfig


def test_rescaling_keeps_the_function_and_the_preconditioner_matches_the_parameters():
    problem = experiments.rescaling_problem(input_dim=2, hidden=3, n=50)
    x = problem.inputs
    for alpha in (1e-4, 0.3, 1e4):
        scaled = experiments.rescale(problem.model, alpha)
        # float32 weights: dividing by α rounds each to ~6e-8 relative
        torch.testing.assert_close(scaled(x), problem.model(x), rtol=1e-5, atol=1e-6)
        entries = experiments.rescaling_preconditioner(scaled, alpha)
        # named_parameters order: W1 (3×2), b1 (3), W2 (1×3), b2 (1)
        expected = [alpha**-2] * 9 + [alpha**2] * 3 + [1.0]
        assert entries == pytest.approx(expected)
        assert experiments.rescaling_preconditioner(scaled, alpha, "reference") == pytest.approx(
            [alpha**2] * 9 + [alpha**-2] * 3 + [1.0])
        assert experiments.rescaling_preconditioner(scaled, alpha, "plain") is None
    with pytest.raises(LLCInputError):
        experiments.rescale(problem.model, 0.0)


def test_preconditioned_llc_is_invariant_and_plain_sgld_is_not():
    """α = 10^-4, 1, 10^4 on a 13-parameter net, 300 steps × 2 chains, γ = 0, one ε for all.

    With A = D² the rescaled chain is the α = 1 chain times D draw by draw (same seed), so λ̂ must
    agree to rounding: tolerance 1e-6 relative (float64 rounding amplified over 300 steps; measured
    3e-9), five orders of magnitude below the error bars (se ≈ 15% of λ̂). Plain SGLD at the same ε
    faces a curvature 10^8 times larger in the rescaled layer and diverges in every chain.
    """
    result = experiments.rescaling_experiment([1e-4, 1.0, 1e4], ("preconditioned", "plain"), hidden=3, n=200,
                                              steps=300, chains=2)
    reference = result.reference_llc()
    assert reference.llc_mean is not None and reference.llc_mean > 0 and reference.llc_se > 0
    assert result.max_deviation("preconditioned") <= 1e-6 * reference.llc_mean
    plain = {p.alpha: p for p in result.points if p.method == "plain"}
    assert plain[1.0].llc_mean == pytest.approx(reference.llc_mean, rel=1e-12)  # α = 1: A = 1 either way
    for alpha in (1e-4, 1e4):
        point = plain[alpha]
        visibly_off = point.llc_mean is None or abs(point.llc_mean - reference.llc_mean) > 4 * reference.llc_se
        assert visibly_off and point.diverged_fraction == 1.0
    assert result.max_deviation("plain") is None
    back = experiments.RescalingResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert back.points == result.points


def test_the_preconditioner_as_stated_in_the_paper_diverges():
    """docs/METHOD.md §5 / App. O give α² on W1, b1 for W1 → W1/α: the inverse of D², so the stiff
    rescaled layer gets the larger step. At α = 10 every chain diverges (deterministically: the
    stiffest direction's ε·curvature grows 10^4-fold past the stability limit 4)."""
    result = experiments.rescaling_experiment([10.0], ("reference",), hidden=3, n=200, steps=100, chains=2)
    assert result.points[0].diverged_fraction == 1.0


def test_sgld_and_mala_agree_across_dataset_sizes():
    """Potential f(x, w) = x·w (λ = 1/2; the exact target is ½·t h/(t h + γ) ≈ 0.49 at these n), 8 chains
    × 3000 steps, SGLD minibatch 50 vs full-batch MALA at the kind's ε. Tolerances: each λ̂ within 0.1
    of 1/2 (measured 0.47-0.51; the across-chain se is ≈ 0.015, and with 8 chains the se itself is
    uncertain by ~25%, so 0.1 ≈ 5 se), and SGLD − MALA within 4 combined se + 0.02 (SGLD's small
    discretisation and minibatch bias)."""
    config = RunConfig(model=ModelConfig(kind="potential", powers=[1]),
                       sampler=SamplerConfig(steps=3000, chains=8, batch_size=50, burnin=0.25))
    rows = []
    result = experiments.compare_samplers(config, [200, 2000], on_row=rows.append)
    assert rows == result.rows and not result.partial
    assert [(r.n, r.algorithm) for r in result.rows] == [(200, "sgld"), (200, "mala"), (2000, "sgld"), (2000, "mala")]
    by = {(r.n, r.algorithm): r for r in result.rows}
    for n in (200, 2000):
        sgld, mala = by[(n, "sgld")], by[(n, "mala")]
        assert (sgld.batch_size, mala.batch_size) == (50, n)
        assert sgld.wall_time_s > 0 and mala.wall_time_s > 0
        for row in (sgld, mala):
            assert abs(row.llc_mean - 0.5) < 0.1
        combined = math.hypot(sgld.llc_se, mala.llc_se)
        assert abs(sgld.llc_mean - mala.llc_mean) <= 4 * combined + 0.02
    back = experiments.CompareResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert back.rows == result.rows


def test_compare_cli_and_bad_sizes(tmp_path, capsys):
    path = tmp_path / "run.json"
    path.write_text(RunConfig(model=ModelConfig(kind="potential", powers=[1]), data=DataConfig(n=100),
                              sampler=SamplerConfig(steps=100, chains=2)).to_json())
    assert main(["compare", str(path), "--sizes", "50,100", "--json"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert [r["n"] for r in data["rows"]] == [50, 50, 100, 100] and "sgld" in captured.err
    for sizes in ("1,100", "abc", "10.5"):
        assert main(["compare", str(path), "--sizes", sizes]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
    with pytest.raises(LLCInputError):
        experiments.check_sizes([])
