"""Training run page: λ̂ of every checkpoint of a training run, with one calibrated set of SGLD settings.

The checkpoints come from training a model here (a deep linear network from a small initialisation,
whose rank grows in stages, or an MLP student of a zoo teacher) or from uploads (several files or a
zip, with the data). The widgets become a TrajectoryConfig; llc_core.studies.trajectory.TrajectoryRun works
through it in a worker thread (no st.* calls there) and a fragment polls it, drawing λ̂ ± se and the
train loss against the training step as points arrive. Stop keeps every checkpoint done so far.
Stage hints (llc_core.studies.stage_hints) mark where λ̂ steps to a new level; with groups tracked (each layer or
each attention head), a group × checkpoint heatmap and lines show each group's refined λ̂ as checkpoints finish.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from llc_core import DataConfig, LLCInputError, SamplerConfig
from llc_core.config import RefineConfig
from llc_core.files import checkpoint as ckpt
from llc_core.studies import (StageHints, TrainingConfig, TrajectoryConfig, TrajectoryProgress, TrajectoryRun, stage_hints,
                              step_from_name)
from pages import common, glossary, live_runs, run_on, settings

common.require_entry_point()

PAGE = "traj"
WORKER = "traj.worker"
EXAMPLES = common.APP_DIR / "assets" / "examples"
SOURCES = {
    "dln": "Train a deep linear network (small initialisation: saddle to saddle)",
    "mlp": "Train an MLP on a teacher's data",
    "upload": "My checkpoints (files or a zip) and data",
}
GROUPINGS = {"none": "none: the whole model only", "layer": "each layer", "head": "each attention head"}
FROM_FILE = "none"  # the activation "option" of checkpoints that bring their architecture (.pt2): none given
ACTIVATIONS = {FROM_FILE: "none given (.pt2 files bring their own architecture)",
               **{name: name for name in ckpt.ACTIVATIONS}}
LOSSES = ["gaussian", "cross_entropy", "next_token"]


def key(name: str) -> str:
    return common.ensure_widget(PAGE, name, DEFAULTS.get(name))


# what a reload during a run takes back with it (pages/live_runs.py): the files the run reads and the settings
KEPT = ("traj.dir", "traj.paths", "traj.data_path", "traj.labels", "traj.upload_ids", "traj.data_id",
        *(common.widget_key(PAGE, name) for name in ("source", "train_steps", "keep", "seed", "chains", "steps",
                                                     "localization", "step_size", "activation", "loss", "groups")))
DEFAULTS = {"source": "dln", "train_steps": 500, "keep": 21, "seed": 0, "chains": 4, "steps": 1000,
            "localization": 10.0, "step_size": None, "activation": "identity", "loss": "gaussian", "groups": "none"}


def session_dir() -> Path:
    return Path(common.session_folder("llc-trajectory-", "traj.dir"))


def examples() -> list[dict]:
    """The example training runs (assets/examples/examples.json, scripts/make_examples.py)."""
    try:
        return json.loads((EXAMPLES / "examples.json").read_text())["trajectory"]
    except (OSError, ValueError, KeyError):
        return []


def load_example(example: dict) -> None:
    """Button callback: an example training run's checkpoints, data, loss and activation (none for a .pt2)."""
    st.session_state["traj.paths"] = [str(EXAMPLES / example["checkpoints"])]
    st.session_state["traj.data_path"] = str(EXAMPLES / example["data"])
    st.session_state["traj.labels"] = f"{example['checkpoints']} + {example['data']} (example)"
    st.session_state[common.widget_key(PAGE, "source")] = "upload"
    st.session_state[common.widget_key(PAGE, "activation")] = example.get("activation", FROM_FILE)
    st.session_state[common.widget_key(PAGE, "loss")] = example.get("loss", "gaussian")


def keep_uploads(uploads: list, data_upload) -> None:
    """Write uploads under fixed names in this session's folder; a checkpoint's own name only lends
    its step number (the last number in it) to the name written."""
    folder = session_dir()
    if uploads:
        ids = [u.file_id for u in uploads]
        if ids != st.session_state.get("traj.upload_ids"):
            paths = []
            for i, upload in enumerate(uploads):
                path = folder / f"ckpt_{i:03d}_step_{step_from_name(upload.name, i)}.upload"
                path.write_bytes(upload.getvalue())
                paths.append(str(path))
            st.session_state.update({"traj.upload_ids": ids, "traj.paths": paths,
                                     "traj.labels": f"{len(uploads)} uploaded file(s)"})
    if data_upload is not None and data_upload.file_id != st.session_state.get("traj.data_id"):
        path = folder / "data.upload"
        path.write_bytes(data_upload.getvalue())
        st.session_state.update({"traj.data_id": data_upload.file_id, "traj.data_path": str(path)})


def source_settings(source: str) -> tuple[TrainingConfig | None, dict]:
    """The training run, or the uploads' paths, architecture and data settings."""
    if source in ("dln", "mlp"):
        cols = st.columns(3)
        steps = cols[0].number_input("Training steps", min_value=1, max_value=100_000, step=100, key=key("train_steps"))
        keep = cols[1].number_input("Checkpoints kept", min_value=2, max_value=200, step=1, key=key("keep"))
        seed = cols[2].number_input("Seed", min_value=0, step=1, key=key("seed"))
        st.caption("DLN: widths 6-4-4-6, teacher singular values 3, 1.5, 0.75, weights N(0, 0.05²), gradient "
                   "descent; each teacher mode is learned in its own stage." if source == "dln" else
                   "MLP: a 4-16-1 ReLU student of the zoo's 4-8-1 ReLU teacher, Adam.")
        return TrainingConfig(task=source, steps=int(steps), checkpoints=int(keep), seed=int(seed)), {}
    shown = examples()
    if shown:
        pick, button = st.columns([3, 1], vertical_alignment="bottom")
        names = [e["name"] for e in shown]
        chosen = pick.selectbox("Example training run", names, key="traj.example_name")
        example = shown[names.index(chosen)]
        button.button("Load example training run", on_click=load_example, args=(example,), key="traj.example")
        st.caption(example.get("about", ""))
    left, right = st.columns(2)
    uploads = left.file_uploader("Checkpoints of one architecture (.safetensors, .pt, .pt2), or a .zip of them",
                                 type=["safetensors", "pt", "pth", "bin", "pt2", "zip"], accept_multiple_files=True,
                                 key="traj.uploads")
    data_upload = right.file_uploader("Data (.npz, .safetensors, .pt, .csv)", type=["npz", "safetensors", "pt", "csv"],
                                      key="traj.data_upload")
    keep_uploads(uploads, data_upload)
    if st.session_state.get("traj.labels"):
        st.caption(f"Using {st.session_state['traj.labels']}")  # a count or the example's names: no user text
    cols = st.columns(2)
    activation = cols[0].selectbox("Activation between Linear layers (state dicts)", list(ACTIVATIONS),
                                   format_func=ACTIVATIONS.get, key=key("activation"),
                                   help="For state dicts, whose architecture is inferred as a stack of Linear layers. "
                                        "Checkpoints that are torch.export programs (.pt2) bring their own: none given.")
    loss = cols[1].radio("Loss", LOSSES, key=key("loss"), horizontal=True,
                         help="next_token: a `tokens` array of sequences, each predicting its next token.")
    return None, {"paths": st.session_state.get("traj.paths"), "data_path": st.session_state.get("traj.data_path"),
                  "activation": None if activation == FROM_FILE else activation, "loss": loss}


def sampler_settings() -> SamplerConfig:
    cols = st.columns(4)
    chains = cols[0].number_input("Chains", min_value=1, max_value=64, step=1, key=key("chains"),
                                  help=glossary.help_text("chains"))
    # short labels: a label that wraps pushes its box below its neighbours' at 1024 px
    steps = cols[1].number_input("SGLD steps", min_value=2, max_value=10**6, step=100, key=key("steps"),
                                 help="Per checkpoint. " + glossary.help_text("steps"))
    localization = cols[2].number_input("Localization γ", min_value=0.0, format="%g", key=key("localization"),
                                        help=glossary.help_text("localization"))
    step_size = cols[3].number_input("Step size ε", min_value=0.0, format="%g", key=key("step_size"),
                                     placeholder="calibrated",
                                     help="Empty: calibrated once, on the final checkpoint, and used for every "
                                          "checkpoint. " + glossary.help_text("step_size"))
    return SamplerConfig(chains=int(chains), steps=int(steps), localization=float(localization),
                         step_size=step_size or None)


def group_setting() -> RefineConfig | None:
    """Which groups to track at every checkpoint (their refined λ̂), or None for the whole model only."""
    grouping = st.selectbox("Refined LLC per group, at every checkpoint", list(GROUPINGS), format_func=GROUPINGS.get,
                            key=key("groups"),
                            help="Also estimate λ̂ of each group with only its weights moving (the rest stay at the "
                                 "checkpoint), all groups in one batched run per checkpoint with the same settings: "
                                 "about twice the time. Attention heads need a model with nn.MultiheadAttention.")
    return None if grouping == "none" else RefineConfig(groups=grouping)


def build_config(source: str) -> TrajectoryConfig | None:
    training, uploads = source_settings(source)
    sampler = sampler_settings()
    refine = group_setting()
    if training is not None:
        return TrajectoryConfig(training=training, sampler=sampler, refine=refine)
    if not uploads["paths"] or not uploads["data_path"]:
        st.info("Upload the checkpoints and the data, or load the example training run.")
        return None
    return TrajectoryConfig(checkpoint_paths=uploads["paths"], activation=uploads["activation"],
                            data=DataConfig(path=uploads["data_path"], loss=uploads["loss"]), sampler=sampler,
                            refine=refine)


def frame(progress: TrajectoryProgress) -> pd.DataFrame:
    return pd.DataFrame({
        "step": [p.step for p in progress.points],
        "checkpoint": [p.label for p in progress.points],
        "λ̂": [p.llc_mean for p in progress.points],
        "se": [p.llc_se or 0.0 for p in progress.points],
        "train loss": [p.train_loss for p in progress.points],
        "acceptance": [p.acceptance for p in progress.points],
        # the engine's verdict codes (negative_llc, still_climbing) in words: "negative λ̂", "still climbing"
        "verdicts": [glossary.verdict_labels(p.verdicts) or "–" for p in progress.points],
    })


# How the table shows each number; a missing one is a dash. The table is static (st.table): every row shown
# and long verdicts wrapped, where a data grid cut both off at 1024 px.
TABLE_FORMATS = {"λ̂": "{:.3f}", "se": "{:.3f}", "train loss": "{:.3g}", "acceptance": "{:.3f}"}


def table_view(table: pd.DataFrame):
    return table.style.format(TABLE_FORMATS, na_rep="–")


LOSS_LINEAR = 1e-3  # the symlog scale's constant: linear below it, logarithmic above


def loss_axis(losses: pd.Series) -> tuple[list[float], list[float]]:
    """The symlog loss axis's domain and tick values, so that it reads more than "0" and "6".

    The domain starts at 0 when a loss comes near it (within ten times the scale's linear part), else at the
    power of ten below the smallest loss, so that the losses fill the plot instead of its top third. Ticks
    are 1, 2, 5 × powers of ten up to the largest loss (1, 3 × or only the powers of ten when that makes
    more than 7), and 0 when the domain starts there."""
    finite = [float(v) for v in losses if pd.notna(v) and math.isfinite(v) and v > 0]
    if not finite:
        return [0.0, 1.0], [0.0]
    top, low = max(finite), min(finite)
    start = 0.0 if low < 10 * LOSS_LINEAR else 10.0 ** math.floor(math.log10(low))
    exponents = range(math.floor(math.log10(max(low, LOSS_LINEAR))), math.floor(math.log10(top)) + 1)
    for mantissas in ((1, 2, 5), (1, 3), (1,)):
        ticks = [float(f"{m * 10.0 ** e:.3g}") for e in exponents for m in mantissas if m * 10.0 ** e <= top * 1.0001]
        if len(ticks) <= 7:
            break
    return [start, top * 1.15], ([0.0] if start == 0 else []) + ticks


STAGE_COLOR = "#ff7f0e"  # a stage's level and the dashed rule where a new stage begins
TRANSITION_COLOR = "#d62728"  # a checkpoint in transition (λ̂ < 0): a red cross


def stage_frames(hints: StageHints | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each stage's level (from its first to its last step) and the boundaries between stages (half way
    between one stage's last checkpoint and the next one's first)."""
    stages = hints.stages if hints is not None else []
    levels = pd.DataFrame({"step": [s.first_step for s in stages], "until": [s.last_step for s in stages],
                           "level": [s.llc for s in stages],
                           "stage": [f"stage {i + 1}: λ̂ ≈ {s.llc:.3g} ± {s.llc_se:.2g}" + (" (plateau)" if s.plateau else "")
                                     for i, s in enumerate(stages)]})
    boundaries = pd.DataFrame({"step": [(a.last_step + b.first_step) / 2 for a, b in zip(stages, stages[1:])],
                               "stage": [f"stage {i + 2} begins" for i in range(len(stages) - 1)]})
    return levels, boundaries


def llc_chart(table: pd.DataFrame, hints: StageHints | None = None) -> alt.LayerChart:
    """λ̂ ± se (points, error bars, a line through them) against the training step, with the stage hints:
    each stage's level (an orange segment) and a dashed rule where a new stage begins.

    A checkpoint with λ̂ < 0 is no local minimum (caught between two loss plateaus, in transition): it is
    drawn as a red cross at 0 instead of stretching the axis until the plateaus' steps are invisible."""
    data = table.dropna(subset=["λ̂"]).assign(low=lambda t: t["λ̂"] - t["se"], high=lambda t: t["λ̂"] + t["se"])
    minima, others = data[data["λ̂"] >= 0], data[data["λ̂"] < 0].assign(shown=0.0)
    levels, boundaries = stage_frames(hints)
    x = alt.X("step:Q", title="training step")
    tooltip = ["checkpoint", "step", "λ̂", "se", "acceptance", "verdicts"]
    base = alt.Chart(minima).encode(x=x)
    # the same y title on every layer, or Vega joins them
    title = "λ̂ (red ×: λ̂ < 0, in transition; orange: stages)"
    return (alt.Chart(levels).mark_rule(color=STAGE_COLOR, strokeWidth=6, opacity=0.35).encode(
                x=x, x2="until:Q", y=alt.Y("level:Q", title=title), tooltip=["stage"])
            + alt.Chart(boundaries).mark_rule(color=STAGE_COLOR, strokeDash=[6, 4], strokeWidth=2).encode(
                x=x, tooltip=["stage"])
            + base.mark_line(point=True).encode(y=alt.Y("λ̂:Q", title=title), tooltip=tooltip)
            + base.mark_errorbar().encode(y=alt.Y("low:Q", title=title), y2="high:Q")
            + alt.Chart(others).mark_point(shape="cross", angle=45, color=TRANSITION_COLOR, size=90, filled=True).encode(
                x=x, y=alt.Y("shown:Q", title=title), tooltip=tooltip)).properties(height=260)


def group_names(progress: TrajectoryProgress) -> list[str]:
    """The tracked groups, in the model's order (the result's, or the first estimated checkpoint's)."""
    if progress.result is not None and progress.result.groups:
        return list(progress.result.groups)
    return next((list(p.groups) for p in progress.points if p.groups), [])


def group_frame(progress: TrajectoryProgress) -> pd.DataFrame:
    """One row per group and checkpoint: the group's refined λ̂ ± se there."""
    rows = [{"group": name, "step": p.step, "checkpoint": p.label, "λ̂": value.get("llc"), "se": value.get("se") or 0.0,
             "refined λ̂ ± se": f"{common.fmt(value.get('llc'), 3)} ± {common.fmt(value.get('se'), 2)}"}
            for p in progress.points for name, value in p.groups.items()]
    return pd.DataFrame(rows, columns=["group", "step", "checkpoint", "λ̂", "se", "refined λ̂ ± se"]).dropna(subset=["λ̂"])


def group_heatmap(data: pd.DataFrame, names: list[str]) -> alt.LayerChart:
    """Group × checkpoint: one cell per group and checkpoint, its colour the group's refined λ̂ (a red × on a
    cell whose λ̂ < 0: in transition, shown as the lowest colour)."""
    x = alt.X("step:O", title="training step (one column per checkpoint)",
              axis=alt.Axis(labelAngle=0, labelOverlap="greedy"))
    y = alt.Y("group:N", sort=names, title="group", axis=alt.Axis(labelLimit=220))
    tooltip = ["group", "checkpoint", "step", "refined λ̂ ± se"]
    cells = alt.Chart(data).mark_rect(stroke="white", strokeWidth=0.5).encode(
        x=x, y=y, tooltip=tooltip,
        color=alt.Color("λ̂:Q", title="refined λ̂", scale=alt.Scale(scheme="viridis", domainMin=0, clamp=True)))
    crosses = alt.Chart(data[data["λ̂"] < 0]).mark_text(text="×", color=TRANSITION_COLOR, fontSize=18,
                                                       fontWeight="bold").encode(x=x, y=y, tooltip=tooltip)
    return (cells + crosses).properties(height=max(120, 28 * len(names)))


LEGEND_COLUMNS = 3  # of the lines' legend: three long group names still fit beside each other at 1024 px


def group_lines(data: pd.DataFrame, names: list[str]) -> alt.LayerChart:
    """Each group's refined λ̂ ± se against the training step, one colour per group (λ̂ < 0: a cross at 0)."""
    data = data.assign(low=lambda t: t["λ̂"] - t["se"], high=lambda t: t["λ̂"] + t["se"])
    minima, others = data[data["λ̂"] >= 0], data[data["λ̂"] < 0].assign(shown=0.0)
    x = alt.X("step:Q", title="training step")
    # ten distinct colours while they last (tableau20 pairs dark and light shades of one hue)
    color = alt.Color("group:N", sort=names, scale=alt.Scale(scheme="category10" if len(names) <= 10 else "tableau20"),
                      legend=alt.Legend(orient="bottom", columns=LEGEND_COLUMNS, labelLimit=160, title="group"))
    title = "refined λ̂ (×: λ̂ < 0)"
    tooltip = ["group", "checkpoint", "step", "refined λ̂ ± se"]
    base = alt.Chart(minima).encode(x=x, color=color)
    return (base.mark_line(point=True).encode(y=alt.Y("λ̂:Q", title=title), tooltip=tooltip)
            + base.mark_errorbar().encode(y=alt.Y("low:Q", title=title), y2="high:Q")
            + alt.Chart(others).mark_point(shape="cross", angle=45, size=70, filled=True).encode(
                x=x, y=alt.Y("shown:Q", title=title), color=color, tooltip=tooltip)).properties(height=260)


def restore_group_setting(params: dict[str, str]) -> tuple[dict, list[str]]:
    """A link's tracked groups (pages/settings.py, TRAJECTORY_REFINE_SETTINGS) → the selector's value."""
    return settings.page_query_to_values(params, settings.TRAJECTORY_REFINE_SETTINGS, settings.TRAJECTORY_REFINE_WIDGETS)


def write_group_setting() -> None:
    """The tracked groups into the URL, beside the run token."""
    values = {"groups": st.session_state.get(common.widget_key(PAGE, "groups"), DEFAULTS["groups"])}
    common.remember_and_write_url(PAGE, values, settings.page_values_to_query(
        values, settings.TRAJECTORY_REFINE_SETTINGS, settings.TRAJECTORY_REFINE_WIDGETS))


REFINED_CAPTION = (
    "A refined LLC of a layer is λ̂ measured while only that layer's weights move and every other weight stays "
    "at the checkpoint: how much that layer on its own can still change without the loss growing, i.e. how much "
    "of the model's complexity it carries there. It is not a share of the full λ̂: layers work together, so the "
    "groups' values need not add up to it. Read the heatmap by columns: when a row's colour changes, that group "
    "is where the new complexity of that stage of training lives.")


def draw_groups(progress: TrajectoryProgress) -> None:
    """The tracked groups' refined λ̂: heatmap, lines, and each group's stage hints in words."""
    names = group_names(progress)
    data = group_frame(progress)
    if not names or not len(data):
        return
    st.subheader("Refined λ̂ per group")
    st.caption(REFINED_CAPTION)
    heatmap, lines = group_heatmap(data, names), group_lines(data, names)
    st.altair_chart(heatmap, width="stretch", height=int(heatmap.height) + 70)
    legend_rows = -(-len(names) // LEGEND_COLUMNS)  # the lines' legend, below the plot, and its title
    st.altair_chart(lines, width="stretch", height=int(lines.height) + 100 + 22 * legend_rows)
    words = [f"- **{common.escape_markdown(name)}**: {common.escape_markdown(stage_hints(progress.points, name).text)}"
             for name in names]
    st.markdown("**Stages of each group's refined λ̂**\n\n" + "\n".join(words))


def loss_chart(table: pd.DataFrame) -> alt.Chart:
    """The train loss L_n(w*) against the training step, on a symlog axis (`loss_axis`)."""
    domain, ticks = loss_axis(table["train loss"])
    axis = alt.Axis(values=ticks, format="~g", title="train loss L_n(w*)")
    scale = alt.Scale(type="symlog", constant=LOSS_LINEAR, domain=domain, nice=False, zero=False)
    return alt.Chart(table).mark_line(point=True, color="gray").encode(
        x=alt.X("step:Q", title="training step"),
        y=alt.Y("train loss:Q", scale=scale, axis=axis),
        tooltip=["checkpoint", "step", "train loss"]).properties(height=220)


def draw(progress: TrajectoryProgress, worker: TrajectoryRun) -> None:
    done, total = len(progress.points), progress.total
    if not progress.finished:
        left, right = st.columns([5, 1], vertical_alignment="center")
        if progress.status in ("starting", "training", "loading"):
            left.progress(0.0, text=f"{progress.status}…")
        else:
            fraction = (done + progress.step_fraction) / total if total else 0.0
            left.progress(min(fraction, 1.0), text=f"estimating: {done}/{total or '?'} checkpoints done")
        right.button("Stop", key="traj.stop", on_click=worker.request_stop, help="Stop; keep the checkpoints done so far")
    if progress.status == "failed":
        st.error(f"The run failed: {common.escape_markdown(progress.error)}")
    table = frame(progress)
    if len(table):
        hints = stage_hints(progress.points)
        # two charts, each as wide as the page: a vconcat of them would keep Vega's own width and overflow;
        # the element's height: the plot area's plus the x axis and its title (Streamlit fits the whole chart in it)
        chart = llc_chart(table, hints)
        st.altair_chart(chart, width="stretch", height=int(chart.height) + 70)
        st.caption("**Stage hints.** " + common.escape_markdown(hints.text) + " Orange: each stage's level, and a "
                   "dashed rule where a new stage begins; red ×: a checkpoint in transition (λ̂ < 0).")
        chart = loss_chart(table)
        st.altair_chart(chart, width="stretch", height=int(chart.height) + 70)
        draw_groups(progress)
    result = progress.result
    if result is not None:
        text = (f"**Every checkpoint used** ε = {result.step_size:.3g} (calibrated on "
                f"{common.escape_markdown(result.calibrated_on)}), "  # a checkpoint's file name: user text
                f"nβ = {result.nbeta:.4g}, γ = {result.localization:g}, {result.sampler['chains']} chains × "
                f"{result.sampler['steps']:,} steps.")
        if result.partial:
            st.warning(f"Stopped: {done} of {result.checkpoints_total} checkpoints done; they are kept below.")
        st.markdown(text)
        truths = result.info.get("llc_by_rank")
        if truths:
            st.caption("Aoyagi's λ of this architecture when the true function has rank r: "
                       + ", ".join(f"r = {r}: {v:g}" for r, v in truths.items())
                       + ". λ̂ at γ > 1 and a short chain sits below these; read the steps, not the levels.")
        st.download_button("Download JSON", result.to_json(), file_name="trajectory.json", mime="application/json",
                           key="traj.download")
    if len(table):
        st.table(table_view(table), hide_index=True, border="horizontal")
        st.caption("Verdicts: what the checks found at each checkpoint, most serious first (the Method page "
                   "explains each).")


st.title("LLC across a training run")
st.caption("λ̂ of every checkpoint with one set of SGLD settings, calibrated once on the final checkpoint as in "
           "the paper's ResNet experiments, so that changes in λ̂ come from the checkpoints, not the sampler. "
           "Checkpoints caught between two loss plateaus are no local minima: their λ̂ can come out negative.")

for problem in common.restore_from_url(PAGE, restore_group_setting):  # a link's tracked groups
    st.error(common.escape_markdown(problem))
live_runs.reattach(PAGE, ("Estimate every checkpoint",))  # a reload during a run (pages/live_runs.py)
source = st.radio("Checkpoints", list(SOURCES), format_func=SOURCES.get, key=key("source"))
config = None
try:
    config = run_on.attach(build_config(source), PAGE)  # this machine, or a Ray cluster (pages/run_on.py)
except LLCInputError as err:
    common.show_error(err)
write_group_setting()

worker: TrajectoryRun | None = st.session_state.get(WORKER)
running = worker is not None and worker.alive
if st.button("Estimate every checkpoint", type="primary", disabled=config is None or running, key="traj.start"):
    worker = TrajectoryRun(config).start()
    st.session_state[WORKER] = worker
    kept = {**live_runs.kept(KEPT), WORKER: worker}
    live_runs.register(PAGE, "trajectory", worker, lambda: dict(kept))
# Poll while a worker has results this page has not drawn in full; then one full rerun stops the polling.
polling = worker is not None and st.session_state.get("traj.drawn") is not worker


@st.fragment(run_every=0.5 if polling else None)
def live() -> None:
    current: TrajectoryRun | None = st.session_state.get(WORKER)
    if current is None:
        return
    progress = current.poll()
    if polling and progress.finished:
        st.session_state["traj.drawn"] = current
        live_runs.collected(PAGE, "trajectory")
        st.rerun()
    draw(progress, current)


live()
