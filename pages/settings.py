"""Settings of a run: one `Setting` per RunConfig field, with its URL parameter name, bounds and text form.

`values_to_config` / `config_to_values` and `values_to_query` / `query_to_values` convert between
widget values, a RunConfig and the URL, so the same RunConfig drives the app, the URL, the CLI and
the exported result. Nothing here draws or touches `st.session_state`: the pages call these.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from llc_core import (DataConfig, LLCInputError, ModelConfig, RunConfig, SamplerConfig, available_devices, build_problem,
                      default_nbeta)
from llc_core.truth import zoo
from llc_core import defaults as engine_defaults
from llc_core.config import ALGORITHMS

# URL spelling of "let the engine choose": None in a RunConfig, except for the step size, where "auto"
# is the engine's ε calibrated to the target acceptance, and RECOMMENDED (the default) leaves step_size
# out of the config so that the engine takes the model kind's recommendation: its curvature rule for the
# toy kinds, "auto" for the others (llc_core/truth/zoo.py), as `python -m llc_core run` does
AUTO = "auto"
RECOMMENDED = "recommended"
ESTIMATE_PAGE = "est"  # the Estimate page's session-state prefix (Calibrate hands its result to it)


@dataclass(frozen=True)
class Setting:
    """One setting: its URL parameter `name`, the config field it fills, its type and bounds.

    kind: "int", "float", "choice", "step_size" (a float > 0, AUTO or RECOMMENDED), "list" (comma-separated
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
        if self.kind == "step_size" and value in (None, RECOMMENDED):
            return RECOMMENDED
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
        if self.kind == "step_size" and text.lower() in (RECOMMENDED, ""):
            return RECOMMENDED
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


# Per model kind: starting values of the model fields (widget form). The sampler settings are not the
# app's to choose: they come from the engine (zoo.recommended_sampler, `engine_recommendations`), so that
# the app, the CLI and the README give one set of defaults for a model.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "potential": {"powers": "1,2"},
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
    Setting("step_size", "step_size", RECOMMENDED, ("sampler", "step_size"), optional=True),
    Setting("localization", "float", engine_defaults.LOCALIZATION, ("sampler", "localization"), minimum=0.0),
    Setting("nbeta", "float", None, ("sampler", "nbeta"), positive=True, optional=True),
    Setting("chains", "int", engine_defaults.CHAINS, ("sampler", "chains"), minimum=1, maximum=256),
    Setting("steps", "int", engine_defaults.STEPS, ("sampler", "steps"), minimum=1, maximum=10**8),
    Setting("burnin", "float", engine_defaults.BURNIN, ("sampler", "burnin"), minimum=0.0),
    Setting("batch_size", "int", None, ("sampler", "batch_size"), minimum=1, optional=True),
    Setting("seed", "int", engine_defaults.SEED, ("sampler", "seed"), minimum=0),
    Setting("preconditioner", "choice", "none", ("sampler", "preconditioner"), choices=("none", "rmsprop")),
    Setting("algorithm", "choice", engine_defaults.ALGORITHM, ("sampler", "algorithm"), choices=ALGORITHMS),
    Setting("target_acceptance", "float", engine_defaults.ACCEPTANCE_GOAL, ("sampler", "target_acceptance"),
            positive=True, maximum=0.999),
    Setting("mala_every", "int", engine_defaults.MALA_EVERY, ("sampler", "mala_every"), minimum=1),
    Setting("snapshot_every", "int", engine_defaults.SNAPSHOT_EVERY, ("sampler", "snapshot_every"), minimum=1),
    Setting("start_spread", "float", None, ("sampler", "start_spread"), positive=True, optional=True),
    Setting("heat_correction", "choice", "on" if engine_defaults.HEAT_CORRECTION else "off",
            ("sampler", "heat_correction"), choices=("on", "off")),
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
    """Widget values of a fresh page for this kind: the kind's starting model, the engine's sampler
    recommendations for the kind, the engine's generic defaults for the rest, and ε left to the kind
    (RECOMMENDED): what `python -m llc_core run` uses for a config that sets no sampler keys."""
    values = {s.name: s.default for s in all_settings().values()}
    for s in model_settings():
        values[s.name] = "" if s.kind in ("list", "text") else None
    values["kind"] = kind
    values["step_size"] = RECOMMENDED
    values.update(engine_recommendations(kind))
    values.update(default_model_values(kind))
    values["steps"] = recommended_steps(kind, values) or values["steps"]
    return values


def recommended_steps(kind: str, values: dict[str, Any]) -> int | None:
    """The steps the kind recommends for the model these widget values describe (a dln's or rrr's follow
    its size, zoo.SINGULAR_STEPS), or None when it does not depend on the model or the model is malformed."""
    if kind not in ("dln", "rrr"):
        return None
    model, problems = _model_config(kind, values)
    if model is None or problems:
        return None
    return zoo.recommended_sampler(kind, model).get("steps")


@functools.lru_cache(maxsize=32)
def engine_recommendations(kind: str) -> dict[str, Any]:
    """The engine's sampler settings for a kind (zoo.recommended_sampler, the same values as the kind's
    `Problem.sampler_defaults`), in widget form. ε and nβ are left out: the kind derives them from the
    model and n when the run starts (see `recommended_step_size`). A kind zoo does not know gets none."""
    try:
        recommended = zoo.recommended_sampler(kind)
    except Exception:  # noqa: BLE001 - a kind under construction must not break the page
        return {}
    return {name: value for name, value in recommended.items()
            if name in KIND_SAMPLER_SETTINGS and name not in ("step_size", "nbeta")}


def default_model_values(kind: str) -> dict[str, Any]:
    return {name: value for name, value in MODEL_PRESETS.get(kind, {}).items()
            if name in {s.name for s in model_settings()}}


# ====================================================================== the kind's step size

# The kind's ε is read off its model built without SGD pre-training (train_steps): first on TINY_N samples,
# which says whether the kind recommends a number or "auto" (the Estimate page needs no more for "auto");
# the rule's ε is then read at the run's n, up to RULE_PREVIEW_MAX_N samples (the toy kinds build in
# milliseconds; a network's curvature takes a second, which only Calibrate's default grid asks for).
TINY_N = 16
RULE_PREVIEW_MAX_N = 20_000


@dataclass(frozen=True)
class StepSizeAdvice:
    """What the engine does with a run whose step_size is left out (llc_core.runner.run).

    value: the ε it will use (a number: the kind's curvature rule at the run's nβ and γ), or AUTO
    (calibrated to the acceptance band during burn-in), or None when the model cannot be built.
    rule: the kind's rule ε at the run's nβ and γ ("auto" starts from it), None when the kind has none
    or it was not asked for.
    exact: False when the rule was read off fewer samples than the run's n, or before pre-training.
    """

    value: float | str | None
    rule: float | None
    exact: bool = True


def recommended_step_size(config: RunConfig, rule_for_auto: bool = False) -> StepSizeAdvice:
    """The kind's recommended ε for this config's model, data, nβ and γ, as `run` resolves it; with
    `rule_for_auto`, also the curvature-rule ε that "auto" starts from (a model built on more samples)."""
    n = config.data.n if isinstance(config.data.n, int) else engine_defaults.N_SAMPLES
    model = dataclasses.replace(config.model, train_steps=None)
    try:
        recommended, rule = _kind_step_size(_key(model), _key(dataclasses.replace(config.data, n=min(n, TINY_N))))
        sampler = dataclasses.replace(config.sampler, step_size=None).with_defaults(recommended)
        auto = sampler.step_size == AUTO
        if auto and not (rule_for_auto and rule is not None):
            return StepSizeAdvice(AUTO, None)
        preview = min(n, RULE_PREVIEW_MAX_N)
        recommended, rule = _kind_step_size(_key(model), _key(dataclasses.replace(config.data, n=preview)))
    except Exception:  # noqa: BLE001 - the run itself reports what is wrong with the model
        return StepSizeAdvice(None, None)
    sampler = dataclasses.replace(config.sampler, step_size=None).with_defaults(recommended)
    nbeta = sampler.nbeta if sampler.nbeta is not None else default_nbeta(n)
    rule_value = rule(nbeta, sampler.localization) if rule is not None else None
    exact = preview == n and not config.model.train_steps
    if auto:
        return StepSizeAdvice(AUTO, rule_value, exact)
    return StepSizeAdvice(rule_value if rule_value is not None else sampler.step_size, rule_value, exact)


def _key(section: Any) -> str:
    return json.dumps(dataclasses.asdict(section), sort_keys=True, default=str)


@functools.lru_cache(maxsize=64)
def _kind_step_size(model: str, data: str) -> tuple[dict[str, Any], Any]:
    """(the kind's sampler defaults, its step-size rule or None) for a model and data (JSON of their configs)."""
    problem = build_problem(ModelConfig(**json.loads(model)), DataConfig(**json.loads(data)))
    return dict(problem.sampler_defaults), problem.step_size_rule


def step_size_text(advice: StepSizeAdvice) -> str:
    """The recommended ε in words, for the page beside the step-size control."""
    if advice.value is None:
        return "The model's recommended ε is chosen when the run starts."
    if advice.value == AUTO:
        start = f", starting from about {advice.rule:.2g}, its curvature rule's ε" if advice.rule else ""
        return (f"Recommended for this model: **auto**, ε calibrated during burn-in until the MALA acceptance "
                f"reaches the goal{start}.")
    about = "" if advice.exact else "about "
    return (f"Recommended for this model: ε = **{about}{advice.value:.2g}**, from its curvature at this n, nβ "
            "and γ (what the CLI uses when step_size is left out).")


# ====================================================================== the model shared by Estimate and Calibrate

SHARED_MODEL = "shared.model"  # session-state key: {"values": model and data widget values, "version": n}


def shared_names(kind: str) -> list[str]:
    """The widget values that describe the model and its data (what Estimate and Calibrate share)."""
    model = [s.name for s in settings_for_kind(kind) if s.field[0] == "model"]
    return [*model, "n", "data_seed", "noise_scale"]


def publish_model(state: MutableMapping[str, Any], page: str, values: dict[str, Any]) -> None:
    """After a page's widgets: its model and data become the shared ones (a new version when they changed).
    `state` is the session state (passed in: nothing in this module reads Streamlit)."""
    shared = {name: values.get(name) for name in shared_names(values.get("kind", "potential"))}
    current = state.get(SHARED_MODEL)
    if current is None or current["values"] != shared:
        state[SHARED_MODEL] = {"values": shared, "version": (current["version"] if current else 0) + 1}
    state[f"{page}.shared_seen"] = state[SHARED_MODEL]["version"]


def shared_model(state: MutableMapping[str, Any], page: str, new_only: bool = True) -> dict[str, Any] | None:
    """The shared model and data, when another page changed them since this page last published
    (or at all, with new_only=False); None otherwise."""
    current = state.get(SHARED_MODEL)
    if current is None or (new_only and state.get(f"{page}.shared_seen") == current["version"]):
        return None
    return dict(current["values"])


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


def step_size_value(value: Any) -> float | str | None:
    """The step-size widget's value → SamplerConfig.step_size: None (the kind's recommendation), "auto" or ε."""
    if value in (None, RECOMMENDED, ""):
        return None
    return AUTO if value == AUTO else float(value)


def values_to_config(values: dict[str, Any]) -> tuple[RunConfig | None, list[str]]:
    """Widget values → RunConfig, or None and the list of what is wrong (one sentence each)."""
    kind = values.get("kind", "potential")
    model_config, problems = _model_config(kind, values)

    def get(name: str) -> Any:
        value = values.get(name, all_settings()[name].default)
        return None if value == AUTO else value

    sampler = SamplerConfig(
        step_size=step_size_value(values.get("step_size", RECOMMENDED)), localization=get("localization"), nbeta=get("nbeta"),
        chains=get("chains"), steps=get("steps"), burnin=get("burnin"), batch_size=get("batch_size"),
        seed=get("seed"), preconditioner=None if get("preconditioner") == "none" else get("preconditioner"),
        mala_every=get("mala_every"), snapshot_every=get("snapshot_every"),
        algorithm=get("algorithm"), target_acceptance=get("target_acceptance"), start_spread=get("start_spread"),
        heat_correction=get("heat_correction") == "on",
    )
    data = DataConfig(n=get("n"), seed=get("data_seed"), noise_scale=get("noise_scale"))
    try:
        sampler.with_defaults(engine_recommendations(kind)).validate(n=data.n)
    except LLCInputError as err:
        problems.append(str(err))
    if problems:
        return None, problems
    config = RunConfig(model=model_config, data=data, sampler=sampler,
                       device=get("device") or "auto", dtype=get("dtype") or "float32")
    return config, []


def config_to_values(config: RunConfig) -> dict[str, Any]:
    """RunConfig → widget values (the inverse of `values_to_config`).

    A field left unset (None) where the page needs a value takes what the engine would use: the kind's
    sampler recommendations, then the generic defaults, or the kind's preset for a model field; an unset
    step size stays the kind's recommendation (RECOMMENDED).
    """
    kind = config.model.kind
    values = default_values(kind)
    sampler = config.sampler.with_defaults({**engine_recommendations(kind),
                                            **zoo.recommended_sampler(kind, config.model)})
    sampler.step_size = config.sampler.step_size
    sections = {"model": config.model, "data": config.data, "sampler": sampler}
    for setting in all_settings().values():
        where, field_name = setting.field
        value = getattr(config, field_name) if where == "run" else getattr(sections[where], field_name)
        if value is None and not setting.optional and setting.kind != "step_size":
            continue  # keep the page's default (for a model field: the kind's preset)
        if setting.kind == "list":
            value = "" if value is None else ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
        elif setting.kind == "text":
            value = "" if value is None else str(value)
        elif setting.name == "preconditioner":
            value = "none" if value is None else value
        elif setting.name == "heat_correction":
            value = "on" if value else "off"
        elif setting.kind == "step_size":
            value = RECOMMENDED if value is None else AUTO if value == AUTO else float(value)
        values[setting.name] = value
    return values


def values_to_query(values: dict[str, Any]) -> dict[str, str]:
    """Widget values → URL query parameters: every setting the current kind uses, "auto" and
    "recommended" included."""
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
    if "steps" not in params:  # the kind's count for the model the URL gives, as the CLI resolves it
        values["steps"] = recommended_steps(kind, values) or values["steps"]
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


def model_summary(config: RunConfig) -> str:
    """The model fields a config sets, in one line: "powers=1,2", "widths=5,3,5 rank=1"."""
    parts = []
    for name in fields_for_kind(config.model.kind):
        value = getattr(config.model, name, None)
        if value is not None:
            parts.append(f"{name}={','.join(map(str, value)) if isinstance(value, list) else value}")
    return " ".join(parts)


# ====================================================================== a page's own settings in the URL

MAX_URL_TEXT = 4000  # characters of a text setting taken from a URL (a JSON of data subsets)


def page_query_to_values(params: dict[str, str], page_settings: list[Setting], widgets: dict[str, str]
                         ) -> tuple[dict[str, Any], list[str]]:
    """A page's URL parameters → its widget values ({widget name: value}, `widgets` naming each setting's
    widget), only for the settings the URL carries; one message per unusable value (that setting keeps the
    page's value). Parameters the page does not know are ignored."""
    values, problems = {}, []
    for setting in page_settings:
        if setting.name not in params:
            continue
        text = str(params[setting.name])
        try:
            if setting.kind == "text" and len(text) > MAX_URL_TEXT:
                raise ValueError(f"{setting.name} is {len(text):,} characters long, more than {MAX_URL_TEXT:,}")
            values[widgets[setting.name]] = setting.parse(text)
        except ValueError as err:
            shown = setting.format(setting.default) if setting.default not in (None, "") else "empty"
            problems.append(f"URL: {err}; using {shown} instead")
    return values, problems


def page_values_to_query(values: dict[str, Any], page_settings: list[Setting], widgets: dict[str, str]) -> dict[str, str]:
    """A page's widget values → its URL parameters (the settings whose widget has a value)."""
    return {s.name: s.format(values[widgets[s.name]]) for s in page_settings if values.get(widgets[s.name]) is not None}


# The Checkpoint page's refined LLCs (section 5) and the Training run page's tracked groups: URL name → widget
CHECKPOINT_REFINE_SETTINGS = [
    Setting("groups", "choice", "layer", ("refine", "groups"), choices=("layer", "head", "data")),
    Setting("chains_per_group", "int", 4, ("refine", "chains"), minimum=1, maximum=64),
    Setting("subsets", "choice", "label", ("refine", "subsets"), choices=("label", "chosen")),
    Setting("subset_rows", "text", "", ("refine", "subsets")),
]
CHECKPOINT_REFINE_WIDGETS = {"groups": "refine_groups", "chains_per_group": "refine_chains",
                             "subsets": "refine_subsets", "subset_rows": "refine_subset_rows"}
TRAJECTORY_REFINE_SETTINGS = [Setting("groups", "choice", "none", ("refine", "groups"), choices=("none", "layer", "head"))]
TRAJECTORY_REFINE_WIDGETS = {"groups": "groups"}
