"""The Checkpoint and Training run pages under streamlit's AppTest: examples, a tiny estimate, bad files."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from apptest_helpers import chart_count, run_until, shown

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
    table = at.dataframe[0].value
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


def test_refined_llc_per_layer_of_the_cnn_example():
    """Section 5: "Estimate per group" runs llc_core.studies.run_groups in a worker and draws one bar per layer."""
    at = open_page("pages/checkpoint.py")
    at.selectbox(key="ckpt.example").set_value("Small CNN on 8×8 digits (.pt2 + safetensors)").run()
    click(at, "Load example")
    assert at.radio(key="ckpt.refine_groups").options == ["per layer"]  # no nn.MultiheadAttention in a CNN
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
