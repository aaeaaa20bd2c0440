"""Sweep bookkeeping (llc_core/studies/sweep.py): cells ↔ chains, per-cell statistics, the recommendation
rules, JSON round trips, batched vs cell-by-cell, stop, bad input and the CLI.

Everything runs on the 1-parameter potential f(x, w) = x·w (λ = 1/2) with a few hundred steps: these
tests check bookkeeping, not accuracy, so no statistical tolerance is involved.
"""

import dataclasses
import json
import math
import threading

import numpy as np
import pytest

from llc_core import LLCInputError, diagnostics
from llc_core.studies import sweep
from llc_core.cli import main
from llc_core.config import DataConfig, ModelConfig, RunConfig, SamplerConfig
from llc_core.studies.sweep import CellResult, SweepConfig, SweepResult, cell_problems, log_grid, recommend

TINY_RUN = RunConfig(model=ModelConfig(kind="potential", powers=[1]), data=DataConfig(n=200),
                     sampler=SamplerConfig(steps=200, burnin=0.5, snapshot_every=20))


def tiny_sweep(**changes) -> SweepConfig:
    values = dict(run=TINY_RUN, step_sizes=[1e-3, 1e-2], localizations=[1.0, 10.0], chains_per_cell=2)
    values.update(changes)
    return SweepConfig(**values)


@pytest.fixture
def captured(monkeypatch):
    """Every estimate_llc call the sweep makes, with its arguments and result."""
    calls = []
    original = sweep.estimate_llc

    def spy(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append({"sampler": args[3], "kwargs": kwargs, "result": result})
        return result

    monkeypatch.setattr(sweep, "estimate_llc", spy)
    return calls


# ---------------------------------------------------------------- grid and cells ↔ chains


def test_log_grid_and_cell_order():
    assert log_grid(1e-5, 1e-1, 5) == [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    assert log_grid(3e-4, 3e-4, 1) == [3e-4]
    config = tiny_sweep(nbetas=[50.0, 100.0])
    cells = config.cells()
    # nβ outermost, then γ, then ε
    assert cells[:4] == [(1e-3, 1.0, 50.0), (1e-2, 1.0, 50.0), (1e-3, 10.0, 50.0), (1e-2, 10.0, 50.0)]
    assert len(cells) == 8 and cells[4] == (1e-3, 1.0, 100.0)


def test_batched_sweep_gives_each_cell_its_own_chains_and_settings(captured):
    config = tiny_sweep(nbetas=[40.0, 80.0])
    result = sweep.run_sweep(config)
    assert result.mode == "batched" and len(captured) == 1
    per_chain = captured[0]["kwargs"]["per_chain"]
    assert captured[0]["sampler"].chains == 16
    for k, (eps, gamma, nbeta) in enumerate(config.cells()):
        cell = result.cells[k]
        assert cell.index == k and cell.chains == [2 * k, 2 * k + 1]
        assert (cell.step_size, cell.localization, cell.nbeta) == (eps, gamma, nbeta)
        for c in cell.chains:
            assert per_chain["step_size"][c] == eps
            assert per_chain["localization"][c] == gamma
            assert per_chain["nbeta"][c] == nbeta


def test_cell_statistics_equal_a_direct_computation_from_the_run(captured):
    result = sweep.run_sweep(tiny_sweep())
    run = captured[0]["result"]
    trace = np.asarray(run.loss_trace)
    post = trace[run.burnin_steps:]
    dead = {d["chain"] for d in run.diverged_chains}
    for cell in result.cells:
        healthy = [c for c in cell.chains if c not in dead]
        # each chain's λ̂ uses its own cell's nβ, and its own cell's ε in its heat (docs/METHOD.md §8)
        heat = run.heat_correction["per_chain"]
        direct = [cell.nbeta * (post[:, c].mean() - run.init_loss) - heat[c] for c in healthy]
        assert [run.llc_per_chain[c] for c in healthy] == pytest.approx(direct, rel=1e-6)  # nβ held in float32
        assert cell.llc_mean == pytest.approx(np.mean(direct), rel=1e-6)
        assert cell.llc_se == pytest.approx(np.std(direct, ddof=1) / math.sqrt(len(direct)), rel=1e-5)
        assert cell.acceptance == pytest.approx(np.mean([run.mala_acceptance_per_chain[c] for c in healthy]))
        assert cell.diverged_fraction == (len(cell.chains) - len(healthy)) / len(cell.chains)
        flat = diagnostics.flatness(post[:, healthy].T, cell.nbeta, run.init_loss)
        assert (cell.flat, cell.drift, cell.drift_se) == (flat["flat"], flat["drift"], flat["drift_se"])
        assert cell.negative == (cell.llc_mean < 0)


def test_batched_and_cell_by_cell_agree_in_structure(captured):
    batched = sweep.run_sweep(tiny_sweep(mode="batched"))
    cells = sweep.run_sweep(tiny_sweep(mode="cells"))
    assert (batched.mode, cells.mode) == ("batched", "cells")
    assert len(captured) == 1 + 4  # one batched call, then one call per cell
    assert [call["sampler"].chains for call in captured[1:]] == [2, 2, 2, 2]
    assert [call["sampler"].step_size for call in captured[1:]] == [1e-3, 1e-2, 1e-3, 1e-2]
    key = lambda c: (c.index, c.step_size, c.localization, c.nbeta, c.chains, len(c.llc_per_chain))
    assert [key(c) for c in batched.cells] == [key(c) for c in cells.cells]
    assert batched.to_dict().keys() == cells.to_dict().keys()
    assert (batched.n, batched.num_params, batched.steps) == (cells.n, cells.num_params, cells.steps)


def test_mode_threshold_on_parameters_times_chains():
    config = tiny_sweep()  # 4 cells × 2 chains = 8 chains
    assert sweep.choose_mode(config, sweep.BATCH_LIMIT // 8) == "batched"
    assert sweep.choose_mode(config, sweep.BATCH_LIMIT // 8 + 1) == "cells"
    assert sweep.choose_mode(dataclasses.replace(config, mode="batched"), 10**9) == "batched"


def test_stop_keeps_finished_cells_and_streams_them():
    stop = threading.Event()
    seen, progress = [], []

    def on_cell(cell):
        seen.append(cell)
        stop.set()  # ask to stop as soon as the first cell is done

    result = sweep.run_sweep(tiny_sweep(mode="cells"), on_cell=on_cell, on_progress=progress.append, stop=stop)
    assert len(result.cells) == 1 and seen == result.cells
    assert result.partial and not result.cells[0].partial
    assert progress and progress[-1].cells_total == 4 and progress[-1].running_llc[0] is not None


def test_job_runs_a_sweep_in_the_background():
    job = sweep.sweep_job(tiny_sweep(step_sizes=[1e-3]), abandon_after=None).start()
    snap = job.join(60)
    assert snap["error"] is None and not snap["running"]
    assert [c.index for c in snap["items"]] == [0, 1]
    assert isinstance(snap["result"], SweepResult) and snap["progress"].cells_total == 2


# ---------------------------------------------------------------- JSON round trips


def test_sweep_config_and_result_round_trip_through_json():
    config = tiny_sweep(nbetas=[30.0], mode="cells")
    assert SweepConfig.from_json(config.to_json()) == config
    result = sweep.run_sweep(tiny_sweep(step_sizes=[1e-3]))
    text = result.to_json()
    back = SweepResult.from_json(text)
    assert back == SweepResult.from_dict(json.loads(text)) and back.to_json() == text
    assert all(isinstance(c, CellResult) for c in back.cells)
    again = SweepConfig.from_dict(back.config)  # the resolved config is itself a valid SweepConfig
    assert again.step_sizes == [1e-3] and again.run.model.powers == [1]


def test_recommended_config_carries_the_cell_settings():
    result = SweepResult.from_dict(sweep.run_sweep(tiny_sweep(step_sizes=[1e-3])).to_dict())
    result.cells[1] = dataclasses.replace(result.cells[1], acceptance=0.93, flat=True, diverged_fraction=0.0,
                                          llc_mean=0.5, negative=False, partial=False)
    result.recommended = 1
    config = result.recommended_config()
    assert config.sampler.step_size == 1e-3 and config.sampler.localization == 10.0
    assert config.sampler.nbeta is None  # the default n / log n stays unset
    assert config.model == TINY_RUN.model and config.data == TINY_RUN.data
    result.recommended = None
    with pytest.raises(LLCInputError, match="no cell is recommended"):
        result.recommended_config()


# ---------------------------------------------------------------- recommendation rules


def cell(index, eps, gamma, acceptance=0.92, flat=True, diverged=0.0, llc=1.0, nbeta=100.0, partial=False):
    return CellResult(index=index, step_size=eps, localization=gamma, nbeta=nbeta, chains=[index],
                      llc_mean=None if diverged == 1 else llc, llc_se=0.1, llc_per_chain=[llc],
                      acceptance=None if diverged == 1 else acceptance, diverged_fraction=diverged,
                      flat=None if diverged == 1 else flat, drift=0.0, drift_se=0.1,
                      negative=llc < 0 and diverged < 1, partial=partial)


def test_recommend_prefers_smallest_gamma_then_largest_step():
    cells = [
        cell(0, 1e-4, 1.0, acceptance=0.99), cell(1, 1e-3, 1.0, acceptance=0.94), cell(2, 3e-3, 1.0, acceptance=0.91),
        cell(3, 1e-2, 1.0, acceptance=0.80),
        cell(4, 1e-3, 0.1, acceptance=0.93, flat=False),  # smaller γ but rising trace: not eligible
        cell(5, 1e-2, 10.0, acceptance=0.92),  # passes, larger ε, but larger γ
    ]
    index, reason = recommend(cells)
    assert index == 2
    assert "ε = 0.003" in reason and "γ = 1" in reason and "smallest" in reason and "largest" in reason


@pytest.mark.parametrize("bad", [
    dict(acceptance=0.89), dict(acceptance=0.96), dict(flat=False), dict(flat=None), dict(diverged=0.5),
    dict(llc=-0.1), dict(partial=True),
])
def test_each_rule_excludes_a_cell(bad):
    index, _ = recommend([cell(0, 1e-3, 1.0), cell(1, 1e-2, 1.0, **bad)])
    assert index == 0
    assert cell_problems(cell(1, 1e-2, 1.0, **bad))


def test_recommend_prefers_the_default_nbeta():
    cells = [cell(0, 1e-2, 1.0, nbeta=500.0), cell(1, 1e-3, 1.0, nbeta=100.0)]
    assert recommend(cells, default_nbeta=110.0)[0] == 1
    assert recommend(cells)[0] == 0  # without a default: the largest ε


@pytest.mark.parametrize("cells, expected", [
    ([], "No cell has finished"),
    ([cell(0, 1e-3, 1.0, partial=True)], "stopped before any cell finished"),
    ([cell(0, 1e-3, 1.0, diverged=1), cell(1, 1e-2, 1.0, diverged=1)], "Sweep smaller step sizes"),
    ([cell(0, 1e-4, 1.0, acceptance=0.99), cell(1, 1e-3, 1.0, acceptance=0.97)], "Extend the range upwards"),
    ([cell(0, 1e-2, 1.0, acceptance=0.7), cell(1, 1e-1, 1.0, acceptance=0.2)], "Extend the range downwards"),
    ([cell(0, 1e-3, 1.0, acceptance=0.98), cell(1, 1e-2, 1.0, acceptance=0.6)], "between 0.001 and 0.01"),
    ([cell(0, 1e-3, 1.0, acceptance=0.98), cell(1, 1e-2, 1.0, diverged=1)], "every chain diverges"),
    ([cell(0, 1e-3, 1.0, flat=False)], "run more steps"),
    ([cell(0, 1e-3, 1.0, llc=-0.5)], "not a local minimum"),
    ([cell(0, 1e-3, 1.0, diverged=0.5)], "some chains diverged"),
])
def test_no_recommendation_says_what_to_change(cells, expected):
    index, reason = recommend(cells)
    assert index is None and expected in reason


# ---------------------------------------------------------------- bad input and the CLI


@pytest.mark.parametrize("changes, message", [
    (dict(step_sizes=[]), "non-empty"),
    (dict(step_sizes=[1e-3, 0.0]), "> 0"),
    (dict(localizations=[-1.0]), "≥ 0"),
    (dict(step_sizes=[1e-3, 1e-3]), "twice"),
    (dict(nbetas=[float("nan")]), "finite"),
    (dict(chains_per_cell=0), "chains_per_cell"),
    (dict(mode="fast"), "mode"),
    (dict(step_sizes=log_grid(1e-6, 1e-1, 50), localizations=[0.0, 1.0, 10.0, 100.0, 1000.0, 1e4, 1e5, 1e6, 1e7]), "cells"),
])
def test_bad_sweeps_raise_input_errors(changes, message):
    with pytest.raises(LLCInputError, match=message):
        tiny_sweep(**changes).validate()


def test_unknown_keys_and_bad_ranges_are_input_errors():
    with pytest.raises(LLCInputError, match="unknown key"):
        SweepConfig.from_dict({"run": {}, "steps": [1]})
    with pytest.raises(LLCInputError, match="upper end"):
        log_grid(1e-2, 1e-3, 4)
    with pytest.raises(LLCInputError, match="not a number"):
        sweep.parse_numbers("1e-3,fast", "--step-sizes")


def test_cli_sweep_prints_a_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "run.json"
    path.write_text(TINY_RUN.to_json())
    out = tmp_path / "sweep.json"
    code = main(["sweep", str(path), "--step-sizes", "1e-3,1e-2", "--localizations", "1", "--chains-per-cell", "2",
                 "--quiet", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "2 cells, 2 chains each" in printed and ("recommended (*)" in printed or "no recommendation" in printed)
    assert len(SweepResult.from_json(out.read_text()).cells) == 2
    code = main(["sweep", str(path), "--step-sizes", "1e-3", "--localizations", "1", "--chains-per-cell", "2",
                 "--quiet", "--json"])
    captured = capsys.readouterr()
    assert code == 0 and len(json.loads(captured.out)["cells"]) == 1 and "cells, 2 chains" in captured.err


def test_cli_sweep_bad_input_exits_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "run.json"
    path.write_text(TINY_RUN.to_json())
    assert main(["sweep", str(path), "--step-sizes", "1e-3,x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert main(["sweep", str(tmp_path / "missing.json")]) == 2
    assert main(["sweep", str(path), "--chains-per-cell", "0"]) == 2


def test_recommendation_points_out_a_coarse_grid_at_a_smaller_gamma():
    cells = [cell(0, 1e-2, 1.0, acceptance=0.97), cell(1, 3e-2, 1.0, diverged=1), cell(2, 3e-2, 10.0, acceptance=0.93)]
    index, reason = recommend(cells)
    assert index == 2 and "smaller γ = 1" in reason and "between them" in reason


def test_sweeps_use_the_size_aware_acceptance_band():
    result = sweep.run_sweep(tiny_sweep(step_sizes=[1e-3], localizations=[1.0]))
    low, _, high = diagnostics.acceptance_band(1)  # the 1-parameter potential: a band above 0.99
    assert result.acceptance_band == [low, high] and low > 0.99


def test_a_failing_in_band_cell_and_a_coarse_grid_elsewhere_are_both_reported():
    cells = [cell(0, 3e-3, 1.0, acceptance=0.99), cell(1, 1e-2, 1.0, acceptance=0.8),
             cell(2, 1e-2, 10.0, acceptance=0.93, flat=False)]
    index, reason = recommend(cells)
    assert index is None and "run more steps" in reason and "At γ = 1 acceptance goes from 0.990" in reason
