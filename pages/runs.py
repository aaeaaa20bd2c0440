"""Runs of a page in this browser session: their records, the live panel that polls a running one,
and the result view of a finished one.

A run's worker (llc_core.execution.background.BackgroundRun) samples in a process of its own (a thread under
LLC_WORKER=thread) and never touches Streamlit; the live panel is two
fragments: one polls it every POLL_SECONDS and redraws the progress bar, the other redraws the
charts (pages/charts.py) every CHART_SECONDS from what the first one last saw.

What the live panel costs the run it watches, against the CLI, is measured by benchmarks/bench_app.py.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from llc_core import DataConfig, LLCInputError, ModelConfig, RunConfig, default_nbeta, diagnostics
from llc_core.truth import theory, zoo
from llc_core import defaults as engine_defaults
from llc_core.execution import BackgroundRun, Progress, worker_limit
from llc_core.result import RunResult
from pages import charts, live_runs
from pages.common import escape_markdown, fmt, fraction_text, widget_key
from pages.settings import model_summary

POLL_SECONDS = 0.4  # the live panel's progress bar polls the run this often
# ... and its charts redraw this often: a redraw of the three costs the browser ~150 ms of CPU
# whatever the number of points, which on a machine it shares with the run slows the run down.
# Every 2 s instead of 1 s: the browser's CPU per chain-step 24% lower and the run 6% faster
# (benchmarks/bench_app.py, interleaved, 3 repetitions on a loaded 2-core box).
CHART_SECONDS = 2.0


# ====================================================================== theory for a config


def theory_for(config: RunConfig) -> theory.Theory | None:
    """The exact λ of a config's model when it is known before the run, from llc_core.truth.theory (the
    result carries the engine's value in any case). Building the model to ask it would cost seconds
    for large networks, so the known kinds are read off directly."""
    model = config.model
    try:
        if model.kind == "potential":
            return theory.potential(model.powers or [1, 2])
        if model.kind == "dln" and model.widths:
            return theory.deep_linear_network(model.widths, min(model.widths) if model.rank is None else model.rank)
        if model.kind == "rrr" and model.input_dim and model.output_dim and isinstance(model.hidden, int):
            dims = (model.input_dim, model.hidden, model.output_dim)
            return theory.reduced_rank_regression(*dims, min(dims) if model.rank is None else model.rank)
        if model.kind == "tanh" and not isinstance(model.hidden, list):
            return theory.tanh_one_hidden(2 if model.hidden is None else model.hidden)
    except (ValueError, TypeError):
        return None
    return None


@st.cache_data(show_spinner=False, max_entries=256)
def _finite_target(model: dict, data: dict, nbeta: float | None, localization: float) -> float:
    problem = zoo.build_problem(ModelConfig(**model), DataConfig(**data))
    # L_n(w) − L_n(0) = mean(x²)/(2σ²) · K(w) for this dataset model (zoo.py), so nβ·(L_n − L_n(0))
    # is t·K with t = nβ · mean(x²) / (2σ²).
    scale = float((problem.inputs.double() ** 2).mean()) / (2 * data["noise_scale"] ** 2)
    t = (nbeta or default_nbeta(data["n"])) * scale
    return theory.finite_n_target_prior(model["powers"] or [1, 2], t, "gaussian", localization)


def finite_target_for(config: RunConfig) -> float | None:
    """For a potential: the exact t·E[K] under the posterior the sampler targets (its Gaussian
    localization γ included), i.e. what a perfect sampler's λ̂ converges to at this n."""
    localization = config.sampler.localization
    localization = engine_defaults.LOCALIZATION if localization is None else localization
    if config.model.kind != "potential" or not localization > 0:
        return None
    try:
        return _finite_target(dataclasses.asdict(config.model), dataclasses.asdict(config.data),
                              config.sampler.nbeta, float(localization))
    except (ValueError, LLCInputError):
        return None


# ====================================================================== run bookkeeping


@dataclass
class RunRecord:
    """One run of a page in this browser session: its config, worker, truth and last progress."""

    config: RunConfig
    background: BackgroundRun
    theory: theory.Theory | None
    target: float | None
    progress: Progress | None = None
    finalized: bool = False  # the page has redrawn in full after the worker finished
    # The chart specs of the progress last drawn, and what they were drawn from: a redraw with no
    # new snapshot since (a slow model, the result view's reruns) sends them again as they are.
    chart_cache: tuple[tuple, Progress | None, tuple[charts.Spec, ...]] | None = dataclasses.field(
        default=None, repr=False)

    @property
    def result(self) -> RunResult | None:
        return self.progress.result if self.progress is not None else None

    @property
    def running(self) -> bool:
        return not self.finalized


def current_run(page: str) -> RunRecord | None:
    return st.session_state.get(f"{page}.run")


def previous_run(page: str) -> RunRecord | None:
    return st.session_state.get(f"{page}.previous")


def start_run(page: str, config: RunConfig, keep: tuple[str, ...] = ()) -> RunRecord:
    """Start a worker for `config`; the finished run before it becomes the ghost to compare with.

    The run is registered under the page's run token (pages/live_runs.py): a reload re-attaches to it,
    taking along this session's values of `keep` (the files a run reads, say)."""
    state = st.session_state
    old = current_run(page)
    if old is not None:
        old.background.request_stop()
        if old.result is not None:
            state[f"{page}.previous"] = old
    record = RunRecord(config, BackgroundRun(config), theory_for(config), finite_target_for(config))
    record.background.start()
    record.progress = record.background.poll()
    state[f"{page}.run"] = record
    extra = live_runs.kept(keep)
    live_runs.register(page, "run", record.background, lambda: {
        **extra, f"{page}.run": dataclasses.replace(record, finalized=False, chart_cache=None)})
    return record


def keep_runs_alive(page: str, label: str) -> None:
    """On another page: poll this page's running worker so that it is not taken for abandoned,
    and say in the sidebar how far it is."""
    record = current_run(page)
    if record is None or record.finalized:
        return

    @st.fragment(run_every=2.0)
    def badge() -> None:
        progress = record.background.poll()
        record.progress = progress
        if progress.finished:
            st.sidebar.caption(f"{label}: run finished — open the page to see the result.")
        elif progress.latest is not None:
            st.sidebar.progress(progress.latest.step / progress.latest.total_steps,
                                text=f"{label}: running, {progress.latest.steps_per_second:.0f} steps/s")

    with st.sidebar:
        badge()


# ====================================================================== live panel and result


def run_panel(page: str) -> None:
    """The current run of `page`: progress and charts while it runs (polling fragments), then the result."""
    record = current_run(page)
    if record is None:
        st.info("Press **Run** to estimate λ̂ with the settings in the sidebar.")
        return
    if record.finalized:
        draw_result(page, record, previous_run(page))
        return

    @st.fragment(run_every=POLL_SECONDS)
    def live_progress() -> None:
        progress = record.background.poll()
        record.progress = progress
        if progress.finished:
            # A full rerun brings back the Run button and stops these fragments from polling.
            record.finalized = True
            live_runs.collected(page, "run")
            st.rerun()
        draw_progress(record)

    @st.fragment(run_every=CHART_SECONDS)
    def live_charts() -> None:
        if record.progress.latest is not None:
            draw_charts(record, previous_run(page))

    live_progress()
    live_charts()


def draw_progress(record: RunRecord) -> None:
    progress = record.progress
    latest = progress.latest
    stop_col, bar_col = st.columns([1, 6], vertical_alignment="center")
    stop_col.button("Stop", on_click=record.background.request_stop, help="End the run and keep the draws so far")
    if progress.status == "waiting":
        bar_col.progress(0.0, text=f"Waiting for a free worker: this server runs {worker_limit()} at once "
                                   "(LLC_MAX_WORKERS); yours starts when one finishes")
        return
    if latest is None:
        bar_col.progress(0.0, text="Starting: building the model and data … 0 steps/s")
        return
    if latest.calibrating:
        phase = f"calibrating ε, now {latest.step_size:.2g}" if latest.step_size else "calibrating ε"
    else:
        phase = "burn-in" if latest.step <= latest.burnin else "sampling"
    left = latest.seconds_left
    bar_col.progress(min(latest.step / latest.total_steps, 1.0),
                     text=f"Step {latest.step:,} / {latest.total_steps:,} ({phase}) · "
                          f"{latest.steps_per_second:,.0f} steps/s · {left:,.0f} s left")
    if latest.diverged:
        st.warning(f"{len(latest.diverged)} chain(s) diverged so far; λ̂ uses the healthy ones.")


def draw_charts(record: RunRecord, previous: RunRecord | None) -> None:
    """The running λ̂ across the page, the loss and the acceptance below it side by side, then how to read them."""
    ghost = previous.progress if previous is not None else None
    loss, llc, acceptance = chart_specs(record, ghost)
    st.vega_lite_chart(spec=llc, width="stretch")
    left, right = st.columns(2)
    left.vega_lite_chart(spec=loss, width="stretch")
    right.vega_lite_chart(spec=acceptance, width="stretch")
    band, num_params = acceptance_band(record)
    size = f" for this model's {num_params:,} parameters" if num_params is not None else ""
    st.caption(
        "**Reading the charts.** The running λ̂ should settle, the chains agreeing within the band; dashed lines "
        "mark the theory. After burn-in (grey) the loss should be flat: a slow upward slope means the chains "
        "have not equilibrated and λ̂ is an under-estimate. MALA acceptance inside the green band "
        f"({charts.band_text(band)}{size}) means the step size ε is about right: below it, lower ε; "
        "well above it, ε can grow."
        + (" The dotted grey line is the previous run." if ghost is not None else ""))


def acceptance_band(record: RunRecord) -> tuple[tuple[float, float], int | None]:
    """The MALA acceptance band the verdicts judge this run's model by (narrower for models under 20
    parameters, llc_core.diagnostics.acceptance_band), and the model's parameter count when known."""
    num_params = record.result.num_params if record.result is not None else None
    if num_params is None and record.config.model.kind in zoo.KINDS:
        try:
            planned = zoo.planned_size(record.config.model)
        except LLCInputError:
            planned = None
        num_params = planned[0] if planned else None
    low, _, high = diagnostics.acceptance_band(num_params)
    return (low, high), num_params


def chart_steps(record: RunRecord) -> int:
    """The x axis's length: the planned steps while the run goes on, the steps it took once it has ended
    (a run stopped at step 1,380 of 50,000 fills the chart, not a sliver of it)."""
    progress, config = record.progress, record.config
    result = progress.result
    if result is not None and result.steps_completed:
        return int(result.steps_completed)
    if progress.latest is not None:
        return int(progress.latest.total_steps)
    return int(config.sampler.steps or 1)


def chart_specs(record: RunRecord, ghost: Progress | None) -> tuple[charts.Spec, ...]:
    """The loss, λ̂ and acceptance charts of the record's progress, rebuilt only when it has moved on."""
    progress = record.progress
    drawn_from = (progress.latest.step if progress.latest else None, len(progress.history_step),
                  progress.result is not None)
    cached = record.chart_cache
    if cached is not None and cached[0] == drawn_from and cached[1] is ghost:
        return cached[2]
    total = chart_steps(record)
    burnin = progress.latest.burnin if progress.latest else 0
    truth = float(record.theory.llc) if record.theory is not None else None
    if truth is None and progress.result is not None:
        truth = progress.result.theoretical_llc
    specs = (charts.loss_chart(progress, burnin, total),
             charts.llc_chart(progress, total, truth, record.target, ghost),
             charts.acceptance_chart(progress, total, burnin, acceptance_band(record)[0]))
    record.chart_cache = (drawn_from, ghost, specs)
    return specs


SEVERITY_BOXES = {"ok": st.success, "info": st.info, "warning": st.warning, "error": st.error}


def draw_result(page: str, record: RunRecord, previous: RunRecord | None) -> None:
    progress = record.progress
    if progress.status == "failed":
        st.error(f"The run failed: {escape_markdown(progress.error)}")
        return
    result = progress.result
    if result.partial:
        st.subheader("Partial result")
        st.warning(f"Partial result: the run was stopped at step {result.steps_completed:,} of "
                   f"{record.config.sampler.steps or result.steps_completed:,}; λ̂ uses the draws taken so far.")
    else:
        st.subheader("Result")
    st.markdown(f"### λ̂ = {llc_text(result)}")
    truth = result.theoretical_llc
    cols = st.columns(5)
    cols[0].metric("theory λ", fmt(truth))
    cols[1].metric("acceptance", fmt(result.mala_acceptance_mean, 3, fixed=True),
                   help="Mean MALA acceptance: the share of Langevin moves an exact accept/reject test would keep")
    cols[2].metric("R-hat", fmt(result.rhat, 3, fixed=True))
    cols[3].metric("ESS", fmt(result.ess, 3))
    cols[4].metric("chain-steps/s", f"{result.chain_steps_per_second:,.0f}")
    st.markdown(theory_comparison(result, record))
    if result.calibration:
        st.markdown(calibration_text(result.calibration))
    if heat := heat_text(result):
        st.caption(heat)
    draw_verdicts(page, result)
    draw_charts(record, previous)
    if result.calibration:
        with st.expander("How 'auto' chose ε"):
            st.altair_chart(charts.calibration_chart(result.calibration), width="stretch")
    with st.expander("Per-chain results", expanded=False):
        st.dataframe(chain_table(result), hide_index=True)
    draw_downloads(result)
    if previous is not None and previous.result is not None:
        st.subheader("This run vs the previous run")
        st.caption("The previous run's overall λ̂ is the dotted grey line in the chart above.")
        st.dataframe(comparison_table(record, previous), hide_index=True)


def llc_text(result: RunResult) -> str:
    if result.llc_mean is None:
        return "— (no healthy chain)"
    return f"{result.llc_mean:.4g} ± {result.llc_se:.2g}" if result.llc_se is not None else f"{result.llc_mean:.4g}"


def heat_text(result: RunResult) -> str | None:
    """One line on the heat correction (docs/METHOD.md §8), or None when there is none to tell."""
    heat = result.heat_correction
    if not heat or heat.get("mean") is None or result.llc_mean is None:
        return None
    share = f" ({heat['share']:.1%} of it)" if heat.get("share") is not None else ""
    if heat.get("applied"):
        return (f"Heat correction: the finite step and the minibatch noise raised the draws' loss by "
                f"{fmt(heat['mean'], 3)}{share}; λ̂ above has it taken off (first order in ε, method §8). "
                f"Without it λ̂ would read {fmt(result.llc_mean + heat['mean'], 4)}.")
    return (f"Heat correction off: λ̂ above includes {fmt(heat['mean'], 3)}{share} of heat from the finite step and "
            "the minibatch noise (method §8).")


def calibration_text(calibration: dict) -> str:
    tuned = calibration.get("acceptance_step_size", calibration["step_size"])
    text = (f"**Step size:** 'auto' calibrated ε from {calibration['initial_step_size']:.3g} to "
            f"**{tuned:.3g}** over the first {calibration['steps']:,} burn-in steps (dual averaging towards "
            f"acceptance {calibration['target_acceptance']:.2f})")
    reasons = []
    fell = [c for c in calibration.get("acceptance_recheck") or [] if c and c["step_size_after"] < c["step_size_before"]]
    if fell:
        reasons.append(f"the acceptance fell to {fell[0]['acceptance']:.2f} as the chains spread out")
    hot = [c for c in calibration.get("minibatch_heat_cap") or [] if c and c["step_size_after"] < c["step_size_before"]]
    if hot:
        reasons.append(f"minibatch gradient noise was {hot[0]['share']:.0%} of λ̂ (more than {hot[0]['limit']:.0%})")
    if reasons:
        text += (f", then lowered it to **{calibration['step_size']:.3g}** during burn-in because "
                 + " and ".join(reasons))
    return text + "; every draw λ̂ uses was taken with ε fixed at that value."


def theory_comparison(result: RunResult, record: RunRecord) -> str:
    truth = result.theoretical_llc
    if truth is None:
        return "No closed-form λ is known for this model, so there is nothing to compare with."
    exact = record.theory.llc if record.theory is not None else truth
    m = result.multiplicity or 1
    text = f"**Theory:** λ = {fraction_text(exact)} (multiplicity m = {m})."
    if result.llc_mean is not None:
        gap = result.llc_mean - truth
        text += f" λ̂ − λ = {gap:+.3g}"
        if result.llc_se:
            text += f" ({gap / result.llc_se:+.1f} standard errors)"
        text += "."
    if record.target is not None:
        text += (f" At this n, nβ and γ a perfect sampler converges to t·E[K] = {record.target:.4g}, the exact "
                 "value for the localized posterior: at finite n it sits below λ when m > 1 or the powers "
                 "differ, and a large γ pulls it lower. The gap between λ̂ and it is the sampler's error.")
    elif m > 1:
        text += f" With m = {m} the estimate at finite n sits below λ by about (m − 1)/log(nβ)."
    return text


def draw_verdicts(page: str, result: RunResult) -> None:
    for i, verdict in enumerate(result.verdicts):
        SEVERITY_BOXES.get(verdict.severity, st.info)(verdict.message)
        for name, value in (verdict.suggestion or {}).items():
            label, value = suggestion_button(name, value)
            if label:
                st.button(label, key=f"{page}.apply.{i}.{name}", on_click=apply_setting, args=(page, name, value))


def suggestion_button(name: str, value: Any) -> tuple[str | None, Any]:
    """The label of the button that applies one suggested setting, and the value it sets."""
    if name == "step_size" and value == "auto":
        return "Use the calibrated ε (auto)", "auto"
    if name == "step_size" and isinstance(value, (int, float)):
        value = nice_number(float(value))
        return f"Use ε = {value:.2g}", value
    if name in ("batch_size", "steps") and isinstance(value, int):
        return f"Use {'batch size ' if name == 'batch_size' else ''}{value:,}{' steps' if name == 'steps' else ''}", value
    if name == "localization" and isinstance(value, (int, float)):
        return f"Use γ = {value:g}", float(value)
    return None, value


def apply_setting(page: str, name: str, value: Any) -> None:
    """Button callback: change one sidebar setting (runs before the widgets are drawn)."""
    st.session_state[widget_key(page, name)] = value


def nice_number(value: float) -> float:
    """Two significant digits, so that a suggested ε reads like 3.2e-05 rather than 3.1748e-05."""
    return float(f"{value:.2g}")


def chain_table(result: RunResult) -> pd.DataFrame:
    diverged = {d["chain"]: d for d in result.diverged_chains}
    rows = []
    for chain, (llc, acc) in enumerate(zip(result.llc_per_chain, result.mala_acceptance_per_chain)):
        status = "ok"
        if chain in diverged:
            status = f"diverged at step {diverged[chain]['step']}: {diverged[chain]['reason']}"
        rows.append({"chain": chain, "λ̂": llc, "MALA acceptance": acc, "status": status})
    return pd.DataFrame(rows)


def traces_csv(result: RunResult) -> str:
    """Per-step minibatch loss of every chain: one row per step, one column per chain."""
    trace = np.asarray(result.loss_trace or [], dtype=float)
    buffer = io.StringIO()
    if trace.size:
        frame = pd.DataFrame(trace, columns=[f"chain_{c}" for c in range(trace.shape[1])])
        frame.insert(0, "step", np.arange(len(trace)))
        frame.to_csv(buffer, index=False)
    return buffer.getvalue()


def draw_downloads(result: RunResult) -> None:
    left, right = st.columns(2)
    left.download_button("Download result (JSON)", data=result.to_json(), file_name="llc_result.json",
                         mime="application/json", on_click="ignore")
    right.download_button("Download traces (CSV)", data=lambda: traces_csv(result), file_name="llc_traces.csv",
                          mime="text/csv", on_click="ignore")


def comparison_table(current: RunRecord, previous: RunRecord) -> pd.DataFrame:
    def describe(record: RunRecord) -> dict[str, str]:
        result, config = record.result, record.config
        sampler = result.config.get("sampler", {})
        return {
            "model": f"{config.model.kind} {model_summary(config)}",
            "λ̂": llc_text(result) + (" (partial)" if result.partial else ""),
            "theory λ": fmt(result.theoretical_llc),
            "MALA acceptance": fmt(result.mala_acceptance_mean, 3, fixed=True),
            "R-hat": fmt(result.rhat, 3, fixed=True),
            "ε": fmt(result.step_size, 3) + (" (auto)" if result.calibration else ""),
            "γ": fmt(sampler.get("localization"), 3),
            "nβ": fmt(sampler.get("nbeta"), 5),
            "chains × steps": f"{sampler.get('chains')} × {result.steps_completed:,}",
            "n": f"{result.n:,}",
            "wall time": f"{result.wall_time_s:.1f} s",
        }

    now, before = describe(current), describe(previous)
    return pd.DataFrame({"": list(now), "this run": list(now.values()), "previous run": list(before.values())})
