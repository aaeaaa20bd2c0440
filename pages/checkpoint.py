"""Checkpoint page: bring trained weights and data (or load an example), confirm the architecture, estimate λ̂.

The page is thin: uploads are written under fixed names into a temp folder of this browser session
(a file's own name is never used as a path), the widgets become a RunConfig of model kind
"checkpoint" (llc_core/files/checkpoint.py, llc_core/files/datafiles.py), and the run and its result view are the
Estimate page's (pages/runs.py). Every problem with a file is an LLCInputError shown as st.error.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import streamlit as st
import torch

from llc_core import DataConfig, LLCInputError, ModelConfig, RunConfig, SamplerConfig, build_problem
from llc_core import defaults as engine_defaults
from llc_core.config import RefineConfig
from llc_core.execution import Job
from llc_core.refine import attention_layers, label_subsets
from llc_core.studies import data_subsets, run_groups
from llc_core.files import checkpoint as ckpt
from llc_core.files import datafiles
from llc_core.files import MAX_FILE_BYTES
from llc_core.truth import theory
from pages import charts, common, glossary, live_runs, runs, settings

common.require_entry_point()

PAGE = "ckpt"
EXAMPLES = common.APP_DIR / "assets" / "examples"
WEIGHT_TYPES = ["safetensors", "pt", "pth", "bin", "pt2", "zip"]
DATA_TYPES = ["npz", "safetensors", "pt", "csv"]
EXPORT_HELP = ("A custom architecture (convolutions, attention, normalisation, embeddings): export it once with "
               "`torch.export.save(torch.export.export(model.eval(), (x[:2],), dynamic_shapes=({0: "
               "torch.export.Dim('batch')},)), 'model.pt2')` and upload the .pt2.")
REFINE_JOB = "ckpt.refine_job"
REFINE_PLAN = "ckpt.refine_plan"  # what the job does: {"by_data": data subsets?, "count": how many}
# what a reload during a run takes back with it (pages/live_runs.py): the files the run reads and the settings
KEPT = tuple(f"{PAGE}.{name}" for name in (
    "dir", "model_path", "data_path", "model_label", "data_label", "origin", "loss", "activation", "use_spec", "spec",
    "confirmed", "target_columns", "inputs_key", "targets_key", "sigma", "teacher", "teacher_n", "teacher_seed",
    "auto_step", "chains", "steps", "step_size", "localization", "nbeta", "refine_groups", "refine_chains",
    "refine_subsets", "refine_subset_rows"))
POLL_SECONDS = 0.5
GROUPINGS = {"layer": "per layer", "head": "per attention head", "data": "per data subset"}
SUBSET_CHOICES = {"label": "each class label", "chosen": "rows I choose"}
REFINED_ABOUT = (
    "A **refined LLC** samples only one group's parameters (a layer, or one attention head) while every other "
    "parameter stays exactly at the trained w\\*. It measures the effective dimension that group adds around "
    "w\\*: how many directions of that group the loss really constrains. Refined LLCs are **not shares** of the "
    "full λ̂: parameters interact, so the groups' values need not add up to it (their sum may be larger or smaller).")
DATA_REFINED_ABOUT = (
    "A **data-refined LLC** lets every parameter move but measures the loss on one subset of the data only (one "
    "class, a range of rows), with n and nβ = n / log n of that subset: how complex the model looks to that data, "
    "i.e. how many directions around w\\* that subset's loss constrains. These are not shares either: each subset "
    "may see most of the full λ̂, or little of it. Each subset is a run of its own, and its bar appears when it "
    "finishes. λ̂ assumes w\\* is a minimum of the subset's loss too; where it is not (a single class's rows often "
    "pull towards more confident predictions), λ̂ comes out negative and the table's verdicts say so.")
SUBSET_ROWS_HELP = (
    "A JSON object, subset name → its rows, in one of these forms: {\"range\": [0, 500]} (rows 0 … 499), "
    "{\"indices\": [3, 8, 12]}, {\"label\": 3} (rows whose target is 3), {\"tokens\": [5, 7]} (sequences "
    "that contain token 5 or 7), {\"column\": 0, \"value\": 1.0} (rows whose input column 0 is 1.0). "
    "Subsets may overlap; each needs at least 2 rows.")
# what the page guesses from the files (the loss from the targets, the target columns from the model's widths)
GUESSED = ("loss", "target_columns", "inputs_key", "targets_key")
LOSS_LABELS = {"gaussian": "Gaussian (MSE) with noise σ", "cross_entropy": "Cross-entropy (class labels)",
               "next_token": "Next-token cross-entropy (token sequences)"}


def key(name: str) -> str:
    return common.widget_key(PAGE, name)


def seeded(name: str, default, allowed: list | None = None) -> str:
    """The widget key of `name`, holding `default` until the user (or a button) sets it; widgets are
    drawn with key= only, so that callbacks such as the result's "Use ε = …" can set them."""
    widget = common.ensure_widget(PAGE, name, default)
    if allowed is not None and st.session_state[widget] not in allowed:
        st.session_state[widget] = default
    return widget


def session_dir() -> Path:
    """This session's upload folder (the OS's temp dir; removed with it)."""
    return Path(common.session_folder("llc-checkpoint-", key("dir")))


def examples() -> list[dict]:
    try:
        return json.loads((EXAMPLES / "examples.json").read_text())["single"]
    except (OSError, ValueError, KeyError):
        return []


def load_example(example: dict) -> None:
    """Button callback: point the page at an example's files and settings."""
    state = st.session_state
    state[key("model_path")] = str(EXAMPLES / example["checkpoint"])
    state[key("data_path")] = str(EXAMPLES / example["data"])
    state[key("model_label")], state[key("data_label")] = example["checkpoint"], example["data"]
    state[key("loss")] = example.get("loss", "gaussian")
    state[key("activation")] = example.get("activation", "relu")
    state[key("target_columns")] = example.get("target_columns", [])
    state[key("use_spec")] = False
    state[key("confirmed")] = True
    state[key("origin")] = "file"


def file_label(slot: str) -> str:
    """The name of the slot's file (an upload's own name, or an example's), made literal for Markdown."""
    return common.escape_markdown(st.session_state.get(key(f"{slot}_label"), "weights" if slot == "model" else "data"))


def take_upload(upload, slot: str) -> None:
    """Keep an uploaded file under a fixed name in this session's folder (never its own name)."""
    if upload is None or st.session_state.get(key(f"{slot}_upload_id")) == upload.file_id:
        return
    if upload.size > MAX_FILE_BYTES:
        st.error(f"{slot} file: {upload.size / 2**20:.1f} MiB is over the {MAX_FILE_BYTES / 2**20:.0f} MiB limit")
        return
    path = session_dir() / f"{slot}.upload"
    path.write_bytes(upload.getvalue())
    st.session_state[key(f"{slot}_upload_id")] = upload.file_id
    st.session_state[key(f"{slot}_path")] = str(path)
    st.session_state[key(f"{slot}_label")] = "".join(c for c in upload.name if c.isprintable())[:80]
    st.session_state[key("confirmed")] = False
    for name in GUESSED:  # chosen for the previous files: guessed again from these (data_section)
        st.session_state.pop(key(name), None)


def sources() -> None:
    st.subheader("1 · Files")
    shown = examples()
    if shown:
        pick, button = st.columns([3, 1], vertical_alignment="bottom")  # the button's label fits at 1024 px
        names = [e["name"] for e in shown]
        chosen = pick.selectbox("Example", names, key=key("example"))
        example = shown[names.index(chosen)]
        button.button("Load example", key=key("load_example"), on_click=load_example, args=(example,), type="primary")
        st.caption(example.get("about", ""))  # under both: inside `pick` it would push the button below the box
    left, right = st.columns(2)
    take_upload(left.file_uploader("…or your weights: a state dict (.safetensors, .pt), a torch.export program "
                                   "(.pt2: any architecture) or a zipped Hugging Face model folder",
                                   type=WEIGHT_TYPES, key=key("model_upload"), help=EXPORT_HELP), "model")
    take_upload(right.file_uploader("…and your data (.npz, .safetensors, .pt with tensors only, .csv with a header)",
                                    type=DATA_TYPES, key=key("data_upload")), "data")


def model_section(model_path: str) -> tuple[dict | None, str | None, torch.nn.Module] | None:
    """Show the checkpoint and its architecture; returns (architecture spec or None, activation or None, the
    module) once the user has confirmed it, else None. The module only tells the data section what the
    model takes and gives (`widths`); the run builds its own."""
    st.subheader("2 · Model")
    loaded = ckpt.load_checkpoint(model_path)
    count = sum(v.numel() for v in loaded.state_dict.values())
    st.caption(f"**{file_label('model')}**: {ckpt.FORMAT_NAMES[loaded.format]}, {len(loaded.state_dict)} tensors, "
               f"{count:,} numbers" + "".join(f"; {common.escape_markdown(n)}" for n in loaded.notes))
    if loaded.module is not None:
        st.success(f"A {ckpt.FORMAT_NAMES[loaded.format]} brings its own architecture; its parameters are w*. "
                   "It is sampled in eval mode: dropout off, normalisation statistics frozen.")
        return None, None, loaded.module
    use_spec = st.toggle("Give the architecture as JSON instead of inferring it", key=seeded("use_spec", False))
    if use_spec:
        text = st.text_area("Architecture spec (JSON)", key=seeded("spec", ""), height=140,
                            placeholder=ckpt.ARCHITECTURE_SPEC_HELP.split(": layers run")[0],
                            help=ckpt.ARCHITECTURE_SPEC_HELP)
        if not text.strip():
            st.info(f"Write the spec, e.g. {ckpt.ARCHITECTURE_SPEC_HELP}")
            return None
        spec = {"layers": ckpt.parse_architecture(text)}
        ckpt.map_state_dict(spec, loaded.state_dict)
        st.markdown(f"**Architecture:** {ckpt.describe_architecture(spec)}")
        return spec, None, ckpt.model_from_checkpoint(loaded, spec)[0]
    activation = st.selectbox("Activation between the Linear layers", list(ckpt.ACTIVATIONS),
                              key=seeded("activation", "relu", list(ckpt.ACTIVATIONS)),
                              help="The file holds only weights: say which nonlinearity the network used.")
    spec = ckpt.infer_architecture(loaded.state_dict, activation, file_order_meaningful=loaded.format != "safetensors")
    st.markdown(f"**Inferred architecture:** {ckpt.describe_architecture(spec)}")
    st.caption("Names in the file: " + common.escape_markdown(", ".join(l["name"] for l in spec["layers"]
                                                                     if l["type"] == "linear")))
    if not st.checkbox("This is my model's architecture", key=seeded("confirmed", False)):
        st.info("Check the inferred architecture and confirm it (or give a JSON spec) to go on.")
        return None
    return None, activation, ckpt.model_from_checkpoint(loaded, None, activation)[0]


DATA_ORIGINS = {"file": "a data file (uploaded or the example's)", "teacher": "drawn from a zoo teacher"}


def teacher_data() -> DataConfig:
    """Data drawn from a zoo model (llc_core.truth.zoo): its inputs, its labels and its loss."""
    text = st.text_input("Teacher: a zoo model's fields as JSON", key=seeded("teacher", '{"kind": "mlp", "input_dim": 3}'),
                         help="Any zoo kind: mlp (input_dim, hidden, output_dim, task, seed), dln (widths, rank), ...")
    left, mid, right = st.columns(3)
    n = left.number_input("Samples n", min_value=2, max_value=10**7, step=1000, key=seeded("teacher_n", 1000))
    seed = mid.number_input("Data seed", min_value=0, step=1, key=seeded("teacher_seed", 0))
    sigma = right.number_input("σ of the Gaussian loss", min_value=1e-6, format="%g", key=seeded("sigma", 1.0))
    try:
        teacher = json.loads(text)
    except json.JSONDecodeError as err:
        raise LLCInputError(f"the teacher is not valid JSON ({err.msg}): e.g. {{\"kind\": \"mlp\", \"input_dim\": 3}}") from None
    return DataConfig(teacher=teacher, n=int(n), seed=int(seed), noise_scale=float(sigma))


# ====================================================================== 3 · data and loss: what fits the model

MAX_PROBED_COLUMNS = 64  # a CSV's target count is looked for among its last 1 … 64 columns


def model_output(module: torch.nn.Module, inputs) -> torch.Tensor | None:
    """The model's output on the first two rows of `inputs` (floats), or None when it does not take them."""
    try:
        with torch.no_grad():
            return module(torch.as_tensor(np.asarray(inputs[:2]), dtype=torch.float32))
    except Exception:  # noqa: BLE001 - a model can raise anything on inputs of the wrong width
        return None


def widths(module: torch.nn.Module, columns: int) -> dict[int, tuple[int, ...]]:
    """For a CSV of `columns` columns: {k: the model's output shape per sample} for every number k of target
    columns that leaves the model an input width it takes. Kept for this module (held, so that its id is
    not reused) until another one comes: a page rerun asks up to three times."""
    cache = st.session_state.get(key("widths"))
    if cache is not None and cache[0] is module and cache[1] == columns:
        return cache[2]
    found = {}
    for k in range(1, min(columns - 1, MAX_PROBED_COLUMNS) + 1):
        output = model_output(module, np.zeros((2, columns - k), np.float32))
        if output is not None:
            found[k] = tuple(output.shape[1:])
    st.session_state[key("widths")] = (module, columns, found)
    return found


def regression_targets(found: dict[int, tuple[int, ...]]) -> int | None:
    """The number of target columns that makes a regression fit: the model gives one output per target."""
    return next((k for k, shape in found.items() if shape == (k,)), None)


def label_column(names: list[str]) -> str:
    """A CSV's one target column when there is one: the column named like a target, else the last."""
    named = [n for n in names if n in datafiles.TARGET_NAMES]
    return named[0] if len(named) == 1 else names[-1]


def looks_like_labels(targets, output: torch.Tensor | None) -> bool:
    """Whole numbers 0 … C − 1 in one column, for a model with C ≥ 2 outputs: class labels. Without the
    model's output, an integer array is taken for labels."""
    y = np.asarray(targets)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.dtype.kind not in "biuf" or not len(y):
        return False
    if y.dtype.kind == "f" and not bool(np.all(np.isfinite(y)) and np.all(y == np.round(y))):
        return False
    if output is None or output.ndim != 2:
        return output is None and y.dtype.kind in "iu"
    return output.shape[1] >= 2 and y.min() >= 0 and y.max() < output.shape[1]


def suggested_loss(source_format: str, arrays: dict, module: torch.nn.Module) -> str:
    """The loss the data calls for: next-token for a tokens array, cross-entropy for class labels (integers
    0 … C − 1 for a model with C outputs), else Gaussian."""
    names = list(arrays)
    if datafiles.TOKENS_KEY in names:
        return "next_token"
    if source_format == "csv":
        column = label_column(names)
        output = model_output(module, np.stack([arrays[n] for n in names if n != column], axis=1))
        return "cross_entropy" if looks_like_labels(arrays[column], output) else "gaussian"
    inputs_key, targets_key = guessed_keys(names)
    return "cross_entropy" if looks_like_labels(arrays[targets_key], model_output(module, arrays[inputs_key])) else "gaussian"


def guessed_keys(names: list[str]) -> tuple[str, str]:
    try:
        return datafiles.choose_keys(names, None, None)
    except LLCInputError:
        return names[0], names[-1]


def default_targets(names: list[str], module: torch.nn.Module, loss: str) -> list[str]:
    """The target columns a CSV starts with: as many of its last columns as the model gives outputs (a
    regression), else its one label column."""
    count = regression_targets(widths(module, len(names))) if loss == "gaussian" else None
    return names[-count:] if count and count > 1 else [label_column(names)]


def in_file_order(chosen: list[str], names: list[str]) -> list[str]:
    """Target columns in the data file's order, whatever order they were clicked in: the model's outputs
    are matched to them by position."""
    return [name for name in names if name in chosen]


def sort_targets(names: list[str]) -> None:
    """The multiselect's callback: keep its chips in the file's order too."""
    state = st.session_state
    state[key("target_columns")] = in_file_order(state.get(key("target_columns")) or [], names)


def and_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def csv_advice(names: list[str], data: DataConfig, module: torch.nn.Module, arrays: dict) -> str | None:
    """What to change when a CSV's target columns or the loss do not fit the model, in the page's words."""
    chosen = list(data.target_columns or [])
    found = widths(module, len(names))
    count = regression_targets(found)
    if data.loss == "gaussian" and count is not None and count != len(chosen):
        return (f"The model takes {len(names) - count} inputs and gives {count} outputs per sample, so it needs "
                f"{count} target column{'s' if count > 1 else ''}: choose the column{'s' if count > 1 else ''} "
                f"{and_list(names[-count:])} as targets (the others are the inputs).")
    if data.loss == "gaussian" and len(chosen) == 1 and found.get(1, ()) != (1,):
        output = model_output(module, np.stack([arrays[n] for n in names if n not in chosen], axis=1))
        if looks_like_labels(arrays[chosen[0]], output):
            return (f"The column {chosen[0]} holds whole numbers from {int(np.min(arrays[chosen[0]]))} to "
                    f"{int(np.max(arrays[chosen[0]]))} and the model gives {output.shape[1]} outputs per sample: "
                    "these are class labels, so use the cross-entropy loss.")
    if data.loss == "cross_entropy" and len(chosen) != 1:
        return (f"The cross-entropy loss takes one column of class labels: choose one target column "
                f"(e.g. {label_column(names)}).")
    return None


def arrays_advice(data: DataConfig, module: torch.nn.Module, arrays: dict) -> str | None:
    """What to change when named arrays and the loss do not fit the model."""
    if data.loss == "gaussian" and data.targets_key in arrays and data.inputs_key in arrays:
        labels = arrays[data.targets_key]
        output = model_output(module, arrays[data.inputs_key])
        if looks_like_labels(labels, output) and output is not None:
            return (f"The target array {data.targets_key} holds whole numbers from {int(np.min(labels))} to "
                    f"{int(np.max(labels))} and the model gives {output.shape[1]} outputs per sample: these are "
                    "class labels, so use the cross-entropy loss.")
    return None


def csv_targets(names: list[str], module: torch.nn.Module, loss: str, label: str) -> list[str]:
    """The target columns' multiselect, in the file's order, starting from what fits the model; a caption
    says what the model takes and gives."""
    state = st.session_state
    chosen = in_file_order(state.get(key("target_columns")) or [], names) or default_targets(names, module, loss)
    state[key("target_columns")] = chosen
    targets = st.multiselect(f"Target column(s) of **{label}** (the others are the inputs)", names,
                             key=key("target_columns"), on_change=sort_targets, args=(names,),
                             help="Targets are used in the file's order, whatever the order you pick them in.")
    count = regression_targets(widths(module, len(names))) if loss == "gaussian" else None
    if count is not None:
        st.caption(f"The model takes {len(names) - count} inputs and gives {count} output"
                   f"{'s' if count > 1 else ''} per sample: {count} target column{'s' if count > 1 else ''}, "
                   f"in the file's order ({common.escape_markdown(and_list(names[-count:]))} by default).")
    return in_file_order(targets, names)


def data_section(data_path: str | None, module: torch.nn.Module) -> tuple[DataConfig, dict | None] | None:
    """The data and loss widgets: (the DataConfig, the file's arrays or None for a teacher), or None."""
    st.subheader("3 · Data and loss")
    origin = st.radio("Data", list(DATA_ORIGINS), format_func=DATA_ORIGINS.get, horizontal=True,
                      key=seeded("origin", "file", list(DATA_ORIGINS)))
    if origin == "teacher":
        return teacher_data(), None
    if data_path is None:
        st.info("Now upload the data the model was trained on (or draw it from a zoo teacher).")
        return None
    source_format, arrays = datafiles.read_arrays(data_path)
    names = list(arrays)
    loss_col, sigma_col = st.columns(2)
    # a new file (or none yet chosen): the loss is guessed from its targets; after that it is the user's
    guess = suggested_loss(source_format, arrays, module) if key("loss") not in st.session_state else "gaussian"
    loss = loss_col.radio("Loss", list(LOSS_LABELS), format_func=LOSS_LABELS.get, horizontal=True,
                          key=seeded("loss", guess, list(LOSS_LABELS)),
                          help="Suggested from the data: class labels (whole numbers 0 … C − 1 for a model with C "
                               "outputs) take the cross-entropy loss, real-valued targets the Gaussian one.")
    sigma = sigma_col.number_input("σ of the Gaussian loss", min_value=1e-6, format="%g", key=seeded("sigma", 1.0),
                                   disabled=loss != "gaussian")
    label = file_label("data")
    if source_format == "csv":
        targets = csv_targets(names, module, loss, label)
        return DataConfig(path=data_path, target_columns=targets or None, loss=loss, noise_scale=float(sigma)), arrays
    if datafiles.TOKENS_KEY in names:
        st.caption(f"**{label}**: `{datafiles.TOKENS_KEY}` {tuple(arrays[datafiles.TOKENS_KEY].shape)} — each sequence's "
                   "tokens but the last are the inputs, the tokens after them the targets.")
        return DataConfig(path=data_path, inputs_key=datafiles.TOKENS_KEY, loss=loss, noise_scale=float(sigma)), arrays
    guess = guessed_keys(names)
    left, right = st.columns(2)
    shapes = {n: f"{n} {tuple(arrays[n].shape)}" for n in names}
    inputs_key = left.selectbox(f"Inputs in **{label}**", names, key=seeded("inputs_key", guess[0], names),
                                format_func=shapes.get)
    targets_key = right.selectbox("Targets", names, key=seeded("targets_key", guess[1], names), format_func=shapes.get)
    data = DataConfig(path=data_path, inputs_key=inputs_key, targets_key=targets_key, loss=loss, noise_scale=float(sigma))
    return data, arrays


def fitted_problem(model: ModelConfig, data: DataConfig, module: torch.nn.Module, arrays: dict | None):
    """The Problem of the model and the data, or None after an error shown here, under the target and loss
    selectors that cause it, saying what to choose instead (the engine's own message when the page has no
    better advice)."""
    try:
        return checked_problem(model, data)
    except LLCInputError as err:
        advice = None
        if arrays is not None:
            names = list(arrays)
            advice = (csv_advice(names, data, module, arrays) if data.target_columns is not None or data.inputs_key is None
                      else arrays_advice(data, module, arrays))
        st.error(common.escape_markdown(advice) if advice else common.escape_markdown(err))
        return None


def sampler_section() -> SamplerConfig:
    st.subheader("4 · Sampler")
    auto = st.toggle("Calibrate ε during burn-in (step size \"auto\": dual averaging to acceptance 0.92)",
                     key=seeded("auto_step", True),
                     help=glossary.help_text("auto") + " Off: give ε, or leave it empty for the engine's curvature "
                          "rule at w\\* (safe, often timid).")
    cols = st.columns(3) + st.columns(3)  # two rows: five inputs in one row are too narrow to read at 1024 px
    chains = cols[0].number_input("Chains", min_value=1, max_value=256, step=1, help=glossary.help_text("chains"),
                                  key=seeded("chains", engine_defaults.CHECKPOINT_SAMPLER["chains"]))
    steps = cols[1].number_input("Steps", min_value=2, max_value=10**7, step=100, help=glossary.help_text("steps"),
                                 key=seeded("steps", engine_defaults.CHECKPOINT_SAMPLER["steps"]))
    step_size = cols[2].number_input("Step size ε", min_value=0.0, format="%g", key=seeded("step_size", None),
                                     placeholder="curvature rule", disabled=auto,
                                     help=glossary.help_text("step_size") + " Empty: from the curvature at w\\*.")
    localization = cols[3].number_input("Localization γ", min_value=0.0, format="%g", key=seeded("localization", 1.0),
                                        help=glossary.help_text("localization"))
    nbeta = cols[4].number_input("nβ", min_value=0.0, format="%g", key=seeded("nbeta", None),
                                 placeholder="empty: n / log n", help=glossary.help_text("nbeta"))
    return SamplerConfig(chains=int(chains), steps=int(steps), step_size="auto" if auto else (step_size or None),
                         localization=float(localization), nbeta=nbeta or None)


# ====================================================================== 5 · refined LLCs per group


def groupings(model) -> list[str]:
    """"layer" and "data" always; "head" when the model has an attention with a fused projection
    (llc_core.refine.attention_layers: an nn.MultiheadAttention, also inside a torch.export program). Asked
    on every rerun: it finds the layers without building the heads' parameter masks."""
    return ["layer", "head", "data"] if attention_layers(model) else ["layer", "data"]


def subset_choices(targets) -> tuple[list[str], str | None]:
    """The ways to choose data subsets for these targets: "label" when they are class labels (with at most
    llc_core.refine.MAX_LABEL_SUBSETS classes), always "chosen"; and why "label" is not offered, if not."""
    try:
        label_subsets(targets)
    except LLCInputError as err:
        return ["chosen"], str(err)
    return ["label", "chosen"], None


def default_subset_rows(n: int) -> str:
    """The chosen subsets a user starts from: the data's two halves."""
    half = n // 2
    return json.dumps({"first half": {"range": [0, half]}, "second half": {"range": [half, n]}})


def parse_subset_rows(text: str) -> dict:
    """The chosen subsets' JSON text → {name: a refine.data form}; LLCInputError saying what to write."""
    example = '{"first half": {"range": [0, 500]}, "class 3": {"label": 3}}'
    if not text.strip():
        raise LLCInputError(f"write the subsets as JSON, e.g. {example}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise LLCInputError(f"the subsets are not valid JSON ({err.msg}, at character {err.pos}): e.g. {example}") from None
    except RecursionError:
        raise LLCInputError(f"the subsets' JSON is nested too deeply: e.g. {example}") from None
    if not isinstance(value, dict) or not value:
        raise LLCInputError(f"the subsets must be a JSON object of name → rows, e.g. {example}")
    return value


def refine_work(config: RunConfig):
    """The job's work: run_groups in the worker thread (no st.* there). Each group's λ̂ is reported as it is
    known (a data subset's when its own run ends), so that the chart grows while the others run. An error
    comes back as the result, so that the page shows it with common.show_error, by its type."""
    def work(report, stop):
        try:
            return run_groups(config, on_snapshot=lambda snap: report("progress", (snap.step, snap.total_steps)),
                              stop=stop, on_group=lambda group: report("item", group))
        except Exception as err:  # noqa: BLE001 - shown on the page by common.show_error
            return err
    return work


def load_jvp_decompositions() -> None:
    """One tiny forward-mode derivative here, in the page's thread: torch loads its jvp decompositions
    (torch.jit.script, so ast.parse) on first use, and the worker's ε from the curvature would otherwise do
    it while another thread parses, which CPython 3.11 answers with "AST constructor recursion depth
    mismatch"."""
    torch.func.jvp(lambda x: x * x, (torch.ones(1),), (torch.ones(1),))


def start_refined(config: RunConfig, count: int) -> None:
    """Start the job of `config.refine` (weight groups, or `count` data subsets, one run each)."""
    load_jvp_decompositions()
    old = st.session_state.get(REFINE_JOB)
    if old is not None and old.alive:
        old.request_stop()
    job = st.session_state[REFINE_JOB] = Job(refine_work(config), name="llc-refine").start()
    plan = st.session_state[REFINE_PLAN] = {"by_data": config.refine.subsets is not None, "count": count}
    kept = live_runs.kept(KEPT)
    live_runs.register(PAGE, "refine", job, lambda: {**kept, REFINE_JOB: job, REFINE_PLAN: plan})


def full_llc(config: RunConfig | None) -> float | None:
    """The full λ̂ of this page's finished run, when it was of the same model and data."""
    record = runs.current_run(PAGE)
    result = record.result if record is not None else None
    if result is None or result.partial or config is None:
        return None
    if record.config.model != config.model or record.config.data != config.data:
        return None
    return result.llc_mean


def draw_groups(groups: list, full: float | None, by_data: bool):
    """Draw the groups' bars (± 2 se) beside the full λ̂; return their table (a DataFrame) for the caller to
    show under its caption."""
    frame = charts.refined_frame(groups)
    chart = charts.refined_chart(frame, full, by_data=by_data)
    # the element's height: the plot area's, plus the title, the rule's label and the x axis
    st.altair_chart(chart, width="stretch", height=int(chart.height) + 130)
    if by_data:
        table = frame[["group", "rows", "nβ", "ε", "λ̂", "se", "acceptance"]].assign(
            verdicts=[glossary.verdict_labels(g.verdicts) or "–" for g in groups])
    else:
        table = frame[["group", "moving parameters", "λ̂", "se", "acceptance"]]
    return table


def draw_refined(result, full: float | None) -> None:
    if isinstance(result, BaseException):
        common.show_error(result)
        return
    if result.partial and not (result.by_data and result.groups):  # weight groups share one run: all or nothing
        st.info("Stopped before the end: nothing was kept. Press **Estimate per group** to run it again.")
        return
    if result.partial:  # data subsets: the finished ones are kept
        st.warning(f"Stopped: {len(result.groups)} data subset{'s' if len(result.groups) > 1 else ''} finished and "
                   "are kept below; the one running was dropped. Press **Estimate per group** to run them all again.")
    table = draw_groups(result.groups, full, result.by_data)
    red = (f"; the red line is the full model's λ̂ = {full:.4g}" if full is not None else
           "; estimate the full λ̂ above to see it beside the " + ("subsets" if result.by_data else "groups"))
    if result.by_data:
        st.caption(f"{len(result.groups)} data subsets × {result.chains_per_group} chains, each its own run on its "
                   f"rows (its n, nβ and ε in the table); {result.wall_time_s:.1f} s" + red)
    else:
        shared = glossary.verdict_labels(result.verdicts)
        st.caption(f"{len(result.groups)} groups × {result.chains_per_group} chains, n = {result.n:,}, "
                   f"nβ = {result.nbeta:.4g}, ε = {common.fmt(result.step_size, 3)}; {result.wall_time_s:.1f} s" + red
                   + (f". Verdicts of the shared run: {shared}" if shared else ""))
    st.dataframe(table, hide_index=True, width="stretch")
    negative = [g.name for g in result.groups if g.llc_mean is not None and g.llc_mean < 0]
    if result.by_data and negative:
        names = common.escape_markdown(", ".join(name[:40] for name in negative[:8]) + (" …" if len(negative) > 8 else ""))
        st.info(f"λ̂ < 0 on {names}: w\\* is not a minimum of the loss on those rows. The chains found lower loss "
                "there (one class's rows pull a classifier towards predicting that class more confidently), so λ̂ "
                "does not measure their complexity. Subsets that mix the classes, such as row ranges, keep w\\* "
                "at or near a minimum of their loss.")


def refined_live(config: RunConfig | None) -> None:
    """The job's state: polled by a fragment while it runs (with Stop, and the groups finished so far),
    drawn once when it has finished."""
    job: Job | None = st.session_state.get(REFINE_JOB)
    if job is None:
        return
    if not job.alive:
        live_runs.collected(PAGE, "refine")
        snap = job.snapshot()
        if snap["error"]:
            common.show_error(RuntimeError(snap["error"]))
        elif snap["result"] is not None:
            draw_refined(snap["result"], full_llc(config))
        return
    plan = st.session_state.get(REFINE_PLAN) or {"by_data": False, "count": 0}

    @st.fragment(run_every=POLL_SECONDS)
    def poll() -> None:
        snap = job.snapshot()
        if not snap["running"]:
            st.rerun()  # the whole page, so that the finished view replaces this one
        step, total = snap["progress"] or (0, 1)
        done = snap["items"]
        text = (f"Data subsets, one run each: {len(done)} of {plan['count']} done (step {step:,} of {total:,} in all)"
                if plan["by_data"] else f"Sampling every group at once: step {step:,} of {total:,}")
        st.progress(min(step / max(total, 1), 1.0), text=text)
        if st.button("Stop", key=key("refine_stop"), disabled=job.stop_requested,
                     help="Finished data subsets are kept; nothing partial is"):
            job.request_stop()
        if done:  # a data subset's bar as soon as its run ends
            st.dataframe(draw_groups(done, full_llc(config), plan["by_data"]), hide_index=True, width="stretch")

    poll()


def checked_problem(model: ModelConfig, data: DataConfig):
    """build_problem(model, data), kept while a refine job runs: loading a .pt2 calls ast.parse, and two threads
    parsing at once corrupt CPython 3.11's AST recursion counter (SystemError in every later parse), so the
    page does not load the model again while the job's thread loads it."""
    job: Job | None = st.session_state.get(REFINE_JOB)
    kept = st.session_state.get(key("problem"))
    text = json.dumps([dataclasses.asdict(model), dataclasses.asdict(data)], sort_keys=True, default=str)
    if job is not None and job.alive and kept is not None and kept[0] == text:
        return kept[1]
    problem = build_problem(model, data)
    st.session_state[key("problem")] = (text, problem)
    return problem


# ====================================================================== examples whose λ is known

# An example's model whose λ is known, by its checkpoint's name (scripts/make_examples.py builds them), with
# what to say beside it: λ is the large-n value, which λ̂ at the example's small n can sit below.
KNOWN_LLC = {
    "dln.pt": (lambda: theory.deep_linear_network([4, 3, 2], 2),
               ("A full-rank deep linear network 4 → 3 → 2 is regular in its function (a 2 × 4 matrix, 8 numbers), "
                "so λ = 8/2 = 4 by Aoyagi's formula (docs/METHOD.md §4). That is the value as n grows: with only "
                "n = 300 samples nβ = n / log n ≈ 53, and along this network's flattest directions the loss rises "
                "so slowly that γ = 1 holds the chains before the loss does, so at the default settings λ̂ comes out "
                "near 3. γ = 0.1 and 4,000 steps bring it near 4, with a larger error.")),
}


def example_truth(config: RunConfig | None) -> tuple[theory.Theory, str] | None:
    """The known λ of a config that is an example's files with the example's settings, and its note."""
    if config is None or config.model.architecture is not None or config.data.teacher:
        return None
    for example in examples():
        if example["checkpoint"] not in KNOWN_LLC:
            continue
        same = (config.model.path == str(EXAMPLES / example["checkpoint"])
                and config.data.path == str(EXAMPLES / example["data"])
                and config.model.activation == example.get("activation")
                and config.data.loss == example.get("loss", "gaussian")
                and list(config.data.target_columns or []) == list(example.get("target_columns", [])))
        if same:
            build, note = KNOWN_LLC[example["checkpoint"]]
            return build(), note
    return None


def attach_known_llc(record) -> None:
    """Give a run of an example with a known λ that λ, so that its result compares λ̂ with it (the engine
    knows no λ for a checkpoint): the live chart's line, "theory λ" and the comparison under the result."""
    known = example_truth(record.config) if record is not None else None
    if known is None:
        return
    record.theory = known[0]
    result = record.result
    if result is not None and result.theoretical_llc is None:
        result = dataclasses.replace(result, theoretical_llc=float(known[0].llc), multiplicity=known[0].multiplicity)
        record.progress = dataclasses.replace(record.progress, result=result)


def url_choice_unavailable(name: str, offered: list[str], labels: dict[str, str], why: str | None = None) -> None:
    """A choice that a link set (pages/settings.py, restore_refine_settings) but this model or data does not
    offer: one warning, naming what is shown instead; the radio then falls back to its first option."""
    from_url = st.session_state.get(key("from_url")) or {}
    value = st.session_state.get(key(name))
    if name in from_url and from_url[name] == value and value not in offered:
        st.warning(common.escape_markdown(
            f"The link asks for {labels.get(value, value)}, which this model and data do not offer"
            + (f" ({why})" if why else "") + f": showing {labels[offered[0]]} instead."))
    if name in from_url and value != from_url[name] or value not in offered:
        from_url.pop(name, None)


def subsets_setting(problem) -> tuple[RefineConfig | None, int]:
    """The data subsets: each class label, or rows the user writes as JSON; (the RefineConfig, how many
    subsets), or (None, 0) after an error shown here."""
    st.markdown(DATA_REFINED_ABOUT)
    options, why_not = subset_choices(problem.targets)
    url_choice_unavailable("refine_subsets", options, SUBSET_CHOICES, why_not)
    choice = st.radio("Subsets", options, format_func=SUBSET_CHOICES.get, horizontal=True,
                      key=seeded("refine_subsets", options[0], options),
                      help="Each class label: one subset per label value of the targets (a classifier's). Rows I "
                           "choose: any subsets, written as JSON. " + glossary.help_text("data_refined"))
    if why_not is not None:
        st.caption("Each class label is offered for a classifier's labels; here " + common.escape_markdown(why_not))
    try:
        if choice == "label":
            spec = "label"
        else:
            text = st.text_area("Subsets: a JSON object of name → rows", height=100, help=SUBSET_ROWS_HELP,
                                key=seeded("refine_subset_rows", default_subset_rows(int(problem.inputs.shape[0]))))
            spec = parse_subset_rows(text)
        subsets = data_subsets(problem.inputs, problem.targets, spec)
    except LLCInputError as err:
        st.error(common.escape_markdown(err))
        return None, 0
    names = [f"{common.escape_markdown(name[:40])} ({len(rows):,} rows)" for name, (rows, _) in subsets.items()]
    listed = ", ".join(names[:12]) + (" …" if len(names) > 12 else "")
    st.caption(f"{len(subsets)} subset{'s' if len(subsets) > 1 else ''}: {listed}. Each is a run of "
               "its own with every parameter moving, nβ = n / log n of its rows (unless nβ is set above) and ε as set "
               "above (\"auto\" calibrates it on each subset).")
    return RefineConfig(subsets=spec), len(subsets)


def refined_section(config: RunConfig, problem) -> None:
    st.subheader("5 · Where does the complexity live?")
    st.markdown(REFINED_ABOUT)
    offered = groupings(problem.model)
    url_choice_unavailable("refine_groups", offered, GROUPINGS)
    left, right = st.columns(2)
    grouping = left.radio("Groups", offered, format_func=GROUPINGS.get, horizontal=True,
                          key=seeded("refine_groups", "layer", offered),
                          help="Per attention head is offered when the model has an nn.MultiheadAttention (also "
                               "inside a .pt2 program). Per data subset: the whole model on one part of the data.")
    per_group = right.number_input("Chains per group", min_value=1, max_value=64, step=1,
                                   key=seeded("refine_chains", 4),
                                   help="Steps, ε, γ and nβ are the sampler's above. Weight groups run as one "
                                        "computation; each data subset is a run of its own with this many chains.")
    refine, count = (subsets_setting(problem) if grouping == "data"
                     else (RefineConfig(groups=grouping), 0))
    job: Job | None = st.session_state.get(REFINE_JOB)
    if st.button("Estimate per group", type="primary", key=key("refine_start"),
                 disabled=(job is not None and job.alive) or refine is None):
        sampler = dataclasses.replace(config.sampler, chains=int(per_group))
        start_refined(dataclasses.replace(config, sampler=sampler, refine=refine), count)
        st.rerun()
    refined_live(config)


def restore_refine_settings(params: dict[str, str]) -> tuple[dict, list[str]]:
    """A link's refine settings (pages/settings.py, CHECKPOINT_REFINE_SETTINGS) → widget values; what it set is
    remembered, so that a choice this model does not offer is said once (`url_choice_unavailable`)."""
    values, problems = settings.page_query_to_values(params, settings.CHECKPOINT_REFINE_SETTINGS,
                                                     settings.CHECKPOINT_REFINE_WIDGETS)
    st.session_state[key("from_url")] = dict(values)
    return values, problems


def write_refine_settings() -> None:
    """The refine settings into the URL (those the page has: a widget's, or the session's last)."""
    remembered = st.session_state.get(f"{PAGE}.values", {})
    values = {name: st.session_state.get(key(name), remembered.get(name))
              for name in settings.CHECKPOINT_REFINE_WIDGETS.values()}
    values = {name: value for name, value in values.items() if value is not None}
    common.remember_and_write_url(PAGE, values, settings.page_values_to_query(
        values, settings.CHECKPOINT_REFINE_SETTINGS, settings.CHECKPOINT_REFINE_WIDGETS))


st.title("Inspect a checkpoint")
st.caption("Upload a trained model and its data, or load an example, and estimate its local learning coefficient. "
           "Files are read without running any code from them: pickles that would import anything beyond tensors "
           "are refused, and TorchScript is not accepted (README: Checkpoint inspection).")
for problem in common.restore_from_url(PAGE, restore_refine_settings):  # a link's refine settings
    st.error(common.escape_markdown(problem))
live_runs.reattach(PAGE, ("Estimate λ̂", "Estimate per group"))  # a reload during a run (pages/live_runs.py)

sources()
model_path, data_path = st.session_state.get(key("model_path")), st.session_state.get(key("data_path"))
config = None
problem = None
if model_path is None:
    st.info("Load an example or upload weights to begin.")
else:
    try:
        architecture = model_section(model_path)
        chosen = data_section(data_path, architecture[2]) if architecture is not None else None
        if chosen is not None:
            spec, activation, module = architecture
            model = ModelConfig(kind="checkpoint", path=model_path, architecture=spec, activation=activation)
            problem = fitted_problem(model, chosen[0], module, chosen[1])  # every check of model against data
        if problem is not None:
            config = RunConfig(model=model, data=chosen[0], sampler=sampler_section())
            st.caption(f"n = {problem.inputs.shape[0]:,} samples, inputs {tuple(problem.inputs.shape[1:])}, "
                       f"targets {tuple(problem.targets.shape[1:]) or 'labels'}, d = {problem.num_params:,} parameters, "
                       f"{problem.loss} loss")
    except Exception as err:  # noqa: BLE001 - an input problem's message, or a bug's id (common.show_error)
        common.show_error(err)
        config = problem = None

known = example_truth(config)
if known is not None:
    st.info(f"**This example's λ is known: λ = {common.fraction_text(known[0].llc)}**, and its result compares λ̂ "
            f"with it. {known[1]}")
record = runs.current_run(PAGE)
running = record is not None and record.running
if st.button("Estimate λ̂", type="primary", disabled=config is None or running, key=key("start")):
    attach_known_llc(runs.start_run(PAGE, config, keep=KEPT))
    st.rerun()
if record is not None:  # the run's live panel, then its result (the button above starts one: no sidebar here)
    attach_known_llc(record)
    runs.run_panel(PAGE)
if config is not None and problem is not None:
    refined_section(config, problem)
elif st.session_state.get(REFINE_JOB) is not None:
    refined_live(None)  # re-attached after a reload, before the files are read again
write_refine_settings()
