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
CHART_SIZE = 360

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


def log_slider(label: str, name: str, help_text: str, digits: int = 2) -> float:
    return st.select_slider(label, options=SLIDERS[name], key=key(name), help=help_text,
                            format_func=lambda v: f"{v:.{digits}g}")


@st.cache_data(show_spinner=False, max_entries=512)
def cached_target(slug: str, nbeta: float, localization: float | None) -> float | None:
    return finite_target(Potential2D.from_slug(slug), nbeta, localization)


# ---------------------------------------------------------------------- charts


def landscape_layers(potential: Potential2D, resolution: int) -> list[alt.Chart]:
    """Heatmap of log10 K and the prior box; only the columns drawn are sent (the live chart is
    resent a few times a second)."""
    grid = potential_grid(potential, EXTENT, resolution)
    half = grid["cell"][0] / 2
    cells = pd.DataFrame({"x": grid["w1"] - half, "x2": grid["w1"] + half, "y": grid["w2"] - half,
                          "y2": grid["w2"] + half, "log10K": grid["log10K"]}).round(3)
    scale = alt.Scale(domain=[-EXTENT, EXTENT], nice=False)
    heat = alt.Chart(cells).mark_rect().encode(
        x=alt.X("x:Q", title="w1", scale=scale), x2="x2:Q", y=alt.Y("y:Q", title="w2", scale=scale), y2="y2:Q",
        color=alt.Color("log10K:Q", title="log10 K", scale=alt.Scale(scheme="blues", reverse=True)),
        tooltip=[alt.Tooltip("log10K:Q", format=".2f")])
    box = alt.Chart(pd.DataFrame({"x": [-1.0], "x2": [1.0], "y": [-1.0], "y2": [1.0]})).mark_rect(
        fill=None, stroke="#333333", strokeDash=[4, 3]).encode(x="x:Q", x2="x2:Q", y="y:Q", y2="y2:Q")
    return [heat, box]


def contour_chart(potential: Potential2D, level: float) -> alt.LayerChart:
    band = pd.DataFrame(sublevel_band(potential, level))
    shaded = alt.Chart(band).mark_area(color="#d62728", opacity=0.45).encode(
        x="w1:Q", y="lower:Q", y2="upper:Q")
    return alt.layer(*landscape_layers(potential, 41), shaded).properties(
        width=CHART_SIZE, height=CHART_SIZE, title=f"K = {potential.label}; red: {{K < {level:.2g}}} in the box")


def volume_chart(potential: Potential2D, level: float) -> tuple[alt.LayerChart, object]:
    fit = volume_scaling(potential)
    lam = float(potential.theory.llc)
    points = pd.DataFrame({"ε": fit.levels, "V(ε)": fit.volumes})
    middle = len(fit.levels) // 2
    anchor_e, anchor_v = fit.levels[middle], fit.volumes[middle]
    lines = pd.DataFrame({
        "ε": np.concatenate([fit.levels, fit.levels]),
        "V(ε)": np.concatenate([np.exp(fit.intercept) * fit.levels ** fit.slope,
                                anchor_v * (fit.levels / anchor_e) ** lam]),
        "line": [f"fitted slope {fit.slope:.3f}"] * len(fit.levels) + [f"slope λ = {lam:.3g}"] * len(fit.levels),
    })
    log = alt.Scale(type="log")
    dots = alt.Chart(points).mark_circle(size=45, color="#1f3b73").encode(
        x=alt.X("ε:Q", scale=log, title="level ε"), y=alt.Y("V(ε):Q", scale=log, title="volume V(ε)"),
        tooltip=[alt.Tooltip("ε:Q", format=".1e"), alt.Tooltip("V(ε):Q", format=".3e")])
    fitted = alt.Chart(lines).mark_line(strokeDash=[5, 3]).encode(
        x="ε:Q", y="V(ε):Q", color=alt.Color("line:N", title=None, legend=alt.Legend(orient="bottom")))
    here = alt.Chart(pd.DataFrame({"ε": [level], "V(ε)": [sublevel_volume(potential, level)]})).mark_point(
        shape="diamond", size=120, color="#d62728", filled=True).encode(x="ε:Q", y="V(ε):Q")
    chart = alt.layer(fitted, dots, here).properties(width=CHART_SIZE, height=CHART_SIZE,
                                                     title="log-log: V(ε) against ε")
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
    return alt.layer(*landscape_layers(potential, 25), recent, current).properties(
        width=CHART_SIZE, height=CHART_SIZE, title="SGLD chains (black: now; orange: recent draws)")


# ---------------------------------------------------------------------- page


st.title("Learn: the learning coefficient in two dimensions")
st.markdown(
    "A model's loss near its best weights w* decides how much the data can tell about it. Here the "
    "*loss landscape* is an explicit function K(w) ≥ 0 of two weights with K(w*) = 0 at w* = 0: in a "
    "real model K(w) is the expected loss L(w) − L(w*). Pick a landscape, then follow the three steps.")

for problem in common.restore_from_url(PAGE, parse_query):
    st.error(common.escape_markdown(problem))

potential = choose_potential()
truth = potential.theory

st.header("1. Sublevel sets")
left, right = st.columns([3, 2])
with right:
    level = log_slider("Level ε", "level", "Shade the weights whose loss is below ε")
    st.markdown(
        "The red region is the **sublevel set** {w : K(w) < ε} inside the box [−1, 1]² (dashed): every "
        "weight setting whose loss is within ε of the best. Darker blue means lower K.\n\n"
        "In a **regular** model such as K = w1² + w2² the minimum is a single point and the set is a small "
        "disc. In a **singular** model such as K = w1² w2⁴ the loss is zero on whole lines (here the axes), "
        "and K rises only slowly away from them, so the set stays fat as ε shrinks: many weights fit "
        "almost equally well.")
left.altair_chart(contour_chart(potential, level))

st.header("2. How fast the volume shrinks: λ")
left, right = st.columns([3, 2])
chart, fit = volume_chart(potential, level)
left.altair_chart(chart)
with right:
    st.metric("fitted slope of log V against log ε", f"{fit.slope:.3f}")
    st.metric("true learning coefficient λ", common.fraction_text(truth.llc))
    st.markdown(
        "As ε → 0 the volume of the sublevel set behaves like\n\n"
        "V(ε) ≈ c · ε^λ · (−log ε)^(m−1),\n\n"
        "so on a log-log plot V(ε) is nearly a straight line of slope **λ**, the *learning coefficient* "
        "(the real log canonical threshold), and **m** is its multiplicity. A bowl w1² + w2² is a disc of "
        "radius √ε: V = πε, slope 1 = d/2, as for any regular model with d parameters. A smaller λ means a "
        "fatter basin: the model is effectively simpler, and its Bayesian free energy grows like "
        "n·L_n(w*) + λ·log n instead of (d/2)·log n.")
    if truth.multiplicity > 1:
        st.info(
            f"Here m = {truth.multiplicity}: V(ε) carries a factor (−log ε)^{truth.multiplicity - 1}, which "
            f"changes slowly but bends the log-log line, so over these ε the fitted slope {fit.slope:.3f} "
            f"falls short of λ = {float(truth.llc):.3g}. Fitting log V − (m − 1)·log(−log ε) instead gives "
            f"{fit.corrected_slope:.3f}.")
    else:
        st.caption("m = 1: no logarithmic factor, so the slope approaches λ directly.")

st.header("3. What SGLD measures")
st.markdown(
    "The estimator samples the *tempered, localized posterior* "
    "p(w) ∝ exp(−nβ·K(w) − (γ/2)·|w − w*|²) with stochastic-gradient Langevin dynamics: each step "
    "moves every chain downhill by (ε/2)·∇U and adds Gaussian noise of variance ε. At inverse "
    "temperature t = nβ the chains spend their time where K ≲ 1/t, and the volume law above makes "
    "t·E[K] → λ as t grows: **λ̂ = nβ · mean K(draws)**. "
    "Beside the cloud: its λ̂, the exact t·E[K] of the posterior it samples (the gap between the two is "
    "the sampler's error), and λ itself (the gap to it comes from finite n and from γ).")
controls, live_area = st.columns([2, 5])
with controls:
    gamma = log_slider("Localization γ", "gamma", "Pull towards w* = 0: a larger γ tightens the cloud", 3)
    step_size = log_slider("Step size ε (SGLD, not the level above)", "step_size",
                           "Larger steps move faster but are biased; too large and the chains blow up")
    nbeta = log_slider("Inverse temperature nβ", "nbeta", "nβ = n / log n for n samples: larger means more data")
    animate = st.toggle("Animate", value=True, key=f"{PAGE}.animate")
    reset = st.button("Restart the chains")
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


@st.fragment(run_every=TICK_SECONDS if playing else None)
def live_cloud() -> None:
    if playing or sampler.steps_done == 0:
        stats = sampler.advance(STEPS_PER_TICK, settings)
        state[f"{PAGE}.ticks"] = state.get(f"{PAGE}.ticks", 0) + 1
        if state[f"{PAGE}.ticks"] >= MAX_TICKS and playing:
            st.rerun()  # a full rerun turns the timer off
    else:
        stats = sampler.stats()
    picture, numbers = st.columns([3, 2])
    picture.altair_chart(cloud_chart(potential, sampler))
    with numbers:
        if stats.llc is None:
            st.metric("λ̂ of the cloud", "settling …", help=f"{stats.settling} steps to go before counting")
        else:
            st.metric("λ̂ of the cloud", f"{stats.llc:.3f} ± {stats.llc_se:.3f}",
                      help=f"nβ · mean K over the last {stats.draws:,} steps × {sampler.chains} chains")
        st.metric("exact t·E[K] of this posterior", common.fmt(target, 3, fixed=True),
                  help="What a perfect sampler's λ̂ converges to at these nβ and γ: the gap to λ̂ is the "
                       "sampler's own error (step size, too few steps)")
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


target = cached_target(potential.slug, nbeta, gamma)
box_target = cached_target(potential.slug, nbeta, None)
with live_area:
    live_cloud()
