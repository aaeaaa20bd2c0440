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


def test_ray_options_need_ray(capsys):
    assert commands.main(["validate", "smoke", "--task-cpus", "2"]) == 2  # --resume alone resumes here (test_resume.py)
    assert "--task-cpus goes with --ray" in capsys.readouterr().err


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


def where_unit():
    """A unit function that says where it ran: its process, the shared object it saw, its torch threads
    (made here, so that Ray ships it by value: workers cannot import this test module)."""
    def where(payload, shared):
        import os

        import torch

        return {"pid": os.getpid(), "shared": id(shared), "threads": torch.get_num_threads()}

    return where


where = where_unit()


def test_tasks_set_torch_threads_to_their_cpus(local_ray):
    units = [ray_backend.Unit(f"u{i}", where, None) for i in range(2)]
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


# --------------------------------------------------------------------------- trajectories, actors, chain groups


@pytest.fixture(scope="module")
def trained():
    from llc_core.studies import trajectory

    return trajectory.train_model(trajectory.TrainingConfig(task="dln", widths=[3, 3, 3, 3],
                                                            teacher_singular_values=[3.0, 2.0], n=200, steps=400,
                                                            checkpoints=3))


@pytest.mark.parametrize("step_size", [None, "auto"], ids=["curvature", "auto"])
def test_trajectory_is_bit_identical_on_ray_with_live_progress_and_resumes(local_ray, trained, step_size, tmp_path):
    from llc_core import SamplerConfig
    from llc_core.execution.units import Journal
    from llc_core.studies import trajectory

    module, checkpoints, dataset, _ = trained
    sampler = SamplerConfig(chains=2, steps=60 if step_size is None else 100, step_size=step_size)
    local = trajectory.estimate_trajectory(module, checkpoints, dataset.inputs, dataset.targets, sampler)
    seen, journal = [], Journal(tmp_path / "runs.jsonl")
    remote = trajectory.estimate_trajectory(module, checkpoints, dataset.inputs, dataset.targets, sampler,
                                            executor=ExecutorConfig(ray="auto"), journal=journal,
                                            on_point=lambda p, done, total: seen.append((p.step, done, total)))
    assert remote.to_dict()["points"] == local.to_dict()["points"] and remote.sampler == local.sampler
    assert sorted(done for _, done, _ in seen) == [1, 2, 3] and {total for _, _, total in seen} == {3}
    if step_size == "auto":
        assert seen[0][0] == 400  # the calibration run on the final checkpoint comes first
    assert remote.executor["runs"] == 3 and remote.executor["retried"] == [] and "executor" not in local.to_dict()
    again = trajectory.estimate_trajectory(module, checkpoints, dataset.inputs, dataset.targets, sampler,
                                           executor=ExecutorConfig(ray="auto"), journal=journal)
    assert len(again.executor["resumed"]) == 3 and again.to_dict()["points"] == local.to_dict()["points"]


def test_cli_trajectory_on_ray_in_process(local_ray, capsys):
    args = ["trajectory", "--train", "dln", "--train-steps", "100", "--keep", "2", "--chains", "2", "--steps", "60",
            "--ray", "auto"]
    assert commands.main(args) == 0
    captured = capsys.readouterr()
    assert "[2/2]" in captured.err and "ran on Ray at" in captured.out and "2 run(s)" in captured.out


def test_gpus_are_asked_for_only_where_there_are_some(local_ray):
    plan = ray_backend.worker_plan(local_ray, ExecutorConfig(ray="auto"), runs=4)
    assert (plan.num_gpus, plan.actors, plan.threads) == (0.0, 0, 1)  # a CPU-only cluster: a task per run
    with pytest.raises(LLCInputError, match=r"asking for 1 CPU\(s\) and 1 GPU\(s\).*lower --task-cpus / --task-gpus"):
        ray_backend.run_units([ray_backend.Unit("u", where, None)], ExecutorConfig(ray="auto", num_gpus=1))


def test_chain_groups_on_ray_equal_the_groups_run_here(local_ray):
    from llc_core.execution.chain_groups import run_chain_groups

    config = RunConfig.from_dict({"model": {"kind": "dln", "widths": [3, 2, 3], "rank": 1, "seed": 0},
                                  "data": {"n": 1000}, "sampler": {"steps": 300, "chains": 4}})
    here = run_chain_groups(config, groups=2)
    remote = run_chain_groups(config, ExecutorConfig(ray="auto", chain_groups=2))
    timings = ("wall_time_s", "chain_steps_per_second")
    strip = lambda result: {k: v for k, v in result.to_dict(include_trace=True).items() if k not in timings}  # noqa: E731
    assert strip(remote.result) == strip(here.result) and remote.executor["runs"] == 2


def test_validate_page_runs_on_ray(local_ray, navigation_mode):
    from streamlit.testing.v1 import AppTest

    from apptest_helpers import run_until

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/validate.py")
    at.run()
    at.radio(key="validate.run_on").set_value("ray").run()
    at.text_input(key="validate.ray_address").set_value("auto").run()
    at.selectbox(key="validate.suite").set_value("smoke")
    at.number_input(key="validate.cases").set_value(1)
    at.button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    run_until(at, lambda at: any("ran on Ray at" in c.value for c in at.caption), timeout=120)


def test_an_actor_keeps_the_shared_data_and_its_threads_across_runs(local_ray):
    import torch

    units = [ray_backend.Unit(f"u{i}", where, None) for i in range(3)]
    one = ray_backend.run_units(units, ExecutorConfig(ray="auto", actors=1, num_cpus=2), shared={"x": torch.zeros(3)})
    # one process kept one copy of the shared object for all three runs, with two torch threads (its CPUs)
    assert len({(v["pid"], v["shared"], v["threads"]) for v in one.values.values()}) == 1
    assert {v["threads"] for v in one.values.values()} == {2} and one.summary()["workers"] == "1 actor(s)"


@pytest.mark.slow
def test_actors_give_the_numbers_of_tasks_and_stop_keeps_what_finished(local_ray):
    local = run_sweep(tiny_sweep())
    on_actors = run_sweep(tiny_sweep(executor=ExecutorConfig(ray="auto", actors=2)))
    assert without_wall(on_actors.cells) == without_wall(local.cells) and on_actors.executor["workers"] == "2 actor(s)"
    cases = validate.suite_cases("toy", count=5, sampler=TINY_SAMPLER)
    finished = []
    report = validate.run_suite("toy", None, count=5, sampler=TINY_SAMPLER, stop=lambda: bool(finished),
                                executor=ExecutorConfig(ray="auto", actors=1),
                                on_case=lambda row, i, n: finished.append(row.name))
    info = report["summary"]["executor"]
    assert 1 <= len(report["cases"]) < len(cases) and len(info["cancelled"]) == len(cases) - len(report["cases"])


@pytest.mark.slow
def test_ray_started_by_a_study_in_a_worker_thread_outlives_it():
    """The app's studies run in worker threads that end with them; Ray's processes die with the thread that
    started them, so connect() starts Ray from a thread of its own (ray_backend.init_here)."""
    pytest.importorskip("ray")
    code = ("import threading\n"
            "from llc_core.config import ExecutorConfig\n"
            "from llc_core.studies import validate\n"
            "for _ in range(2):  # the second study, in a new thread, finds Ray still there\n"
            "    box = {}\n"
            "    thread = threading.Thread(target=lambda: box.update(r=validate.run_suite(\n"
            "        'smoke', None, count=1, executor=ExecutorConfig(ray='local'))))\n"
            "    thread.start(); thread.join()\n"
            "    assert box['r']['summary']['executor']['runs'] == 1, box\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


# --------------------------------------------------------------------------- a node dies


@pytest.mark.slow
@pytest.mark.parametrize("actors", [0, 3], ids=["tasks", "actors"])
def test_a_node_removed_mid_study_loses_no_run(tmp_path, actors):
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
                                    executor=ExecutorConfig(ray="auto", max_retries=3, actors=actors))
        info = report["summary"]["executor"]
        assert len(report["cases"]) == 6 and all(r["error"] is None for r in report["cases"]), report["cases"]
        assert info["retried"] and not info["failed"]
        assert len((tmp_path / "toy.runs.jsonl").read_text().splitlines()) == 6
    finally:
        ray.shutdown()
        cluster.shutdown()
