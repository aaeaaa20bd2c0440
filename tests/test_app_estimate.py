"""The Estimate page under streamlit's AppTest: settings ↔ URL, bad input, a tiny run, Stop, sessions."""

import math
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from apptest_helpers import run_until, shown

from llc_core import LLCInputError, ModelConfig, RunConfig, SamplerConfig
from pages import settings

APP = str(Path(__file__).resolve().parents[1] / "app.py")


pytestmark = pytest.mark.usefixtures("navigation_mode")  # tests/conftest.py
TINY = {"steps": "200", "chains": "2"}


def open_estimate(params: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params.update(params or {})
    at.run()  # the home page; st.navigation registers the pages
    at.switch_page("pages/estimate.py").run()
    assert not at.exception
    return at


def button(at: AppTest, label: str):
    found = [b for b in at.button if b.label == label]
    return found[0] if found else None


def texts(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown] + [e.value for e in (*at.warning, *at.info, *at.success)] + [shown(e.value) for e in at.error]


def finished(at: AppTest) -> bool:
    return any("λ̂ =" in text for text in texts(at)) or any("failed" in shown(e.value) for e in at.error)


def widget(at: AppTest, name: str):
    key = f"est.{name}"
    for group in (at.number_input, at.text_input, at.selectbox, at.select_slider):
        try:
            return group(key=key)
        except KeyError:
            continue
    raise KeyError(key)


# ---------------------------------------------------------------- settings ↔ RunConfig ↔ URL


def test_query_round_trip_of_configs():
    configs = [
        RunConfig(),
        RunConfig(model=ModelConfig(kind="potential", powers=[2, 0, 1]),
                  sampler=SamplerConfig(step_size=3e-5, localization=10.0, nbeta=123.25, chains=3, steps=777,
                                        burnin=100, batch_size=64, seed=9, preconditioner="rmsprop",
                                        mala_every=5, snapshot_every=10, start_spread=0.3)),
        RunConfig(model=ModelConfig(kind="dln", widths=[4, 2, 3], rank=1, seed=5),
                  sampler=SamplerConfig(step_size="auto", algorithm="mala", target_acceptance=0.8)),
    ]
    for config in configs:
        params = settings.config_to_query(config)
        assert all(isinstance(v, str) for v in params.values())
        back = settings.query_to_config(params)
        # unset sampler fields come back as the engine's generic defaults; nβ and batch stay unset, and
        # an unset ε becomes "auto" (the app always calibrates a step size it is not given)
        expected = config.sampler.with_defaults()
        expected.step_size = expected.step_size or "auto"
        assert back.sampler == expected
        assert back.data == config.data and back.device == config.device and back.dtype == config.dtype
        assert back.model.kind == config.model.kind
        for field in settings.fields_for_kind(config.model.kind):
            if getattr(config.model, field) is not None:
                assert getattr(back.model, field) == getattr(config.model, field)
    assert settings.query_to_config(settings.config_to_query(RunConfig())).model.powers == [1, 2]


def test_query_uses_readable_names():
    config = RunConfig(model=ModelConfig(powers=[1, 2]), sampler=SamplerConfig(step_size=1e-4, seed=3))
    params = settings.config_to_query(config)
    assert params["kind"] == "potential" and params["powers"] == "1,2"
    assert params["step_size"] == "0.0001" and params["seed"] == "3" and params["nbeta"] == "auto"
    dln = settings.config_to_query(RunConfig(model=ModelConfig(kind="dln", widths=[2, 2], seed=4)))
    assert dln["model_seed"] == "4" and "powers" not in dln


@pytest.mark.parametrize("params, fragment", [
    ({"powers": "1,x"}, "'x' is not a number"),
    ({"kind": "dln", "widths": "0,3"}, "every width must be ≥ 1"),
    ({"step_size": "-1"}, "step_size = -1 must be > 0"),
    ({"steps": "100", "burnin": "100"}, "leaves no draws"),
    ({"kind": "no-such-kind"}, "not available"),
])
def test_bad_queries_name_the_problem(params, fragment):
    with pytest.raises(LLCInputError, match=fragment):
        settings.query_to_config(params)


# ---------------------------------------------------------------- the page


def test_page_loads_with_working_defaults_in_the_url():
    at = open_estimate()
    assert button(at, "Run") is not None and not button(at, "Run").disabled
    assert not at.error
    params = at.query_params
    assert params["kind"] == "potential" and params["powers"] == "1,2"
    assert params["seed"] == "0" and params["data_seed"] == "0" and params["step_size"] == "auto"
    assert "theory λ = 1/4" in " ".join(c.value for c in at.caption)


def test_url_round_trip_restores_every_widget():
    at = open_estimate()
    widget(at, "powers").set_value("2,1")
    widget(at, "steps").set_value(3000)
    widget(at, "seed").set_value(7)
    widget(at, "data_seed").set_value(11)
    widget(at, "nbeta").set_value(500.0)
    widget(at, "step_size").set_value(3e-4)
    widget(at, "preconditioner").set_value("rmsprop")
    at.run()
    assert not at.exception and not at.error
    params = dict(at.query_params)
    assert params["powers"] == "2,1" and params["seed"] == "7" and params["nbeta"] == "500.0"

    fresh = open_estimate(params)  # another browser opening the copied link
    for name, value in [("powers", "2,1"), ("steps", 3000), ("seed", 7), ("data_seed", 11), ("nbeta", 500.0),
                        ("step_size", 3e-4), ("preconditioner", "rmsprop")]:
        assert widget(fresh, name).value == value, name
    assert dict(fresh.query_params) == params


def test_partial_link_fills_the_rest_with_defaults():
    at = open_estimate({"steps": "200000", "step_size": "0.00012"})
    assert widget(at, "steps").value == 200000
    assert widget(at, "step_size").value == pytest.approx(1.2e-4)  # off the slider's grid, kept as given
    assert widget(at, "chains").value == 4
    assert at.query_params["steps"] == "200000" and at.query_params["powers"] == "1,2"


@pytest.mark.parametrize("name, value, fragment", [
    ("powers", "1,x", "'x' is not a number"),
    ("powers", "0,0", "all 0"),
    ("nbeta", -5.0, "must be > 0"),
])
def test_bad_widget_input_shows_an_error_and_disables_run(name, value, fragment):
    at = open_estimate()
    widget(at, name).set_value(value)
    at.run()
    assert not at.exception
    assert any(fragment in shown(e.value) for e in at.error), [shown(e.value) for e in at.error]
    assert button(at, "Run").disabled


def test_bad_dln_widths_show_an_error():
    at = open_estimate({"kind": "dln"})
    assert widget(at, "widths").value == "5,3,5"  # the kind's preset
    widget(at, "widths").set_value("0,3")
    at.run()
    assert not at.exception
    assert any("every width must be ≥ 1" in shown(e.value) for e in at.error)


def test_bad_link_shows_an_error_and_keeps_the_default():
    at = open_estimate({"step_size": "-1", "chains": "two"})
    messages = " ".join(shown(e.value) for e in at.error)
    assert "step_size = -1 must be > 0" in messages and "'two' is not a whole number" in messages
    assert widget(at, "step_size").value == "auto" and widget(at, "chains").value == 4
    assert not button(at, "Run").disabled


def test_switching_kind_takes_its_preset():
    at = open_estimate()
    widget(at, "kind").set_value("dln")
    at.run()
    assert not at.exception and not at.error
    assert widget(at, "widths").value == "5,3,5" and widget(at, "step_size").value == "auto"
    assert at.query_params["kind"] == "dln" and "powers" not in at.query_params


def test_tiny_run_shows_lambda_hat_theory_and_a_ghost_of_the_previous_run():
    # a fixed, far too small ε: the verdicts suggest a larger one ("auto" runs get no such advice)
    at = open_estimate({**TINY, "step_size": "1e-07"})
    button(at, "Run").click().run()
    assert button(at, "Stop") is not None and button(at, "Run").disabled
    run_until(at, finished)
    assert not at.error
    [line] = [m.value for m in at.markdown if "λ̂ =" in m.value]
    llc = float(line.split("=")[1].split("±")[0])
    assert math.isfinite(llc)
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["theory λ"]) == 0.25
    assert any("λ = 1/4" in m.value for m in at.markdown)
    assert any(d.label == "Download result (JSON)" for d in at.get("download_button"))
    assert not button(at, "Stop") and not button(at, "Run").disabled
    # the verdicts come with what to change; a click puts it into the sidebar
    [apply] = [b for b in at.button if b.label.startswith("Use ε = ")]
    suggested = float(apply.label.removeprefix("Use ε = "))
    apply.click().run()
    assert widget(at, "step_size").value == pytest.approx(suggested)
    assert at.query_params["step_size"] == repr(widget(at, "step_size").value)
    widget(at, "step_size").set_value(1e-3)

    widget(at, "seed").set_value(1)
    at.run()
    button(at, "Run").click().run()
    run_until(at, finished)
    tables = [t.value for t in at.dataframe]
    comparison = [t for t in tables if "previous run" in t.columns]
    assert comparison and comparison[0].set_index("").loc["λ̂", "previous run"].startswith(f"{llc:.4g}")


def test_stop_keeps_a_partial_result_and_widgets_do_not_kill_the_run():
    at = open_estimate({"steps": "200000", "chains": "2"})
    button(at, "Run").click().run()
    run_until(at, lambda a: any("steps/s" in (p.proto.text or "") for p in at.get("progress")) and
              "Step" in at.get("progress")[0].proto.text, timeout=30)

    widget(at, "seed").set_value(5)  # moving a widget mid-run reruns the page, not the worker
    at.run()
    record = at.session_state["est.run"]
    assert record.background.alive and button(at, "Stop") is not None

    button(at, "Stop").click().run()
    run_until(at, finished, timeout=30)
    assert any("Partial result" in text for text in texts(at))
    assert record.result.partial and record.result.steps_completed < 200000


def test_a_failed_run_shows_the_engines_message():
    at = open_estimate({"kind": "tanh", "hidden": "2,3", "steps": "50", "chains": "2"})
    assert not at.error  # the page cannot tell; the engine can
    button(at, "Run").click().run()
    run_until(at, lambda a: any("The run failed" in shown(e.value) for e in a.error), timeout=30)
    assert any("one hidden layer" in shown(e.value) for e in at.error)
    assert not at.exception and not button(at, "Run").disabled


def test_two_sessions_do_not_see_each_other():
    first, second = open_estimate(TINY), open_estimate(TINY)
    button(first, "Run").click().run()
    second.run()
    assert "est.run" not in second.session_state and button(second, "Stop") is None
    run_until(first, finished)
    second.run()
    assert not any("λ̂ =" in text for text in texts(second))


def test_auto_step_size_run_reports_the_calibrated_step_and_its_trace():
    at = open_estimate({**TINY, "step_size": "auto"})
    button(at, "Run").click().run()
    run_until(at, finished)
    assert not at.error
    [text] = [m.value for m in at.markdown if "'auto' calibrated ε" in m.value]
    assert "every draw λ̂ uses was taken with ε fixed" in text
    assert any(e.label == "How 'auto' chose ε" for e in at.expander)
    # "… calibrated ε from <initial> to **<final>** over the first <n> burn-in steps …"
    initial, final = text.split("ε from ")[1].split(" to **")
    final = final.split("**")[0]
    assert float(initial) > 0 and float(final) > 0
    assert "over the first 20 burn-in steps" in text  # 10% of 200 steps


def test_calibration_text_says_why_burn_in_lowered_the_step():
    from pages.runs import calibration_text

    calibration = {"initial_step_size": 1e-5, "acceptance_step_size": 8e-6, "step_size": 2e-6, "steps": 150,
                   "target_acceptance": 0.92,
                   "minibatch_heat_cap": [{"share": 0.12, "limit": 0.03, "step_size_before": 8e-6, "step_size_after": 2e-6},
                                          {"share": 0.03, "limit": 0.03, "step_size_before": 2e-6, "step_size_after": 2e-6}]}
    text = calibration_text(calibration)
    assert "to **8e-06**" in text and "lowered it to **2e-06**" in text and "12% of λ̂" in text
    calibration["acceptance_recheck"] = [{"acceptance": 0.61, "step_size_before": 8e-6, "step_size_after": 4e-6}]
    assert "acceptance fell to 0.61 as the chains spread out and minibatch" in calibration_text(calibration)
    calibration["minibatch_heat_cap"] = calibration["acceptance_recheck"] = None
    assert "lowered" not in calibration_text(calibration)


def test_minibatch_noise_verdict_offers_a_larger_batch():
    # one 5x20 matrix, batch 2 at a fixed ε: gradient noise is ~20% of λ̂ (test_estimator's heat
    # test measures 10% at batch 4); the verdict's button puts the batch it suggests in the sidebar
    at = open_estimate({"kind": "dln", "widths": "20,5", "rank": "5", "n": "2000", "batch_size": "2",
                        "step_size": "1e-05", "steps": "2000", "chains": "4"})
    button(at, "Run").click().run()
    run_until(at, finished)
    assert not at.error
    assert any("Minibatch gradient noise heats the chains" in w.value for w in at.warning)
    [apply] = [b for b in at.button if b.label.startswith("Use batch size ")]
    suggested = int(apply.label.removeprefix("Use batch size ").replace(",", ""))
    assert suggested > 2
    apply.click().run()
    assert widget(at, "batch_size").value == suggested


def test_a_run_waits_for_a_free_worker_and_says_so(monkeypatch):
    """Issue 16: a server runs at most LLC_MAX_WORKERS runs; one beyond that waits, and the page says so."""
    from llc_core.execution.background import SLOTS, WORKER_LIMIT_ENV

    monkeypatch.setenv(WORKER_LIMIT_ENV, str(SLOTS.busy + 1))
    assert SLOTS.take()  # every worker of this server busy
    try:
        at = open_estimate(TINY)
        button(at, "Run").click().run()
        bars = [p.proto.text for p in at.get("progress")]
        assert any("Waiting for a free worker" in text and "LLC_MAX_WORKERS" in text for text in bars), bars
        assert at.session_state["est.run"].background.poll().status == "waiting"
    finally:
        SLOTS.release()
    run_until(at, finished)  # the slot is free: the run starts and finishes
    assert not at.error and any("λ̂ =" in m.value for m in at.markdown)
