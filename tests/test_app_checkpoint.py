"""The Checkpoint and Training run pages under streamlit's AppTest: examples, a tiny estimate, bad files."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from apptest_helpers import chart_count, chart_specs, run_until, shown

from llc_core import RunConfig, run
from pages.common import escape_markdown

APP = str(Path(__file__).resolve().parents[1] / "app.py")

pytestmark = pytest.mark.usefixtures("navigation_mode")  # tests/conftest.py


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    at.switch_page(page).run()
    assert not at.exception
    return at


def click(at: AppTest, label: str) -> AppTest:
    [button] = [b for b in at.button if b.label == label]
    button.click().run()
    assert not at.exception
    return at


def markdown(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown]


def test_example_loads_and_a_tiny_estimate_shows_the_engines_numbers():
    at = click(open_page("pages/checkpoint.py"), "Load example")
    assert "**Inferred architecture:** Linear 3→8 (bias) → relu → Linear 8→1 (bias)" in markdown(at)
    assert any("d = 41 parameters" in c.value for c in at.caption)
    at.number_input(key="ckpt.steps").set_value(200).run()
    at.number_input(key="ckpt.chains").set_value(2).run()
    click(at, "Estimate λ̂")
    run_until(at, lambda at: any(text.startswith("### λ̂ =") for text in markdown(at)))
    record = at.session_state["ckpt.run"]
    # the page ran exactly the config it built: the same config through llc_core.run (same seed) gives the same λ̂
    config = RunConfig.from_dict(record.config.to_dict())
    again = run(config)
    shown = [text for text in markdown(at) if text.startswith("### λ̂ =")][0]
    assert shown == f"### λ̂ = {again.llc_mean:.4g} ± {again.llc_se:.2g}"
    assert config.model.kind == "checkpoint" and config.model.activation == "relu"
    assert config.data.path.endswith("mlp_regression.npz")


def test_export_and_csv_examples():
    at = open_page("pages/checkpoint.py")
    at.selectbox(key="ckpt.example").set_value("Tanh classifier as a torch.export program (.pt2 + safetensors)").run()
    click(at, "Load example")
    assert any("torch.export program" in s.value for s in at.success)
    assert any("targets labels" in c.value and "cross_entropy loss" in c.value for c in at.caption)
    at.selectbox(key="ckpt.example").set_value("Deep linear network 4 → 3 → 2 (torch .pt + CSV)").run()
    click(at, "Load example")
    assert at.multiselect(key="ckpt.target_columns").value == ["y1", "y2"]
    assert "**Inferred architecture:** Linear 4→3 → Linear 3→2" in markdown(at)
    # a JSON spec instead of inference; a wrong one names the mismatch
    at.toggle(key="ckpt.use_spec").set_value(True).run()
    at.text_area(key="ckpt.spec").set_value(
        '{"layers": [{"type": "linear", "in": 4, "out": 3, "bias": false}, {"type": "linear", "in": 3, "out": 2}]}').run()
    assert not at.exception
    assert any("missing [1.bias]" in shown(e.value) and escape_markdown("[1.bias]") in e.value for e in at.error)


def test_data_drawn_from_a_zoo_teacher():
    at = click(open_page("pages/checkpoint.py"), "Load example")  # a 3 → 8 → 1 MLP
    at.radio(key="ckpt.origin").set_value("teacher").run()
    assert any("n = 1,000 samples, inputs (3,), targets (1,)" in c.value for c in at.caption)
    at.text_input(key="ckpt.teacher").set_value('{"kind": "mlp", "input_dim": 5}').run()
    assert not at.exception
    assert any("cannot take inputs of shape (5,)" in shown(e.value) for e in at.error)
    at.text_input(key="ckpt.teacher").set_value('{"kind": mlp}').run()
    assert any("not valid JSON" in shown(e.value) for e in at.error)


def torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


class WritesAFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_bad_uploads_show_the_message_not_a_traceback(tmp_path):
    at = click(open_page("pages/checkpoint.py"), "Load example")
    victim = tmp_path / "pwned.txt"
    bad_files = {
        "png.pt": (b"\x89PNG\r\n\x1a\n" + b"\0" * 32, "is a PNG image"),
        "evil.pt": (torch_bytes({"w": WritesAFile(victim)}), "refused to load the checkpoint"),
        "empty.safetensors": (b"", "is empty"),
    }
    for name, (data, message) in bad_files.items():
        path = tmp_path / name
        path.write_bytes(data)
        at.session_state["ckpt.model_path"] = str(path)  # where an upload is kept
        at.run()
        assert not at.exception
        assert any(message in shown(e.value) for e in at.error), [shown(e.value) for e in at.error]
        assert [b for b in at.button if b.label == "Estimate λ̂"][0].disabled
    assert not victim.exists()


def test_training_run_page_streams_a_tiny_dln_trajectory():
    at = open_page("pages/trajectory.py")
    for name, value in {"train_steps": 200, "keep": 3, "steps": 60, "chains": 2}.items():
        at.number_input(key=f"traj.{name}").set_value(value).run()
    click(at, "Estimate every checkpoint")
    run_until(at, lambda at: any("Every checkpoint used" in text for text in markdown(at)))
    table = at.table[0].value
    assert list(table["step"]) == [0, 100, 200]
    result = at.session_state["traj.worker"].poll().result
    assert list(table["λ̂"]) == [p.llc_mean for p in result.points]
    assert f"ε = {result.step_size:.3g} (calibrated on step 200)" in [t for t in markdown(at) if "Every" in t][0]
    at.radio(key="traj.source").set_value("upload").run()
    click(at, "Load example training run")
    assert any("dln_training.zip" in c.value for c in at.caption)


@pytest.mark.parametrize("example, inputs, loss", [
    ("Small CNN on 8×8 digits (.pt2 + safetensors)", "inputs (1, 8, 8)", "cross_entropy"),
    ("Tiny transformer, next-token prediction (.pt2 + token npz)", "inputs (8,)", "next_token"),
])
def test_cnn_and_transformer_examples_load_in_one_click(example, inputs, loss):
    at = open_page("pages/checkpoint.py")
    at.selectbox(key="ckpt.example").set_value(example).run()
    click(at, "Load example")
    assert not at.error, [shown(e.value) for e in at.error]
    assert any("brings its own architecture" in s.value for s in at.success)
    assert any(inputs in c.value and f"{loss} loss" in c.value for c in at.caption), [c.value for c in at.caption]
    assert at.session_state["ckpt.loss"] == loss
    if loss == "next_token":  # the .pt2 program's attention is found in its graph: one group per head
        assert at.radio(key="ckpt.refine_groups").options == ["per layer", "per attention head", "per data subset"]


def test_refined_llc_per_layer_of_the_cnn_example():
    """Section 5: "Estimate per group" runs llc_core.studies.run_groups in a worker and draws one bar per layer."""
    at = open_page("pages/checkpoint.py")
    at.selectbox(key="ckpt.example").set_value("Small CNN on 8×8 digits (.pt2 + safetensors)").run()
    click(at, "Load example")
    assert at.radio(key="ckpt.refine_groups").options == ["per layer", "per data subset"]  # no attention in a CNN
    at.number_input(key="ckpt.steps").set_value(100).run()
    at.number_input(key="ckpt.refine_chains").set_value(2).run()
    click(at, "Estimate per group")
    run_until(at, lambda at: len(at.dataframe) > 0, timeout=240)
    assert not at.error, [shown(e.value) for e in at.error]
    table = at.dataframe[0].value
    assert list(table["group"]) == ["net.0", "net.3", "net.7"]  # conv, conv, linear: the layers with parameters
    assert table["λ̂"].notna().all() and all(abs(v) < float("inf") for v in table["λ̂"])
    assert sum(table["moving parameters"]) == 1898
    assert chart_count(at) >= 1
    result = at.session_state["ckpt.refine_job"].snapshot()["result"]
    assert [g.llc_mean for g in result.groups] == list(table["λ̂"])
    assert result.chains_per_group == 2 and not result.partial


def test_refined_chart_truncates_long_names_and_marks_the_full_llc():
    from llc_core.studies.refined import GroupLLC
    from pages import charts

    groups = [GroupLLC("a" * 60, 10, 1.5, 0.1, [1.4, 1.6], 0.9), GroupLLC("a" * 60 + "b", 5, 2.0, None, [2.0], None),
              GroupLLC("fc2", 3, None, None, [None], None)]
    frame = charts.refined_frame(groups)
    assert frame["label"].str.len().max() <= charts.GROUP_LABEL_CHARS and frame["label"].is_unique
    spec = charts.refined_chart(frame, full_llc=3.25).to_dict()
    assert spec["height"] >= 220
    assert any(layer["mark"]["type"] == "text" for layer in spec["layer"])
    assert "full λ̂ = 3.25" in json.dumps(spec, ensure_ascii=False)
    assert len(charts.refined_chart(frame).to_dict()["layer"]) == 2  # no full run: bars and error bars only


# ---------------------------------------------------------------- a page that cannot mislead (issue 14)

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"


def upload(at: AppTest, model: str, data: str) -> AppTest:
    """Upload an example's files as a user's own (no example settings come with them)."""
    at.file_uploader(key="ckpt.model_upload").set_value((model, (EXAMPLES / model).read_bytes(), "application/octet-stream"))
    at.file_uploader(key="ckpt.data_upload").set_value((data, (EXAMPLES / data).read_bytes(), "application/octet-stream"))
    at.run()
    assert not at.exception
    return at


def main_elements(at: AppTest) -> list:
    """The page's elements in the order they are drawn."""
    def walk(node):
        for child in getattr(node, "children", {}).values():
            yield child
            yield from walk(child)
    return list(walk(at.main))


def test_target_columns_default_to_the_models_outputs_and_keep_the_files_order():
    """dln.pt (4 → 3 → 2) with dln.csv (x1 … x4, y1, y2): the targets start as y1 and y2; picked y2 then y1 they
    are still used as y1, y2 (a multiselect returns click order; the model's outputs are matched by position)."""
    at = upload(open_page("pages/checkpoint.py"), "dln.pt", "dln.csv")
    at.selectbox(key="ckpt.activation").set_value("identity").run()
    at.checkbox(key="ckpt.confirmed").check().run()
    assert not at.error, [shown(e.value) for e in at.error]
    assert at.multiselect(key="ckpt.target_columns").value == ["y1", "y2"]
    assert any("The model takes 4 inputs and gives 2 outputs per sample" in shown(c.value) for c in at.caption)
    at.multiselect(key="ckpt.target_columns").set_value(["y2", "y1"]).run()  # clicked in this order
    assert at.multiselect(key="ckpt.target_columns").value == ["y1", "y2"]
    kept = json.loads(at.session_state["ckpt.problem"][0])  # what the run would get
    assert kept[1]["target_columns"] == ["y1", "y2"]
    click(at, "Load example")  # the MLP example, then the DLN example picked y2 before y1
    at.selectbox(key="ckpt.example").set_value("Deep linear network 4 → 3 → 2 (torch .pt + CSV)").run()
    click(at, "Load example")
    at.multiselect(key="ckpt.target_columns").set_value(["y2", "x4"]).run()
    assert at.multiselect(key="ckpt.target_columns").value == ["x4", "y2"]


def test_a_shape_error_sits_under_the_target_selector_and_names_the_columns():
    at = upload(open_page("pages/checkpoint.py"), "dln.pt", "dln.csv")
    at.checkbox(key="ckpt.confirmed").check().run()
    at.multiselect(key="ckpt.target_columns").set_value(["y2"]).run()
    [error] = at.error
    assert shown(error.value) == ("The model takes 4 inputs and gives 2 outputs per sample, so it needs 2 target "
                                  "columns: choose the columns y1 and y2 as targets (the others are the inputs).")
    elements = main_elements(at)
    where = {id(e): i for i, e in enumerate(elements)}
    selector = next(e for e in elements if getattr(e, "type", None) == "multiselect")
    # right under the selector: no other section (the sampler's) in between, nothing to run
    assert where[id(error)] > where[id(selector)]
    assert "4 · Sampler" not in [s.value for s in at.subheader]
    assert next(b for b in at.button if b.label == "Estimate λ̂").disabled


def test_class_labels_preselect_cross_entropy_and_the_gaussian_loss_says_so():
    """The classifier (.pt2, 3 logits) with integer labels 0-2: cross-entropy is preselected; switched to the
    Gaussian loss the error names the cross-entropy loss, not "reshape the targets"."""
    at = upload(open_page("pages/checkpoint.py"), "classifier.pt2", "classifier_data.safetensors")
    assert at.radio(key="ckpt.loss").value == "cross_entropy"
    assert not at.error, [shown(e.value) for e in at.error]
    at.radio(key="ckpt.loss").set_value("gaussian").run()
    [error] = at.error
    text = shown(error.value)
    assert "use the cross-entropy loss" in text and "reshape" not in text, text
    assert "whole numbers from 0 to 2" in text and "3 outputs" in text


def test_the_dln_example_shows_its_known_llc_in_the_result_and_no_sidebar_text():
    at = open_page("pages/checkpoint.py")
    at.selectbox(key="ckpt.example").set_value("Deep linear network 4 → 3 → 2 (torch .pt + CSV)").run()
    click(at, "Load example")
    assert any("the true λ is 4" in c.value for c in at.caption)
    assert any("This example's λ is known: λ = 4" in i.value for i in at.info)
    # the page has no sidebar and no "Run" button: nothing may tell the user to press one there
    texts = [str(getattr(e, name, "")) for e in main_elements(at) for name in ("value", "label", "help")]
    assert any("Estimate λ̂" in text for text in texts)  # the walk does see the page's text
    assert not any("sidebar" in text.lower() for text in texts)
    at.number_input(key="ckpt.steps").set_value(200).run()
    at.number_input(key="ckpt.chains").set_value(2).run()
    click(at, "Estimate λ̂")
    run_until(at, lambda at: any(text.startswith("### λ̂ =") for text in markdown(at)))
    assert [m.value for m in at.metric if m.label == "theory λ"] == ["4"]
    assert any(text.startswith("**Theory:** λ = 4 (multiplicity m = 1). λ̂ − λ =") for text in markdown(at))
    assert not any("No closed-form λ" in text for text in markdown(at))
    assert at.session_state["ckpt.run"].result.theoretical_llc == 4.0
    # a run of the same files with other settings is not the example: no λ is claimed for it
    at.selectbox(key="ckpt.activation").set_value("relu").run()
    assert not any("This example's λ is known" in i.value for i in at.info)


# ---------------------------------------------------------------- refined LLCs per data subset, Stop, the URL

CLASSIFIER = "Tanh classifier as a torch.export program (.pt2 + safetensors)"


def load(at: AppTest, example: str) -> AppTest:
    at.selectbox(key="ckpt.example").set_value(example).run()
    return click(at, "Load example")


def test_refined_llc_per_class_label_runs_each_subset_and_streams_its_bar():
    """"Per data subset", each class label: one run per label of the classifier's targets, every parameter moving,
    n and nβ = n / log n of the label's rows; each subset reported as it finishes, kept in the table with its verdicts."""
    import math

    at = load(open_page("pages/checkpoint.py"), CLASSIFIER)
    assert at.radio(key="ckpt.refine_groups").options == ["per layer", "per data subset"]
    at.radio(key="ckpt.refine_groups").set_value("data").run()
    assert at.radio(key="ckpt.refine_subsets").options == ["each class label", "rows I choose"]
    assert any("data-refined LLC" in text for text in markdown(at))
    [plan] = [c.value for c in at.caption if c.value.startswith("3 subsets:")]
    assert "label 0 (149 rows), label 1 (122 rows), label 2 (229 rows)" in plan
    at.number_input(key="ckpt.steps").set_value(40).run()
    at.number_input(key="ckpt.refine_chains").set_value(2).run()
    click(at, "Estimate per group")
    run_until(at, lambda at: any("data subsets × 2 chains" in c.value for c in at.caption), timeout=240)
    assert not at.error, [shown(e.value) for e in at.error]
    table = at.dataframe[0].value
    assert list(table["group"]) == ["label 0", "label 1", "label 2"] and list(table["rows"]) == [149, 122, 229]
    assert all(nbeta == pytest.approx(n / math.log(n)) for n, nbeta in zip(table["rows"], table["nβ"]))
    assert table["verdicts"].str.len().min() > 0 and not table["verdicts"].str.contains("_").any()
    job = at.session_state["ckpt.refine_job"].snapshot()
    result = job["result"]
    assert [g.name for g in job["items"]] == [g.name for g in result.groups]  # each reported as it finished
    assert result.grouping == "label" and result.config["refine"]["subsets"] == "label"
    assert all(g.moving_params == 51 and "rows with label" in g.data for g in result.groups)
    assert any("Data-refined λ̂ per subset" in json.dumps(spec, ensure_ascii=False) for spec in chart_specs(at))
    negative = [g.name for g in result.groups if g.llc_mean < 0]  # w* is no minimum of one class's loss
    assert bool(negative) == any("is not a minimum of the loss on those rows" in i.value for i in at.info)


def test_chosen_subsets_are_checked_before_anything_runs():
    """Regression targets offer only rows the user writes (JSON), starting from the data's two halves; bad JSON
    or rows outside the data get one message and no run."""
    at = click(open_page("pages/checkpoint.py"), "Load example")  # the MLP regression, 200 rows
    at.radio(key="ckpt.refine_groups").set_value("data").run()
    assert at.radio(key="ckpt.refine_subsets").options == ["rows I choose"]
    assert any("Each class label is offered for a classifier's labels; here the targets are real numbers" in shown(c.value)
               for c in at.caption)
    rows = at.text_area(key="ckpt.refine_subset_rows")
    n = at.session_state["ckpt.problem"][1].inputs.shape[0]
    assert json.loads(rows.value) == {"first half": {"range": [0, n // 2]}, "second half": {"range": [n // 2, n]}}
    assert any(c.value.startswith("2 subsets: first half") for c in at.caption)
    start = lambda: next(b for b in at.button if b.label == "Estimate per group")  # noqa: E731
    assert not start().disabled
    for text, message in [("{bad", "not valid JSON"), ("[1, 2]", "must be a JSON object"),
                          ('{"late": {"range": [0, 99999]}}', "data subset 'late': refine.data.range"),
                          ('{"few": {"indices": [1]}}', "keeps 1 of"), ('{"odd": {"colour": 1}}', "use indices, range")]:
        at.text_area(key="ckpt.refine_subset_rows").set_value(text).run()
        assert not at.exception
        errors = [shown(e.value) for e in at.error]
        assert len(errors) == 1 and message in errors[0], (text, errors)
        assert start().disabled
    from test_app_hardening import link_problems, rendered_texts

    for text in ['{"a": {"indices": [1e300]}}', '{"a": {"label": null}}', '{"a": ' * 3000 + "1" + "}" * 3000,
                 '{"a": {"tokens": "x"}}', '{"a": {"column": 0, "value": "x"}}', '{"a": {"indices": []}}']:
        at.text_area(key="ckpt.refine_subset_rows").set_value(text).run()
        assert not at.exception and len(at.error) == 1 and "This is a bug" not in at.error[0].value, text[:40]
    evil = "[x](https://evil.example) <img src=x>"
    at.text_area(key="ckpt.refine_subset_rows").set_value(json.dumps({evil: {"range": [0, 10]}})).run()
    assert not at.error and any(c.value.startswith("1 subset:") for c in at.caption)
    assert link_problems(rendered_texts(at)) == []  # a subset's name is text, never a link or an image


def test_stop_ends_a_group_run_and_the_page_says_it_stopped():
    """Stop during "Estimate per group": the job ends, the page says it stopped and keeps nothing partial, and
    nothing reads "No problems found"."""
    from test_app_hardening import rendered_texts

    at = click(open_page("pages/checkpoint.py"), "Load example")
    at.number_input(key="ckpt.steps").set_value(10_000_000).run()
    at.number_input(key="ckpt.refine_chains").set_value(1).run()
    click(at, "Estimate per group")
    job = at.session_state["ckpt.refine_job"]
    run_until(at, lambda at: any("step" in (p.proto.text or "") and not (p.proto.text or "").startswith("Sampling every "
                                                                                                        "group at once: step 0 ")
                                 for p in at.get("progress")), timeout=120)
    assert job.alive
    [stop] = [b for b in at.button if b.label == "Stop"]
    stop.click().run()
    assert not at.exception and job.stop_requested
    job.join(60)
    assert not job.alive
    run_until(at, lambda at: any("Stopped before the end" in i.value for i in at.info), timeout=60)
    assert not [b for b in at.button if b.label == "Stop"] and not at.dataframe
    assert not next(b for b in at.button if b.label == "Estimate per group").disabled
    result = job.snapshot()["result"]
    assert result.partial and "ok" not in result.verdicts
    assert not any("No problems found" in text for text in rendered_texts(at))


def test_refine_settings_round_trip_through_the_url():
    """Grouping, chains per group and the data subsets are in the address bar; a link brings them back; a bad
    value gets one message naming what is used instead; a grouping the model does not offer is said once."""
    rows = '{"head": {"range": [0, 10]}, "tail": {"range": [150, 200]}}'
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params.update({"groups": "data", "chains_per_group": "3", "subsets": "chosen", "subset_rows": rows})
    at.run()
    at.switch_page("pages/checkpoint.py").run()
    click(at, "Load example")
    assert not at.error, [shown(e.value) for e in at.error]
    assert at.radio(key="ckpt.refine_groups").value == "data" and at.number_input(key="ckpt.refine_chains").value == 3
    assert at.radio(key="ckpt.refine_subsets").value == "chosen" and at.text_area(key="ckpt.refine_subset_rows").value == rows
    assert at.query_params["groups"] == "data" and at.query_params["subset_rows"] == rows
    at.number_input(key="ckpt.refine_chains").set_value(5).run()
    assert at.query_params["chains_per_group"] == "5"  # a change goes to the URL

    bad = AppTest.from_file(APP, default_timeout=30)
    bad.query_params.update({"groups": "<b>all</b>", "chains_per_group": "1e300", "subsets": "label"})
    bad.run()
    bad.switch_page("pages/checkpoint.py").run()
    errors = [shown(e.value) for e in bad.error]
    assert len(errors) == 2 and all(e.startswith("URL: ") for e in errors), errors
    assert "groups = '<b>all</b>' is not available here: use one of layer, head, data; using layer instead" in errors[0]
    assert "chains_per_group = 1e+300 must be ≤ 64; using 4 instead" in errors[1]
    click(bad, "Load example")
    assert bad.radio(key="ckpt.refine_groups").value == "layer" and bad.number_input(key="ckpt.refine_chains").value == 4

    head = AppTest.from_file(APP, default_timeout=30)
    head.query_params.update({"groups": "head"})
    head.run()
    head.switch_page("pages/checkpoint.py").run()
    click(head, "Load example")  # an MLP: no attention heads
    [warning] = [shown(w.value) for w in head.warning]
    assert warning == ("The link asks for per attention head, which this model and data do not offer: showing "
                       "per layer instead.")
    assert head.radio(key="ckpt.refine_groups").value == "layer"
    head.number_input(key="ckpt.refine_chains").set_value(2).run()
    assert not head.warning and head.query_params["groups"] == "layer"


class RunningJob:
    """A refine job in the middle of its data subsets (llc_core.execution.Job's face): one subset done."""

    alive, stop_requested = True, False

    def __init__(self, items):
        self.items = items

    def snapshot(self):
        return {"items": list(self.items), "progress": (50, 150), "result": None, "error": None, "running": True}

    def request_stop(self):
        self.stop_requested = True


def test_each_data_subset_shows_as_soon_as_its_run_ends():
    from llc_core.studies import GroupLLC

    at = load(open_page("pages/checkpoint.py"), CLASSIFIER)
    done = GroupLLC("label 0", 51, 1.5, 0.2, [1.3, 1.7], 0.95, data="rows with label 0: 149 of 500 rows", n=149,
                    nbeta=29.8, step_size=0.01, verdicts=["ok"])
    at.session_state["ckpt.refine_job"] = RunningJob([done])
    at.session_state["ckpt.refine_plan"] = {"by_data": True, "count": 3}
    at.run()
    assert not at.exception
    [progress] = [p.proto.text for p in at.get("progress")]
    assert progress == "Data subsets, one run each: 1 of 3 done (step 50 of 150 in all)"
    assert [b for b in at.button if b.label == "Stop"] and chart_count(at) == 1
    table = at.dataframe[0].value
    assert list(table["group"]) == ["label 0"] and list(table["rows"]) == [149] and list(table["verdicts"]) == ["no problems"]
