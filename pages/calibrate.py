"""Calibrate page: sweep ε × γ for a model, read the heatmaps, send the recommended cell to Estimate.

Three tabs, each running its work in a worker thread (llc_core.execution.jobs.Job, no Streamlit calls in it)
that a fragment polls twice a second while it runs:
  Sweep                 llc_core.studies.sweep: λ̂, acceptance, divergence and flatness per cell, a recommendation
  Rescaling invariance  llc_core.studies.experiments.rescaling_experiment (docs/METHOD.md §5, paper App. O)
  SGLD vs MALA          llc_core.studies.experiments.compare_samplers (paper App. M)
The sidebar's model (any zoo kind, with the main fields the Estimate page shows) feeds Sweep and
SGLD vs MALA.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import altair as alt
import pandas as pd
import streamlit as st

from llc_core import LLCInputError, defaults
from llc_core.studies import experiments, sweep
from llc_core.execution import jobs, where_ran
from llc_core.config import SamplerConfig
from pages import common, live_runs, run_on, settings

common.require_entry_point()

PAGE = "cal"
JOBS = {"sweep": "cal.sweep_job", "rescale": "cal.rescale_job", "compare": "cal.compare_job"}
POLL_SECONDS = 0.5
PER_DECADE = 6  # ε values per decade of the default grid: neighbours 1.47× apart, finer than the acceptance
# band's width (its rejection rates are 2× apart, so its ε about 2^(2/3) = 1.59× apart, rejection ∝ ε^(3/2))
RULE_SPAN = (0.1, 100.0)  # the default grid: from 1/10 to 100× the model's curvature-rule ε
NO_RULE_SPAN = (1e-5, 1e-1)  # ... or this, for a model without one


def key(name: str) -> str:
    return f"{PAGE}.{name}"


def seed_widget(name: str, default: Any) -> str:
    widget = key(name)
    if widget not in st.session_state:
        st.session_state[widget] = default
    return widget


def start_value(name: str, kind: str) -> Any:
    """A model or data widget's first value: what Estimate (or this page) last set for this kind, else the
    kind's starting value."""
    shared = settings.shared_model(st.session_state, PAGE, new_only=False)
    if shared is not None and shared.get("kind") == kind and name in shared:
        return shared[name]
    return settings.default_values(kind).get(name)


def take_shared_model() -> None:
    """Before the widgets: the model and data set on Estimate since this page last drew (one model for
    both pages, pages/settings.py)."""
    shared = settings.shared_model(st.session_state, PAGE)
    if shared is not None:
        for name, value in shared.items():
            st.session_state[key(name)] = value


def reset_model_fields() -> None:
    """A new kind: its preset model fields (the Estimate page's starting values for it)."""
    kind = st.session_state[key("kind")]
    preset = settings.default_values(kind)
    for setting in settings.settings_for_kind(kind):
        if setting.field[0] == "model" and setting.name != "kind":
            st.session_state[key(setting.name)] = preset.get(setting.name)


def model_widget(setting: settings.Setting) -> Any:
    name = setting.field[1]
    label, help_text = settings.MODEL_LABELS.get(name, (name.replace("_", " ").capitalize(), None))
    widget = key(setting.name)
    if widget not in st.session_state:
        st.session_state[widget] = start_value(setting.name, st.session_state[key("kind")])
    if setting.kind in ("list", "text"):
        if st.session_state[widget] is None:
            st.session_state[widget] = ""
        return st.text_input(label, key=widget, help=help_text, placeholder="default")
    if setting.kind == "int":
        return st.number_input(label, min_value=0, step=1, key=widget, help=help_text, placeholder="default")
    return st.number_input(label, key=widget, help=help_text, placeholder="default", format="%g")


def sidebar_model() -> dict[str, Any]:
    """The model and data widgets, starting from the Estimate page's; returns settings.py widget values
    (sampler left at the kind's defaults)."""
    take_shared_model()
    kinds = settings.kinds()
    shared = settings.shared_model(st.session_state, PAGE, new_only=False) or {}
    kind_key = seed_widget("kind", shared.get("kind", "potential"))
    if st.session_state[kind_key] not in kinds:
        st.session_state[kind_key] = "potential"
    st.header("Model")
    kind = st.selectbox("Model source", kinds, key=kind_key, on_change=reset_model_fields,
                        format_func=lambda k: settings.KIND_DESCRIPTIONS.get(k, k))
    values = settings.default_values(kind)
    model = [s for s in settings.settings_for_kind(kind) if s.field[0] == "model" and s.name != "kind"]
    main = settings.default_model_values(kind)
    for setting in model:
        if setting.name in main or not main:
            values[setting.name] = model_widget(setting)
    more = [s for s in model if main and s.name not in main]
    if more:
        with st.expander("More model options"):
            for setting in more:
                values[setting.name] = model_widget(setting)
    st.header("Data")
    values["n"] = st.number_input("Data size n", min_value=2, max_value=10**7, step=500,
                                  key=seed_widget("n", start_value("n", kind)))
    values["data_seed"] = st.number_input("Data seed", min_value=0, step=1,
                                          key=seed_widget("data_seed", start_value("data_seed", kind)))
    values["noise_scale"] = st.number_input("Label noise σ", min_value=1e-6, format="%g",
                                            key=seed_widget("noise_scale", start_value("noise_scale", kind)))
    st.caption("The Estimate page shares this model and data: a change here shows there, and the other way round.")
    settings.publish_model(st.session_state, PAGE, values)
    return values


# ====================================================================== background work


def start(name: str, job: jobs.Job, **extra: Any) -> None:
    old = st.session_state.get(JOBS[name])
    if old is not None and old.alive:
        old.request_stop()
    st.session_state[JOBS[name]] = job.start()
    for k, v in extra.items():
        st.session_state[f"{JOBS[name]}.{k}"] = v
    kept = live_runs.kept((JOBS[name], *(f"{JOBS[name]}.{k}" for k in extra)))
    live_runs.register(PAGE, name, job, lambda: dict(kept))


def live(name: str, draw: Callable[[dict[str, Any] | None, bool], None]) -> None:
    """Draw a job's state: polled by a fragment while it runs, once (with its final controls) after."""
    job: jobs.Job | None = st.session_state.get(JOBS[name])
    if job is None:
        draw(None, False)
        return
    if not job.alive:
        live_runs.collected(PAGE, name)
        draw(job.snapshot(), False)
        return

    @st.fragment(run_every=POLL_SECONDS)
    def poll() -> None:
        snap = job.snapshot()
        if not snap["running"]:
            st.rerun()  # the whole page, so that the finished view (with its buttons) replaces this one
        if st.button("Stop", key=key(f"{name}.stop"), disabled=job.stop_requested,
                     help="Finished parts are kept"):
            job.request_stop()
        draw(snap, True)

    poll()


def progress_text(snap: dict[str, Any], total_cells: int) -> tuple[float, str]:
    p: sweep.SweepProgress | None = snap["progress"]
    if p is None:
        return 0.0, "building the model…"
    what = "all cells at once" if p.mode == "batched" else f"{len(snap['items'])}/{total_cells} cells done"
    return p.fraction, f"{what}, step {p.step}/{p.total_steps}"


# ====================================================================== sweep: heatmaps


def edges(values: list[float]) -> dict[float, tuple[float, float]]:
    """Cell edges on a log axis: geometric midpoints between neighbours."""
    ordered = sorted(set(values))
    if len(ordered) == 1:
        return {ordered[0]: (ordered[0] / 3.0, ordered[0] * 3.0)}
    out = {}
    for i, v in enumerate(ordered):
        lo = math.sqrt(ordered[i - 1] * v) if i else v / math.sqrt(ordered[1] / ordered[0])
        hi = math.sqrt(ordered[i + 1] * v) if i + 1 < len(ordered) else v * math.sqrt(v / ordered[i - 1])
        out[v] = (lo, hi)
    return out


def band_names(band: tuple[float, float]) -> list[str]:
    low, high = band
    return [f"below {low:.3g}", f"{low:.3g}–{high:.3g}", f"above {high:.3g}", "no estimate"]


def cell_frame(cells: list[sweep.CellResult], recommended: int | None, step_sizes: list[float],
               band: tuple[float, float] = defaults.ACCEPTANCE_TARGET) -> pd.DataFrame:
    """One row per cell, ASCII column names (Vega expressions and field paths stay simple)."""
    bounds = edges(step_sizes)
    low, high = band
    below, inside, above, missing = band_names(band)
    rows = []
    for c in cells:
        if c.acceptance is None:
            where = missing
        else:
            where = below if c.acceptance < low else above if c.acceptance > high else inside
        trace = {True: "flat", False: "rising" if (c.drift or 0) > 0 else "falling", None: "no estimate"}[c.flat]
        lo, hi = bounds[c.step_size]
        rows.append({
            "cell": c.index, "eps": c.step_size, "eps_lo": lo, "eps_hi": hi, "eps_mid": math.sqrt(lo * hi),
            "gamma": f"{c.localization:g}", "gamma_value": c.localization, "nbeta": c.nbeta,
            "llc": c.llc_mean, "se": c.llc_se, "acceptance": c.acceptance, "band": where,
            "diverged": c.diverged_fraction, "trace": trace, "negative": c.negative,
            "recommended": c.index == recommended, "partial": c.partial,
        })
    return pd.DataFrame(rows)


TABLE_NAMES = {"eps": "ε", "gamma": "γ", "nbeta": "nβ", "llc": "λ̂", "se": "± se", "band": "acceptance band",
               "negative": "negative λ̂"}


ROW_PX = 26  # plot height per ε row of a heatmap: room for its 12 px label
LABEL_PX = 12


def heatmap(frame: pd.DataFrame, title: str, color: alt.Color, label: str | None) -> alt.LayerChart:
    """One quantity over the grid: a row per ε (log scale, small at the bottom), a column per γ, the value
    written in each cell at 12 px; the recommended cell outlined in black."""
    gammas = [g for _, g in sorted({(v, g) for v, g in zip(frame["gamma_value"], frame["gamma"])})]
    scale = alt.Scale(type="log", domain=[float(frame["eps_lo"].min()), float(frame["eps_hi"].max())], nice=False)
    y = alt.Y("eps_lo:Q", scale=scale, title="step size ε (log scale)",
              axis=alt.Axis(format=".1e", values=sorted(set(frame["eps"])), labelFontSize=11))
    x = alt.X("gamma:O", sort=gammas, title="localization γ", axis=alt.Axis(labelAngle=0, labelFontSize=12))
    tooltip = ["cell", alt.Tooltip("eps:Q", title="ε", format=".3g"), alt.Tooltip("gamma:N", title="γ"),
               alt.Tooltip("nbeta:Q", title="nβ", format=".4g"), alt.Tooltip("llc:Q", title="λ̂", format=".4g"),
               alt.Tooltip("se:Q", title="± se", format=".2g"), alt.Tooltip("acceptance:Q", format=".3f"),
               alt.Tooltip("diverged:Q", format=".0%"), "trace"]
    base = alt.Chart(frame).encode(x=x, y=y, y2="eps_hi:Q")
    layers = [base.mark_rect(stroke="white", strokeWidth=1).encode(color=color, tooltip=tooltip)]
    if label is not None:
        layers.append(alt.Chart(frame).mark_text(fontSize=LABEL_PX).encode(
            x=x, y=alt.Y("eps_mid:Q", scale=scale), text=alt.Text(label), tooltip=tooltip))
    layers.append(base.transform_filter("datum.recommended").mark_rect(
        fill=None, stroke="black", strokeWidth=3))
    rows = len(set(frame["eps"]))
    return alt.layer(*layers).properties(title=title, height=ROW_PX * rows,
                                         autosize=alt.AutoSizeParams(type="fit-x", contains="padding"))


def heatmaps(frame: pd.DataFrame, band: tuple[float, float] = defaults.ACCEPTANCE_TARGET) -> list[alt.LayerChart]:
    low, high = band
    frame = frame.assign(
        llc_text=[f"{v:.2g}" if v is not None and not pd.isna(v) else "×" for v in frame["llc"]],
        acceptance_text=[acceptance_label(v, band) for v in frame["acceptance"]],
        diverged_text=[f"{v:.0%}" for v in frame["diverged"]],
    )
    bands = alt.Scale(domain=band_names(band),
                      range=["#d62728", "#2ca02c", "#9ecae1", "#bbbbbb"])
    traces = alt.Scale(domain=["flat", "rising", "falling", "no estimate"], range=["#2ca02c", "#ff7f0e", "#9467bd", "#bbbbbb"])
    legend = alt.Legend(orient="bottom", columns=2, labelFontSize=12, labelLimit=160)
    gradient = alt.Legend(orient="bottom", direction="horizontal", gradientLength=160, labelFontSize=12)
    return [
        heatmap(frame, "λ̂ (mean of the cell's chains)",
                alt.Color("llc:Q", scale=alt.Scale(scheme="lighttealblue"), title="λ̂", legend=gradient), "llc_text:N"),
        heatmap(frame, f"acceptance (goal {low:.3g}–{high:.3g})",
                alt.Color("band:N", scale=bands, title="acceptance", legend=legend), "acceptance_text:N"),
        heatmap(frame, "chains diverged",
                alt.Color("diverged:Q", scale=alt.Scale(domain=[0, 1], scheme="reds"), title="diverged",
                          legend=gradient), "diverged_text:N"),
        heatmap(frame, "loss after burn-in", alt.Color("trace:N", scale=traces, title="trace", legend=legend), None),
    ]


def acceptance_label(value: float | None, band: tuple[float, float]) -> str:
    """A cell's acceptance with the decimals its band needs (0.93 against 0.90–0.95, 0.993 against
    0.990–0.995), cut rather than rounded, and with one more decimal where the cut label would read as
    inside the band while the cell is not (0.9897 shows as 0.9897, not 0.990, in a red cell)."""
    if value is None or pd.isna(value):
        return "×"
    low, high = band
    decimals = 3 if high - low < 0.02 else 2
    while True:
        shown = math.floor(value * 10**decimals) / 10**decimals
        if (low <= shown <= high) == (low <= value <= high) or decimals >= 5:
            return f"{shown:.{decimals}f}"
        decimals += 1


def show_heatmaps(frame: pd.DataFrame, band: tuple[float, float]) -> None:
    nbetas = sorted(set(frame["nbeta"]))
    if len(nbetas) > 1:
        chosen = st.selectbox("nβ shown", nbetas, format_func=lambda b: f"{b:.4g}", key=key("sweep.nbeta_shown"))
        frame = frame[frame["nbeta"] == chosen]
    charts = heatmaps(frame, band)
    for row in range(2):
        columns = st.columns(2)
        for col, chart in zip(columns, charts[2 * row: 2 * row + 2]):
            col.altair_chart(chart, width="stretch")


def cell_label(c: sweep.CellResult, recommended: int | None) -> str:
    llc = f"λ̂ = {c.llc_mean:.3g}" if c.llc_mean is not None else "no estimate"
    tag = " (recommended)" if c.index == recommended else ""
    return f"ε = {c.step_size:.3g}, γ = {c.localization:g}, nβ = {c.nbeta:.4g}: {llc}{tag}"


def choose_and_send(result: sweep.SweepResult, usable: list[sweep.CellResult], recommended: int | None) -> None:
    """The cell to use (the recommended one preselected; none when no cell passes every rule) and the
    button that opens Estimate with its ε and γ."""
    choices = [c.index for c in usable]
    pick_key = key("sweep.pick")
    if st.session_state.get(pick_key) not in choices:
        st.session_state[pick_key] = recommended if recommended in choices else None
    picked = st.selectbox("Cell to use", choices, key=pick_key,
                          format_func=lambda i: cell_label(result.cells[i], recommended),
                          placeholder="No cell passes every rule: choose one knowingly, or sweep again",
                          help="The recommended cell, or any other you prefer.")
    if st.button("Use these settings in Estimate", type="primary", key=key("sweep.use"), disabled=picked is None,
                 help="Opens Estimate with this cell's ε and γ; its model, n and other settings stay as they are"):
        values = estimate_values(sweep.SweepConfig.from_dict(result.config).run, result.cells[picked],
                                 result.default_nbeta)
        st.switch_page("pages/estimate.py", query_params=settings.values_to_query(values))


def estimate_values(run: Any, cell: sweep.CellResult, default_nbeta: float | None) -> dict[str, Any]:
    """The Estimate page's settings with what the sweep decided in them: the cell's ε and γ, and the nβ
    they were found at (the swept value, or unset for n / log n), for the model and data the sweep ran;
    everything else (steps, burn-in, chains, batch size, seed, ...) as Estimate has it, or Estimate's
    defaults for the model."""
    ran = settings.config_to_values(run)
    kind = ran["kind"]
    values = settings.default_values(kind)
    remembered = st.session_state.get(f"{settings.ESTIMATE_PAGE}.values") or {}
    if remembered.get("kind") == kind:
        values.update(remembered)
    values.update({name: ran[name] for name in settings.shared_names(kind)})
    chosen = sweep.config_for_cell(run, cell, default_nbeta).sampler
    values.update(step_size=chosen.step_size, localization=chosen.localization, nbeta=chosen.nbeta)
    return values


def draw_sweep(snap: dict[str, Any] | None, running: bool) -> None:
    if snap is None:
        st.info("Choose the model in the sidebar and the grid above, then press **Run sweep**. The default grid "
                "(ε around the model's recommended step size, 6 per decade, × 3 localizations × 4 chains, 1000 "
                "steps) takes seconds for the toy models.")
        return
    config: sweep.SweepConfig = st.session_state[f"{JOBS['sweep']}.config"]
    total = len(config.cells())
    result: sweep.SweepResult | None = snap["result"]
    if running:
        fraction, text = progress_text(snap, total)
        st.progress(fraction, text=text)
    if snap["error"]:
        st.error(f"The sweep stopped with an error: {common.escape_markdown(snap['error'])}")
    cells = result.cells if result is not None else snap["items"]
    if not cells:
        return
    recommended = result.recommended if result is not None else None
    progress = snap["progress"]
    band = tuple(result.acceptance_band) if result is not None else (
        progress.acceptance_band if progress is not None else defaults.ACCEPTANCE_TARGET)
    frame = cell_frame(cells, recommended, config.step_sizes, band)
    show_heatmaps(frame, band)
    if result is None:
        return
    st.caption(f"{len(result.cells)} cells × {config.chains_per_cell} chains, {result.steps} steps "
               f"({result.burnin_steps} burn-in), d = {result.num_params}, n = {result.n}; ran {result.mode} "
               f"in {result.wall_time_s:.1f} s" + (" — stopped early" if result.partial else "")
               + (f"; the true λ of this model is {result.theoretical_llc:.4g}" if result.theoretical_llc else "")
               + (f"; {common.escape_markdown(where_ran(result.executor))}" if result.executor else ""))
    if result.recommended is not None:
        st.success("**Recommended cell** (black outline): " + result.reason)
    else:
        st.warning("**No cell qualifies.** " + result.reason)
    usable = [c for c in result.cells if c.llc_mean is not None]
    if usable:
        choose_and_send(result, usable, recommended)
    with st.expander("All cells"):
        table = frame.drop(columns=["eps_lo", "eps_hi", "eps_mid", "gamma_value"]).rename(columns=TABLE_NAMES)
        st.dataframe(table, hide_index=True, width="stretch")


def default_grid(values: dict[str, Any]) -> tuple[float, float, int, str]:
    """The ε range the form proposes for this model: from 1/10 to 100× its curvature-rule ε (the kind's
    recommended ε, or where "auto" starts), 6 values per decade; (low, high, count, why)."""
    config, _ = settings.values_to_config(values)
    advice = settings.recommended_step_size(config, rule_for_auto=True) if config is not None else None
    if advice is not None and advice.rule:
        low, high = (float(f"{advice.rule * f:.3g}") for f in RULE_SPAN)
        why = f"around this model's recommended ε = {advice.rule:.2g} (its curvature rule at γ = 1)"
    else:
        low, high = NO_RULE_SPAN
        why = "this model has no curvature rule for ε"
    return low, high, round(math.log10(high / low) * PER_DECADE) + 1, why


def sweep_tab(values: dict[str, Any]) -> None:
    grid_low, grid_high, grid_count, why = default_grid(values)
    executor, may_start = run_on.setting(key("sweep"))  # this machine, or a Ray cluster (pages/run_on.py)
    with st.form(key("sweep.form")):
        left, mid, right = st.columns(3)
        eps_low = left.number_input("Smallest ε", min_value=1e-12, value=None, format="%g", key=key("eps_low"),
                                    placeholder=f"{grid_low:.3g}")
        eps_high = mid.number_input("Largest ε", min_value=1e-12, value=None, format="%g", key=key("eps_high"),
                                    placeholder=f"{grid_high:.3g}")
        eps_count = right.number_input("Number of ε values (log-spaced)", min_value=1, max_value=40, step=1, value=None,
                                       key=key("eps_count"), placeholder=str(grid_count))
        left, mid, right = st.columns(3)
        gammas = left.text_input("Localizations γ", key=seed_widget("gammas", "1,10,100"),
                                 help="Comma-separated, e.g. 1,10,100. docs/METHOD.md §3: keep γ small unless chains wander.")
        nbetas = mid.text_input("nβ values (empty: n / log n)", key=seed_widget("nbetas", ""),
                                help="Optional: sweep the inverse temperature too, e.g. 100,1000.")
        per_cell = right.number_input("Chains per cell", min_value=1, max_value=64, step=1,
                                      key=seed_widget("per_cell", 4))
        left, mid, right = st.columns(3)
        steps = left.number_input("Steps per chain", min_value=10, max_value=10**6, step=500,
                                  key=seed_widget("steps", 1000))
        burnin = mid.number_input("Burn-in (fraction of steps)", min_value=0.0, max_value=0.95, step=0.05,
                                  format="%g", key=seed_widget("burnin", 0.5))
        batch = right.number_input("Batch size (empty: min(500, n))", min_value=1, step=100, value=None,
                                   key=key("batch"))
        st.caption(f"Empty ε fields: {grid_count} step sizes from {grid_low:.3g} to {grid_high:.3g}, {why}. These "
                   "sweep settings are the sweep's own: Estimate keeps its steps, chains and batch size.")
        submitted = st.form_submit_button("Run sweep", type="primary")
    if submitted and may_start:  # else the setting's message is shown above the form
        try:
            config, problems = settings.values_to_config({**values, "steps": int(steps), "burnin": float(burnin),
                                                          "chains": int(per_cell), "batch_size": batch})
            if config is None:
                raise LLCInputError("; ".join(problems))
            low = grid_low if eps_low is None else float(eps_low)
            high = grid_high if eps_high is None else float(eps_high)
            grid = sweep.SweepConfig(
                run=config, step_sizes=sweep.log_grid(low, high, grid_count if eps_count is None else int(eps_count)),
                localizations=sweep.parse_numbers(gammas, "Localizations γ"),
                nbetas=sweep.parse_numbers(nbetas, "nβ values") if nbetas.strip() else None,
                chains_per_cell=int(per_cell), executor=executor,
            )
            grid.validate()
        except LLCInputError as err:
            common.show_error(err)
        else:
            start("sweep", sweep.sweep_job(grid), config=grid)
    live("sweep", draw_sweep)


# ====================================================================== rescaling invariance


def finished_items(snap: dict[str, Any] | None, running: bool, job: str, idle: str, what: str) -> list:
    """The pieces a job has finished so far, with its progress bar and error drawn above them."""
    if snap is None:
        st.info(idle)
        return []
    if snap["error"]:
        st.error(f"The {what} stopped with an error: {common.escape_markdown(snap['error'])}")
    items = snap["items"]
    expected = st.session_state.get(f"{JOBS[job]}.total", len(items))
    if running:
        st.progress(len(items) / max(expected, 1), text=f"{len(items)}/{expected} runs done")
    return items


def draw_rescaling(snap: dict[str, Any] | None, running: bool) -> None:
    points: list[experiments.RescalingPoint] = finished_items(
        snap, running, "rescale", "Press **Run experiment**. The default (9 values of α × 2 samplers × 2000 steps) "
        "takes about a minute.", "experiment")
    if not points:
        return
    labels = {"preconditioned": "preconditioned (A = D²)", "plain": "plain SGLD",
              "reference": "A as stated in the paper (inverse)"}
    frame = pd.DataFrame([{
        "α": p.alpha, "sampler": labels[p.method], "λ̂": p.llc_mean, "se": p.llc_se,
        "low": None if p.llc_mean is None else p.llc_mean - 2 * (p.llc_se or 0),
        "high": None if p.llc_mean is None else p.llc_mean + 2 * (p.llc_se or 0),
        "acceptance": p.acceptance, "diverged": p.diverged_fraction,
    } for p in points])
    ok = frame.dropna(subset=["λ̂"])
    x = alt.X("α:Q", scale=alt.Scale(type="log"), title="rescaling α (log scale)", axis=alt.Axis(format="~e"))
    color = alt.Color("sampler:N", title="sampler")
    lines = alt.Chart(ok).mark_line(point=True).encode(
        x=x, y=alt.Y("λ̂:Q", title="λ̂ (± 2 se)"), color=color,
        tooltip=["α", "sampler", alt.Tooltip("λ̂:Q", format=".5g"), alt.Tooltip("se:Q", format=".2g"),
                 alt.Tooltip("acceptance:Q", format=".3f")])
    bars = alt.Chart(ok).mark_errorbar().encode(x=x, y=alt.Y("low:Q", title="λ̂ (± 2 se)"), y2="high:Q", color=color)
    lost = frame[frame["λ̂"].isna()]
    layers = [bars, lines]
    if len(lost) and len(ok):
        floor = float(ok["low"].min())
        marks = alt.Chart(lost.assign(y=floor)).mark_point(shape="cross", size=120, filled=True).encode(
            x=x, y="y:Q", color=color, tooltip=["α", "sampler", alt.Tooltip("diverged:Q", format=".0%")])
        layers.append(marks)
    st.altair_chart(alt.layer(*layers).properties(height=360), width="stretch")
    st.caption("Crosses at the bottom: every chain diverged, no estimate.")
    if not running:
        pre = [p for p in points if p.method == "preconditioned"]
        ref = [p for p in pre if p.alpha == 1.0]
        if ref and ref[0].llc_mean is not None and all(p.llc_mean is not None for p in pre):
            worst = max(abs(p.llc_mean - ref[0].llc_mean) for p in pre)
            st.markdown(f"Preconditioned: λ̂(α = 1) = {ref[0].llc_mean:.4g} ± {ref[0].llc_se or 0:.2g}; the largest "
                        f"change over α is {worst:.2g} ({worst / abs(ref[0].llc_mean):.1e} of λ̂).")
    with st.expander("All runs"):
        st.dataframe(frame.drop(columns=["low", "high"]), hide_index=True, width="stretch")


def rescaling_tab() -> None:
    st.markdown(
        "A two-layer ReLU network computes the same function after W1 → W1/α, b1 → b1/α, W2 → αW2, so its λ "
        "is the same (docs/METHOD.md §5, paper App. O). In the rescaled coordinates w′ = D·w the loss is "
        "L(D⁻¹w′), and plain SGLD on w becomes SGLD on w′ with the fixed diagonal preconditioner **A = D²**: "
        "1/α² on W1 and b1, α² on W2. With the same seed that chain is the α = 1 chain rescaled step by step, "
        "so λ̂ agrees to rounding. Without A, one fixed ε faces curvatures 10⁸ times apart and the chains "
        "diverge. Two caveats: the localization γ‖w′ − w′*‖² is not invariant (use γ = 0 for exact "
        "invariance), and the paper states the inverse A (α² on W1, b1), which diverges at α = 10.")
    with st.form(key("rescale.form")):
        left, mid, right = st.columns(3)
        count = left.select_slider("Values of α over 10⁻⁴ … 10⁴", options=[3, 5, 9, 17], key=seed_widget("alphas", 9))
        steps = mid.number_input("Steps per chain", min_value=50, max_value=10**5, step=500,
                                 key=seed_widget("rescale.steps", 2000))
        chains = right.number_input("Chains", min_value=2, max_value=32, step=1, key=seed_widget("rescale.chains", 4))
        left, mid, right = st.columns(3)
        hidden = left.number_input("Hidden units", min_value=1, max_value=64, step=1, key=seed_widget("rescale.hidden", 4))
        gamma = mid.number_input("Localization γ", min_value=0.0, step=1.0, format="%g",
                                 key=seed_widget("rescale.gamma", 0.0))
        methods = right.multiselect("Samplers", list(experiments.METHODS), key=seed_widget("rescale.methods",
                                                                                          ["preconditioned", "plain"]))
        independent = st.checkbox("Independent seeds per α (compare within error bars instead of draw by draw)",
                                  key=seed_widget("rescale.independent", False))
        submitted = st.form_submit_button("Run experiment", type="primary")
    if submitted:
        if not methods:
            st.error("Pick at least one sampler.")
        else:
            alphas = [float(f"{v:.3g}") for v in (10.0 ** (-4 + 8 * i / (count - 1)) for i in range(count))]
            chosen = [m for m in experiments.METHODS if m in methods]

            def work(report, stop, alphas=alphas, chosen=chosen, steps=int(steps), chains=int(chains),
                     hidden=int(hidden), gamma=float(gamma), common=not independent):
                return experiments.rescaling_experiment(
                    alphas, chosen, hidden=hidden, steps=steps, chains=chains, localization=gamma,
                    common_noise=common, on_point=lambda p: report("item", p), stop=stop)

            start("rescale", jobs.Job(work, name="llc-rescale"), total=len(alphas) * len(chosen))
    live("rescale", draw_rescaling)


# ====================================================================== SGLD vs MALA


def draw_compare(snap: dict[str, Any] | None, running: bool) -> None:
    rows: list[experiments.CompareRow] = finished_items(
        snap, running, "compare", "Press **Compare** to run the sidebar's model with both samplers at each n.",
        "comparison")
    if not rows:
        return
    names = {"sgld": "SGLD (minibatch)", "mala": "MALA (full batch, exact)"}
    frame = pd.DataFrame([{
        "n": r.n, "sampler": names[r.algorithm], "λ̂": r.llc_mean, "se": r.llc_se,
        "low": None if r.llc_mean is None else r.llc_mean - 2 * (r.llc_se or 0),
        "high": None if r.llc_mean is None else r.llc_mean + 2 * (r.llc_se or 0),
        "acceptance": r.acceptance, "seconds": r.wall_time_s, "batch": r.batch_size, "ε": r.step_size,
        "true λ": r.theoretical_llc,
    } for r in rows])
    x = alt.X("n:Q", scale=alt.Scale(type="log"), title="dataset size n (log scale)")
    color = alt.Color("sampler:N", title="sampler")
    ok = frame.dropna(subset=["λ̂"])
    llc = alt.layer(
        alt.Chart(ok).mark_errorbar().encode(x=x, y=alt.Y("low:Q", title="λ̂ (± 2 se)"), y2="high:Q", color=color),
        alt.Chart(ok).mark_line(point=True).encode(
            x=x, y=alt.Y("λ̂:Q", title="λ̂ (± 2 se)"), color=color,
            tooltip=["n", "sampler", alt.Tooltip("λ̂:Q", format=".4g"), alt.Tooltip("se:Q", format=".2g"),
                     alt.Tooltip("acceptance:Q", format=".3f")]),
    ).properties(title="λ̂ against n", height=300)
    seconds = alt.Chart(frame).mark_line(point=True).encode(
        x=x, y=alt.Y("seconds:Q", scale=alt.Scale(type="log"), title="wall time (s, log scale)"), color=color,
        tooltip=["n", "sampler", alt.Tooltip("seconds:Q", format=".2f"), "batch"],
    ).properties(title="wall time against n", height=300)
    left, right = st.columns(2)
    left.altair_chart(llc, width="stretch")
    right.altair_chart(seconds, width="stretch")
    st.dataframe(frame.drop(columns=["low", "high"]), hide_index=True, width="stretch")


def compare_tab(values: dict[str, Any]) -> None:
    st.markdown(
        "Minibatch SGLD against full-batch MALA, which accepts or rejects each Langevin move and so samples "
        "the tempered posterior exactly (paper App. M). Both run the sidebar's model with the same ε, γ and "
        "nβ = n / log n at every n: their λ̂ should agree, while MALA's cost grows with n and SGLD's does not.")
    with st.form(key("compare.form")):
        left, mid, right = st.columns(3)
        sizes = left.text_input("Dataset sizes n", key=seed_widget("compare.sizes", "100,1000,10000"))
        steps = mid.number_input("Steps per chain", min_value=10, max_value=10**6, step=500,
                                 key=seed_widget("compare.steps", 2000))
        chains = right.number_input("Chains", min_value=1, max_value=64, step=1, key=seed_widget("compare.chains", 4))
        left, mid, right = st.columns(3)
        step_size = left.number_input("Step size ε (empty: the engine's default)", min_value=1e-12, value=None,
                                      format="%g", key=key("compare.eps"))
        gamma = mid.number_input("Localization γ", min_value=0.0, step=1.0, format="%g",
                                 key=seed_widget("compare.gamma", 1.0))
        batch = right.number_input("SGLD batch size", min_value=1, step=16, key=seed_widget("compare.batch", 32))
        submitted = st.form_submit_button("Compare", type="primary")
    if submitted:
        try:
            config, problems = settings.values_to_config({**values, "steps": int(steps), "chains": int(chains),
                                                          "localization": float(gamma)})
            if config is None:
                raise LLCInputError("; ".join(problems))
            ns = experiments.check_sizes(sweep.parse_numbers(sizes, "Dataset sizes n"))
        except LLCInputError as err:
            common.show_error(err)
        else:
            config.sampler = SamplerConfig(
                step_size=step_size, localization=float(gamma), chains=int(chains), steps=int(steps),
                burnin=config.sampler.burnin, batch_size=int(batch), seed=config.sampler.seed)

            def work(report, stop, config=config, ns=ns):
                return experiments.compare_samplers(config, ns, on_row=lambda r: report("item", r), stop=stop)

            start("compare", jobs.Job(work, name="llc-compare"), total=2 * len(ns))
    live("compare", draw_compare)


# ====================================================================== the page


st.title("Calibrate ε and γ")
st.caption(
    "A sweep runs a grid of step sizes ε × localizations γ for the sidebar's model (small models as one "
    "batched computation, each cell a group of chains) and recommends the cell whose MALA acceptance lies "
    "in 0.90–0.95 (higher for models under 20 parameters, whose few directions each take more of the "
    "rejection) with a flat loss trace, no divergence and λ̂ ≥ 0, at the smallest γ and, among those, the "
    "largest ε (docs/METHOD.md §2-3). `python -m llc_core sweep CONFIG.json` does the same from the command line.")
live_runs.reattach(PAGE, ("Run sweep", "Run experiment", "Compare"))  # a reload during a run (pages/live_runs.py)
with st.sidebar:
    model_values = sidebar_model()

sweep_section, rescale_section, compare_section = st.tabs(["Sweep ε × γ", "Rescaling invariance", "SGLD vs MALA"])
with sweep_section:
    sweep_tab(model_values)
with rescale_section:
    rescaling_tab()
with compare_section:
    compare_tab(model_values)
