"""The Training run page under streamlit's AppTest, drawn from a finished run held in the session (no sampling):
verdicts in words, a table that shows every row, two charts that fit their column, a loss axis with ticks."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from apptest_helpers import chart_count, chart_specs, shown
from streamlit.testing.v1 import AppTest

from llc_core.studies.trajectory import (
    TrajectoryPoint,
    TrajectoryProgress,
    TrajectoryResult,
)

APP = str(Path(__file__).resolve().parents[1] / "app.py")

pytestmark = pytest.mark.usefixtures("navigation_mode")  # tests/conftest.py

# a saddle-to-saddle DLN run: the loss falls over four decades, one checkpoint between two plateaus
LOSSES = [5.8, 5.7, 2.1, 0.9, 0.31, 0.04, 0.012]
VERDICTS = [[], [], ["negative_llc", "not_equilibrated"], [], ["still_climbing"], [], ["imprecise"]]


class FinishedRun:
    """What the page polls (llc_core.studies.TrajectoryRun), finished."""

    alive = False

    def __init__(self, progress: TrajectoryProgress):
        self.progress = progress

    def poll(self) -> TrajectoryProgress:
        return self.progress

    def request_stop(self) -> None:
        pass


def finished_progress() -> TrajectoryProgress:
    points = [TrajectoryPoint(step=50 * i, label=f"step {50 * i}", train_loss=loss,
                              llc_mean=-0.4 if "negative_llc" in codes else 1.0 + i, llc_se=0.1, llc_std=0.2,
                              acceptance=0.93, diverged_chains=0, partial=False, verdicts=codes)
              for i, (loss, codes) in enumerate(zip(LOSSES, VERDICTS))]
    result = TrajectoryResult(points=points, step_size=1e-3, nbeta=100.0, localization=10.0, calibrated_on="step 300",
                              checkpoints_total=len(points), partial=False, sampler={"chains": 2, "steps": 60})
    return TrajectoryProgress(status="done", points=points, total=len(points), result=result)


def open_finished() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    at.switch_page("pages/trajectory.py")
    at.session_state["traj.worker"] = FinishedRun(finished_progress())
    at.run()
    at.run()  # the first run draws the finished run and reruns once to stop polling
    assert not at.exception, at.exception
    return at



def test_the_table_shows_verdicts_in_words_and_every_row():
    at = open_finished()
    assert not at.dataframe  # a data grid cut the verdicts off at 1024 px and scrolled past ten rows
    [table] = at.table  # a static table: every row, long verdicts wrapped
    frame = table.value
    assert len(frame) == len(LOSSES)
    assert list(frame["verdicts"]) == ["–", "–", "negative λ̂, not equilibrated", "–", "still climbing", "–", "imprecise"]
    assert not any("_" in text for text in frame["verdicts"])  # no engine code (negative_llc, still_climbing)
    assert "warnings" not in frame.columns


def test_two_charts_each_fit_the_page_and_the_loss_axis_has_readable_ticks():
    at = open_finished()
    specs = chart_specs(at)
    assert chart_count(at) == 2
    assert not any("vconcat" in spec for spec in specs)  # a vconcat keeps Vega's own width and overflows the column
    [loss] = [s for s in specs if "train loss" in json.dumps(s, ensure_ascii=False)]
    axis, scale = loss["encoding"]["y"]["axis"], loss["encoding"]["y"]["scale"]
    assert scale["type"] == "symlog"
    # from the power of ten below the smallest loss (0.012), in 1-3 steps (1-2-5 would make 9): more than the
    # "0" and "6" Vega picks on its own, and the losses fill the plot
    assert axis["values"] == [0.01, 0.03, 0.1, 0.3, 1.0, 3.0], axis["values"]
    assert scale["domain"][0] == 0.01 and scale["domain"][1] > max(LOSSES)
    assert axis["format"] == "~g"


@pytest.mark.parametrize("losses, start, ticks", [
    ([0.9, 0.8, 0.5, 0.45, 0.41, 0.4, 0.39], 0.1, [0.1, 0.2, 0.5]),  # less than a decade: 1-2-5 steps
    ([5.8, 2.0, 0.5, 0.05, 0.004, 0.0005, 0.0], 0.0, [0.0, 0.001, 0.01, 0.1, 1.0]),  # down to 0: powers of ten
])
def test_loss_ticks_follow_the_losses(losses, start, ticks):
    progress = finished_progress()
    for point, loss in zip(progress.points, losses):
        point.train_loss = loss
    at = open_with(progress)
    [loss] = [s for s in chart_specs(at) if "train loss" in json.dumps(s, ensure_ascii=False)]
    assert loss["encoding"]["y"]["axis"]["values"] == ticks
    assert loss["encoding"]["y"]["scale"]["domain"][0] == start


# refined λ̂ of three groups at each checkpoint; one group's name carries markdown, as a user's parameter names may
GROUPS = ["0", "1", "evil_*name*"]


def grouped_progress() -> TrajectoryProgress:
    progress = finished_progress()
    for i, point in enumerate(progress.points):
        point.groups = {name: {"llc": (-0.2 if point.llc_mean < 0 else 0.5 * (k + 1) + (2.0 if i >= 4 and k == 1 else 0)),
                               "se": 0.05, "moving": 9} for k, name in enumerate(GROUPS)}
    progress.result.groups = list(GROUPS)
    progress.result.with_stage_hints()
    return progress


def open_with(progress: TrajectoryProgress) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    at.switch_page("pages/trajectory.py")
    at.session_state["traj.worker"] = FinishedRun(progress)
    at.run()
    at.run()
    assert not at.exception, at.exception
    return at


def test_stage_hints_in_words_under_the_chart_and_boundaries_on_it():
    at = open_finished()
    [hint] = [c.value for c in at.caption if c.value.startswith("**Stage hints.**")]
    assert "stage" in hint and "transition" in hint  # describe(...) of the full λ̂, a negative checkpoint named
    [llc] = [s for s in chart_specs(at) if "in transition" in json.dumps(s, ensure_ascii=False)]
    rules = [layer for layer in llc["layer"] if layer["mark"].get("type") == "rule"]
    assert len(rules) == 2  # each stage's level, and the boundaries between stages
    crosses = [layer for layer in llc["layer"] if layer["mark"].get("shape") == "cross"]
    assert crosses and crosses[0]["mark"]["color"] == "#d62728"  # transition checkpoints: red crosses


def chart_data(at: AppTest, mark: str) -> pd.DataFrame:
    """The rows of the first dataset of the chart that has a `mark` layer (Streamlit sends data apart from the spec)."""
    from streamlit import dataframe_util

    def walk(node):
        for child in getattr(node, "children", {}).values():
            yield child
            yield from walk(child)
    [element] = [e for e in walk(at._tree) if getattr(e, "type", None) == "vega_lite_chart"
                 and f'"{mark}"' in e.proto.spec]
    return dataframe_util.convert_arrow_bytes_to_pandas_df(element.proto.datasets[0].data.data)


def test_groups_draw_a_heatmap_and_lines_with_their_stages():
    at = open_with(grouped_progress())
    assert chart_count(at) == 4  # λ̂, loss, the group × checkpoint heatmap and the lines per group
    specs = [json.dumps(s, ensure_ascii=False) for s in chart_specs(at)]
    [heatmap] = [json.loads(s) for s in specs if '"rect"' in s]
    cells = heatmap["layer"][0]
    assert cells["encoding"]["color"]["field"] == "λ̂" and cells["encoding"]["y"]["field"] == "group"
    assert {"field": "refined λ̂ ± se", "type": "nominal"} in cells["encoding"]["tooltip"]
    rows = set(chart_data(at, "rect")["refined λ̂ ± se"])
    assert rows >= {"0.5 ± 0.05", "3 ± 0.05", "-0.2 ± 0.05"}
    assert any("category10" in s for s in specs)  # the lines, one distinct colour per group
    assert any("refined LLC of a layer" in c.value for c in at.caption)  # for a student
    [stages] = [m.value for m in at.markdown if "Stages of each group" in m.value]
    assert r"evil\_\*name\*" in stages  # a user's group name as text, not markdown
    assert stages.count("- **") == len(GROUPS)


def test_without_groups_no_group_charts():
    at = open_finished()
    assert chart_count(at) == 2 and not any("Stages of each group" in m.value for m in at.markdown)


def capture_runs(monkeypatch) -> list:
    """The configs of the training runs the page starts, each finishing at once with grouped_progress()."""
    import llc_core.studies

    started = []

    class Captured(FinishedRun):
        def __init__(self, config):
            started.append(config)
            super().__init__(grouped_progress())

        def start(self):
            return self

    monkeypatch.setattr(llc_core.studies, "TrajectoryRun", Captured)
    return started


def test_the_group_selector_puts_groups_into_the_config(monkeypatch):
    started = capture_runs(monkeypatch)
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    at.switch_page("pages/trajectory.py")
    at.run()
    [selector] = [s for s in at.selectbox if s.label.startswith("Refined LLC per group")]
    assert selector.value == "none"
    selector.select("layer").run()
    at.button(key="traj.start").click().run()
    assert not at.exception, at.exception
    assert started and started[0].refine.groups == "layer"


def test_the_tracked_groups_round_trip_through_the_url():
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params["groups"] = "head"
    at.run()
    at.switch_page("pages/trajectory.py").run()
    assert not at.exception and not at.error
    assert at.selectbox(key="traj.groups").value == "head" and at.query_params["groups"] == "head"
    at.selectbox(key="traj.groups").select("layer").run()
    assert at.query_params["groups"] == "layer"  # a change goes to the URL
    bad = AppTest.from_file(APP, default_timeout=30)
    bad.query_params["groups"] = "[x](https://evil.example)"
    bad.run()
    bad.switch_page("pages/trajectory.py").run()
    assert not bad.exception and bad.selectbox(key="traj.groups").value == "none"
    [error] = [e.value for e in bad.error]
    text = shown(error).replace("\u2060", "")  # as the user reads it
    assert text == ("URL: groups = '[x](https://evil.example)' is not available here: use one of none, layer, head; "
                    "using none instead")
    assert "](" not in error  # escaped: shown as typed, never a link


def test_the_transformer_training_run_example_tracks_attention_heads(monkeypatch):
    """The tiny transformer's training run (a zip: the final checkpoint as a .pt2, the others as state dicts) with
    its token data and the next-token loss, in one click; "each attention head" goes into the config."""
    started = capture_runs(monkeypatch)
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    at.switch_page("pages/trajectory.py").run()
    at.radio(key="traj.source").set_value("upload").run()
    names = at.selectbox(key="traj.example_name").options
    [example] = [name for name in names if name.startswith("Tiny transformer training run")]
    at.selectbox(key="traj.example_name").set_value(example).run()
    at.button(key="traj.example").click().run()
    assert any("transformer_training.zip + counting_tokens.npz" in c.value for c in at.caption)
    assert at.radio(key="traj.loss").value == "next_token"
    at.selectbox(key="traj.groups").select("head").run()
    at.button(key="traj.start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    [config] = started
    assert config.refine.groups == "head" and config.activation is None and config.data.loss == "next_token"
    assert config.checkpoint_paths[0].endswith("transformer_training.zip")


@pytest.mark.slow
def test_the_transformer_training_run_example_runs_with_heads_on_the_page():
    """The whole example, sampled for real (a few SGLD steps): the heatmap gets one row per attention head."""
    from apptest_helpers import run_until

    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("pages/trajectory.py").run()
    at.radio(key="traj.source").set_value("upload").run()
    [example] = [n for n in at.selectbox(key="traj.example_name").options if n.startswith("Tiny transformer training")]
    at.selectbox(key="traj.example_name").set_value(example).run()
    at.button(key="traj.example").click().run()
    at.selectbox(key="traj.groups").select("head").run()
    for name, value in {"steps": 20, "chains": 1, "step_size": 4e-4}.items():
        at.number_input(key=f"traj.{name}").set_value(value).run()
    at.button(key="traj.start").click().run()
    run_until(at, lambda a: any("Every checkpoint used" in m.value for m in a.markdown) or a.error, timeout=300)
    assert not at.error, [shown(e.value) for e in at.error]
    rows = set(chart_data(at, "rect")["group"])
    assert rows == {"layer.self_attn.head0", "layer.self_attn.head1"}
    [stages] = [m.value for m in at.markdown if "Stages of each group" in m.value]
    assert stages.count("- **") == 2
