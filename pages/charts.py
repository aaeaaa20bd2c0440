"""The charts of a run: the loss trace per chain, the running λ̂ and the MALA acceptance.

Each chart is a Vega-Lite spec built with Altair once per run, since its layout, scales, burn-in
shading, theory lines and the previous run's curve do not change while the run goes on, and filled
with the run's latest history, as named datasets, at every redraw. Building the three Altair charts
and converting them to specs took ~150 ms of CPU per redraw (schema wrapping and validation),
holding the GIL 2.5 times a second against the worker thread that samples; filling the cached specs
takes a few milliseconds. The spec's text also stays the same from one redraw to the next, so the
browser gives the chart on screen new data instead of building a new chart.

The functions here return spec dicts for `st.vega_lite_chart` and make no `st.*` calls.
"""

from __future__ import annotations

import functools
import json
import math
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from llc_core import defaults as engine_defaults
from llc_core.execution import Progress

MAX_CHAINS_DRAWN = 16  # per-chain lines beyond this clutter the charts without telling more
MAX_POINTS = 300  # points per chain and line: a ~650 px wide chart shows no more
# Heights of the plot areas (the data rectangle, axes and titles come on top: `_to_spec` sizes the charts
# with Vega-Lite's "fit-x", so a chart is as wide as its column and exactly this tall inside its axes):
# readable on a 1024×768 projector, where a whole-chart height of 230 px left ~100 px of plot.
PLOT_HEIGHT = 240
LLC_PLOT_HEIGHT = 260
FIT_WIDTH = {"type": "fit-x", "contains": "padding"}

Spec = dict[str, Any]


# ====================================================================== data


def thin_rows(count: int, most: int = MAX_POINTS) -> np.ndarray:
    """Indices of at most `most` (+ 1) of `count` rows: every k-th, k a power of 2 so that a row kept
    stays kept as rows arrive, and always the last row, so that the lines reach the current step."""
    stride = 1
    while count > stride * most:
        stride *= 2
    rows = np.arange(0, count, stride)
    if count and rows[-1] != count - 1:
        rows = np.append(rows, count - 1)
    return rows


def _chain_columns(matrix: np.ndarray) -> list[int]:
    return list(range(min(matrix.shape[1], MAX_CHAINS_DRAWN))) if matrix.ndim == 2 else []


def _long_frame(steps: np.ndarray, matrix: np.ndarray, value: str) -> pd.DataFrame:
    """(rows × chains) → long frame step, chain, value; non-finite entries dropped."""
    chains = _chain_columns(matrix)
    if not len(steps) or not chains:
        return pd.DataFrame({"step": [], "chain": [], value: []})
    frame = pd.DataFrame({
        "step": np.repeat(steps, len(chains)),
        "chain": np.tile([f"chain {c}" for c in chains], len(steps)),
        value: matrix[:, chains].ravel(),
    })
    return frame[np.isfinite(frame[value])]


def _mean_band(steps: np.ndarray, llc: np.ndarray) -> pd.DataFrame:
    """Per row: the mean λ̂ over the chains with a finite value, ± its standard error across them."""
    if llc.ndim != 2 or not len(steps):
        return pd.DataFrame({"step": [], "llc": [], "low": [], "high": []})
    finite = np.isfinite(llc)
    count = finite.sum(axis=1)
    rows = count > 0
    steps, llc, finite, count = steps[rows], llc[rows], finite[rows], count[rows]
    values = np.where(finite, llc, 0.0)
    mean = values.sum(axis=1) / count
    squares = np.where(finite, (llc - mean[:, None]) ** 2, 0.0).sum(axis=1)
    several = count > 1
    se = np.zeros(len(count))
    se[several] = np.sqrt(squares[several] / (count[several] - 1)) / np.sqrt(count[several])
    return pd.DataFrame({"step": steps, "llc": mean, "low": mean - se, "high": mean + se})


def _thinned(progress: Progress) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The history's step, loss, λ̂ and acceptance arrays, thinned to at most MAX_POINTS rows."""
    rows = thin_rows(len(progress.history_step))
    return (progress.history_step[rows], progress.history_loss[rows], progress.history_llc[rows],
            progress.history_acceptance[rows])


# ====================================================================== specs built once


def _burnin_layer(burnin: int) -> alt.Chart:
    return alt.Chart(alt.InlineData(values=[{"start": 0, "end": burnin, "phase": "burn-in"}])).mark_rect(
        color="#9e9e9e", opacity=0.18).encode(x="start:Q", x2="end:Q", tooltip=["phase:N"])


def _x(total_steps: int) -> alt.X:
    return alt.X("step:Q", title="step", scale=alt.Scale(domain=[0, max(total_steps, 1)], nice=False),
                 axis=alt.Axis(format=",~r", tickCount=6))


def _to_spec(chart: alt.TopLevelMixin) -> str:
    """Altair chart → Vega-Lite spec (JSON text), as st.altair_chart would send it. Its "datasets"
    hold the inline data (Altair moves it there); the functions below add the history's.

    The charts here set no config of their own: a config in the spec is the one Altair's default
    theme adds, which st.altair_chart leaves out (it draws under the "none" theme).
    """
    spec = chart.to_dict()
    default_theme = alt.theme.get()() if alt.theme.active == "default" else {}
    if "config" in spec and spec["config"] == default_theme.get("config"):
        del spec["config"]
    spec["autosize"] = FIT_WIDTH  # the column's width, and the plot area exactly `height` tall
    return json.dumps(spec)


@functools.lru_cache(maxsize=64)
def _loss_spec(burnin: int, total_steps: int) -> str:
    lines = alt.Chart(alt.NamedData(name="loss")).mark_line(strokeWidth=1).encode(
        x=_x(total_steps), y=alt.Y("loss:Q", title="minibatch loss L_B(w)", scale=alt.Scale(zero=False)),
        color=alt.Color("chain:N", legend=None), tooltip=["chain:N", "step:Q", alt.Tooltip("loss:Q", format=".4g")])
    chart = alt.layer(_burnin_layer(burnin), lines).properties(height=PLOT_HEIGHT, title="Loss per chain")
    return _to_spec(chart)


@functools.lru_cache(maxsize=64)
def _llc_spec(total_steps: int, truth: float | None, target: float | None, ghost: bool) -> str:
    x = _x(total_steps)
    y = alt.Y("llc:Q", title="running λ̂", scale=alt.Scale(zero=False))
    overall = alt.NamedData(name="overall")
    layers = [
        alt.Chart(overall).mark_area(opacity=0.25, color="#1f77b4").encode(x=x, y="low:Q", y2="high:Q"),
        alt.Chart(alt.NamedData(name="chains")).mark_line(strokeWidth=1, opacity=0.5).encode(
            x=x, y=y, color=alt.Color("chain:N", legend=None),
            tooltip=["chain:N", "step:Q", alt.Tooltip("llc:Q", format=".4g")]),
        alt.Chart(overall).mark_line(strokeWidth=3, color="#1f3b73").encode(
            x=x, y=y, tooltip=["step:Q", alt.Tooltip("llc:Q", title="λ̂ (all chains)", format=".4g")]),
    ]
    if ghost:
        ghost_line = alt.Chart(alt.NamedData(name="previous")).mark_line(
            strokeWidth=2, strokeDash=[2, 2], color="#9e9e9e", clip=True)
        layers.append(ghost_line.encode(x=x, y=y, tooltip=["run:N", "step:Q", alt.Tooltip("llc:Q", format=".4g")]))
    references = []
    if truth is not None:
        references.append({"value": truth, "what": f"theory λ = {truth:.4g}"})
    if target is not None:
        references.append({"value": target, "what": f"finite-n target = {target:.4g}"})
    if references:
        layers.append(alt.Chart(alt.InlineData(values=references)).mark_rule(strokeDash=[6, 3], strokeWidth=2).encode(
            y="value:Q", color=alt.Color("what:N", title=None, scale=alt.Scale(range=["#d62728", "#ff7f0e"]),
                                         legend=alt.Legend(orient="top", direction="vertical", labelLimit=400)),
            tooltip=["what:N"]))
    chart = alt.layer(*layers).resolve_scale(color="independent").properties(height=LLC_PLOT_HEIGHT, title="Running λ̂")
    return _to_spec(chart)


@functools.lru_cache(maxsize=64)
def _acceptance_spec(total_steps: int, burnin: int, band: tuple[float, float]) -> str:
    """The y domain follows the data and the band: `acceptance_chart` sets it on each redraw."""
    low, high = band
    shaded = alt.Chart(alt.InlineData(values=[{"low": low, "high": high, "what": f"goal {band_text(band)}"}])).mark_rect(
        color="#2ca02c", opacity=0.25).encode(y="low:Q", y2="high:Q", tooltip=["what:N"])
    lines = alt.Chart(alt.NamedData(name="acceptance")).mark_line(strokeWidth=1, clip=True).encode(
        x=_x(total_steps),
        y=alt.Y("acceptance:Q", title="MALA acceptance",
                scale=alt.Scale(domain=[low, 1.0], nice=False, zero=False), axis=alt.Axis(format=".3f")),
        color=alt.Color("chain:N", legend=None),
        tooltip=["chain:N", "step:Q", alt.Tooltip("acceptance:Q", format=".4f")])
    return _to_spec(alt.layer(_burnin_layer(burnin), shaded, lines).properties(
        height=PLOT_HEIGHT, title="MALA acceptance"))


def band_text(band: tuple[float, float]) -> str:
    """0.9, 0.95 → "0.90–0.95"; 0.99, 0.995 → "0.990–0.995": as many decimals as the band needs."""
    low, high = band
    decimals = 2
    while decimals < 5 and (round(low, decimals) == round(high, decimals) or abs(round(high, decimals) - high) > 1e-9
                            or abs(round(low, decimals) - low) > 1e-9):
        decimals += 1
    return f"{low:.{decimals}f}–{high:.{decimals}f}"


def acceptance_domain(acceptance: np.ndarray, band: tuple[float, float]) -> list[float]:
    """The y range of the acceptance chart: from a little below the lower of the band and the data
    (the draws after burn-in when there are any: `acceptance` holds those rows) up to 1."""
    finite = acceptance[np.isfinite(acceptance)]
    lowest = min(band[0], float(finite.min())) if finite.size else band[0]
    return [max(0.0, lowest - 0.15 * (1.0 - lowest)), 1.0]


# ====================================================================== specs with data


def loss_chart(progress: Progress, burnin: int, total_steps: int) -> Spec:
    """Per-chain minibatch loss (mean over each snapshot window), burn-in shaded."""
    steps, loss, _, _ = _thinned(progress)
    spec = json.loads(_loss_spec(int(burnin), int(total_steps)))
    spec.setdefault("datasets", {})["loss"] = _long_frame(steps, loss, "loss")
    return spec


def llc_chart(progress: Progress, total_steps: int, truth: float | None = None, target: float | None = None,
              ghost: Progress | None = None) -> Spec:
    """Running λ̂ per chain (thin), overall (thick) with its ± SE band, theory and the previous run."""
    steps, _, llc, _ = _thinned(progress)
    show_ghost = ghost is not None and len(ghost.history_step) > 0
    spec = json.loads(_llc_spec(int(total_steps), truth, target, show_ghost))
    spec.setdefault("datasets", {}).update(overall=_mean_band(steps, llc), chains=_long_frame(steps, llc, "llc"))
    if show_ghost:
        ghost_steps, _, ghost_llc, _ = _thinned(ghost)
        spec["datasets"]["previous"] = _mean_band(ghost_steps, ghost_llc).assign(run="previous run")
    return spec


def acceptance_chart(progress: Progress, total_steps: int, burnin: int = 0,
                     band: tuple[float, float] = engine_defaults.ACCEPTANCE_TARGET) -> Spec:
    """Running MALA acceptance per chain against the model's goal band, the y axis zoomed to the band and
    to the acceptance of the draws after burn-in (burn-in's calibration has its own chart)."""
    steps, _, _, acceptance = _thinned(progress)
    frame = _long_frame(steps, acceptance, "acceptance")
    drawn = progress.history_acceptance[:, _chain_columns(progress.history_acceptance)]
    after = progress.history_step > burnin
    spec = json.loads(_acceptance_spec(int(total_steps), int(burnin), (float(band[0]), float(band[1]))))
    domain = acceptance_domain(drawn[after] if after.any() else drawn, band)  # over every row, thinned out or not
    for layer in spec["layer"]:
        if layer.get("encoding", {}).get("y", {}).get("field") == "acceptance":
            layer["encoding"]["y"]["scale"]["domain"] = domain
    spec.setdefault("datasets", {})["acceptance"] = frame
    return spec


def calibration_chart(calibration: dict[str, Any]) -> alt.VConcatChart:
    """The "auto" step size's calibration: ε tried at each calibration step (log axis) above the MALA
    acceptance it measured, with the goal as a rule; a few hundred points, drawn once."""
    steps = np.arange(1, len(calibration["trace_step_size"]) + 1)
    keep = thin_rows(len(steps))
    frame = pd.DataFrame({"calibration step": steps[keep],
                          "ε": np.asarray(calibration["trace_step_size"])[keep],
                          "acceptance": np.asarray(calibration["trace_acceptance"])[keep]})
    x = alt.X("calibration step:Q")
    step = alt.Chart(frame).mark_line().encode(
        x=x, y=alt.Y("ε:Q", scale=alt.Scale(type="log"), axis=alt.Axis(format="~e"))).properties(height=180)
    goal = alt.Chart(pd.DataFrame({"goal": [calibration["target_acceptance"]]})).mark_rule(
        strokeDash=[4, 3], color="green").encode(y="goal:Q")
    accepted = alt.Chart(frame).mark_line(color="gray", opacity=0.7).encode(
        x=x, y=alt.Y("acceptance:Q", scale=alt.Scale(domain=[0, 1]), title="MALA acceptance"))
    return alt.vconcat(step, (accepted + goal).properties(height=180))


# ====================================================================== refined LLCs (drawn once)

GROUP_LABEL_CHARS = 24  # longer group names are cut with "…" so that the y axis fits at 1024 px


def short_label(name: str, most: int = GROUP_LABEL_CHARS) -> str:
    return name if len(name) <= most else name[:most - 1] + "…"


def refined_frame(groups: list) -> pd.DataFrame:
    """One row per group (llc_core.studies.refined.GroupLLC): its label, λ̂, λ̂ ± 2 se and moving parameters;
    for a data subset also its rows, nβ and ε (its own run's)."""
    rows = []
    for g in groups:
        llc = float("nan") if g.llc_mean is None else float(g.llc_mean)
        se = 0.0 if g.llc_se is None else float(g.llc_se)
        rows.append({"label": short_label(g.name), "group": g.name, "λ̂": llc, "se": g.llc_se,
                     "low": llc - 2 * se, "high": llc + 2 * se, "moving parameters": int(g.moving_params),
                     "acceptance": g.acceptance, "rows": getattr(g, "n", None), "nβ": getattr(g, "nbeta", None),
                     "ε": getattr(g, "step_size", None), "verdicts": list(getattr(g, "verdicts", []) or [])})
    labels = [r["label"] for r in rows]
    for i, row in enumerate(rows):  # two names cut to the same label stay two bars
        if labels.count(row["label"]) > 1:
            row["label"] = f"{short_label(row['group'], GROUP_LABEL_CHARS - 4)} #{i + 1}"
    return pd.DataFrame(rows, columns=["label", "group", "λ̂", "se", "low", "high", "moving parameters", "acceptance",
                                       "rows", "nβ", "ε", "verdicts"])


def refined_chart(frame: pd.DataFrame, full_llc: float | None = None, by_data: bool = False) -> alt.LayerChart:
    """Horizontal bars of the groups' refined λ̂ with ± 2 se error bars and, when known, a rule at the
    full model's λ̂ with its label. A group without a finite λ̂ gets no bar. by_data: the groups are data
    subsets (every parameter moves, the loss is the subset's): their rows and nβ in the tooltip."""
    drawn = frame[np.isfinite(frame["λ̂"].astype(float))]
    y = alt.Y("label:N", sort=list(frame["label"]), title=None, axis=alt.Axis(labelLimit=220))
    tooltip = ["group:N", alt.Tooltip("λ̂:Q", format=".4g"), alt.Tooltip("se:Q", title="se", format=".2g")]
    tooltip += ([alt.Tooltip("rows:Q", format=","), alt.Tooltip("nβ:Q", format=".4g")] if by_data
                else [alt.Tooltip("moving parameters:Q", format=",")])
    tooltip.append(alt.Tooltip("acceptance:Q", format=".3f"))
    x = alt.X("λ̂:Q", title=("data-refined" if by_data else "refined") + " λ̂ (± 2 se)")
    layers = [
        alt.Chart(drawn).mark_bar(color="#4c78a8", opacity=0.85).encode(x=x, y=y, tooltip=tooltip),
        alt.Chart(drawn).mark_rule(color="#1f1f1f", strokeWidth=1.5).encode(x="low:Q", x2="high:Q", y=y,
                                                                             tooltip=tooltip),
    ]
    if full_llc is not None and math.isfinite(full_llc):
        full = pd.DataFrame({"value": [full_llc], "what": [f"full λ̂ = {full_llc:.4g}"]})
        rule = alt.Chart(full).mark_rule(color="#d62728", strokeDash=[6, 3], strokeWidth=2)
        layers.append(rule.encode(x="value:Q", tooltip=["what:N"]))
        # the label reads away from the nearer edge of the plot, so that it is never cut off
        ends = [0.0, full_llc, *drawn["low"].astype(float), *drawn["high"].astype(float)]
        ends = [e for e in ends if math.isfinite(e)]
        right_half = full_llc > (min(ends) + max(ends)) / 2
        layers.append(alt.Chart(full).mark_text(color="#d62728", align="right" if right_half else "left",
                                                baseline="bottom", dx=-4 if right_half else 4, dy=-4).encode(
            x="value:Q", y=alt.value(0), text="what:N"))
    height = max(220, 32 * len(frame))
    title = alt.Title("Data-refined λ̂ per subset (the loss on that subset only)" if by_data
                      else "Refined λ̂ per group (only that group moves)", offset=18)
    return alt.layer(*layers).properties(height=height, title=title)
