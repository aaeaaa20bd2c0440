"""The CLI and the JSON round trips of RunConfig and RunResult."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llc_core import RunConfig, RunResult, run

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"model": {"kind": "potential", "powers": [1, 2]}, "data": {"n": 500},
         "sampler": {"steps": 200, "chains": 2}}
REQUIRED_KEYS = {"llc_mean", "llc_std", "llc_per_chain", "theoretical_llc", "multiplicity",
                 "mala_acceptance_mean", "diverged_chains", "chain_steps_per_second", "partial",
                 "verdicts", "config"}


def cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "llc_core", *args], input=stdin, capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


def test_cli_reads_stdin_prints_result_json_and_progress_on_stderr():
    done = cli("run", "-", stdin=json.dumps(SMALL))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert REQUIRED_KEYS <= set(result)
    assert result["theoretical_llc"] == 0.25 and result["multiplicity"] == 1
    assert result["config"]["sampler"]["steps"] == 200
    assert result["config"]["sampler"]["step_size"] is not None  # defaults are filled in
    assert "200/200" in done.stderr and "steps/s" in done.stderr


def test_cli_reads_a_file_and_can_include_the_trace(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(SMALL))
    done = cli("run", str(path), "--trace", "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    trace = json.loads(done.stdout)["loss_trace"]
    assert len(trace) == 200 and len(trace[0]) == 2


@pytest.mark.parametrize("stdin, words", [
    ("{not json", "not valid JSON"),
    (json.dumps({"sampler": {"step_size": -1}}), "step_size"),
    (json.dumps({"sampler": {"chains": 0}}), "chains"),
    (json.dumps({"model": {"kind": "potential", "powers": [1, 2]}, "data": {"n": 100}, "sampler": {"batch_size": 1000}}), "batch_size"),
    (json.dumps({"modle": {}}), "unknown key"),
    (json.dumps([1, 2]), "JSON object"),
])
def test_cli_bad_input_exits_nonzero_with_one_line(stdin, words):
    done = cli("run", "-", stdin=stdin)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0]


def test_cli_missing_file():
    done = cli("run", "/nonexistent/config.json")
    assert done.returncode == 2 and "cannot read config" in done.stderr


def test_config_round_trips_through_json():
    config = RunConfig.from_dict({"model": {"kind": "dln", "widths": [3, 2, 3], "rank": 1, "seed": 4},
                                  "data": {"n": 1234, "seed": 9},
                                  "sampler": {"step_size": 1e-6, "burnin": 0.9, "preconditioner": "rmsprop"},
                                  "device": "cpu"})
    again = RunConfig.from_json(config.to_json())
    assert again == config
    assert again.model.widths == [3, 2, 3] and again.sampler.burnin == 0.9


def test_result_round_trips_through_json():
    result = run(RunConfig.from_dict(SMALL))
    text = result.to_json()
    again = RunResult.from_json(text)
    assert again.to_json() == text
    assert again.llc_per_chain == result.llc_per_chain
    assert again.verdicts[0].message == result.verdicts[0].message


def test_cli_writes_plain_progress_lines_and_a_summary_when_not_on_a_terminal(tmp_path):
    # stdout and stderr are pipes here, as in CI or a log file: no carriage-return redraws, and a
    # one-paragraph summary on stderr beside the JSON on stdout
    import subprocess
    import sys

    config = tmp_path / "run.json"
    config.write_text('{"model": {"kind": "potential", "powers": [1, 2]}, "data": {"n": 500},'
                      ' "sampler": {"steps": 400, "chains": 2}}')
    done = subprocess.run([sys.executable, "-m", "llc_core", "run", str(config)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("step ") and 5 <= len(lines) <= 13
    assert lines[-1].startswith("λ̂ = ") and "the true λ is 0.25" in lines[-1] and "2 chains × 400 steps" in lines[-1]
    assert "The heat correction took " in lines[-1]
    assert json.loads(done.stdout)["steps_completed"] == 400
