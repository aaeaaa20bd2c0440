"""Studies resumed without Ray, and one estimate split into chain groups here (docs/CLUSTER.md).

A study given a results directory (`--resume DIR`, executor.resume) writes each finished run there as
it finishes; run again, it takes those runs from there and computes only the rest, with the numbers
an uninterrupted run gives. An estimate's chains split into groups and merged: its per-chain draws are
the groups' draws side by side, its diagnostics those of all chains. No Ray is needed for any of it.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from llc_core import LLCInputError, SamplerConfig, diagnostics
from llc_core.cli import commands
from llc_core.config import ExecutorConfig, RunConfig
from llc_core.execution import chain_groups
from llc_core.execution.units import Journal
from llc_core.runner import run
from llc_core.studies import sweep as sweep_module
from llc_core.studies import trajectory, validate
from llc_core.studies.sweep import SweepConfig, run_sweep
from llc_core.studies.trajectory import TrainingConfig

TINY_DLN = TrainingConfig(task="dln", widths=[3, 3, 3, 3], teacher_singular_values=[3.0, 2.0], n=200, steps=400,
                          checkpoints=3)
TIMINGS = {"wall_s", "wall_time_s", "chain_steps_per_second"}


def without_timings(value):
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    return {k: v for k, v in value.items() if k not in TIMINGS} if isinstance(value, dict) else value


def counting(monkeypatch, module, name: str) -> list:
    """Count the calls of module.name (the function a study runs each of its runs with)."""
    calls, original = [], getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


# --------------------------------------------------------------------------- validate


def test_validate_here_writes_each_case_and_resumes_without_rerunning(tmp_path, monkeypatch):
    full = validate.run_suite("smoke", tmp_path)
    lines = (tmp_path / "smoke.runs.jsonl").read_text().splitlines()
    assert len(lines) == 2 and "executor" not in full["summary"]  # the local report is as it was
    (tmp_path / "smoke.runs.jsonl").write_text(lines[1] + "\n")  # as if it crashed after the second case
    calls = counting(monkeypatch, validate, "run_case")
    again = validate.run_suite("smoke", None, executor=ExecutorConfig(resume=str(tmp_path)))
    assert len(calls) == 1 and len(again["summary"]["executor"]["resumed"]) == 1
    assert again["summary"]["executor"]["executor"] == "local"
    assert without_timings(again["cases"]) == without_timings(full["cases"])
    calls.clear()
    validate.run_suite("smoke", None, executor=ExecutorConfig(resume=str(tmp_path)))
    assert calls == []  # everything is there now: nothing is computed


def test_validate_stopped_midway_keeps_the_finished_case_only(tmp_path):
    done = []
    report = validate.run_suite("smoke", tmp_path, on_case=lambda row, i, n: done.append(row), stop=lambda: bool(done))
    assert len(report["cases"]) == 1
    assert len(Journal(tmp_path / "smoke.runs.jsonl").load()) == 1


def test_cli_validate_resumes_without_ray(tmp_path, capsys):
    assert commands.main(["validate", "smoke", "--cases", "1", "--out", str(tmp_path), "--resume", str(tmp_path)]) == 0
    assert commands.main(["validate", "smoke", "--cases", "1", "--out", str(tmp_path), "--resume", str(tmp_path)]) == 0
    assert "ran here: 1 run(s); resumed 1: smoke/0:potential [1]" in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    (["--max-retries", "2"], "--max-retries goes with --ray"),
    (["--task-gpus", "1", "--actors", "1"], "--task-gpus, --actors go with --ray"),
    (["--ray", "nonsense"], "give auto, local or a Ray head's host:port"),
    (["--ray", "auto", "--actors", "-1"], "actors ≥ 0"),
    (["--resume", " "], "executor.resume is empty"),
])
def test_executor_flags_are_checked_in_one_line(flags, message, capsys):
    assert commands.main(["validate", "smoke", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


# --------------------------------------------------------------------------- sweep


def tiny_sweep(mode: str, folder) -> SweepConfig:
    run_config = RunConfig.from_dict({"model": {"kind": "potential", "powers": [1]}, "data": {"n": 500},
                                      "sampler": {"steps": 200}})
    return SweepConfig(run=run_config, step_sizes=[1e-4, 1e-3], localizations=[1.0, 10.0], chains_per_cell=2,
                       mode=mode, executor=None if folder is None else ExecutorConfig(resume=str(folder)))


def test_sweep_cells_stopped_midway_resume_only_the_rest(tmp_path, monkeypatch):
    full = run_sweep(tiny_sweep("cells", None))
    finished = []
    stopped = run_sweep(tiny_sweep("cells", tmp_path), on_cell=finished.append, stop=lambda: len(finished) >= 2)
    assert stopped.partial and len(stopped.cells) == 2
    calls = counting(monkeypatch, sweep_module, "estimate_llc")
    again = run_sweep(tiny_sweep("cells", tmp_path))
    assert len(calls) == 2 and len(again.executor["resumed"]) == 2  # only the two cells not finished
    assert without_timings(again.cells) == without_timings(full.cells)
    assert (again.recommended, again.reason, again.init_loss) == (full.recommended, full.reason, full.init_loss)


def test_a_batched_sweep_is_not_run_again_once_written(tmp_path, monkeypatch):
    first = run_sweep(tiny_sweep("batched", tmp_path))
    calls = counting(monkeypatch, sweep_module, "estimate_llc")
    again = run_sweep(tiny_sweep("batched", tmp_path))
    assert calls == [] and len(again.executor["resumed"]) == 4 and again.mode == "batched"
    assert without_timings(again.cells) == without_timings(first.cells) and again.recommended == first.recommended


# --------------------------------------------------------------------------- trajectory


@pytest.fixture(scope="module")
def trained():
    return trajectory.train_model(TINY_DLN)


@pytest.mark.parametrize("sampler", [SamplerConfig(chains=2, steps=60, burnin=0.5),
                                     SamplerConfig(chains=2, steps=100, step_size="auto")], ids=["curvature", "auto"])
def test_trajectory_stopped_midway_resumes_without_rerunning(trained, sampler, tmp_path, monkeypatch):
    module, checkpoints, dataset, _ = trained
    full = trajectory.estimate_trajectory(module, checkpoints, dataset.inputs, dataset.targets, sampler)
    journal, done = Journal(tmp_path / "runs.jsonl"), []
    stopped = trajectory.estimate_trajectory(module, checkpoints, dataset.inputs, dataset.targets, sampler,
                                             journal=journal, on_point=lambda p, n, t: done.append(p),
                                             stop=lambda: bool(done))
    assert stopped.partial and len(stopped.points) == 1 and len(journal.load()) == 1
    calls = counting(monkeypatch, trajectory, "estimate_llc")
    again = trajectory.estimate_trajectory(module, checkpoints, dataset.inputs, dataset.targets, sampler,
                                           journal=journal, executor=ExecutorConfig(resume=str(tmp_path)))
    assert len(calls) == 2 and len(again.executor["resumed"]) == 1  # with "auto", the calibration run is the one kept
    assert again.to_dict()["points"] == full.to_dict()["points"] and again.sampler == full.sampler


def test_trajectory_config_takes_the_executor_key_and_the_cli_resumes(tmp_path, capsys):
    raw = {"training": dataclasses.asdict(TINY_DLN), "sampler": {"chains": 2, "steps": 60},
           "executor": {"resume": str(tmp_path)}}
    config = trajectory.TrajectoryConfig.from_dict(raw)
    assert config.executor == ExecutorConfig(resume=str(tmp_path))
    assert trajectory.TrajectoryConfig.from_dict(config.to_dict()).executor == config.executor
    assert "executor" not in trajectory.TrajectoryConfig().to_dict()  # the local default's JSON is unchanged
    with pytest.raises(LLCInputError, match="unknown key"):
        trajectory.TrajectoryConfig.from_dict({**raw, "executor": {"where": "x"}})
    path = tmp_path / "trajectory.json"
    path.write_text(json.dumps(raw))
    for _ in range(2):
        assert commands.main(["trajectory", "--config", str(path), "--quiet"]) == 0
    assert "ran here: 3 run(s); resumed 3" in capsys.readouterr().out


# --------------------------------------------------------------------------- chain groups


DLN_RUN = {"model": {"kind": "dln", "widths": [3, 2, 3], "rank": 1, "seed": 0}, "data": {"n": 1000},
           "sampler": {"steps": 300, "chains": 4}}


def test_one_chain_group_is_the_run_itself():
    config = RunConfig.from_dict(DLN_RUN)
    assert without_timings(chain_groups.run_chain_groups(config, groups=1).result.to_dict(True)) == \
        without_timings(run(config).to_dict(True))


def test_merged_groups_concatenate_the_draws_and_judge_all_chains():
    config = RunConfig.from_dict(DLN_RUN)
    split = chain_groups.run_chain_groups(config, groups=2)
    assert [(g.first, g.size) for g in split.groups] == [(0, 2), (2, 2)] and split.groups[0].seed == 0
    parts = [run(RunConfig.from_dict(chain_groups.group_config(config, g))) for g in split.groups]
    merged = split.result
    assert merged.llc_per_chain == parts[0].llc_per_chain + parts[1].llc_per_chain
    trace = np.concatenate([np.array(p.loss_trace) for p in parts], axis=1)
    assert np.array_equal(np.array(merged.loss_trace), trace)
    values = np.array(merged.llc_per_chain)
    assert merged.llc_mean == float(values.mean()) and merged.llc_se == pytest.approx(values.std(ddof=1) / 2)
    assert (merged.rhat, merged.ess) == diagnostics.rhat_ess(trace[merged.burnin_steps:].T)
    assert merged.config["sampler"]["chains"] == 4 and merged.config["sampler"]["seed"] == 0
    assert len(merged.mala_acceptance_per_chain) == 4 and merged.verdicts
    assert split.executor["executor"] == "local" and split.missing == []
    # the heat each chain's λ̂ had taken off (docs/METHOD.md §8), side by side, and its mean over all chains
    heat = parts[0].heat_correction["per_chain"] + parts[1].heat_correction["per_chain"]
    assert merged.heat_correction["per_chain"] == heat and merged.heat_correction["applied"]
    assert merged.heat_correction["mean"] == pytest.approx(float(np.mean(heat)))


def test_chain_groups_resume_and_their_seeds_come_from_the_chains(tmp_path, monkeypatch):
    config = RunConfig.from_dict(DLN_RUN)
    first = chain_groups.run_chain_groups(config, ExecutorConfig(chain_groups=2, resume=str(tmp_path)))
    calls = counting(monkeypatch, chain_groups, "run")
    again = chain_groups.run_chain_groups(config, ExecutorConfig(chain_groups=2, resume=str(tmp_path)))
    assert calls == [] and len(again.executor["resumed"]) == 2
    assert without_timings(again.result.to_dict(True)) == without_timings(first.result.to_dict(True))
    assert chain_groups.group_seed(7, 0) == 7 and chain_groups.group_seed(7, 2) == chain_groups.group_seed(7, 2)
    assert chain_groups.group_seed(7, 2) != chain_groups.group_seed(8, 2) != chain_groups.group_seed(7, 4)


def test_chain_group_plans_and_their_messages():
    assert [(g.first, g.size) for g in chain_groups.plan_groups(7, 3, 0)] == [(0, 3), (3, 2), (5, 2)]
    # start_spread moves every second chain: each group starts at an even chain, so each chain starts as unsplit
    assert [(g.first, g.size) for g in chain_groups.plan_groups(7, 2, 0, paired=True)] == [(0, 4), (4, 3)]
    with pytest.raises(LLCInputError, match="use at most 4 groups"):
        chain_groups.plan_groups(4, 5, 0)
    with pytest.raises(LLCInputError, match="start_spread pairs them"):
        chain_groups.plan_groups(4, 3, 0, paired=True)
    with pytest.raises(LLCInputError, match="chain_groups"):
        ExecutorConfig.from_dict({"chain_groups": 0})


def test_cli_run_with_chain_groups(tmp_path, capsys):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(DLN_RUN))
    assert commands.main(["run", str(path), "--chain-groups", "2"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)["llc_per_chain"]) == 4
    assert "2 chain group(s) merged into 4 chains; ran here" in captured.err
    assert commands.main(["run", str(path), "--chain-groups", "9"]) == 2
    assert "use at most 4 groups" in capsys.readouterr().err
