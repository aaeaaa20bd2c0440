"""Estimate page: pick a model and sampler settings, run SGLD in the background, read λ̂ and its diagnostics.

The page is thin: the sidebar's widgets become a RunConfig (pages/settings.py), llc_core runs it in a
worker thread, and a fragment draws what the worker has streamed so far (pages/runs.py).
"""

from __future__ import annotations

import streamlit as st

from llc_core import available_devices, default_nbeta
from pages import common, live_runs, runs, settings
from pages.settings import AUTO, RECOMMENDED

common.require_entry_point()

PAGE = settings.ESTIMATE_PAGE

# ε choices on a log scale: 1, 2, 3, 5 × 10^k (decimal literals, so that URLs read 3e-05, not 3.0000000000000004e-05)
STEP_SIZES = [float(f"{m}e{k}") for k in range(-9, 0) for m in (1, 2, 3, 5)]


def key(name: str) -> str:
    """The widget key of a setting, seeded with the session's last value or the current kind's default."""
    kind = st.session_state.get(common.widget_key(PAGE, "kind"), "potential")
    kind = kind if kind in settings.kinds() else "potential"
    return common.ensure_widget(PAGE, name, settings.default_values(kind).get(name))


def apply_kind_preset(model: dict | None = None) -> None:
    """When the model kind changes: the engine's sampler settings for the kind, and its model fields as
    `model` gives them (the model Calibrate set), else as the user last left them for that kind in this
    session, else the kind's starting values."""
    state = st.session_state
    kind = state[common.widget_key(PAGE, "kind")]
    previous = state.get(f"{PAGE}.shown_kind")
    saved = state.setdefault(f"{PAGE}.model_by_kind", {})
    if previous:
        saved[previous] = {s.name: state.get(common.widget_key(PAGE, s.name))
                           for s in settings.settings_for_kind(previous) if s.field[0] == "model" and s.name != "kind"}
    preset, restored = settings.default_values(kind), model or saved.get(kind, {})
    for setting in settings.settings_for_kind(kind):
        widget = common.widget_key(PAGE, setting.name)
        if setting.name in settings.KIND_SAMPLER_SETTINGS:
            state[widget] = preset[setting.name]
        elif setting.field[0] == "model" and setting.name != "kind":
            state[widget] = restored.get(setting.name, preset[setting.name])
    state[f"{PAGE}.shown_kind"] = kind


def take_shared_model() -> None:
    """Before the widgets: the model and data set on Calibrate since this page last drew (one model for
    both pages, pages/settings.py); a new kind brings the engine's sampler settings for it."""
    shared = settings.shared_model(st.session_state, PAGE)
    if shared is None:
        return
    state = st.session_state
    kind_key = common.widget_key(PAGE, "kind")
    before = state.get(kind_key, state.get(f"{PAGE}.values", {}).get("kind", "potential"))
    for name, value in shared.items():
        state[common.widget_key(PAGE, name)] = value
    if shared.get("kind") != before:
        state[f"{PAGE}.shown_kind"] = before
        apply_kind_preset(shared)
    remembered = state.setdefault(f"{PAGE}.values", {})
    remembered.update({name: state[common.widget_key(PAGE, name)] for name in (*shared, *settings.KIND_SAMPLER_SETTINGS)
                       if common.widget_key(PAGE, name) in state})


def model_widget(setting: settings.Setting, kind: str) -> object:
    name = setting.field[1]
    label, help_text = settings.MODEL_LABELS.get(name, (name.replace("_", " ").capitalize(), None))
    help_text = help_text or f"ModelConfig.{name}; leave empty for the engine's default."
    widget = key(setting.name)
    if setting.kind in ("list", "text"):
        return st.text_input(label, key=widget, help=help_text, placeholder="default")
    if setting.kind == "int":
        return st.number_input(label, min_value=0, step=1, key=widget, help=help_text, placeholder="default")
    return st.number_input(label, key=widget, help=help_text, placeholder="default", format="%g")


def step_size_widget() -> tuple[object, object]:
    """The step-size slider (the model's recommendation, "auto" or ε on a log grid) and a slot below it
    for the recommendation in words, filled once the config is known."""
    widget = key("step_size")
    current = st.session_state[widget]
    if current not in (AUTO, RECOMMENDED):
        try:
            current = st.session_state[widget] = float(current)
        except (TypeError, ValueError):
            current = st.session_state[widget] = RECOMMENDED
    grid = sorted(set(STEP_SIZES) | ({current} if current not in (AUTO, RECOMMENDED) else set()))
    value = st.select_slider(
        "Step size ε (log scale)", options=[RECOMMENDED, AUTO, *grid], key=widget,
        format_func=lambda v: v if v in (AUTO, RECOMMENDED) else f"{v:.2g}",
        help="SGLD step size, the most important knob. Too small: λ̂ is under-estimated (not equilibrated); "
             "too large: over-estimated or NaN. 'recommended' (the default) takes the model kind's own choice, "
             "as the command line does when step_size is left out: a curvature rule for the toy models, 'auto' "
             "for the others. 'auto' calibrates ε during burn-in until the MALA acceptance reaches the target "
             "(Advanced), then samples with it fixed; the result reports the ε it chose.")
    return value, st.empty()


def follow_recommended_steps(values: dict) -> int | None:
    """A dln's or rrr's recommended steps follow its size: when the model changes, a steps widget still at
    the previous recommendation (the user has not set it) moves to the new one. Returns the recommendation."""
    recommended = settings.recommended_steps(values["kind"], values)
    followed = f"{PAGE}.steps_recommended"
    previous = st.session_state.get(followed)
    if recommended is not None and previous not in (None, recommended) and st.session_state.get(key("steps")) == previous:
        st.session_state[key("steps")] = recommended
    st.session_state[followed] = recommended
    return recommended


def sidebar_settings() -> dict:
    """Draw every setting in the sidebar; return the widget values by URL name."""
    values = {}
    kinds = settings.kinds()
    kind_key = key("kind")
    if st.session_state[kind_key] not in kinds:
        st.session_state[kind_key] = "potential"
    st.header("Model")
    values["kind"] = st.selectbox("Model source", kinds, key=kind_key, on_change=apply_kind_preset,
                                  format_func=lambda k: settings.KIND_DESCRIPTIONS.get(k, k))
    st.session_state[f"{PAGE}.shown_kind"] = values["kind"]
    model = [s for s in settings.settings_for_kind(values["kind"]) if s.field[0] == "model" and s.name != "kind"]
    main = settings.default_model_values(values["kind"])
    for setting in model:
        if setting.name in main or not main:
            values[setting.name] = model_widget(setting, values["kind"])
    more = [s for s in model if main and s.name not in main]
    if more:
        with st.expander("More model options"):
            for setting in more:
                values[setting.name] = model_widget(setting, values["kind"])

    st.header("Data")
    values["n"] = st.number_input("Data size n", min_value=2, max_value=10**8, step=1000, key=key("n"))
    values["data_seed"] = st.number_input("Data seed", min_value=0, step=1, key=key("data_seed"))

    st.header("Sampler")
    values["step_size"], advice_slot = step_size_widget()
    values["localization"] = st.number_input(
        "Localization γ", min_value=0.0, step=0.5, format="%g", key=key("localization"),
        help="Strength of the pull back to w*. Keep it small (1-10) unless chains wander off.")
    nbeta_default = default_nbeta(int(values["n"]))
    values["nbeta"] = st.number_input(
        "Inverse temperature nβ", format="%g", key=key("nbeta"), placeholder=f"n / log n = {nbeta_default:.1f}",
        help="Leave empty for the standard β* = 1/log n, i.e. nβ = n / log n.")
    st.caption(f"Default nβ = n / log n = {nbeta_default:,.1f}" if values["nbeta"] is None
               else f"(n / log n would be {nbeta_default:,.1f})")
    values["chains"] = st.number_input("Chains", min_value=1, max_value=256, step=1, key=key("chains"))
    recommended = follow_recommended_steps(values)
    values["steps"] = st.number_input(
        "Steps per chain", min_value=1, max_value=10**8, step=500, key=key("steps"),
        help=None if recommended is None else
        f"The kind recommends {recommended:,} for this model: a DLN's flat directions need many steps, and the "
        "count follows its size (it changes with the widths until you set it yourself).")
    values["burnin"] = st.number_input(
        "Burn-in", min_value=0.0, step=0.1, format="%g", key=key("burnin"),
        help="A fraction of the steps when below 1 (0.5 = the first half), else a number of steps.")
    n = int(values["n"])
    values["batch_size"] = st.number_input(
        "Batch size", min_value=1, step=100, key=key("batch_size"), placeholder=f"min(500, n) = {min(500, n)}",
        help="Minibatch size m; leave empty for min(500, n); n means full batch.")
    values["seed"] = st.number_input("Sampler seed", min_value=0, step=1, key=key("seed"))
    values["preconditioner"] = st.selectbox(
        "Preconditioner", ["none", "rmsprop"], key=key("preconditioner"),
        help="rmsprop: pSGLD's diagonal preconditioner, adapted during burn-in and then frozen.")
    devices = available_devices()
    if st.session_state[key("device")] not in devices:
        st.session_state[key("device")] = "auto"
    values["device"] = st.selectbox("Device", devices, key=key("device"),
                                    help="'auto' uses a CUDA GPU when there is one. Available here: "
                                         + ", ".join(devices))
    with st.expander("Advanced"):
        advanced_settings(values)
    return values, advice_slot


def advanced_settings(values: dict) -> None:
    """The Advanced expander's settings, into `values`."""
    values["target_acceptance"] = st.number_input(
        "Target acceptance of 'auto' ε", min_value=0.05, max_value=0.999, step=0.01, format="%g",
        key=key("target_acceptance"),
        help="The mean MALA acceptance the automatic step size aims at; 0.90-0.95 keeps the "
             "discretisation error of SGLD small (paper App. H.1). Models with fewer than 20 "
             "parameters aim higher, in proportion (1 − (1 − target)·d/20): in few dimensions 0.92 "
             "still allows a step that inflates λ̂ by a third.")
    values["algorithm"] = st.selectbox(
        "Algorithm", ["sgld", "mala"], key=key("algorithm"),
        format_func=lambda a: {"sgld": "SGLD (minibatch)", "mala": "MALA (full batch, exact)"}[a],
        help="MALA accepts or rejects each full-batch Langevin move, so it samples the posterior "
             "exactly at any ε: the baseline SGLD is checked against. It costs a full pass over the "
             "data per step.")
    values["start_spread"] = st.number_input(
        "Spread-out start σ", min_value=0.0, format="%g", key=key("start_spread"), placeholder="off",
        help="Start every second chain at w* + σ·rms(w*)·noise (e.g. 0.3) instead of at w*. Chains that "
             "have mixed agree whichever start they had; if the two groups disagree, the result says "
             "so and λ probably lies between them.")
    values["start_spread"] = values["start_spread"] or None
    values["heat_correction"] = st.radio(
        "Heat correction", ["on", "off"], key=key("heat_correction"), horizontal=True,
        help="On: λ̂ has SGLD's first-order heat taken off, (ε/8)(mean ‖∇U‖² − γd) over the draws: the few "
             "percent a finite step and minibatch noise add (method §8). Off: the plain estimator.")
    values["noise_scale"] = st.number_input("Label noise σ", min_value=1e-6, format="%g", key=key("noise_scale"))
    values["mala_every"] = st.number_input("Measure MALA acceptance every … steps", min_value=1, step=1,
                                           key=key("mala_every"))
    values["snapshot_every"] = st.number_input("Redraw every … steps", min_value=1, step=1,
                                               key=key("snapshot_every"))
    values["dtype"] = st.selectbox("Precision", ["float32", "float64"], key=key("dtype"))


def show_step_size_advice(slot: object, config: object, chosen: object) -> None:
    """Under the step-size slider: what the model kind recommends for this model, n, nβ and γ."""
    if config is None:
        return
    advice = settings.recommended_step_size(config)
    text = settings.step_size_text(advice)
    slot.caption(text if chosen == RECOMMENDED else text.replace("Recommended for this model", "This model's recommendation"))


st.title("Estimate λ̂")
st.caption("λ̂ = nβ · (E[L_n(w)] − L_n(w*)) under SGLD draws from the tempered posterior localized at w*. "
           "Set the model and sampler in the sidebar; the address bar keeps every setting, so a copied "
           "link reproduces this run, seed included.")

take_shared_model()  # the model and data set on Calibrate; a link in the URL wins over them (next line)
for problem in common.restore_from_url(PAGE, settings.query_to_values):
    st.error(common.escape_markdown(problem))
live_runs.reattach(PAGE)  # a reload during a run: the run's URL token brings it back (pages/live_runs.py)
with st.sidebar:
    values, step_size_advice = sidebar_settings()
config, problems = settings.values_to_config(values)
show_step_size_advice(step_size_advice, config, values["step_size"])
common.remember_and_write_url(PAGE, values, settings.values_to_query(values))
settings.publish_model(st.session_state, PAGE, values)
for problem in problems:
    st.error(common.escape_markdown(problem))

record = runs.current_run(PAGE)
running = record is not None and record.running
run_col, summary_col = st.columns([1, 6], vertical_alignment="center")
if run_col.button("Run", type="primary", disabled=running or config is None,
                  help="Start a run with the sidebar's settings"):
    runs.start_run(PAGE, config)
    st.rerun()
if config is not None:
    truth = runs.theory_for(config)
    summary = (f"{config.model.kind} {common.escape_markdown(settings.model_summary(config))} · n = {config.data.n:,} · "
               f"{config.sampler.chains} chains × {config.sampler.steps:,} steps")
    if truth is not None:
        summary += f" · theory λ = {common.fraction_text(truth.llc)}"
    summary_col.caption(summary)
if running and config is not None and config != record.config:
    st.caption("The settings have changed since this run started: they apply to the next run.")

runs.run_panel(PAGE)
