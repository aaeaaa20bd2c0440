"""The Calibrate page under streamlit's AppTest: a tiny sweep runs through, the heatmaps and the
recommendation are shown, and "Use these settings in Estimate" opens Estimate with the cell's ε and γ."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from apptest_helpers import chart_count, run_until, shown

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


def test_a_tiny_sweep_shows_heatmaps_and_sends_a_cell_to_estimate():
    at = open_calibrate()
    assert at.title[0].value == "Calibrate ε and γ"
    at.selectbox(key="cal.kind").set_value("potential").run()
    at.text_input(key="cal.powers").set_value("1")
    at.number_input(key="cal.n").set_value(500)
    at.number_input(key="cal.eps_low").set_value(1e-3)
    at.number_input(key="cal.eps_high").set_value(3e-2)
    at.slider(key="cal.eps_count").set_value(3)
    at.text_input(key="cal.gammas").set_value("1,10")
    at.number_input(key="cal.per_cell").set_value(2)
    at.number_input(key="cal.steps").set_value(200)
    button(at, "Run sweep").click().run()
    assert not at.exception and not at.error
    run_until(at, lambda a: button(a, "Use these settings in Estimate") is not None)

    assert chart_count(at) == 4  # λ̂, acceptance, divergence, flatness
    verdict = [s.value for s in at.success] + [w.value for w in at.warning]
    assert len(verdict) == 1 and ("Recommended cell" in verdict[0] or "No cell qualifies" in verdict[0])
    result = at.session_state["cal.sweep_job"].snapshot()["result"]
    assert len(result.cells) == 6 and [c.step_size for c in result.cells[:3]] == [1e-3, 5.48e-3, 3e-2]

    pick = at.selectbox(key="cal.sweep.pick")
    if result.recommended is not None:
        assert pick.value == result.recommended
    cell = next(c for c in result.cells if c.llc_mean is not None and c.localization == 10.0)
    pick.set_value(cell.index).run()
    button(at, "Use these settings in Estimate").click().run()
    assert not at.exception
    assert at.title[0].value.startswith("Estimate")
    state = at.session_state
    assert state["est.kind"] == "potential" and state["est.powers"] == "1" and state["est.n"] == 500
    assert state["est.step_size"] == pytest.approx(cell.step_size)
    assert state["est.localization"] == pytest.approx(10.0)
    assert state["est.steps"] == 200 and state["est.chains"] == 2
    assert at.query_params["step_size"] == repr(cell.step_size)


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
