"""λ̂ across checkpoints: training that keeps checkpoints, one calibrated sampler, stop, zips, the CLI."""

from __future__ import annotations

import io
import json
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save as safetensors_bytes

from llc_core import LLCInputError, SamplerConfig
from llc_core.files import checkpoint as ckpt
from llc_core.files import safe_read
from llc_core.studies import trajectory
from llc_core.cli import main as cli_main
from llc_core.studies.refined import partition
from llc_core.studies.trajectory import TrainingConfig, TrajectoryConfig

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"
TINY_SAMPLER = SamplerConfig(chains=2, steps=60, burnin=0.5)
# two teacher modes, learned one after the other: one checkpoint before, between and after (steps 0, 200, 400)
TINY_DLN = TrainingConfig(task="dln", widths=[3, 3, 3, 3], teacher_singular_values=[3.0, 2.0], n=200, steps=400,
                          checkpoints=3)


@pytest.fixture(scope="module")
def trained():
    return trajectory.train_model(TINY_DLN)


def test_dln_training_keeps_evenly_spaced_checkpoints_and_learns(trained):
    module, checkpoints, dataset, info = trained
    assert [c.step for c in checkpoints] == [0, 200, 400]
    start, middle, end = info["checkpoint_losses"]
    # saddle to saddle: the plateau after the first mode keeps the second mode's loss s²/2 · E[x²] · ... ≈ 1.8,
    # then the second mode is learned too (deterministic: seeded GD; margins of 2× and 100×)
    assert 0.2 * start < middle < 0.5 * start and end < 0.01 * middle
    assert info["llc_by_rank"] == {0: 3.0, 1: 4.0, 2: 4.5}  # Aoyagi's λ per rank for widths 3-3-3-3


def test_one_calibrated_step_size_for_every_checkpoint(trained):
    module, checkpoints, dataset, _ = trained
    seen = []
    result = trajectory.estimate_trajectory(module, checkpoints, dataset.inputs, dataset.targets, TINY_SAMPLER,
                                            on_point=lambda point, done, total: seen.append((point.step, done, total)))
    assert seen == [(0, 1, 3), (200, 2, 3), (400, 3, 3)]  # in training order: ε came from the curvature rule
    assert [p.step for p in result.points] == [0, 200, 400] and not result.partial
    expected = trajectory.curvature_step_size(module, checkpoints[-1].weights, dataset.inputs, dataset.targets,
                                              loss="gaussian", noise_scale=1.0, nbeta=200 / np.log(200),
                                              localization=10.0)
    assert result.calibrated_on == "step 400" and result.step_size == pytest.approx(expected)
    assert result.sampler["step_size"] == result.step_size and result.sampler["localization"] == 10.0
    assert all(p.llc_mean is not None for p in result.points)
    assert result.points[0].train_loss > result.points[-1].train_loss
    json.loads(result.to_json())
    assert "step" in result.table().splitlines()[0]


def test_auto_step_size_is_calibrated_by_a_run_on_the_final_checkpoint(trained):
    module, checkpoints, dataset, _ = trained
    seen = []
    result = trajectory.estimate_trajectory(module, checkpoints[1:], dataset.inputs, dataset.targets,
                                            SamplerConfig(chains=2, steps=200, step_size="auto"),
                                            on_point=lambda point, done, total: seen.append(point.step))
    assert seen == [400, 200]  # the final checkpoint's run settles ε first
    assert isinstance(result.step_size, float) and result.sampler["step_size"] == result.step_size


def test_a_given_step_size_is_used_as_is_and_stop_keeps_what_is_done(trained):
    module, checkpoints, dataset, _ = trained
    stop = threading.Event()
    result = trajectory.estimate_trajectory(
        module, checkpoints, dataset.inputs, dataset.targets, SamplerConfig(chains=2, steps=60, step_size=1e-4),
        on_point=lambda point, done, total: stop.set(), stop=stop)
    assert result.calibrated_on == "given" and result.step_size == 1e-4
    assert [p.step for p in result.points] == [0] and result.partial and result.checkpoints_total == 3


def test_checkpoint_files_and_zips(tmp_path, trained):
    module, checkpoints, dataset, _ = trained
    files = [(f"run/ckpt_{c.step:04d}.safetensors", safetensors_bytes({k: v.contiguous() for k, v in c.weights.items()}))
             for c in checkpoints]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for name, body in files:
            z.writestr(name, body)
    built, loaded, spec = trajectory.checkpoints_from_files([("all.zip", archive.getvalue())], activation="identity")
    assert [c.step for c in loaded] == [0, 200, 400] and loaded[0].label == "ckpt_0000.safetensors"
    assert ckpt.describe_architecture(spec) == "Linear 3→3 → Linear 3→3 → Linear 3→3"
    assert torch.equal(loaded[-1].weights["2.weight"], checkpoints[-1].weights["2.weight"])
    # a checkpoint of another architecture is named in the message
    other = safetensors_bytes({"0.weight": torch.zeros(3, 4), "1.weight": torch.zeros(3, 3), "2.weight": torch.zeros(3, 3)})
    with pytest.raises(LLCInputError, match=r"odd_9\.safetensors: the checkpoint does not fit.*0\.weight: file \(3, 4\)"):
        trajectory.checkpoints_from_files([*files, ("odd_9.safetensors", other)], activation="identity")


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, body in members.items():
            z.writestr(name, body)
    return buffer.getvalue()


def test_unsafe_zips_are_refused(monkeypatch):
    weights = safetensors_bytes({"0.weight": torch.zeros(2, 2)})
    cases = {
        "traversal": (zip_of({"../../etc/evil.pt": weights}), "path traversal"),
        "absolute": (zip_of({"/tmp/evil.pt": weights}), "path traversal"),
        "other file": (zip_of({"a.pt": weights, "run.sh": b"rm -rf /"}), "'run.sh', not a checkpoint"),
        "empty": (zip_of({}), "no checkpoint files"),
        "corrupt": (zip_of({"a.pt": weights})[:30], "corrupt or truncated"),
    }
    for name, (data, message) in cases.items():
        with pytest.raises(LLCInputError, match=message):
            trajectory.read_checkpoint_zip(data)
    monkeypatch.setattr(safe_read, "MAX_ZIP_MEMBERS", 2)
    with pytest.raises(LLCInputError, match="over the limit of 2"):
        trajectory.read_checkpoint_zip(zip_of({f"{i}.pt": weights for i in range(3)}))
    monkeypatch.setattr(safe_read, "MAX_FILE_BYTES", 100)
    with pytest.raises(LLCInputError, match="over the .* MiB limit|unpacks to"):
        trajectory.read_checkpoint_zip(zip_of({"a.safetensors": b"\0" * 500}))


def test_step_numbers_come_from_the_names():
    assert trajectory.step_from_name("run/ckpt_000500.pt", 7) == 500
    assert trajectory.step_from_name("final.pt", 7) == 7


def test_worker_thread_streams_points_and_the_config_round_trips():
    config = TrajectoryConfig(training=TrainingConfig(**{**TINY_DLN.__dict__, "steps": 100, "checkpoints": 2}),
                              sampler=TINY_SAMPLER)
    assert TrajectoryConfig.from_dict(json.loads(config.to_json())) == config
    worker = trajectory.TrajectoryRun(config).start()
    progress = worker.join(60)
    assert progress.status == "done", progress.error
    assert [p.step for p in progress.points] == [0, 100] and progress.result.info["task"] == "dln"
    assert progress.result.points == progress.points
    with pytest.raises(LLCInputError, match="unknown key"):
        TrajectoryConfig.from_dict({"training": {"task": "dln", "depth": 3}})


def test_cli_on_the_example_zip(capsys):
    code = cli_main(["trajectory", str(EXAMPLES / "dln_training.zip"), "--data", str(EXAMPLES / "dln_training.npz"),
                     "--activation", "identity", "--chains", "2", "--steps", "40", "--json", "--quiet"])
    out = capsys.readouterr()
    assert code == 0, out.err
    result = json.loads(out.out)
    assert len(result["points"]) == 11 and result["calibrated_on"] == "dln_step_00500.safetensors"
    assert cli_main(["trajectory", "--data", "x.npz"]) == 2
    assert "give either checkpoint_paths" in capsys.readouterr().err


def test_mlp_student_of_a_teacher_learns():
    module, checkpoints, dataset, info = trajectory.train_model(TrainingConfig(task="mlp", n=200, steps=100, checkpoints=2))
    assert dataset.source == "teacher" and info["teacher"]["kind"] == "mlp"
    assert [c.step for c in checkpoints] == [0, 100]
    assert info["checkpoint_losses"][1] < info["checkpoint_losses"][0]  # Adam lowers the loss (deterministic, seeded)
    with pytest.raises(LLCInputError, match="training task 'cnn'"):
        trajectory.train_model(TrainingConfig(task="cnn"))


def test_groups_are_tracked_at_every_checkpoint_with_the_same_settings(trained):
    module, checkpoints, dataset, _ = trained
    groups = partition(module, "layer")
    seen = []
    result = trajectory.estimate_trajectory(module, checkpoints, dataset.inputs, dataset.targets, TINY_SAMPLER,
                                            groups=groups, on_point=lambda point, done, total: seen.append(point))
    assert result.groups == ["0", "1", "2"]  # the DLN's three Linear layers, in order
    for point in seen:  # streamed with its groups
        assert list(point.groups) == result.groups
        assert all(v["llc"] is not None and v["se"] is not None and v["moving"] == 9 for v in point.groups.values())
    # the same calibrated ε as the full runs: one fixed sampler for every run
    full = trajectory.estimate_trajectory(module, checkpoints, dataset.inputs, dataset.targets, TINY_SAMPLER)
    assert result.step_size == full.step_size and [p.llc_mean for p in result.points] == [p.llc_mean for p in full.points]
    # stage hints of the full λ̂ and of every group
    assert result.stages == trajectory.stage_hints(result.points) and set(result.group_stages) == set(result.groups)
    assert result.group_stages["1"] == trajectory.stage_hints(result.points, "1")
    back = trajectory.TrajectoryResult.from_dict(json.loads(result.to_json()))
    assert back.points == result.points and back.stages == result.stages and back.group_stages == result.group_stages
    table = result.group_table().splitlines()
    assert table[0].split() == ["step", "0", "1", "2"] and len(table) == 4 and "±" in table[1]
    assert "Stages of λ̂:" in result.hints_text() and "Stages of group 2:" in result.hints_text()


def test_stage_hints_of_a_group_read_its_refined_values():
    points = [trajectory.TrajectoryPoint(step=10 * i, label="", train_loss=1.0, llc_mean=5.0, llc_se=0.1, llc_std=0.2,
                                         acceptance=None, diverged_chains=0, partial=False, verdicts=[],
                                         groups={"a": {"llc": 1.0 if i < 4 else 3.0, "se": 0.05}})
              for i in range(8)]
    assert len(trajectory.stage_hints(points).stages) == 1
    hints = trajectory.stage_hints(points, "a")
    assert [s.first_step for s in hints.stages] == [0, 40] and hints.text.startswith("2 stages")
    assert trajectory.stage_hints(points, "missing").text.startswith("No checkpoint")


def test_a_config_with_groups_round_trips_and_bad_groups_are_named():
    config = TrajectoryConfig.from_dict({"training": {"task": "dln"}, "refine": {"groups": {"first": ["0.*"]}}})
    assert config.refine.groups == {"first": ["0.*"]}
    assert TrajectoryConfig.from_dict(json.loads(config.to_json())) == config
    module = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False), torch.nn.Linear(2, 2, bias=False))
    assert list(trajectory.tracked_groups(config, module)) == ["first"]
    assert trajectory.tracked_groups(TrajectoryConfig(), module) is None
    with pytest.raises(LLCInputError, match="no nn.MultiheadAttention"):
        trajectory.tracked_groups(TrajectoryConfig.from_dict({"refine": {"groups": "head"}}), module)
    with pytest.raises(LLCInputError, match="refine takes only groups"):
        trajectory.tracked_groups(TrajectoryConfig.from_dict({"refine": {"parameters": ["0.*"]}}), module)
    with pytest.raises(LLCInputError, match="unknown key"):
        TrajectoryConfig.from_dict({"refine": {"layers": "all"}})


def test_cli_prints_a_group_table_and_the_stage_hints(capsys):
    code = cli_main(["trajectory", "--train", "dln", "--train-steps", "100", "--keep", "2", "--chains", "2",
                     "--steps", "40", "--groups", "layer", "--quiet"])
    out = capsys.readouterr()
    assert code == 0, out.err
    text = out.out
    assert "Refined λ̂ ± se of each group" in text and "Stages of λ̂:" in text and "Stages of group 0:" in text
    table = text.split("Refined λ̂ ± se of each group")[1].splitlines()[1:4]
    assert table[0].split() == ["step", "0", "1", "2"] and table[1].split()[0] == "0" and table[2].split()[0] == "100"
    assert cli_main(["trajectory", "--train", "dln", "--train-steps", "10", "--keep", "2", "--groups", "[1]"]) == 2
    assert "--groups JSON must be an object" in capsys.readouterr().err
