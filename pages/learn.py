"""Learn page: the learning coefficient of a 2-D potential, as a volume exponent and as what SGLD measures.

The math lives in llc_core.classroom; this page draws it and explains it.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from llc_core import LLCInputError
from llc_core.truth import (MAX_EXPONENT, MENU, CloudSampler, CloudSettings, Potential2D, finite_target,
                                potential_grid, sublevel_band, sublevel_volume, volume_scaling)
from pages import common

common.require_entry_point()

PAGE = "learn"
CUSTOM = "custom"
TICK_SECONDS = 0.5
STEPS_PER_TICK = 300
SETTLE_STEPS = 1000  # discarded after every change of settings
WINDOW_STEPS = 3000  # λ̂ of the cloud averages the most recent steps only
MAX_TICKS = 240  # about two minutes of animation, then it pauses to spare the CPU
EXTENT = 1.5  # the pictures show [−1.5, 1.5]²; the prior box is [−1, 1]²

LEVELS = [float(f"{m}e{k}") for k in range(-6, 0) for m in (1, 2, 5)]
GAMMAS = [0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0]
STEP_SIZES = [float(f"{m}e{k}") for k in range(-6, -1) for m in (1, 2, 3, 5)] + [0.01]
NBETAS = [10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0, 30000.0, 100000.0]
DEFAULTS = {"potential": MENU[0].slug, "family": "product", "a": 1, "b": 2, "level": 1e-2,
            "gamma": 1.0, "step_size": 3e-4, "nbeta": 1000.0}
SLIDERS = {"level": LEVELS, "gamma": GAMMAS, "step_size": STEP_SIZES, "nbeta": NBETAS}


# ---------------------------------------------------------------------- settings and URL


def parse_query(params: dict[str, str]) -> tuple[dict, list[str]]:
    """URL → widget values (potential=FAMILY-a-b, level, gamma, step_size, nbeta)."""
    values, problems = dict(DEFAULTS), []
    if "potential" in params:
        try:
            potential = Potential2D.from_slug(params["potential"])
            menu = [p.slug for p in MENU]
            values["potential"] = potential.slug if potential.slug in menu else CUSTOM
            values.update(family=potential.family, a=potential.a, b=potential.b)
        except LLCInputError as err:
            problems.append(f"URL: {err}; showing {MENU[0].label} instead")
    for name, options in SLIDERS.items():
        if name in params:
            try:
                number = float(params[name])
                if not options[0] <= number <= options[-1]:
                    raise ValueError
                values[name] = min(options, key=lambda o: abs(np.log((o + 1e-12) / (number + 1e-12))))
            except ValueError:
                problems.append(f"URL: {name} = {params[name]!r} must be a number between {options[0]:g} and "
                                f"{options[-1]:g}; using {DEFAULTS[name]:g}")
    return values, problems


def key(name: str) -> str:
    return common.ensure_widget(PAGE, name, DEFAULTS[name])


def choose_potential() -> Potential2D:
    menu = {p.slug: p for p in MENU}
    choice = st.selectbox("Potential K(w1, w2)", [*menu, CUSTOM], key=key("potential"),
                          format_func=lambda s: f"K = {menu[s].label}" if s in menu else "custom exponents …")
    if choice in menu:
        return menu[choice]
    left, mid, right = st.columns(3)
    family = left.selectbox("Form", ["product", "sum"], key=key("family"),
                            format_func=lambda f: "w1^2a · w2^2b" if f == "product" else "w1^2a + w2^2b")
    a = mid.number_input("a", min_value=0, max_value=MAX_EXPONENT, step=1, key=key("a"))
    b = right.number_input("b", min_value=0, max_value=MAX_EXPONENT, step=1, key=key("b"))
    try:
        return Potential2D(family, int(a), int(b))
    except LLCInputError as err:
        st.error(f"{common.escape_markdown(err)}. Showing {MENU[0].label} instead.")
        return MENU[0]


def slider_text(value: float) -> str:
    """One format for every slider and axis of the page: 3e-4 below 0.001, 0.01 or 1 up to 1,000, 3,000 above."""
    if value == 0:
        return "0"
    if abs(value) < 1e-3:
        mantissa, exponent = f"{value:.0e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:g}"


def log_slider(label: str, name: str, help_text: str) -> float:
    return st.select_slider(label, options=SLIDERS[name], key=key(name), help=help_text, format_func=slider_text)


@st.cache_data(show_spinner=False, max_entries=512)
def cached_target(slug: str, nbeta: float, localization: float | None) -> float | None:
    return finite_target(Potential2D.from_slug(slug), nbeta, localization)


# ---------------------------------------------------------------------- charts

# Pictures of the plane are square, PLOT_SIZE px inside their axes (autosize "pad": Streamlit would
# otherwise squeeze a whole chart, legend included, into its column and the square into a strip);
# with the axes they fit a column of 1024×768's main area.
PLOT_SIZE = 240
CLOUD_SIZE = 200
TICKS = [-1.0, -0.5, 0.0, 0.5, 1.0]  # the box's corners and middle: readable at 200 px
SQUARE = {"type": "pad", "contains": "padding"}
# powers of ten for log axes, labelled in one format (1e-8 … 1e-2, never 1e-8 beside 0.000001)
DECADES = [10.0 ** k for k in range(-12, 4)]


def log_axis(values: np.ndarray, title: str, exponent: bool) -> alt.Axis:
    low, high = float(np.min(values)), float(np.max(values))
    ticks = [d for d in DECADES if low / 1.001 <= d <= high * 1.001]
    return alt.Axis(title=title, values=ticks, format="~e" if exponent else "~g", grid=True)


def landscape_layers(potential: Potential2D, resolution: int, legend: bool = True) -> list[alt.Chart]:
    """Heatmap of log10 K and the prior box; only the columns drawn are sent (the live chart is
    resent a few times a second)."""
    grid = potential_grid(potential, EXTENT, resolution)
    half = grid["cell"][0] / 2
    cells = pd.DataFrame({"x": grid["w1"] - half, "x2": grid["w1"] + half, "y": grid["w2"] - half,
                          "y2": grid["w2"] + half, "log10K": grid["log10K"]}).round(3)
    scale = alt.Scale(domain=[-EXTENT, EXTENT], nice=False)
    shown = alt.Legend(orient="bottom", direction="horizontal", gradientLength=180, title="log10 K") if legend else None
    axis = alt.Axis(values=TICKS, format="~g")
    heat = alt.Chart(cells).mark_rect().encode(
        x=alt.X("x:Q", title="w1", scale=scale, axis=axis), x2="x2:Q",
        y=alt.Y("y:Q", title="w2", scale=scale, axis=axis), y2="y2:Q",
        color=alt.Color("log10K:Q", scale=alt.Scale(scheme="blues", reverse=True), legend=shown),
        tooltip=[alt.Tooltip("log10K:Q", format=".2f")])
    box = alt.Chart(pd.DataFrame({"x": [-1.0], "x2": [1.0], "y": [-1.0], "y2": [1.0]})).mark_rect(
        fill=None, stroke="#333333", strokeDash=[4, 3]).encode(x="x:Q", x2="x2:Q", y="y:Q", y2="y2:Q")
    return [heat, box]


def contour_chart(potential: Potential2D, level: float) -> alt.LayerChart:
    band = pd.DataFrame(sublevel_band(potential, level))
    shaded = alt.Chart(band).mark_area(color="#d62728", opacity=0.45).encode(
        x="w1:Q", y="lower:Q", y2="upper:Q")
    return alt.layer(*landscape_layers(potential, 41), shaded).properties(
        width=PLOT_SIZE, height=PLOT_SIZE, autosize=SQUARE)


def volume_chart(potential: Potential2D, level: float) -> tuple[alt.LayerChart, object]:
    fit = volume_scaling(potential)
    lam = float(potential.theory.llc)
    points = pd.DataFrame({"δ": fit.levels, "V(δ)": fit.volumes})
    middle = len(fit.levels) // 2
    anchor_e, anchor_v = fit.levels[middle], fit.volumes[middle]
    lines = pd.DataFrame({
        "δ": np.concatenate([fit.levels, fit.levels]),
        "V(δ)": np.concatenate([np.exp(fit.intercept) * fit.levels ** fit.slope,
                                anchor_v * (fit.levels / anchor_e) ** lam]),
        "line": [f"fitted slope {fit.slope:.3f}"] * len(fit.levels) + [f"slope λ = {lam:.3g}"] * len(fit.levels),
    })
    log = alt.Scale(type="log")
    dots = alt.Chart(points).mark_circle(size=45, color="#1f3b73").encode(
        x=alt.X("δ:Q", scale=log, axis=log_axis(fit.levels, "level δ", exponent=True)),
        y=alt.Y("V(δ):Q", scale=log, axis=log_axis(lines["V(δ)"].to_numpy(), "volume V(δ)", exponent=False)),
        tooltip=[alt.Tooltip("δ:Q", format=".1e"), alt.Tooltip("V(δ):Q", format=".3e")])
    fitted = alt.Chart(lines).mark_line(strokeDash=[5, 3]).encode(
        x="δ:Q", y="V(δ):Q", color=alt.Color("line:N", title=None, legend=alt.Legend(orient="bottom", direction="vertical")))
    here = alt.Chart(pd.DataFrame({"δ": [level], "V(δ)": [sublevel_volume(potential, level)]})).mark_point(
        shape="diamond", size=120, color="#d62728", filled=True).encode(x="δ:Q", y="V(δ):Q")
    chart = alt.layer(fitted, dots, here).properties(width=PLOT_SIZE, height=PLOT_SIZE, autosize=SQUARE,
                                                     title="V(δ) against δ, log-log")
    return chart, fit


def cloud_chart(potential: Potential2D, sampler: CloudSampler) -> alt.LayerChart:
    trail = sampler.trail().reshape(-1, 2).round(3)
    now = sampler.positions().round(3)
    scale = alt.Scale(domain=[-EXTENT, EXTENT], nice=False)
    recent = alt.Chart(pd.DataFrame({"w1": trail[:, 0], "w2": trail[:, 1]})).mark_circle(
        size=10, opacity=0.35, color="#ff7f0e", clip=True).encode(
        x=alt.X("w1:Q", scale=scale), y=alt.Y("w2:Q", scale=scale))
    current = alt.Chart(pd.DataFrame({"w1": now[:, 0], "w2": now[:, 1]})).mark_circle(
        size=60, color="#000000", clip=True).encode(x="w1:Q", y="w2:Q")
    return alt.layer(*landscape_layers(potential, 25, legend=False), recent, current).properties(
        width=CLOUD_SIZE, height=CLOUD_SIZE, autosize=SQUARE, title="chains: black now, orange recent")


# ---------------------------------------------------------------------- page


st.title("Learn: λ in two dimensions")
st.markdown(
    "Near its best weights w* = 0 a model's loss is a function K(w) ≥ 0, here of two weights (in a real model "
    "K(w) = L(w) − L(w*)). How flat K is around its zeros decides how much the data can tell: pick a "
    "landscape and follow the three steps.")

for problem in common.restore_from_url(PAGE, parse_query):
    st.error(common.escape_markdown(problem))

st.subheader("1. Sublevel sets: where K < δ")
left, right = st.columns([3, 2])
with right:
    potential = choose_potential()
    truth = potential.theory
    level = log_slider("Level δ", "level", "Shade the weights whose loss K is below δ")
    st.markdown(
        "The red region is the **sublevel set** {w : K(w) < δ} inside the box [−1, 1]² (dashed): every "
        "weight setting whose loss is within δ of the best. Darker blue means lower K.\n\n"
        "In a **regular** model such as K = w1² + w2² the minimum is a single point and the set is a small "
        "disc. In a **singular** model such as K = w1² w2⁴ the loss is zero on whole lines (here the axes), "
        "and K rises only slowly away from them, so the set stays fat as δ shrinks: many weights fit "
        "almost equally well.")
left.altair_chart(contour_chart(potential, level), width="content")

st.subheader("2. How fast the volume shrinks: λ")
left, right = st.columns([3, 2])
chart, fit = volume_chart(potential, level)
left.altair_chart(chart, width="content")
with right:
    st.metric("fitted slope", f"{fit.slope:.3f}", help="The slope of log V(δ) against log δ over the dots")
    st.metric("true learning coefficient λ", common.fraction_text(truth.llc))
    st.markdown(
        "As δ → 0 the volume of the sublevel set behaves like\n\n"
        "V(δ) ≈ c · δ^λ · (−log δ)^(m−1),\n\n"
        "so on a log-log plot V(δ) is nearly a straight line of slope **λ**, the *learning coefficient* "
        "(the real log canonical threshold), and **m** is its multiplicity. A bowl w1² + w2² is a disc of "
        "radius √δ: V = πδ, slope 1 = d/2, as for any regular model with d parameters. A smaller λ means a "
        "fatter basin: the model is effectively simpler, and its Bayesian free energy grows like "
        "n·L_n(w*) + λ·log n instead of (d/2)·log n.")
    if truth.multiplicity > 1:
        st.info(
            f"Here m = {truth.multiplicity}: V(δ) carries a factor (−log δ)^{truth.multiplicity - 1}, which "
            f"changes slowly but bends the log-log line, so over these δ the fitted slope {fit.slope:.3f} "
            f"falls short of λ = {float(truth.llc):.3g}. Fitting log V − (m − 1)·log(−log δ) instead gives "
            f"{fit.corrected_slope:.3f}.")
    else:
        st.caption("m = 1: no logarithmic factor, so the slope approaches λ directly.")

st.subheader("3. What SGLD measures")
st.markdown(
    "The estimator samples the *tempered, localized posterior* "
    "p(w) ∝ exp(−nβ·K(w) − (γ/2)·|w − w*|²) with stochastic-gradient Langevin dynamics: each step "
    "moves every chain downhill by (ε/2)·∇U and adds Gaussian noise of variance ε, ε the step size. At "
    "inverse temperature t = nβ the chains spend their time where K ≲ 1/t, and the volume law above makes "
    "t·E[K] → λ as t grows: **λ̂ = nβ · mean K(draws)**. "
    "Beside the cloud: its λ̂, the exact t·E[K] of the posterior it samples (the gap between the two is "
    "the sampler's error), and λ itself (the gap to it comes from finite n and from γ).")
gamma_col, step_col, nbeta_col = st.columns(3)
gamma = gamma_col.select_slider("Localization γ", options=SLIDERS["gamma"], key=key("gamma"), format_func=slider_text,
                                help="Pull towards w* = 0: a larger γ tightens the cloud")
with step_col:
    step_size = log_slider("Step size ε", "step_size",
                           "SGLD's step: larger steps move faster but are biased; too large and the chains blow up")
with nbeta_col:
    nbeta = log_slider("Inverse temperature nβ", "nbeta", "nβ = n / log n for n samples: larger means more data")
animate_col, reset_col = st.columns(2)
animate = animate_col.toggle("Animate", value=True, key=f"{PAGE}.animate")
reset = reset_col.button("Restart the chains")
st.caption("Try: raise γ: the cloud tightens and λ̂ falls below λ, and so does the exact value, so it is "
           "the posterior that changed, not the sampler. Raise the step size: λ̂ drifts away from the "
           "exact value, and at some point the chains blow up. Raise nβ: the cloud hugs the zero set of K.")

common.remember_and_write_url(PAGE, {
    "potential": st.session_state[common.widget_key(PAGE, "potential")],
    "family": potential.family, "a": potential.a, "b": potential.b,
    "level": level, "gamma": gamma, "step_size": step_size, "nbeta": nbeta,
}, {"potential": potential.slug, "level": repr(level), "gamma": repr(gamma),
    "step_size": repr(step_size), "nbeta": repr(nbeta)})

state = st.session_state
sampler = state.get(f"{PAGE}.sampler")
if reset or sampler is None or sampler.potential != potential:
    sampler = CloudSampler(potential, settle_steps=SETTLE_STEPS, window=WINDOW_STEPS)
    state[f"{PAGE}.sampler"] = sampler
    state[f"{PAGE}.ticks"] = 0
settings = CloudSettings(nbeta=nbeta, localization=gamma, step_size=step_size)
if settings != sampler.settings:
    state[f"{PAGE}.ticks"] = 0  # new settings: animate again for a while
playing = animate and state.get(f"{PAGE}.ticks", 0) < MAX_TICKS


def cloud_numbers(stats: object) -> None:
    """Beside the cloud: its λ̂ (or that it diverged), the exact t·E[K], λ, and how the sampler is doing."""
    if stats.blow_ups:
        st.metric("λ̂ of the cloud", "diverged",
                  help="Chains blew up under these settings and were put back at w*: their K says nothing about λ")
    elif stats.llc is None:
        st.metric("λ̂ of the cloud", "settling …", help=f"{stats.settling} steps to go before counting")
    else:
        st.metric("λ̂ of the cloud", f"{stats.llc:.3f} ± {stats.llc_se:.3f}",
                  help=f"nβ · mean K over the last {stats.draws:,} steps × {sampler.chains} chains")
    st.metric("exact t·E[K]", common.fmt(target, 3, fixed=True),
              help="Of this posterior: what a perfect sampler's λ̂ converges to at these nβ and γ; the gap to "
                   "λ̂ is the sampler's own error (step size, too few steps)")
    st.metric("λ", common.fraction_text(truth.llc))
    if target is None:
        st.caption("With γ = 0 this posterior has infinite mass along the axes, where K = 0: nothing "
                   "holds the chains, and they wander off. That is why the estimator localizes.")
    st.caption(f"SLT's finite-n target (flat prior on the box, no γ) at n/log n = nβ: {box_target:.3f}")
    acceptance = common.fmt(stats.acceptance, 3, fixed=True)
    st.caption(f"MALA acceptance {acceptance} · {sampler.steps_done:,} steps so far")
    if stats.blow_ups:
        st.error(f"{stats.blow_ups} chain restart(s): the step size is too large for this nβ, so chains "
                 "shot off to infinity and were put back at w*. Lower the step size.")
    if not playing and animate:
        st.caption("Paused after two minutes to spare the CPU: move a slider or restart to continue.")


@st.fragment(run_every=TICK_SECONDS if playing else None)
def live_cloud() -> None:
    if playing or sampler.steps_done == 0:
        stats = sampler.advance(STEPS_PER_TICK, settings)
        state[f"{PAGE}.ticks"] = state.get(f"{PAGE}.ticks", 0) + 1
        if state[f"{PAGE}.ticks"] >= MAX_TICKS and playing:
            st.rerun()  # a full rerun turns the timer off
    else:
        stats = sampler.stats()
    picture, numbers = st.columns(2)
    picture.altair_chart(cloud_chart(potential, sampler), width="content")
    with numbers:
        cloud_numbers(stats)


target = cached_target(potential.slug, nbeta, gamma)
box_target = cached_target(potential.slug, nbeta, None)
live_cloud()
