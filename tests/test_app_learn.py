"""The Learn page under streamlit's AppTest: the numbers it shows, the live cloud, the URL."""

import math
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from apptest_helpers import chart_count, chart_specs

APP = str(Path(__file__).resolve().parents[1] / "app.py")


pytestmark = pytest.mark.usefixtures("navigation_mode")  # tests/conftest.py


def open_learn(params: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params.update(params or {})
    at.run()
    at.switch_page("pages/learn.py").run()
    assert not at.exception
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_default_potential_numbers():
    at = open_learn()
    assert not at.error
    shown = metrics(at)
    assert shown["true learning coefficient λ"] == "1/4 = 0.25"
    assert float(shown["fitted slope"]) == pytest.approx(0.25, abs=0.015)
    assert float(shown["exact t·E[K]"]) == pytest.approx(0.2249, abs=0.001)  # nβ = 1000, γ = 1
    assert any("flat prior on the box" in c.value and "0.226" in c.value for c in at.caption)  # the finite-n target of docs/METHOD.md §4
    assert chart_count(at) == 3  # contour with sublevel set, log-log volume, SGLD cloud
    assert at.query_params == {"potential": "product-1-2", "level": "0.01", "gamma": "1.0",
                               "step_size": "0.0003", "nbeta": "1000.0"}


def test_multiplicity_two_explains_the_log_factor():
    at = open_learn()
    at.selectbox(key="learn.potential").set_value("product-1-1").run()
    shown = metrics(at)
    assert shown["true learning coefficient λ"] == "1/2 = 0.5"
    assert float(shown["fitted slope"]) < 0.45  # bent by (−log ε)
    assert any("m = 2" in box.value and "(−log δ)" in box.value for box in at.info)


def test_regular_bowl_has_slope_one_and_the_cloud_measures_it():
    at = open_learn({"potential": "sum-1-1", "step_size": "0.0002"})
    shown = metrics(at)
    assert shown["true learning coefficient λ"] == "1"
    assert float(shown["fitted slope"]) == pytest.approx(1.0, abs=1e-3)
    assert metrics(at)["λ̂ of the cloud"] == "settling …"
    for _ in range(5):  # each rerun is one tick of the live fragment: 300 steps
        at.run()
    llc, se = (float(part) for part in metrics(at)["λ̂ of the cloud"].split("±"))
    # K = ½ Σ h w² with h = 2: t·E[K] = Σ ½ [t h/(t h + γ)] / (1 − ε (t h + γ)/4) for SGLD (docs/METHOD.md §4)
    t, h, gamma, eps = 1000.0, 2.0, 1.0, 2e-4
    exact = (t * h / (t * h + gamma)) / (1 - eps * (t * h + gamma) / 4)
    assert llc == pytest.approx(exact, abs=max(4 * se, 0.1))


def test_localization_lowers_the_target_and_none_leaves_it_undefined():
    at = open_learn({"gamma": "10"})
    assert float(metrics(at)["exact t·E[K]"]) == pytest.approx(0.124, abs=0.001)
    at.select_slider(key="learn.gamma").set_value(0.0).run()
    assert metrics(at)["exact t·E[K]"] == "—"
    assert any("infinite mass" in c.value for c in at.caption)
    assert not at.exception


def test_too_large_a_step_blows_up_and_says_so():
    at = open_learn({"potential": "sum-1-1", "step_size": "0.01"})
    for _ in range(5):  # past the settling steps: the blown-up chains would be counted now
        at.run()
    assert any("chain restart" in e.value and "Lower the step size" in e.value for e in at.error)
    # chains put back at w* after a blow-up: no huge λ̂ of the cloud, the page says it diverged
    assert metrics(at)["λ̂ of the cloud"] == "diverged"
    assert not at.exception



def axes(spec: dict) -> list[tuple[str, dict]]:
    """(channel, its encoding) of every positional encoding in the spec's layers that carries an axis."""
    found = []
    for layer in spec.get("layer", [spec]):
        for channel in ("x", "y"):
            encoding = layer.get("encoding", {}).get(channel)
            if isinstance(encoding, dict) and "field" in encoding:
                found.append((channel, encoding))
    return found


def test_one_symbol_per_quantity_and_one_number_format_per_axis():
    """Issue 14: ε is the step size only (the level is δ); log axes label their decades in one format
    (1e-8 … 1e-2, not 1e-8 beside 0.000001); the sliders write small numbers as 3e-4, large ones as 1,000."""
    at = open_learn()
    sliders = {s.key: s for s in at.select_slider}
    level, step = sliders["learn.level"], sliders["learn.step_size"]
    assert "δ" in level.label and "ε" not in level.label + (level.help or "")
    assert "ε" in step.label and "level" not in step.label
    assert not any("ε" in m.label for m in at.metric)
    assert not any("log ε" in m.value or "V(ε)" in m.value for m in at.markdown)
    for spec in chart_specs(at):
        for channel, encoding in axes(spec):
            if encoding.get("scale", {}).get("type") == "log":
                axis = encoding["axis"]
                ticks = axis["values"]
                assert axis["format"] in ("~e", "~g") and all(math.log10(v) == round(math.log10(v)) for v in ticks)
    for key, shown in (("learn.step_size", "3e-4"), ("learn.nbeta", "1,000"), ("learn.level", "0.01")):
        slider = sliders[key]
        assert slider.format_func(slider.value) == shown


def test_pictures_of_the_plane_are_square():
    at = open_learn()
    squares = [spec for spec in chart_specs(at) if spec.get("width") and spec.get("width") == spec.get("height")]
    assert len(squares) == 3  # sublevel set, volume law, cloud: never squeezed into a column's strip
    assert all(spec["autosize"]["type"] == "pad" for spec in squares)


def test_url_round_trip():
    at = open_learn()
    at.selectbox(key="learn.potential").set_value("custom").run()
    at.selectbox(key="learn.family").set_value("sum").run()
    at.number_input(key="learn.b").set_value(3).run()
    at.select_slider(key="learn.gamma").set_value(10.0).run()
    at.select_slider(key="learn.nbeta").set_value(3000.0).run()
    params = dict(at.query_params)
    assert params["potential"] == "sum-1-3" and params["gamma"] == "10.0"

    fresh = open_learn(params)
    assert fresh.selectbox(key="learn.potential").value == "custom"
    assert fresh.selectbox(key="learn.family").value == "sum" and fresh.number_input(key="learn.b").value == 3
    assert fresh.select_slider(key="learn.gamma").value == 10.0
    assert fresh.select_slider(key="learn.nbeta").value == 3000.0
    assert metrics(fresh)["true learning coefficient λ"] == "2/3 = 0.6667"  # 1/2 + 1/6


def test_bad_input_shows_errors_not_tracebacks():
    at = open_learn({"potential": "cubic-1-1", "gamma": "lots"})
    messages = " ".join(e.value for e in at.error)
    assert "unknown potential family" in messages and "gamma" in messages
    at.selectbox(key="learn.potential").set_value("custom").run()
    at.number_input(key="learn.a").set_value(0).run()
    at.number_input(key="learn.b").set_value(0).run()
    assert any("both exponents are 0" in e.value for e in at.error)
    assert not at.exception
