"""Shared pieces of the LLC Explorer pages.

Three layers, top to bottom:

1. Settings: one `Setting` per RunConfig field, with its URL parameter name, bounds and text form.
   `values_to_config` / `config_to_values` and `values_to_query` / `query_to_values` convert between
   widget values, a RunConfig and the URL, so the same RunConfig drives the app, the URL, the CLI
   and the exported result. These functions make no `st.*` calls.
2. URL binding and run bookkeeping in `st.session_state` (one browser session each).
3. Drawing: Altair charts, the live run panel (a polling fragment) and the result view.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import math
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from llc_core import (DataConfig, LLCInputError, ModelConfig, RunConfig, SamplerConfig, available_devices,
                      default_nbeta, theory, zoo)
from llc_core import defaults as engine_defaults
from llc_core.background import BackgroundRun, Progress
from llc_core.result import RunResult

POLL_SECONDS = 0.4  # the live panel redraws this often while a run goes on
MAX_CHAINS_DRAWN = 16  # per-chain lines beyond this clutter the charts without telling more
AUTO = "auto"  # URL spelling of "let the engine choose" (None in a RunConfig)

# ====================================================================== 0. navigation

# (file, title, url path, icon). Optional pages arrive with later issues and are listed once their
# file exists.
PAGES = [
    ("pages/home.py", "Home", "", ":material/home:"),
    ("pages/estimate.py", "Estimate", "estimate", ":material/query_stats:"),
    ("pages/learn.py", "Learn", "learn", ":material/school:"),
]
OPTIONAL_PAGES = [
    ("pages/validate.py", "Validate", "validate", ":material/fact_check:"),
]
APP_DIR = Path(__file__).resolve().parents[1]
_ENTRY = threading.local()  # set while app.py runs the current page, in the session's script thread


def navigation_pages() -> list:
    pages = []
    for path, title, url_path, icon in PAGES + OPTIONAL_PAGES:
        if (APP_DIR / path).is_file():
            pages.append(st.Page(path, title=title, icon=icon, url_path=url_path or None, default=not url_path))
    return pages


@contextlib.contextmanager
def entry_point():
    """app.py runs the page inside this, so that `require_entry_point` knows it came through app.py."""
    _ENTRY.active = True
    try:
        yield
    finally:
        _ENTRY.active = False


def require_entry_point() -> None:
    """First line of every page: make sure the page runs under app.py's st.navigation.

    With a pages/ folder beside app.py, Streamlit starts a fresh server in its legacy multipage
    mode, in which a direct link such as /estimate runs the page file on its own (no page config,
    a navigation listing every file in pages/). Calling st.navigation once switches the server to
    st.navigation mode for good; the rerun then goes through app.py to the same page.
    """
    if getattr(_ENTRY, "active", False):
        return
    st.navigation(navigation_pages())
    st.rerun()


# ====================================================================== 1. settings


@dataclass(frozen=True)
class Setting:
    """One setting: its URL parameter `name`, the config field it fills, its type and bounds.

    kind: "int", "float", "choice", "step_size" (a float > 0 or AUTO), "list" (comma-separated
    numbers, kept as text in the widget) or "text". `optional` settings accept AUTO (None).
    """

    name: str
    kind: str
    default: Any
    field: tuple[str, str]  # ("model" | "data" | "sampler" | "run", field name)
    minimum: float | None = None
    positive: bool = False  # strictly > 0
    maximum: float | None = None
    optional: bool = False
    choices: tuple[str, ...] = ()
    integers: bool = True  # for "list": whole numbers only
    single_as_int: bool = False  # for "list": a single number stands for itself, not a list of one

    def format(self, value: Any) -> str:
        """Widget value → URL text."""
        if value is None or value == AUTO:
            return AUTO
        if self.kind in ("list", "text"):
            text = str(value).strip()
            return text.replace(" ", "") if self.kind == "list" else text
        if self.kind == "int":
            return str(int(value))
        if self.kind in ("float", "step_size"):
            return repr(float(value))  # repr round-trips exactly
        return str(value)

    def parse(self, text: str) -> Any:
        """URL text → widget value; ValueError (with a message saying what to write) if unusable."""
        text = str(text).strip()
        if self.kind in ("list", "text"):
            return text
        if self.kind == "choice":
            if text not in self.choices:
                raise ValueError(f"{self.name} = {text!r} is not available here: use one of {', '.join(self.choices)}")
            return text
        if text.lower() == AUTO or (text == "" and self.optional):
            if self.optional:
                return AUTO if self.kind == "step_size" else None
            raise ValueError(f"{self.name} cannot be \"auto\": give a value")
        if self.kind == "int":
            try:
                number = float(text)
            except ValueError:
                raise ValueError(f"{self.name} = {text!r} is not a whole number") from None
            if not number.is_integer():
                raise ValueError(f"{self.name} = {text!r} must be a whole number")
            return self.check(int(number))
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{self.name} = {text!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"{self.name} = {text!r} must be a finite number")
        return self.check(number)

    def check(self, number: float) -> float:
        if (self.positive or self.kind == "step_size") and number <= 0:
            raise ValueError(f"{self.name} = {number:g} must be > 0")
        if self.minimum is not None and number < self.minimum:
            raise ValueError(f"{self.name} = {number:g} must be ≥ {self.minimum:g}")
        if self.maximum is not None and number > self.maximum:
            raise ValueError(f"{self.name} = {number:g} must be ≤ {self.maximum:g}")
        return number


# Per model kind: starting values of the model fields (widget form) and app-level sampler choices
# on top of the engine's recommendations. The potential, the page's first sight, gets a quick start:
# the engine's own settings aim at a 3% standard error for validation (32 chains × 20000 steps)
# and take minutes on a 2-core CPU, while 4 chains × 2000 steps at ε = 1e-3 finish in seconds
# (measured: λ̂ = 0.21-0.24 ± 0.01-0.04 against 1/4, acceptance ≈ 0.99, R-hat ≈ 1.05).
KIND_PRESETS: dict[str, dict[str, Any]] = {
    "potential": {"powers": "1,2", "step_size": 1e-3, "steps": 2000, "chains": 4, "burnin": 0.25,
                  "localization": 1.0},
    "dln": {"widths": "5,3,5", "rank": 1, "model_seed": 0},
    "rrr": {"input_dim": 4, "hidden": "3", "output_dim": 4, "rank": 1, "model_seed": 0},
    "tanh": {"hidden": "3"},
    "mlp": {"input_dim": 4, "hidden": "16", "output_dim": 1, "task": "regression", "model_seed": 0},
}
# Fields of the kinds this page knew when it was written; zoo's own table wins when it has one.
KNOWN_KIND_FIELDS = {"potential": ("powers",), "dln": ("widths", "rank", "seed")}
# Sampler settings that follow the model kind (reset to the kind's values when the kind changes).
KIND_SAMPLER_SETTINGS = ("step_size", "localization", "nbeta", "chains", "steps", "burnin", "batch_size")
KIND_DESCRIPTIONS = {
    "potential": "potential: x·Π w_j^p_j (normal crossing)",
    "dln": "dln: deep linear network",
    "rrr": "rrr: reduced-rank regression",
    "tanh": "tanh: one-hidden-layer tanh network",
    "mlp": "mlp: ReLU MLP teacher (no known λ)",
}
MODEL_LABELS = {
    "powers": ("Powers p_j", "f(x, w) = x·Π w_j^p_j, so K(w) ∝ Π w_j^(2p_j). Whole numbers ≥ 0, e.g. 1,2."),
    "widths": ("Widths H_0, …, H_M", "Input, hidden and output widths, e.g. 5,3,5."),
    "rank": ("Rank of the true product", "Leave empty for full rank."),
    "seed": ("Model seed", "Seed of the random true weights (and of a drawn architecture)."),
    "layers": ("Layers [lo, hi]", "Random DLN without widths: number of matrices drawn from lo…hi, e.g. 2,5."),
    "width_range": ("Width range [lo, hi]", "Random DLN without widths: each width drawn from lo…hi, e.g. 5,50."),
    "hidden": ("Hidden units", "One number, or for an MLP a list of hidden widths, e.g. 16,16."),
    "input_dim": ("Input dimension", None),
    "output_dim": ("Output dimension", "For classification: the number of classes."),
    "task": ("Task", "regression (Gaussian loss) or classification (cross-entropy)."),
    "weight_scale": ("True-weight scale", "unit: N(0, 1), as in the paper; fan_in: N(0, 1/H_in)."),
    "train_steps": ("SGD steps to w*", "More than 0: estimate at the point SGD reaches instead of the truth."),
    "train_lr": ("SGD learning rate", "Leave empty to derive it from the curvature."),
}

DATA_SETTINGS = [
    Setting("n", "int", engine_defaults.N_SAMPLES, ("data", "n"), minimum=2, maximum=10**8),
    Setting("data_seed", "int", engine_defaults.DATA_SEED, ("data", "seed"), minimum=0),
    Setting("noise_scale", "float", 1.0, ("data", "noise_scale"), positive=True),
]
SAMPLER_SETTINGS = [
    Setting("step_size", "step_size", AUTO, ("sampler", "step_size"), optional=True),
    Setting("localization", "float", engine_defaults.LOCALIZATION, ("sampler", "localization"), minimum=0.0),
    Setting("nbeta", "float", None, ("sampler", "nbeta"), positive=True, optional=True),
    Setting("chains", "int", engine_defaults.CHAINS, ("sampler", "chains"), minimum=1, maximum=256),
    Setting("steps", "int", engine_defaults.STEPS, ("sampler", "steps"), minimum=1, maximum=10**8),
    Setting("burnin", "float", engine_defaults.BURNIN, ("sampler", "burnin"), minimum=0.0),
    Setting("batch_size", "int", None, ("sampler", "batch_size"), minimum=1, optional=True),
    Setting("seed", "int", engine_defaults.SEED, ("sampler", "seed"), minimum=0),
    Setting("preconditioner", "choice", "none", ("sampler", "preconditioner"), choices=("none", "rmsprop")),
    Setting("mala_every", "int", engine_defaults.MALA_EVERY, ("sampler", "mala_every"), minimum=1),
    Setting("snapshot_every", "int", engine_defaults.SNAPSHOT_EVERY, ("sampler", "snapshot_every"), minimum=1),
]
_FIXED_NAMES = {"kind"} | {s.name for s in DATA_SETTINGS + SAMPLER_SETTINGS} | {"device", "dtype"}


def kinds() -> tuple[str, ...]:
    """Model kinds the engine offers now (another developer adds kinds to zoo.py)."""
    return tuple(zoo.KINDS)


def run_settings() -> list[Setting]:
    return [
        Setting("device", "choice", "auto", ("run", "device"), choices=tuple(available_devices())),
        Setting("dtype", "choice", "float32", ("run", "dtype"), choices=("float32", "float64")),
    ]


def model_settings() -> list[Setting]:
    """One Setting per ModelConfig field but `kind`, typed from its annotation.

    The URL name is the field name, or model_<field> where that would clash with another setting
    (the model's `seed` becomes model_seed).
    """
    found = []
    for f in dataclasses.fields(ModelConfig):
        if f.name == "kind":
            continue
        annotation = str(f.type)
        name = f"model_{f.name}" if f.name in _FIXED_NAMES else f.name
        if annotation.startswith("int") and "list" in annotation:  # one number, or a list of them
            found.append(Setting(name, "list", None, ("model", f.name), single_as_int=True))
        elif "list" in annotation:
            found.append(Setting(name, "list", None, ("model", f.name), integers="float" not in annotation))
        elif "int" in annotation:
            found.append(Setting(name, "int", None, ("model", f.name), minimum=0, optional=True))
        elif "float" in annotation:
            found.append(Setting(name, "float", None, ("model", f.name), optional=True))
        else:
            found.append(Setting(name, "text", None, ("model", f.name)))
    return found


def kind_setting() -> Setting:
    return Setting("kind", "choice", "potential", ("model", "kind"), choices=kinds())


def fields_for_kind(kind: str) -> list[str]:
    """ModelConfig fields that a kind reads: declared by zoo when it says, known for potential and
    dln, otherwise every field (a kind this page does not know yet still gets a way to set them)."""
    names = [s.field[1] for s in model_settings()]
    declared = getattr(zoo, "KIND_FIELDS", None) or getattr(zoo, "_FIELDS", None)
    if isinstance(declared, dict) and kind in declared:
        return [n for n in names if n in declared[kind]]
    if kind in KNOWN_KIND_FIELDS:
        return [n for n in KNOWN_KIND_FIELDS[kind] if n in names]
    return names


def settings_for_kind(kind: str) -> list[Setting]:
    """Every setting that a run of this kind uses, in sidebar order."""
    wanted = fields_for_kind(kind)
    model = [s for s in model_settings() if s.field[1] in wanted]
    return [kind_setting(), *model, *DATA_SETTINGS, *SAMPLER_SETTINGS, *run_settings()]


def all_settings() -> dict[str, Setting]:
    return {s.name: s for s in [kind_setting(), *model_settings(), *DATA_SETTINGS, *SAMPLER_SETTINGS, *run_settings()]}


def default_values(kind: str = "potential") -> dict[str, Any]:
    """Widget values of a fresh page for this kind: the app's preset for the kind, over the engine's
    recommendations for it, over the engine's generic defaults."""
    values = {s.name: s.default for s in all_settings().values()}
    for s in model_settings():
        values[s.name] = "" if s.kind in ("list", "text") else None
    values["kind"] = kind
    values["step_size"] = AUTO
    values.update(engine_recommendations(kind))
    values.update(KIND_PRESETS.get(kind, {}))
    return values


@functools.lru_cache(maxsize=32)
def engine_recommendations(kind: str) -> dict[str, Any]:
    """The engine's sampler defaults for a kind (`Problem.sampler_defaults`), in widget form.

    Read by building the kind's preset model on a tiny dataset: the recommendations live with the
    model kinds in zoo.py. ε and nβ are left out: a kind may derive them from the model and n at run
    time, which the page's "auto" leaves to the engine. A kind this page cannot build gets none.
    """
    preset = dict(default_model_values(kind))
    config, _ = _model_config(kind, preset)
    if config is None:
        return {}
    try:
        recommended = zoo.build_problem(config, DataConfig(n=16)).sampler_defaults
    except Exception:  # noqa: BLE001 - a kind under construction must not break the page
        return {}
    return {name: value for name, value in recommended.items()
            if name in KIND_SAMPLER_SETTINGS and name not in ("step_size", "nbeta")}


def default_model_values(kind: str) -> dict[str, Any]:
    return {name: value for name, value in KIND_PRESETS.get(kind, {}).items()
            if name in {s.name for s in model_settings()}}


def _parse_list(setting: Setting, text: str) -> list | int | float | None:
    text = str(text or "").strip()
    if not text or text.lower() == AUTO:
        return None
    items = [item.strip() for item in text.replace(";", ",").split(",")]
    numbers: list = []
    for item in items:
        try:
            number = float(item)
        except ValueError:
            example = "1,2" if setting.integers else "0.5,2"
            raise ValueError(f"{setting.name} = {text!r}: {item!r} is not a number. "
                             f"Write numbers separated by commas, e.g. {example}") from None
        if setting.integers and not number.is_integer():
            raise ValueError(f"{setting.name} = {text!r}: {item!r} is not a whole number. "
                             "Write whole numbers separated by commas, e.g. 1,2")
        numbers.append(int(number) if setting.integers else number)
    if setting.single_as_int and len(numbers) == 1:
        return numbers[0]
    return numbers


def _model_value(setting: Setting, value: Any) -> Any:
    """Widget value → ModelConfig field value."""
    if setting.kind == "list":
        return _parse_list(setting, value)
    if setting.kind == "text":
        text = str(value or "").strip()
        return text or None
    return value


def _check_known_model(kind: str, model: dict[str, Any]) -> list[str]:
    """Immediate, specific messages for the kinds this page knows (the engine checks again)."""
    problems = []
    if kind == "potential":
        powers = model.get("powers")
        if powers is None:
            problems.append("powers is empty: give the exponents p_j, e.g. 1,2 for f(x, w) = x·w1·w2²")
        elif any(p < 0 for p in powers):
            problems.append(f"powers = {powers}: every power must be ≥ 0 (0 means the loss ignores that weight)")
        elif not any(powers):
            problems.append("powers are all 0, so the model is constant: make at least one power ≥ 1")
    if kind == "dln":
        widths = model.get("widths")
        if widths is None or len(widths) < 2:
            problems.append("widths needs at least 2 numbers (input, …, output), e.g. 5,3,5")
        elif any(h < 1 for h in widths):
            problems.append(f"widths = {widths}: every width must be ≥ 1 (a layer of width 0 has no units), "
                            "e.g. 5,3,5")
        elif model.get("rank") is not None and model["rank"] > min(widths):
            smallest = min(widths)
            problems.append(f"rank = {model['rank']} exceeds the smallest width {smallest}: use 0 … {smallest}, "
                            "or leave it empty for full rank")
    return problems


def _model_config(kind: str, values: dict[str, Any]) -> tuple[ModelConfig | None, list[str]]:
    """The model part of the widget values → ModelConfig, or None and what is wrong."""
    problems: list[str] = []
    model: dict[str, Any] = {"kind": kind}
    wanted = fields_for_kind(kind)
    for setting in model_settings():
        if setting.field[1] in wanted:
            try:
                model[setting.field[1]] = _model_value(setting, values.get(setting.name))
            except ValueError as err:
                problems.append(str(err))
    problems += _check_known_model(kind, model)
    return (None, problems) if problems else (ModelConfig(**model), [])


def values_to_config(values: dict[str, Any]) -> tuple[RunConfig | None, list[str]]:
    """Widget values → RunConfig, or None and the list of what is wrong (one sentence each)."""
    kind = values.get("kind", "potential")
    model_config, problems = _model_config(kind, values)

    def get(name: str) -> Any:
        value = values.get(name, all_settings()[name].default)
        return None if value == AUTO else value

    sampler = SamplerConfig(
        step_size=get("step_size"), localization=get("localization"), nbeta=get("nbeta"),
        chains=get("chains"), steps=get("steps"), burnin=get("burnin"), batch_size=get("batch_size"),
        seed=get("seed"), preconditioner=None if get("preconditioner") == "none" else get("preconditioner"),
        mala_every=get("mala_every"), snapshot_every=get("snapshot_every"),
    )
    data = DataConfig(n=get("n"), seed=get("data_seed"), noise_scale=get("noise_scale"))
    try:
        sampler.with_defaults().validate(n=data.n)
    except LLCInputError as err:
        problems.append(str(err))
    if problems:
        return None, problems
    config = RunConfig(model=model_config, data=data, sampler=sampler,
                       device=get("device") or "auto", dtype=get("dtype") or "float32")
    return config, []


def config_to_values(config: RunConfig) -> dict[str, Any]:
    """RunConfig → widget values (the inverse of `values_to_config`).

    A field left unset (None) where the page needs a value takes what the engine would use: the
    generic sampler defaults, or the kind's preset for a model field.
    """
    values = default_values(config.model.kind)
    sections = {"model": config.model, "data": config.data, "sampler": config.sampler.with_defaults()}
    for setting in all_settings().values():
        where, field_name = setting.field
        value = getattr(config, field_name) if where == "run" else getattr(sections[where], field_name)
        if value is None and not setting.optional and setting.kind != "step_size":
            continue  # keep the page's default (for a model field: the kind's preset)
        if setting.kind == "list":
            value = "" if value is None else ",".join(str(v) for v in value)
        elif setting.kind == "text":
            value = "" if value is None else str(value)
        elif setting.name == "preconditioner":
            value = "none" if value is None else value
        elif setting.kind == "step_size":
            value = AUTO if value is None else float(value)
        values[setting.name] = value
    return values


def values_to_query(values: dict[str, Any]) -> dict[str, str]:
    """Widget values → URL query parameters: every setting the current kind uses, "auto" included."""
    return {s.name: s.format(values.get(s.name, s.default)) for s in settings_for_kind(values.get("kind", "potential"))}


def query_to_values(params: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """URL query parameters → widget values, with one message per parameter that could not be used
    (that setting keeps its default). Parameters this page does not know are ignored."""
    problems = []
    kind = params.get("kind", "potential")
    if kind not in kinds():
        problems.append(f"URL: model kind {kind!r} is not available: use one of {', '.join(kinds())}; "
                        "showing the potential instead")
        kind = "potential"
    values = default_values(kind)
    for name, setting in all_settings().items():
        if name == "kind" or name not in params:
            continue
        try:
            values[name] = setting.parse(params[name])
        except ValueError as err:
            shown = setting.format(values[name]) if values[name] not in (None, "") else "empty"
            problems.append(f"URL: {err}; using {shown} instead")
    return values, problems


def config_to_query(config: RunConfig) -> dict[str, str]:
    return values_to_query(config_to_values(config))


def query_to_config(params: dict[str, str]) -> RunConfig:
    """URL query parameters → RunConfig; LLCInputError listing every problem."""
    values, problems = query_to_values(params)
    config, more = values_to_config(values)
    if problems or more:
        raise LLCInputError("; ".join(problems + more))
    return config


# ----------------------------------------------------------------- theory for a config


def theory_for(config: RunConfig) -> theory.Theory | None:
    """The exact λ of a config's model when it is known before the run, from llc_core.theory (the
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


def fraction_text(value: Fraction | float) -> str:
    """1/4 → "1/4 = 0.25"; 13/2 → "13/2 = 6.5"; 3 → "3"."""
    if isinstance(value, Fraction) and value.denominator != 1:
        return f"{value.numerator}/{value.denominator} = {float(value):.4g}"
    return f"{float(value):.4g}"


# ====================================================================== 2. URL binding


def widget_key(page: str, name: str) -> str:
    return f"{page}.{name}"


def restore_from_url(page: str, parse: Callable[[dict[str, str]], tuple[dict[str, Any], list[str]]]) -> list[str]:
    """Call before drawing the page's widgets.

    When the URL carries settings this session has not written itself (a pasted link, a new tab,
    the first load), they replace the widget values; returns the problems found in it. A URL that
    this session wrote, or an empty one (navigating between pages clears it), changes nothing.
    """
    state = st.session_state
    params = st.query_params.to_dict()
    if not params or params == state.get(f"{page}.url_written"):
        return []
    if state.get("url_owner") not in (None, page) and params == state.get("url_params"):
        return []  # another page's settings, left in the address bar by a page switch
    values, problems = parse(params)
    for name, value in values.items():
        state[widget_key(page, name)] = value
    state[f"{page}.values"] = values
    state[f"{page}.url_written"] = params
    return problems


def ensure_widget(page: str, name: str, default: Any) -> str:
    """The widget key for `name`, holding the session's last value (or `default`) before first draw.

    Widgets are then drawn with `key=` only, never `value=`, so that the URL and the session own
    their values.
    """
    key = widget_key(page, name)
    if key not in st.session_state:
        st.session_state[key] = st.session_state.get(f"{page}.values", {}).get(name, default)
    return key


def remember_and_write_url(page: str, values: dict[str, Any], params: dict[str, str]) -> None:
    """After the widgets: keep their values for this session and mirror them in the URL."""
    remembered = dict(st.session_state.get(f"{page}.values", {}))
    remembered.update(values)
    st.session_state[f"{page}.values"] = remembered
    if st.query_params.to_dict() != params:
        st.query_params.from_dict(params)
    st.session_state[f"{page}.url_written"] = params
    st.session_state["url_owner"], st.session_state["url_params"] = page, params


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


def start_run(page: str, config: RunConfig) -> RunRecord:
    """Start a worker for `config`; the finished run before it becomes the ghost to compare with."""
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


# ====================================================================== 3. charts


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


def _burnin_layer(burnin: int) -> alt.Chart:
    return alt.Chart(pd.DataFrame({"start": [0], "end": [burnin], "phase": ["burn-in"]})).mark_rect(
        color="#9e9e9e", opacity=0.18).encode(x="start:Q", x2="end:Q", tooltip=["phase:N"])


def _x(total_steps: int) -> alt.X:
    return alt.X("step:Q", title="step", scale=alt.Scale(domain=[0, max(total_steps, 1)]))


def loss_chart(progress: Progress, burnin: int, total_steps: int) -> alt.LayerChart:
    """Per-chain minibatch loss (mean over each snapshot window), burn-in shaded."""
    frame = _long_frame(progress.history_step, progress.history_loss, "loss")
    lines = alt.Chart(frame).mark_line(strokeWidth=1).encode(
        x=_x(total_steps), y=alt.Y("loss:Q", title="minibatch loss L_B(w)", scale=alt.Scale(zero=False)),
        color=alt.Color("chain:N", legend=None), tooltip=["chain:N", "step:Q", alt.Tooltip("loss:Q", format=".4g")])
    return alt.layer(_burnin_layer(burnin), lines).properties(height=230, title="Loss trace per chain (burn-in shaded)")


def _mean_band(progress: Progress) -> pd.DataFrame:
    llc = progress.history_llc
    rows = []
    for step, row in zip(progress.history_step, llc):
        finite = row[np.isfinite(row)]
        if len(finite):
            se = finite.std(ddof=1) / math.sqrt(len(finite)) if len(finite) > 1 else 0.0
            rows.append((step, finite.mean(), finite.mean() - se, finite.mean() + se))
    return pd.DataFrame(rows, columns=["step", "llc", "low", "high"])


def llc_chart(progress: Progress, total_steps: int, truth: float | None = None, target: float | None = None,
              ghost: Progress | None = None) -> alt.LayerChart:
    """Running λ̂ per chain (thin), overall (thick) with its ± SE band, theory and the previous run."""
    per_chain = _long_frame(progress.history_step, progress.history_llc, "llc")
    overall = _mean_band(progress)
    x = _x(total_steps)
    y = alt.Y("llc:Q", title="running λ̂", scale=alt.Scale(zero=False))
    layers = [
        alt.Chart(overall).mark_area(opacity=0.25, color="#1f77b4").encode(x=x, y="low:Q", y2="high:Q"),
        alt.Chart(per_chain).mark_line(strokeWidth=1, opacity=0.5).encode(
            x=x, y=y, color=alt.Color("chain:N", legend=None),
            tooltip=["chain:N", "step:Q", alt.Tooltip("llc:Q", format=".4g")]),
        alt.Chart(overall).mark_line(strokeWidth=3, color="#1f3b73").encode(
            x=x, y=y, tooltip=["step:Q", alt.Tooltip("llc:Q", title="λ̂ (all chains)", format=".4g")]),
    ]
    if ghost is not None and len(ghost.history_step):
        previous = _mean_band(ghost).assign(run="previous run")
        ghost_line = alt.Chart(previous).mark_line(strokeWidth=2, strokeDash=[2, 2], color="#9e9e9e", clip=True)
        layers.append(ghost_line.encode(x=x, y=y, tooltip=["run:N", "step:Q", alt.Tooltip("llc:Q", format=".4g")]))
    references = []
    if truth is not None:
        references.append({"value": truth, "what": f"theory λ = {truth:.4g}"})
    if target is not None:
        references.append({"value": target, "what": f"finite-n target = {target:.4g}"})
    if references:
        rules = pd.DataFrame(references)
        layers.append(alt.Chart(rules).mark_rule(strokeDash=[6, 3], strokeWidth=2).encode(
            y="value:Q", color=alt.Color("what:N", title=None, scale=alt.Scale(range=["#d62728", "#ff7f0e"]),
                                         legend=alt.Legend(orient="bottom")), tooltip=["what:N"]))
    return alt.layer(*layers).resolve_scale(color="independent").properties(
        height=260, title="Running λ̂ (per chain, all chains ± SE, theory)")


def acceptance_chart(progress: Progress, total_steps: int) -> alt.LayerChart:
    """Running MALA acceptance per chain against the 0.90-0.95 target band."""
    frame = _long_frame(progress.history_step, progress.history_acceptance, "acceptance")
    low, high = engine_defaults.ACCEPTANCE_TARGET
    lowest = float(frame["acceptance"].min()) if len(frame) else low
    band = alt.Chart(pd.DataFrame({"low": [low], "high": [high], "what": ["target 0.90-0.95"]})).mark_rect(
        color="#2ca02c", opacity=0.2).encode(y="low:Q", y2="high:Q", tooltip=["what:N"])
    lines = alt.Chart(frame).mark_line(strokeWidth=1).encode(
        x=_x(total_steps),
        y=alt.Y("acceptance:Q", title="MALA acceptance", scale=alt.Scale(domain=[min(lowest, 0.8), 1.0])),
        color=alt.Color("chain:N", legend=None),
        tooltip=["chain:N", "step:Q", alt.Tooltip("acceptance:Q", format=".3f")])
    return alt.layer(band, lines).properties(height=200, title="MALA acceptance (target band shaded)")


# ====================================================================== live panel and result


def fmt(value: float | None, digits: int = 4, fixed: bool = False) -> str:
    """A number for display: `digits` significant digits, or `digits` decimals when `fixed`; — for none."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}f}" if fixed else f"{value:.{digits}g}"


def run_panel(page: str) -> None:
    """The current run of `page`: live charts while it runs (a polling fragment), then the result."""
    record = current_run(page)
    if record is None:
        st.info("Press **Run** to estimate λ̂ with the settings in the sidebar.")
        return
    if record.finalized:
        draw_result(page, record, previous_run(page))
        return

    @st.fragment(run_every=POLL_SECONDS)
    def live() -> None:
        progress = record.background.poll()
        record.progress = progress
        if progress.finished:
            # A full rerun brings back the Run button and stops this fragment from polling.
            record.finalized = True
            st.rerun()
        draw_live(record, previous_run(page))

    live()


def draw_live(record: RunRecord, previous: RunRecord | None) -> None:
    progress = record.progress
    latest = progress.latest
    stop_col, bar_col = st.columns([1, 6], vertical_alignment="center")
    stop_col.button("Stop", on_click=record.background.request_stop, help="End the run and keep the draws so far")
    if latest is None:
        bar_col.progress(0.0, text="Starting: building the model and data … 0 steps/s")
        return
    phase = "burn-in" if latest.step <= latest.burnin else "sampling"
    left = latest.seconds_left
    bar_col.progress(min(latest.step / latest.total_steps, 1.0),
                     text=f"Step {latest.step:,} / {latest.total_steps:,} ({phase}) · "
                          f"{latest.steps_per_second:,.0f} steps/s · {left:,.0f} s left")
    if latest.diverged:
        st.warning(f"{len(latest.diverged)} chain(s) diverged so far; λ̂ uses the healthy ones.")
    draw_charts(record, previous)


def draw_charts(record: RunRecord, previous: RunRecord | None) -> None:
    progress, config = record.progress, record.config
    total = progress.latest.total_steps if progress.latest else (config.sampler.steps or 1)
    burnin = progress.latest.burnin if progress.latest else 0
    truth = float(record.theory.llc) if record.theory is not None else None
    if truth is None and progress.result is not None:
        truth = progress.result.theoretical_llc
    ghost = previous.progress if previous is not None else None
    left, right = st.columns(2)
    left.altair_chart(loss_chart(progress, burnin, total), width="stretch")
    right.altair_chart(llc_chart(progress, total, truth, record.target, ghost), width="stretch")
    left, right = st.columns(2)
    left.altair_chart(acceptance_chart(progress, total), width="stretch")
    right.caption(
        "**Reading the charts.** After burn-in (grey) the loss trace should be flat: a slow upward "
        "slope means the chains have not equilibrated and λ̂ is an under-estimate. The running λ̂ "
        "should settle, the chains agreeing within the band. MALA acceptance inside the green band "
        "(0.90-0.95) means the step size ε is about right: below it, lower ε; well above it, ε can grow."
        + (" The dotted grey line is the previous run." if ghost is not None else ""))


SEVERITY_BOXES = {"ok": st.success, "info": st.info, "warning": st.warning, "error": st.error}


def draw_result(page: str, record: RunRecord, previous: RunRecord | None) -> None:
    progress = record.progress
    if progress.status == "failed":
        st.error(f"The run failed: {progress.error}")
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
    cols[1].metric("MALA acceptance", fmt(result.mala_acceptance_mean, 3, fixed=True))
    cols[2].metric("R-hat", fmt(result.rhat, 3, fixed=True))
    cols[3].metric("ESS", fmt(result.ess, 3))
    cols[4].metric("chain-steps/s", f"{result.chain_steps_per_second:,.0f}")
    st.markdown(theory_comparison(result, record))
    draw_verdicts(page, result)
    draw_charts(record, previous)
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
        suggestion = verdict.suggestion or {}
        if "step_size" in suggestion and isinstance(suggestion["step_size"], (int, float)):
            new = nice_number(float(suggestion["step_size"]))
            st.button(f"Use ε = {new:.2g}", key=f"{page}.apply.{i}", on_click=apply_setting,
                      args=(page, "step_size", new))
        elif suggestion.get("steps") == "x2":
            steps = 2 * int(result.config.get("sampler", {}).get("steps") or result.steps_completed)
            st.button(f"Use {steps:,} steps", key=f"{page}.apply.{i}", on_click=apply_setting,
                      args=(page, "steps", steps))


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
            "ε": fmt(sampler.get("step_size"), 3),
            "γ": fmt(sampler.get("localization"), 3),
            "nβ": fmt(sampler.get("nbeta"), 5),
            "chains × steps": f"{sampler.get('chains')} × {result.steps_completed:,}",
            "n": f"{result.n:,}",
            "wall time": f"{result.wall_time_s:.1f} s",
        }

    now, before = describe(current), describe(previous)
    return pd.DataFrame({"": list(now), "this run": list(now.values()), "previous run": list(before.values())})


def model_summary(config: RunConfig) -> str:
    parts = []
    for name in fields_for_kind(config.model.kind):
        value = getattr(config.model, name, None)
        if value is not None:
            parts.append(f"{name}={','.join(map(str, value)) if isinstance(value, list) else value}")
    return " ".join(parts)

