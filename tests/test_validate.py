"""Validation suites: the runner, its JSON/PNG outputs, the CLI subcommand and the Validate page."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest, app_test

from llc_core.studies import validate
from llc_core.studies.validate import suite_cases
from llc_core.truth import theory
from llc_core.errors import LLCInputError

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")


def test_suites_exist_with_the_issue_targets():
    assert {"smoke", "toy", "dln-1k", "dln-10k", "dln-100k"} <= set(validate.SUITES)
    assert (validate.SUITES["dln-1k"].median_target, validate.SUITES["dln-1k"].p90_target) == (0.10, 0.20)
    assert (validate.SUITES["dln-10k"].median_target, validate.SUITES["dln-10k"].p90_target) == (0.10, 0.20)
    assert validate.SUITES["dln-100k"].median_target == 0.15
    assert len(validate.suite_cases("dln-1k")) >= 20 and len(validate.suite_cases("dln-10k")) >= 20
    toy = validate.suite_cases("toy")
    assert {c.tolerance for c in toy if c.group == "1-D potential"} == {0.10}
    assert {c.tolerance for c in toy if c.group == "product potential"} == {0.15}
    # the DLN suites use the kind's defaults: no sampler keys
    assert all("sampler" not in c.config for c in validate.suite_cases("dln-1k"))
    with pytest.raises(LLCInputError, match="unknown suite"):
        validate.suite_cases("nope")


def test_random_dln_cases_follow_the_suite_ranges():
    for case in validate.suite_cases("dln-10k", count=5):
        info = validate._case_info(validate.RunConfig.from_dict(case.config))
        assert 3 <= len(info["widths"]) <= 11 and all(5 <= h <= 100 for h in info["widths"])


def test_summary_statistics():
    rows = [validate.CaseResult(f"c{i}", "dln", rel_error=e, acceptance=0.9, wall_s=1.0)
            for i, e in enumerate([0.01, -0.02, 0.05, 0.5, -0.04])]
    s = validate.summarize("dln-1k", rows)
    assert s["median_rel_error"] == pytest.approx(0.04)
    assert s["p90_rel_error"] == pytest.approx(0.32)  # numpy's linear interpolation between 0.05 and 0.5
    assert s["passed"] is False  # the median passes (≤ 10%), the 90th percentile does not (> 20%)
    rows[3].rel_error = 0.1
    assert validate.summarize("dln-1k", rows)["p90_rel_error"] == pytest.approx(0.08)
    assert validate.summarize("dln-1k", rows)["passed"] is True


def test_run_suite_writes_json_and_png(tmp_path):
    seen = []
    report = validate.run_suite("smoke", tmp_path, on_case=lambda row, i, n: seen.append((row.name, i, n)))
    assert [s[1:] for s in seen] == [(0, 2), (1, 2)]
    data = json.loads((tmp_path / "smoke.json").read_text())
    assert data["summary"]["cases"] == 2 and len(data["cases"]) == 2
    first = data["cases"][0]
    assert first["target_kind"] == "finite-n (Gaussian prior)" and first["llc"] == 0.5
    assert first["llc_hat"] is not None and first["acceptance"] is not None
    assert data["cases"][1]["llc"] == 3.5  # dln [3, 2, 3] rank 1
    png = (tmp_path / "smoke.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert "median |rel err|" in validate.format_summary(report["summary"])
    assert "λ̂ ± se" in validate.format_table(report["cases"])


def test_cli_validate_prints_table_and_summary(tmp_path):
    done = subprocess.run([sys.executable, "-m", "llc_core", "validate", "smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "[2/2]" in done.stdout and "median |rel err|" in done.stdout and "rel err" in done.stdout
    assert (tmp_path / "smoke.json").is_file() and (tmp_path / "smoke.png").is_file()
    bad = subprocess.run([sys.executable, "-m", "llc_core", "validate", "nope"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and "unknown suite" in bad.stderr


# --------------------------------------------------------------------------- the page


@pytest.fixture
def navigation_mode(monkeypatch):
    """As in test_app_learn.py: run AppTest under app.py's st.navigation."""
    class NavigationOnly(PagesManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            PagesManager.uses_pages_directory = False

    monkeypatch.setattr(app_test, "PagesManager", NavigationOnly)


def test_validate_page_runs_the_smoke_suite(navigation_mode):
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("pages/validate.py").run()
    assert not at.exception
    at.selectbox(key="validate.suite").select("smoke")
    at.button[0].click().run()  # the form's "Run suite"
    assert not at.exception
    worker = at.session_state["validate.run"]
    deadline = time.monotonic() + 240
    while worker.alive and time.monotonic() < deadline:
        time.sleep(0.5)
        at.run()
    assert not worker.alive
    at.run()
    assert not at.exception
    assert any("Summary" in m.value for m in at.markdown)
    table = at.table[0].value  # st.table: every row and column visible at 1024 px
    assert list(table["case"]) == ["potential [1]", "dln [3, 2, 3]"]
    assert table["λ̂"].notna().all()
    # a column no case fills is left out (Aoyagi's global λ is filled only for the random generator's DLNs)
    assert "Aoyagi's global λ" not in table.columns and "None" not in table.to_string()


def test_suite_run_stops_when_asked():
    worker = validate.SuiteRun("smoke").start()
    worker.request_stop()
    worker.join(120)
    assert not worker.alive
    snap = worker.snapshot()
    assert snap["error"] is None and len(snap["rows"]) <= 1 and snap["summary"] is not None


def test_sampler_override_applies_to_every_case_and_rejects_unknown_keys():
    cases = validate.suite_cases("smoke", sampler={"step_size": "auto", "steps": 123})
    assert all(c.config["sampler"]["step_size"] == "auto" and c.config["sampler"]["steps"] == 123 for c in cases)
    with pytest.raises(LLCInputError, match="'stepsize'"):
        validate.suite_cases("smoke", sampler={"stepsize": 1e-3})


def test_dln_suites_score_against_local_llc_and_deepest_cases_are_aoyagis():
    from llc_core.truth import theory
    from llc_core.config import DataConfig, ModelConfig
    from llc_core.truth.zoo import build_problem, dln_truth, draw_dln

    # dln-1k skips the seeds whose λ(w*) has no closed form (8, 9, 12, 13, 14, 16, 18, 19 of 0-19)
    names = [case.name for case in validate.suite_cases("dln-1k", count=10)]
    assert names == [f"dln seed {s}" for s in (0, 1, 2, 3, 4, 5, 6, 7, 10, 11)]
    assert dln_truth(*draw_dln((2, 5), (5, 50), 8))[0] is None
    for case in validate.suite_cases("dln-deepest", count=3):
        model = case.config["model"]
        problem = build_problem(ModelConfig(**model), DataConfig(n=200))
        assert problem.truth.llc == theory.deep_linear_network(model["widths"], model["rank"]).llc
        assert set(problem.info["matrix_ranks"]) == {model["rank"]}


def test_refined_suite_scores_one_factor_against_rank_a_times_rank_b_over_two():
    # seed 0 draws widths 9-3-7-11 and factor W2 (7×3); every factor has the dln kind's default rank
    # min(widths) = 3, so A = W3 has rank 3 and B = W1 rank 3: λ = 3·3/2 = 4.5 (not 7·3/2, which a
    # float64 rank of the float32 weights would give)
    [case] = suite_cases("refined", count=1)
    assert case.name == "dln 9-3-7-11 W2" and case.llc == 4.5
    assert case.config["refine"] == {"parameters": ["1.*"]}
    assert theory.weight_refined_linear_factor(4, 12).llc == 24
