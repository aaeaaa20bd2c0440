"""Checkpoint page: bring trained weights and data (or load an example), confirm the architecture, estimate λ̂.

The page is thin: uploads are written under fixed names into a temp folder of this browser session
(a file's own name is never used as a path), the widgets become a RunConfig of model kind
"checkpoint" (llc_core/files/checkpoint.py, llc_core/files/datafiles.py), and the run and its result view are the
Estimate page's (pages/runs.py). Every problem with a file is an LLCInputError shown as st.error.
"""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from llc_core import DataConfig, LLCInputError, ModelConfig, RunConfig, SamplerConfig, build_problem
from llc_core import defaults as engine_defaults
from llc_core.files import checkpoint as ckpt
from llc_core.files import datafiles
from llc_core.files import MAX_FILE_BYTES
from pages import common, runs

common.require_entry_point()

PAGE = "ckpt"
EXAMPLES = common.APP_DIR / "assets" / "examples"
WEIGHT_TYPES = ["safetensors", "pt", "pth", "bin", "pt2", "zip"]
DATA_TYPES = ["npz", "safetensors", "pt", "csv"]
EXPORT_HELP = ("A custom architecture (convolutions, attention, normalisation, embeddings): export it once with "
               "`torch.export.save(torch.export.export(model.eval(), (x[:2],), dynamic_shapes=({0: "
               "torch.export.Dim('batch')},)), 'model.pt2')` and upload the .pt2.")
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


def sources() -> None:
    st.subheader("1 · Files")
    shown = examples()
    if shown:
        pick, button = st.columns([3, 1], vertical_alignment="bottom")  # the button's label fits at 1024 px
        names = [e["name"] for e in shown]
        chosen = pick.selectbox("Example", names, key=key("example"))
        example = shown[names.index(chosen)]
        button.button("Load example", key=key("load_example"), on_click=load_example, args=(example,), type="primary")
        pick.caption(example.get("about", ""))
    left, right = st.columns(2)
    take_upload(left.file_uploader("…or your weights: a state dict (.safetensors, .pt), a torch.export program "
                                   "(.pt2: any architecture) or a zipped Hugging Face model folder",
                                   type=WEIGHT_TYPES, key=key("model_upload"), help=EXPORT_HELP), "model")
    take_upload(right.file_uploader("…and your data (.npz, .safetensors, .pt with tensors only, .csv with a header)",
                                    type=DATA_TYPES, key=key("data_upload")), "data")


def model_section(model_path: str) -> tuple[dict | None, str | None] | None:
    """Show the checkpoint and its architecture; returns (architecture spec or None, activation or None)
    once the user has confirmed it, else None."""
    st.subheader("2 · Model")
    loaded = ckpt.load_checkpoint(model_path)
    count = sum(v.numel() for v in loaded.state_dict.values())
    st.caption(f"**{st.session_state.get(key('model_label'), 'weights')}**: {ckpt.FORMAT_NAMES[loaded.format]}, "
               f"{len(loaded.state_dict)} tensors, {count:,} numbers" + "".join(f"; {n}" for n in loaded.notes))
    if loaded.module is not None:
        st.success(f"A {ckpt.FORMAT_NAMES[loaded.format]} brings its own architecture; its parameters are w*. "
                   "It is sampled in eval mode: dropout off, normalisation statistics frozen.")
        return None, None
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
        return spec, None
    activation = st.selectbox("Activation between the Linear layers", list(ckpt.ACTIVATIONS),
                              key=seeded("activation", "relu", list(ckpt.ACTIVATIONS)),
                              help="The file holds only weights: say which nonlinearity the network used.")
    spec = ckpt.infer_architecture(loaded.state_dict, activation, file_order_meaningful=loaded.format != "safetensors")
    st.markdown(f"**Inferred architecture:** {ckpt.describe_architecture(spec)}")
    st.caption("Names in the file: " + ", ".join(l["name"] for l in spec["layers"] if l["type"] == "linear"))
    if not st.checkbox("This is my model's architecture", key=seeded("confirmed", False)):
        st.info("Check the inferred architecture and confirm it (or give a JSON spec) to go on.")
        return None
    return None, activation


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


def data_section(data_path: str | None) -> DataConfig | None:
    st.subheader("3 · Data and loss")
    origin = st.radio("Data", list(DATA_ORIGINS), format_func=DATA_ORIGINS.get, horizontal=True,
                      key=seeded("origin", "file", list(DATA_ORIGINS)))
    if origin == "teacher":
        return teacher_data()
    if data_path is None:
        st.info("Now upload the data the model was trained on (or draw it from a zoo teacher).")
        return None
    source_format, arrays = datafiles.read_arrays(data_path)
    names = list(arrays)
    loss_col, sigma_col = st.columns(2)
    loss = loss_col.radio("Loss", list(LOSS_LABELS), key=seeded("loss", "gaussian", list(LOSS_LABELS)),
                          format_func=LOSS_LABELS.get, horizontal=True)
    sigma = sigma_col.number_input("σ of the Gaussian loss", min_value=1e-6, format="%g", key=seeded("sigma", 1.0),
                                   disabled=loss != "gaussian")
    label = st.session_state.get(key("data_label"), "data")
    if source_format == "csv":
        chosen = [c for c in st.session_state.get(key("target_columns"), []) if c in names] or [names[-1]]
        st.session_state[key("target_columns")] = chosen
        targets = st.multiselect(f"Target column(s) of **{label}** (the others are the inputs)", names,
                                 key=key("target_columns"))
        return DataConfig(path=data_path, target_columns=targets or None, loss=loss, noise_scale=float(sigma))
    if datafiles.TOKENS_KEY in names:
        st.caption(f"**{label}**: `{datafiles.TOKENS_KEY}` {tuple(arrays[datafiles.TOKENS_KEY].shape)} — each sequence's "
                   "tokens but the last are the inputs, the tokens after them the targets.")
        return DataConfig(path=data_path, inputs_key=datafiles.TOKENS_KEY, loss=loss, noise_scale=float(sigma))
    try:
        guess = datafiles.choose_keys(names, None, None)
    except LLCInputError:
        guess = (names[0], names[-1])
    left, right = st.columns(2)
    shapes = {n: f"{n} {tuple(arrays[n].shape)}" for n in names}
    inputs_key = left.selectbox(f"Inputs in **{label}**", names, key=seeded("inputs_key", guess[0], names),
                                format_func=shapes.get)
    targets_key = right.selectbox("Targets", names, key=seeded("targets_key", guess[1], names), format_func=shapes.get)
    return DataConfig(path=data_path, inputs_key=inputs_key, targets_key=targets_key, loss=loss, noise_scale=float(sigma))


def sampler_section() -> SamplerConfig:
    st.subheader("4 · Sampler")
    auto = st.toggle("Calibrate ε during burn-in (step size \"auto\": dual averaging to acceptance 0.92)",
                     key=seeded("auto_step", True),
                     help="Off: give ε, or leave it empty for the engine's curvature rule at w* (safe, often timid).")
    cols = st.columns(5)
    chains = cols[0].number_input("Chains", min_value=1, max_value=256, step=1, key=seeded("chains", engine_defaults.CHECKPOINT_SAMPLER["chains"]))
    steps = cols[1].number_input("Steps", min_value=2, max_value=10**7, step=100, key=seeded("steps", engine_defaults.CHECKPOINT_SAMPLER["steps"]))
    step_size = cols[2].number_input("Step size ε (empty: from the curvature at w*)", min_value=0.0, format="%g",
                                     key=seeded("step_size", None), placeholder="curvature rule", disabled=auto)
    localization = cols[3].number_input("Localization γ", min_value=0.0, format="%g", key=seeded("localization", 1.0))
    nbeta = cols[4].number_input("nβ (empty: n / log n)", min_value=0.0, format="%g", key=seeded("nbeta", None),
                                 placeholder="n / log n")
    return SamplerConfig(chains=int(chains), steps=int(steps), step_size="auto" if auto else (step_size or None),
                         localization=float(localization), nbeta=nbeta or None)


st.title("Inspect a checkpoint")
st.caption("Upload a trained model and its data, or load an example, and estimate its local learning coefficient. "
           "Files are read without running any code from them: pickles that would import anything beyond tensors "
           "are refused, and TorchScript is not accepted (README: Checkpoint inspection).")

sources()
model_path, data_path = st.session_state.get(key("model_path")), st.session_state.get(key("data_path"))
config = None
if model_path is None:
    st.info("Load an example or upload weights to begin.")
else:
    try:
        architecture = model_section(model_path)
        data = data_section(data_path) if architecture is not None else None
        if data is not None:
            sampler = sampler_section()
            spec, activation = architecture
            config = RunConfig(model=ModelConfig(kind="checkpoint", path=model_path, architecture=spec,
                                                 activation=activation), data=data, sampler=sampler)
            problem = build_problem(config.model, config.data)  # every check of model against data, before Run
            st.caption(f"n = {problem.inputs.shape[0]:,} samples, inputs {tuple(problem.inputs.shape[1:])}, "
                       f"targets {tuple(problem.targets.shape[1:]) or 'labels'}, d = {problem.num_params:,} parameters, "
                       f"{problem.loss} loss")
    except Exception as err:  # noqa: BLE001 - an input problem's message, or a bug's id (common.show_error)
        common.show_error(err)
        config = None

record = runs.current_run(PAGE)
running = record is not None and record.running
if st.button("Estimate λ̂", type="primary", disabled=config is None or running, key=key("start")):
    runs.start_run(PAGE, config)
    st.rerun()
if record is not None or config is not None:
    runs.run_panel(PAGE)
