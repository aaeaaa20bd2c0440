"""The Calibrate page under streamlit's AppTest: a tiny sweep runs through, the heatmaps and the
recommendation are shown, and "Use these settings in Estimate" opens Estimate with the cell's ε and γ."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from apptest_helpers import chart_count, chart_specs, run_until, shown

from llc_core.studies import sweep
from llc_core.truth import zoo
from pages import settings

APP = str(Path(__file__).resolve().parents[1] / "app.py")

pytestmark = pytest.mark.usefixtures("navigation_mode")  # tests/conftest.py


def open_calibrate() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    at.switch_page("pages/calibrate.py").run()
    assert not at.exception
    return at


def button(at: AppTest, label: str):
    found = [b for b in at.button if b.label == label]
    return found[0] if found else None



def text_marks(spec: dict) -> list[dict]:
    layers = spec.get("layer", [spec])
    return [layer["mark"] for layer in layers if isinstance(layer.get("mark"), dict) and layer["mark"].get("type") == "text"]


def tiny_sweep(at: AppTest, low: float = 1e-3, high: float = 3e-2, gammas: str = "1,10") -> None:
    at.number_input(key="cal.eps_low").set_value(low)
    at.number_input(key="cal.eps_high").set_value(high)
    at.number_input(key="cal.eps_count").set_value(3)
    at.text_input(key="cal.gammas").set_value(gammas)
    at.number_input(key="cal.per_cell").set_value(2)
    at.number_input(key="cal.steps").set_value(200)
    button(at, "Run sweep").click().run()
    assert not at.exception and not at.error
    run_until(at, lambda a: button(a, "Use these settings in Estimate") is not None)


def test_a_tiny_sweep_shows_heatmaps_and_sends_only_its_step_size_and_localization_to_estimate():
    at = open_calibrate()
    assert at.title[0].value == "Calibrate ε and γ"
    at.switch_page("pages/estimate.py").run()  # Estimate's own settings, which the sweep must not touch
    for name, value in (("powers", "1"), ("n", 500), ("steps", 3000), ("chains", 3), ("burnin", 0.5),
                        ("batch_size", 100), ("seed", 7)):
        (at.text_input if name == "powers" else at.number_input)(key=f"est.{name}").set_value(value)
    at.run()
    at.switch_page("pages/calibrate.py").run()
    assert at.text_input(key="cal.powers").value == "1" and at.number_input(key="cal.n").value == 500
    tiny_sweep(at)

    assert chart_count(at) == 4  # λ̂, acceptance, divergence, flatness
    for spec in chart_specs(at):
        assert all(mark.get("fontSize", 11) >= 12 for mark in text_marks(spec))  # cell labels readable
    verdict = [s.value for s in at.success] + [w.value for w in at.warning]
    assert len(verdict) == 1 and ("Recommended cell" in verdict[0] or "No cell qualifies" in verdict[0])
    result = at.session_state["cal.sweep_job"].snapshot()["result"]
    assert len(result.cells) == 6 and [c.step_size for c in result.cells[:3]] == [1e-3, 5.48e-3, 3e-2]
    assert result.n == 500 and result.config["run"]["model"]["powers"] == [1]  # the model Estimate had

    pick = at.selectbox(key="cal.sweep.pick")
    assert pick.value == result.recommended  # the recommended cell, or none at all
    cell = next(c for c in result.cells if c.llc_mean is not None and c.localization == 10.0)
    pick.set_value(cell.index).run()
    button(at, "Use these settings in Estimate").click().run()
    assert not at.exception
    assert at.title[0].value.startswith("Estimate")
    state = at.session_state
    assert state["est.kind"] == "potential" and state["est.powers"] == "1" and state["est.n"] == 500
    assert state["est.step_size"] == pytest.approx(cell.step_size)
    assert state["est.localization"] == pytest.approx(10.0)
    # only what the sweep decided changed: the sweep's own 200 steps × 2 chains did not come along
    assert (state["est.steps"], state["est.chains"], state["est.burnin"], state["est.batch_size"], state["est.seed"]) \
        == (3000, 3, 0.5, 100, 7)
    assert at.query_params["step_size"] == repr(cell.step_size) and at.query_params["steps"] == "3000"
    assert at.query_params["batch_size"] == "100" and at.query_params["n"] == "500"


def test_calibrate_and_estimate_share_one_model():
    at = open_calibrate()
    at.switch_page("pages/estimate.py").run()
    at.text_input(key="est.powers").set_value("1,1,2")
    at.number_input(key="est.n").set_value(5000)
    at.run()
    at.switch_page("pages/calibrate.py").run()
    assert not at.exception
    assert at.text_input(key="cal.powers").value == "1,1,2" and at.number_input(key="cal.n").value == 5000

    at.selectbox(key="cal.kind").set_value("dln").run()  # and the other way round, a new kind included
    at.number_input(key="cal.n").set_value(2000).run()
    at.switch_page("pages/estimate.py").run()
    assert not at.exception and not at.error
    assert at.selectbox(key="est.kind").value == "dln" and at.text_input(key="est.widths").value == "5,3,5"
    assert at.number_input(key="est.n").value == 2000
    # a new kind takes the engine's settings for it (a DLN's steps for its size)
    recommended = zoo.recommended_sampler("dln", settings.query_to_config({"kind": "dln"}).model)
    assert at.number_input(key="est.steps").value == recommended["steps"]
    assert at.query_params["kind"] == "dln" and at.query_params["n"] == "2000"


def test_a_sweep_where_no_cell_passes_preselects_none():
    at = open_calibrate()
    tiny_sweep(at, low=1e-9, high=1e-8, gammas="1")  # far too small: every acceptance is above the band
    assert any("No cell qualifies" in w.value for w in at.warning)
    pick = at.selectbox(key="cal.sweep.pick")
    assert pick.value is None
    assert button(at, "Use these settings in Estimate").disabled


def test_the_default_sweep_on_the_default_model_recommends_a_cell_that_passes():
    at = open_calibrate()
    assert at.number_input(key="cal.n").value == settings.default_values()["n"]  # Estimate's model and data
    button(at, "Run sweep").click().run()
    assert not at.exception and not at.error
    run_until(at, lambda a: button(a, "Use these settings in Estimate") is not None, timeout=240)
    result = at.session_state["cal.sweep_job"].snapshot()["result"]
    assert len(result.cells) >= 30  # 6 step sizes a decade around the kind's ε, × 3 γ
    assert any("Recommended cell" in s.value for s in at.success), [w.value for w in at.warning]
    cell = result.cells[result.recommended]
    assert sweep.cell_problems(cell, tuple(result.acceptance_band)) == []
    assert at.selectbox(key="cal.sweep.pick").value == result.recommended


def test_bad_grid_input_is_reported_without_running():
    at = open_calibrate()
    at.text_input(key="cal.gammas").set_value("1,ten")
    button(at, "Run sweep").click().run()
    assert not at.exception
    assert any("'ten' is not a number" in shown(e.value) for e in at.error)
    assert "cal.sweep_job" not in at.session_state


def test_rescaling_and_compare_sections_run_and_chart():
    at = open_calibrate()
    at.select_slider(key="cal.alphas").set_value(3)
    at.number_input(key="cal.rescale.steps").set_value(100)
    at.number_input(key="cal.rescale.chains").set_value(2)
    at.number_input(key="cal.rescale.hidden").set_value(2)
    button(at, "Run experiment").click().run()
    at.text_input(key="cal.compare.sizes").set_value("50,100")
    at.number_input(key="cal.compare.steps").set_value(100)
    at.number_input(key="cal.compare.chains").set_value(2)
    button(at, "Compare").click().run()
    assert not at.exception and not at.error

    def finished(a):
        return all(not a.session_state[k].alive for k in ("cal.rescale_job", "cal.compare_job"))

    run_until(at, finished)
    at.run()
    rescale = at.session_state["cal.rescale_job"].snapshot()
    compare = at.session_state["cal.compare_job"].snapshot()
    assert rescale["error"] is None and len(rescale["items"]) == 6  # 3 α × (preconditioned, plain)
    assert compare["error"] is None and [(r.n, r.algorithm) for r in compare["items"]] == [
        (50, "sgld"), (50, "mala"), (100, "sgld"), (100, "mala")]
    assert chart_count(at) == 3  # rescaling chart, λ̂ vs n, time vs n
    assert any("largest change over α" in m.value for m in at.markdown)
