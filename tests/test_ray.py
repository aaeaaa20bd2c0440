"""Studies on a Ray cluster (llc_core/execution/ray_backend.py, docs/CLUSTER.md): one switch, the same
numbers as locally, a results directory to resume from, retries when a node dies, Stop, threads.

Ray is optional (requirements-ray.txt): without it only the tests that need no Ray run. The tests
share one local Ray instance of 2 CPUs; the node-failure test builds its own simulated cluster and is
marked slow.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from llc_core.cli import commands
from llc_core.config import ExecutorConfig, RunConfig
from llc_core.errors import LLCInputError
from llc_core.execution import ray_backend
from llc_core.studies import validate
from llc_core.studies.sweep import SweepConfig, run_sweep

ROOT = Path(__file__).resolve().parents[1]
TINY_SAMPLER = {"steps": 200, "chains": 2}


def without_wall(rows):
    return [{k: v for k, v in (r if isinstance(r, dict) else dataclasses.asdict(r)).items()
             if k not in ("wall_s", "wall_time_s")} for r in rows]


def tiny_sweep(**changes) -> SweepConfig:
    run = RunConfig.from_dict({"model": {"kind": "potential", "powers": [1]}, "data": {"n": 500},
                               "sampler": {"steps": 200}})
    return SweepConfig(run=run, **{"step_sizes": [1e-4, 1e-3], "localizations": [1.0, 10.0], "chains_per_cell": 2,
                                   "mode": "cells", **changes})


# --------------------------------------------------------------------------- without Ray


def test_local_studies_do_not_import_ray():
    code = ("import sys, llc_core, llc_core.cli.commands\n"
            "from llc_core.studies import validate\n"
            "validate.run_suite('smoke', None, count=1)\n"
            "assert 'ray' not in sys.modules, 'ray was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_executor_config_key_round_trips_and_is_checked():
    raw = {**tiny_sweep().to_dict(), "executor": {"ray": "auto", "max_retries": 2}}
    sweep = SweepConfig.from_dict(raw)
    assert sweep.executor == ExecutorConfig(ray="auto", max_retries=2)
    assert SweepConfig.from_dict(sweep.to_dict()).executor == sweep.executor
    assert "executor" not in tiny_sweep().to_dict()  # the local default's JSON is unchanged
    with pytest.raises(LLCInputError, match="unknown key"):
        SweepConfig.from_dict({**raw, "executor": {"cluster": "x"}})
    with pytest.raises(LLCInputError, match="num_cpus"):
        ExecutorConfig.from_dict({"ray": "auto", "num_cpus": 0})
    with pytest.raises(LLCInputError, match="batched"):
        tiny_sweep(mode="batched", executor=ExecutorConfig(ray="auto")).validate()


def test_bad_address_is_one_line_and_exit_2(tmp_path):
    pytest.importorskip("ray")
    done = subprocess.run([sys.executable, "-m", "llc_core", "validate", "smoke", "--out", str(tmp_path),
                           "--ray", "127.0.0.1:1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "no Ray cluster at 127.0.0.1:1" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("address, message", [
    ("nonsense", "give auto, local or a Ray head's host:port"),
    ("10.0.0.1:99999", "give auto, local or a Ray head's host:port"),
    ("ray://10.0.0.1:10001", "Ray Client addresses"),
])
def test_malformed_addresses_are_refused_before_any_connection(address, message):
    with pytest.raises(LLCInputError, match=message.replace("(", r"\(")):
        ray_backend.check_address(address)


def test_ray_options_need_ray(tmp_path, capsys):
    assert commands.main(["validate", "smoke", "--resume", str(tmp_path)]) == 2
    assert "go with --ray" in capsys.readouterr().err


def test_journal_skips_a_line_cut_short(tmp_path):
    journal = ray_backend.Journal(tmp_path / "runs.jsonl")
    journal.append("a", {"x": 1.0, "y": float("nan")})
    with journal.path.open("a") as handle:
        handle.write('{"key": "b", "val')  # a crash mid-write
    assert journal.load() == {"a": {"x": 1.0, "y": None}}
    assert ray_backend.unit_key("c", {"seed": 1}) != ray_backend.unit_key("c", {"seed": 2})


# --------------------------------------------------------------------------- on a local Ray


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    yield ray
    ray.shutdown()


def test_validate_suite_is_bit_identical_on_ray_and_resumes(local_ray, tmp_path):
    local = validate.run_suite("smoke", None)
    seen = []
    remote = validate.run_suite("smoke", tmp_path, executor=ExecutorConfig(ray="auto"),
                                on_case=lambda row, i, n: seen.append((row.name, i, n)))
    assert without_wall(remote["cases"]) == without_wall(local["cases"])
    assert sorted(i for _, i, _ in seen) == [0, 1] and remote["summary"]["executor"]["retried"] == []
    assert json.loads((tmp_path / "smoke.json").read_text())["summary"]["executor"]["runs"] == 2
    lines = (tmp_path / "smoke.runs.jsonl").read_text().splitlines()
    assert len(lines) == 2  # written as they finished
    # keep one finished run, as if the study had crashed after it: resuming runs only the other
    (tmp_path / "smoke.runs.jsonl").write_text(lines[0] + "\n")
    again = validate.run_suite("smoke", None, executor=ExecutorConfig(ray="auto", resume=str(tmp_path)))
    assert len(again["summary"]["executor"]["resumed"]) == 1
    assert without_wall(again["cases"]) == without_wall(local["cases"])


def test_sweep_is_bit_identical_on_ray_and_resumes(local_ray, tmp_path):
    local = run_sweep(tiny_sweep())
    progress = []
    remote = run_sweep(tiny_sweep(executor=ExecutorConfig(ray="auto", resume=str(tmp_path))),
                       on_progress=lambda p: progress.append(p.cells_done))
    assert without_wall(remote.cells) == without_wall(local.cells)
    assert (remote.recommended, remote.reason, remote.init_loss) == (local.recommended, local.reason, local.init_loss)
    assert sorted(progress) == [1, 2, 3, 4] and remote.mode == "cells"
    assert remote.to_dict()["executor"]["runs"] == 4 and "executor" not in local.to_dict()
    again = run_sweep(tiny_sweep(executor=ExecutorConfig(ray="auto", resume=str(tmp_path))))
    assert len(again.executor["resumed"]) == 4 and without_wall(again.cells) == without_wall(local.cells)


def test_tasks_set_torch_threads_to_their_cpus(local_ray):
    threads = lambda payload, shared: {"threads": __import__("torch").get_num_threads()}  # noqa: E731
    units = [ray_backend.Unit(f"u{i}", threads, None) for i in range(2)]
    for cpus in (1, 2):
        outcome = ray_backend.run_units(units, ExecutorConfig(ray="auto", num_cpus=cpus))
        assert {v["threads"] for v in outcome.values.values()} == {cpus}


def test_stop_cancels_the_rest_and_keeps_what_finished(local_ray, tmp_path):
    cases = validate.suite_cases("toy", count=6, sampler=TINY_SAMPLER)
    finished = []
    report = validate.run_suite("toy", tmp_path, count=6, sampler=TINY_SAMPLER, executor=ExecutorConfig(ray="auto"),
                                on_case=lambda row, i, n: finished.append(row.name), stop=lambda: bool(finished))
    info = report["summary"]["executor"]
    assert 1 <= len(report["cases"]) < len(cases) and info["cancelled"]
    assert [r["name"] for r in report["cases"]] == [c.name for c in cases if c.name in finished]
    assert len((tmp_path / "toy.runs.jsonl").read_text().splitlines()) == len(report["cases"])


def test_cli_validate_and_sweep_on_ray_in_process(local_ray, tmp_path, capsys):
    assert commands.main(["validate", "smoke", "--cases", "1", "--out", str(tmp_path), "--ray", "auto"]) == 0
    out = capsys.readouterr().out
    assert "[1/1]" in out and "ran on Ray at" in out and (tmp_path / "smoke.runs.jsonl").is_file()
    config = tmp_path / "sweep.json"
    config.write_text(json.dumps({**tiny_sweep(step_sizes=[1e-3], localizations=[1.0]).to_dict(),
                                  "executor": {"ray": "auto"}}))
    assert commands.main(["sweep", str(config), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["executor"]["runs"] == 1 and "1/1 cells done" in captured.err


@pytest.mark.slow
def test_cli_validate_and_sweep_on_ray(tmp_path):
    pytest.importorskip("ray")
    done = subprocess.run([sys.executable, "-m", "llc_core", "validate", "smoke", "--out", str(tmp_path),
                           "--ray", "local", "--task-cpus", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "[2/2]" in done.stdout and "ran on Ray at" in done.stdout and (tmp_path / "smoke.runs.jsonl").is_file()
    config = tmp_path / "sweep.json"
    config.write_text(json.dumps({**tiny_sweep().to_dict(), "executor": {"ray": "local"}}))
    done = subprocess.run([sys.executable, "-m", "llc_core", "sweep", str(config), "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["executor"]["runs"] == 4 and "4/4 cells done" in done.stderr


# --------------------------------------------------------------------------- a node dies


@pytest.mark.slow
def test_a_node_removed_mid_study_loses_no_run(tmp_path):
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    try:
        ray.init(address=cluster.address, log_to_driver=False, logging_level="warning")
        # every simulated node has this machine's IP: the driver may have joined any raylet, so the
        # node that dies is a worker node that is not the driver's
        driver = ray.get_runtime_context().get_node_id()
        victim = next(node for node in workers if node.node_id != driver)
        sampler = {"steps": 3000, "chains": 2}
        removed = []

        def on_case(row, index, total):
            if not removed:  # the worker node dies while it runs a case
                cluster.remove_node(victim, allow_graceful=False)
                removed.append(row.name)

        report = validate.run_suite("toy", tmp_path, count=6, sampler=sampler, on_case=on_case,
                                    executor=ExecutorConfig(ray="auto", max_retries=3))
        info = report["summary"]["executor"]
        assert len(report["cases"]) == 6 and all(r["error"] is None for r in report["cases"]), report["cases"]
        assert info["retried"] and not info["failed"]
        assert len((tmp_path / "toy.runs.jsonl").read_text().splitlines()) == 6
    finally:
        ray.shutdown()
        cluster.shutdown()
