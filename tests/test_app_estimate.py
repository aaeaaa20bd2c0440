"""The Estimate page under streamlit's AppTest: settings ↔ URL, bad input, a tiny run, Stop, sessions."""

import copy
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from apptest_helpers import chart_specs, run_until, shown

from llc_core import LLCInputError, ModelConfig, RunConfig, SamplerConfig, Verdict, diagnostics, run
from llc_core.execution import Progress
from llc_core.truth import zoo
from pages import runs, settings

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



def x_domain(spec: dict) -> list:
    return next(layer["encoding"]["x"]["scale"]["domain"] for layer in spec["layer"]
                if layer.get("encoding", {}).get("x", {}).get("field") == "step")


def y_domain(spec: dict, field: str) -> list:
    return next(layer["encoding"]["y"]["scale"]["domain"] for layer in spec["layer"]
                if layer.get("encoding", {}).get("y", {}).get("field") == field)


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
                  sampler=SamplerConfig(step_size="auto", algorithm="mala", target_acceptance=0.8,
                                        batch_size=10_000)),  # full batch: dln recommends 500
        RunConfig(model=ModelConfig(kind="tanh", hidden=2), sampler=SamplerConfig(chains=3)),
    ]
    for config in configs:
        params = settings.config_to_query(config)
        assert all(isinstance(v, str) for v in params.values())
        back = settings.query_to_config(params)
        # unset sampler fields come back as the kind's recommendations, then the engine's generic
        # defaults; nβ and batch stay unset unless the kind recommends them, and an unset ε stays unset
        # (the kind's recommendation: its curvature rule or "auto", as the CLI resolves it)
        expected = config.sampler.with_defaults(zoo.recommended_sampler(config.model.kind, config.model))
        expected.step_size = config.sampler.step_size
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
    assert params["seed"] == "0" and params["data_seed"] == "0" and params["step_size"] == "recommended"
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
    assert widget(at, "chains").value == zoo.recommended_sampler("potential")["chains"]
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
    assert widget(at, "step_size").value == "recommended"
    assert widget(at, "chains").value == zoo.recommended_sampler("potential")["chains"]
    assert not button(at, "Run").disabled


def test_switching_kind_takes_its_preset():
    at = open_estimate()
    widget(at, "kind").set_value("dln")
    at.run()
    assert not at.exception and not at.error
    assert widget(at, "widths").value == "5,3,5" and widget(at, "step_size").value == "recommended"
    recommended = zoo.recommended_sampler("dln", settings.query_to_config({"kind": "dln"}).model)
    assert recommended["steps"] == 48000  # 30 parameters (zoo.SINGULAR_STEPS)
    assert widget(at, "steps").value == recommended["steps"] and widget(at, "batch_size").value == recommended["batch_size"]
    assert at.query_params["kind"] == "dln" and "powers" not in at.query_params


def test_a_dlns_steps_follow_its_size_until_set_by_hand():
    at = open_estimate({"kind": "dln"})
    assert widget(at, "steps").value == 48000
    widget(at, "widths").set_value("40,40,40").run()  # 3,200 parameters
    assert widget(at, "steps").value == 6000 and at.query_params["steps"] == "6000"
    widget(at, "widths").set_value("20,30,20").run()  # 1,200
    assert widget(at, "steps").value == 24000
    widget(at, "steps").set_value(1234).run()
    widget(at, "widths").set_value("5,3,5").run()
    assert widget(at, "steps").value == 1234  # the user's own count stays
    # a shared link without steps gets the count the command line resolves for its model
    assert settings.query_to_config({"kind": "dln", "widths": "40,40,40"}).sampler.steps == 6000


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
    # the charts: plot areas 260/240 px tall inside their axes; acceptance zoomed to this model's band
    charts = {spec["title"]: spec for spec in chart_specs(at) if isinstance(spec.get("title"), str)}
    assert {"Running λ̂", "Loss per chain", "MALA acceptance"} <= set(charts)
    for spec in charts.values():
        assert spec["autosize"]["type"] == "fit-x" and spec["height"] >= 220
    low, _, high = diagnostics.acceptance_band(2)  # 0.99, 0.995 for the potential's 2 parameters
    [band] = [layer for layer in charts["MALA acceptance"]["layer"] if layer["mark"]["type"] == "rect"
              and layer["encoding"].get("y", {}).get("field") == "low"]
    domain = y_domain(charts["MALA acceptance"], "acceptance")
    assert low - 0.01 <= domain[0] < low and domain[1] == 1.0, domain  # not 0-1, where the band is a hairline
    assert any("0.990–0.995" in c.value for c in at.caption)  # the help names this model's band
    assert not any("0.90-0.95" in c.value or "0.90–0.95" in c.value for c in at.caption)
    # a fixed ε far too small: the chains barely move, and the advice jumps to a well-founded ε (the
    # kind's curvature rule, or the calibrated "auto"), not a fixed factor; a click puts it into the sidebar
    assert any("barely moved" in w.value for w in at.warning)
    [apply] = [b for b in at.button if b.label.startswith("Use ε = ") or b.label == "Use the calibrated ε (auto)"]
    if apply.label.startswith("Use ε = "):
        suggested = float(apply.label.removeprefix("Use ε = "))
        assert suggested > 100 * 1e-7
        apply.click().run()
        assert widget(at, "step_size").value == pytest.approx(suggested)
        assert at.query_params["step_size"] == repr(widget(at, "step_size").value)
    else:
        apply.click().run()
        assert widget(at, "step_size").value == "auto" and at.query_params["step_size"] == "auto"
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
    # the charts' x axes end where the run stopped, not at the 200,000 steps planned
    for spec in chart_specs(at):
        if spec.get("title") in ("Running λ̂", "Loss per chain", "MALA acceptance"):
            assert x_domain(spec) == [0, record.result.steps_completed], spec["title"]


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
    # test measures 10% at batch 4); the verdict's button puts the batch it suggests in the sidebar. The heat
    # correction is off (a URL setting): on, 20% is taken off λ̂ and only a heat past 25% warns
    at = open_estimate({"kind": "dln", "widths": "20,5", "rank": "5", "n": "2000", "batch_size": "2",
                        "step_size": "1e-05", "steps": "2000", "chains": "4", "heat_correction": "off"})
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


# ---------------------------------------------------------------- one set of defaults (issue 17)

ROOT = Path(__file__).resolve().parents[1]
RESOLVED = ("step_size", "localization", "nbeta", "chains", "steps", "burnin", "batch_size", "seed", "algorithm",
            "target_acceptance")  # the sampler settings a run resolves


def cli_resolved_samplers(configs: dict[str, dict]) -> dict[str, dict]:
    """What `python -m llc_core run` resolves each config's sampler to (the result's config.sampler): every
    CLI starts at once, is stopped (Ctrl-C, as a user would) once it reports its first step, and prints
    its partial result."""
    processes = {}
    for name, config in configs.items():
        process = subprocess.Popen([sys.executable, "-m", "llc_core", "run", "-"], cwd=ROOT, text=True,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)})
        process.stdin.write(json.dumps(config))
        process.stdin.close()
        processes[name] = process
    resolved = {}
    for name, process in processes.items():
        for line in process.stderr:
            if line.startswith("step "):  # sampling has begun: the config is resolved
                process.send_signal(signal.SIGINT)
                break
        out, err = process.stdout.read(), process.stderr.read()
        assert process.wait(timeout=120) == 0, err
        resolved[name] = json.loads(out)["config"]["sampler"]
    return resolved


def test_the_page_defaults_are_the_cli_defaults_for_every_kind():
    """Issue 17: for the same model the app and `python -m llc_core run` with no sampler keys use the same
    settings; the page shows them (its widgets, and the kind's ε beside the step-size slider). The page
    sends its ε as "recommended" (step_size left out), so a run from it resolves as the CLI's does."""
    kinds = settings.kinds()
    assert set(kinds) >= {"potential", "dln", "rrr", "tanh", "mlp"}
    pages, models = {}, {}
    for kind in kinds:
        at = open_estimate({"kind": kind})
        assert not at.error, kind
        values = {name: widget(at, name).value for name in ("kind", "n", "data_seed", "step_size", *RESOLVED[1:],
                                                              "mala_every", "snapshot_every")}
        config, problems = settings.values_to_config({**settings.default_values(kind), **values})
        assert config is not None, problems
        pages[kind] = (values, " ".join(c.value for c in at.caption))
        models[kind] = {"model": config.to_dict()["model"], "data": config.to_dict()["data"]}  # no "sampler" key
    cli = cli_resolved_samplers(models)
    for kind, (values, captions) in pages.items():
        engine, n = cli[kind], values["n"]
        assert values["step_size"] == "recommended", kind
        for name in ("chains", "steps", "burnin", "localization", "seed", "algorithm", "target_acceptance",
                     "mala_every", "snapshot_every"):
            assert values[name] == engine[name], (kind, name)
        assert (values["batch_size"] or min(500, n)) == engine["batch_size"], kind
        assert values["nbeta"] is None and engine["nbeta"] == pytest.approx(n / math.log(n)), kind
        if engine["step_size"] == "auto":
            assert "Recommended for this model: **auto**" in captions, kind
        else:  # the kind's curvature rule at this n, nβ and γ, as the page computes it and shows it
            assert f"Recommended for this model: ε = **{engine['step_size']:.2g}**" in captions, kind
            config = settings.values_to_config({**settings.default_values(kind), **values})[0]
            assert settings.recommended_step_size(config).value == pytest.approx(engine["step_size"], rel=1e-6)


def test_the_model_presets_hold_no_sampler_settings():
    for kind, preset in settings.MODEL_PRESETS.items():
        assert not set(preset) & set(settings.KIND_SAMPLER_SETTINGS), kind


def test_step_size_choices_survive_the_url():
    for chosen, text in (("recommended", "recommended"), ("auto", "auto"), (3e-4, "0.0003")):
        at = open_estimate()
        widget(at, "step_size").set_value(chosen)
        at.run()
        assert at.query_params["step_size"] == text
        fresh = open_estimate(dict(at.query_params))
        assert widget(fresh, "step_size").value == chosen
        config = settings.query_to_config(dict(at.query_params))
        assert config.sampler.step_size == (None if chosen == "recommended" else chosen)
    assert widget(open_estimate({"step_size": ""}), "step_size").value == "recommended"


@pytest.mark.parametrize("kind", [
    "potential",
    pytest.param("tanh", marks=pytest.mark.slow),  # γ = 0.25: at γ = 1 localization_too_strong spoke, rightly
    pytest.param("mlp", marks=pytest.mark.slow),
    pytest.param("dln", marks=pytest.mark.slow),  # 48,000 steps for its 30 parameters (zoo.SINGULAR_STEPS)
    pytest.param("rrr", marks=pytest.mark.slow),
])
def test_the_default_run_of_each_kind_carries_no_warning_about_its_own_settings(kind):
    """Issue 17: a user who changes nothing gets no warning about the settings the app chose. At the page's
    default n; the potential takes ~10-25 s here, the others up to minutes (`pytest -m slow`)."""
    at = open_estimate({"kind": kind})
    button(at, "Run").click().run()
    run_until(at, finished, timeout=580)
    result = at.session_state["est.run"].result
    assert result is not None and not result.partial
    own = [(v.code, v.message) for v in result.verdicts if v.severity in ("warning", "error")]
    assert not own, own


# ---------------------------------------------------------------- the verdicts' buttons


class Ended:
    """The worker of a run that has finished (the result view never polls it)."""

    alive = False

    def request_stop(self) -> None:
        pass


@pytest.fixture(scope="module")
def tiny_result():
    return run(RunConfig(model=ModelConfig(powers=[1, 2]), sampler=SamplerConfig(steps=100, chains=2)))


@pytest.mark.parametrize("suggestion, label, name, value, text", [
    ({"step_size": 3.3e-5}, "Use ε = 3.3e-05", "step_size", 3.3e-5, "3.3e-05"),
    ({"step_size": 3.1748e-5}, "Use ε = 3.2e-05", "step_size", 3.2e-5, "3.2e-05"),
    ({"step_size": "auto"}, "Use the calibrated ε (auto)", "step_size", "auto", "auto"),
    ({"steps": 12000}, "Use 12,000 steps", "steps", 12000, "12000"),
    ({"batch_size": 2000}, "Use batch size 2,000", "batch_size", 2000, "2000"),
    ({"localization": 3.0}, "Use γ = 3", "localization", 3.0, "3.0"),
])
def test_each_verdict_button_sets_its_widget_and_the_url(tiny_result, suggestion, label, name, value, text):
    at = open_estimate()
    result = copy.copy(tiny_result)
    result.verdicts = [Verdict("advice", "warning", "Change this.", suggestion)]
    config = settings.values_to_config(settings.default_values())[0]
    at.session_state["est.run"] = runs.RunRecord(config, Ended(), None, None, Progress(status="done", result=result),
                                                 finalized=True)
    at.run()
    assert not at.exception
    [apply] = [b for b in at.button if b.label == label]
    apply.click().run()
    assert not at.exception and not at.error
    assert widget(at, name).value == value
    assert at.query_params[name] == text
    others = {k: v for k, v in at.query_params.items() if k != name}
    assert others == {k: v for k, v in settings.values_to_query(settings.default_values()).items() if k != name}


def test_the_result_says_how_much_heat_was_taken_off():
    # docs/METHOD.md §8: on, the caption gives the heat and the uncorrected λ̂; off (a URL setting), what λ̂ holds
    at = open_estimate({"kind": "dln", "widths": "4,3", "n": "2000", "steps": "400", "chains": "2"})
    button(at, "Run").click().run()
    run_until(at, finished)
    [line] = [c.value for c in at.caption if c.value.startswith("Heat correction:")]
    assert "Without it λ̂ would read" in line
    at = open_estimate({"kind": "dln", "widths": "4,3", "n": "2000", "steps": "400", "chains": "2",
                        "heat_correction": "off"})
    button(at, "Run").click().run()
    run_until(at, finished)
    assert any(c.value.startswith("Heat correction off: λ̂ above includes") for c in at.caption)
