"""RunConfig: the one description of a run, shared by the CLI, the app, the URL and the exported result.

Every field that may be left out is `None` (or has a default from `defaults.py`); `resolve` fills the
`None`s with what the run actually used, and the resolved config is what a RunResult carries.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from typing import Any, Union

from llc_core import budget, defaults
from llc_core.errors import LLCInputError

Preconditioner = Union[None, str, list]  # None, "rmsprop", "rmsprop-local", or a fixed diagonal (one float per parameter)
LOCAL_RMSPROP = "rmsprop-local"  # Hitchcock & Hoogland's RMSprop-SGLD (docs/METHOD.md §7)
SCALED_LOCAL_RMSPROP = "rmsprop-local-scaled"  # the same with V₀ = nβ h_max (docs/METHOD.md §7)
LOCAL_RMSPROPS = (LOCAL_RMSPROP, SCALED_LOCAL_RMSPROP)
ADAPTIVE_PRECONDITIONERS = ("rmsprop", *LOCAL_RMSPROPS)
AUTO = "auto"  # step_size: calibrate ε to the target acceptance (dual averaging)
ALGORITHMS = ("sgld", "mala")


@dataclass
class SamplerConfig:
    """SGLD settings (docs/METHOD.md §1).

    step_size: ε, or "auto": adapt ε to `target_acceptance` by dual averaging during the first
    `calibration_steps` of burn-in, then sample with it fixed (docs/METHOD.md §6). Unset: the model kind's
    rule, else one from the curvature at w*. localization: γ. nbeta: nβ (default n / log n).
    burnin: a fraction of `steps` when < 1, else a number of steps. batch_size: m (default
    min(500, n); n means full batch). preconditioner: None, "rmsprop" (pSGLD's) or "rmsprop-local"
    (Hitchcock & Hoogland's variant, docs/METHOD.md §7), both adapted during burn-in and then frozen,
    or a fixed diagonal A. algorithm: "sgld", or "mala" (full batch, with accept/reject: the
    exact baseline). start_spread: None (every chain starts at w*), or σ > 0: every second chain
    starts at w* + σ·rms(tensor of w*)·N(0, 1) per parameter tensor (σ itself for an all-zero
    tensor), so that chains reach the posterior from two sides and a gap between the two groups
    shows chains that have not mixed (the start_comparison of the result, verdict starts_disagree).
    heat_correction: subtract SGLD's first-order heat, (ε/8)(E||∇U_B||²_A − γ tr A) over the draws, from
    λ̂ (docs/METHOD.md §8; default true; false gives the plain estimator nβ(E[L_B] − L_n(w*))).
    """

    step_size: float | str | None = None
    localization: float | None = None
    nbeta: float | None = None
    chains: int | None = None
    steps: int | None = None
    burnin: float | None = None
    batch_size: int | None = None
    seed: int | None = None
    preconditioner: Preconditioner = None
    mala_every: int | None = None
    snapshot_every: int | None = None
    algorithm: str | None = None
    target_acceptance: float | None = None
    calibration_steps: int | None = None
    start_spread: float | None = None
    heat_correction: bool | None = None

    def with_defaults(self, recommended: dict[str, Any] | None = None) -> "SamplerConfig":
        """A copy whose unset fields take a model kind's recommendations, then the generic defaults.

        nbeta and batch_size stay unset when nothing recommends them: the estimator derives them from
        the data (n / log n, min(500, n)). step_size defaults to "auto".
        """
        filled = dataclasses.replace(self)
        generic = {
            "step_size": defaults.STEP_SIZE, "localization": defaults.LOCALIZATION, "chains": defaults.CHAINS, "steps": defaults.STEPS,
            "burnin": defaults.BURNIN, "seed": defaults.SEED, "mala_every": defaults.MALA_EVERY,
            "snapshot_every": defaults.SNAPSHOT_EVERY, "algorithm": defaults.ALGORITHM,
            "target_acceptance": defaults.ACCEPTANCE_GOAL, "heat_correction": defaults.HEAT_CORRECTION,
        }
        for source in (recommended or {}, generic):
            for key, value in source.items():
                if getattr(filled, key) is None:
                    setattr(filled, key, value)
        return filled

    def burnin_steps(self) -> int:
        """Number of steps discarded, from a fraction or a count."""
        if self.burnin < 1:
            return int(math.floor(self.burnin * self.steps))
        return int(self.burnin)

    @property
    def auto_step_size(self) -> bool:
        return self.step_size == AUTO

    def calibration_steps_used(self) -> int:
        """Steps of dual averaging in "auto" mode (0 otherwise): the set number, else
        CALIBRATION_FRACTION of the steps, at most half of the burn-in."""
        if not self.auto_step_size:
            return 0
        if self.calibration_steps is not None:
            return int(self.calibration_steps)
        return max(1, min(int(defaults.CALIBRATION_FRACTION * self.steps), self.burnin_steps() // 2))

    def validate(self, n: int | None = None, num_params: int | None = None) -> None:
        """Raise LLCInputError naming the first setting that cannot work, and what to use instead.

        Expects a config whose defaults are filled in (`with_defaults`)."""
        if isinstance(self.step_size, str) and self.step_size != AUTO:
            raise LLCInputError(f"step_size = {self.step_size!r}: use a number > 0, or \"auto\" to calibrate it")
        if not self.auto_step_size:
            _finite_number("step_size", self.step_size, allow_none=True)
        if self.step_size is not None and not self.auto_step_size and self.step_size <= 0:
            raise LLCInputError(f"step_size ε = {self.step_size} must be > 0: try 1e-4 and lower it if chains diverge")
        _finite_number("localization", self.localization, allow_none=True)
        if self.localization is not None and self.localization < 0:
            raise LLCInputError(f"localization γ = {self.localization} must be ≥ 0: 1.0 is a good start")
        _finite_number("nbeta", self.nbeta, allow_none=True)
        if self.nbeta is not None and self.nbeta <= 0:
            raise LLCInputError(f"nbeta nβ = {self.nbeta} must be > 0: leave it out to use n / log n")
        _within("step_size", None if self.auto_step_size else self.step_size, MAX_SETTING, "try 1e-4")
        _within("localization", self.localization, MAX_SETTING, "1.0 is a good start")
        _within("nbeta", self.nbeta, MAX_SETTING, "leave it out to use n / log n", smallest=MIN_NBETA)
        for name in ("chains", "steps", "mala_every", "snapshot_every"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise LLCInputError(f"{name} = {value!r} must be a whole number ≥ 1")
        _finite_number("burnin", self.burnin)
        if self.burnin < 0:
            raise LLCInputError(f"burnin = {self.burnin} must be ≥ 0 (a fraction < 1, or a number of steps)")
        if self.burnin_steps() >= self.steps:
            raise LLCInputError(
                f"burnin ({self.burnin_steps()} steps) leaves no draws out of {self.steps} steps: "
                "lower burnin or raise steps"
            )
        if self.algorithm not in ALGORITHMS:
            raise LLCInputError(f"algorithm = {self.algorithm!r}: use \"sgld\" or \"mala\" (full-batch, exact)")
        if self.algorithm == "mala":
            if self.batch_size is not None and n is not None and self.batch_size != n:
                raise LLCInputError(
                    f"algorithm \"mala\" uses the full dataset: leave batch_size out or set it to n = {n}"
                )
            if self.preconditioner in ADAPTIVE_PRECONDITIONERS:
                raise LLCInputError(f"algorithm \"mala\" needs a fixed preconditioner: use null or a list, not {self.preconditioner!r}")
        _finite_number("target_acceptance", self.target_acceptance)
        if not 0 < self.target_acceptance < 1:
            raise LLCInputError(f"target_acceptance = {self.target_acceptance} must lie strictly between 0 and 1: 0.92 is the usual goal")
        if self.calibration_steps is not None and (not _is_int(self.calibration_steps) or self.calibration_steps < 1):
            raise LLCInputError(f"calibration_steps = {self.calibration_steps!r} must be a whole number ≥ 1")
        if self.auto_step_size and self.calibration_steps_used() > self.burnin_steps():
            raise LLCInputError(
                f"step_size \"auto\" calibrates during burn-in, but calibration_steps = {self.calibration_steps_used()} "
                f"exceeds the burn-in ({self.burnin_steps()} steps): raise burnin, lower calibration_steps, "
                "or give step_size a number"
            )
        if not isinstance(self.heat_correction, bool):
            raise LLCInputError(f"heat_correction = {self.heat_correction!r} must be true or false")
        if self.start_spread is not None:
            _finite_number("start_spread", self.start_spread)
            if self.start_spread <= 0:
                raise LLCInputError(f"start_spread = {self.start_spread} must be > 0 (e.g. 0.1), or null to start every chain at w*")
            _within("start_spread", self.start_spread, MAX_START_SPREAD, "0.1 starts chains near w*, 1 on the weights' own scale")
            if self.chains < 2:
                raise LLCInputError("start_spread splits the chains into two groups: use chains ≥ 2")
        check_seed("seed", self.seed)
        if self.snapshot_every > max(self.steps, defaults.SNAPSHOT_EVERY):
            raise LLCInputError(f"snapshot_every = {self.snapshot_every} is longer than the run ({self.steps} steps): "
                                f"use at most {max(self.steps, defaults.SNAPSHOT_EVERY)}")
        if self.batch_size is not None:
            if not _is_int(self.batch_size) or self.batch_size < 1:
                raise LLCInputError(f"batch_size = {self.batch_size!r} must be a whole number ≥ 1")
            if n is not None and self.batch_size > n:
                raise LLCInputError(
                    f"batch_size = {self.batch_size} is larger than the dataset (n = {n}): use at most {n} (full batch)"
                )
        self.validate_preconditioner(num_params)
        self.check_budget(n, num_params)

    def validate_preconditioner(self, num_params: int | None = None) -> None:
        p = self.preconditioner
        if p is not None and p not in ADAPTIVE_PRECONDITIONERS:
            if not isinstance(p, (list, tuple)):
                raise LLCInputError(
                    f"preconditioner = {p!r}: use null, \"rmsprop\", \"rmsprop-local\", or a list with one positive "
                    "number per parameter"
                )
            if num_params is not None and len(p) != num_params:
                raise LLCInputError(f"preconditioner has {len(p)} entries but the model has {num_params} parameters")
            if not all(isinstance(a, (int, float)) and not isinstance(a, bool) and abs(a) < 1e300 and math.isfinite(a) and a > 0
                       for a in p):
                raise LLCInputError("every entry of a fixed preconditioner must be a finite number > 0")

    def check_budget(self, n: int | None = None, num_params: int | None = None, sample_width: int = 1,
                     activation_width: int | None = None) -> None:
        """The resource budget (llc_core/budget.py) of these settings, for what is known of the data and
        model: the loss trace (steps × chains) always, the rest once n and the parameter count are known."""
        batch = 0
        if n is not None:
            batch = n if self.algorithm == "mala" else self.batch_size or min(defaults.BATCH_SIZE, n)
        budget.check(budget.Footprint(num_params=num_params or 0, chains=self.chains, batch_size=batch, n=n or 0,
                                      sample_width=sample_width, activation_width=activation_width, steps=self.steps))


@dataclass
class ModelConfig:
    """Which model to build (see `zoo.py` for the kinds and what each field means there)."""

    kind: str = "potential"  # potential, dln, rrr, tanh or mlp (zoo.KINDS)
    powers: list[int] | None = None  # potential: f(x, w) = x · Π w_j^p_j
    widths: list[int] | None = None  # dln: H_0 (input), ..., H_M (output); leave out to draw them (layers, width_range)
    rank: int | None = None  # dln (with widths) and rrr: rank of the true product matrix
    seed: int | None = None  # dln, rrr, tanh, mlp: seed of the random true weights (and of a drawn architecture)
    layers: list[int] | None = None  # dln without widths: [lo, hi], number of weight matrices M ~ U{lo..hi} (paper App. J)
    width_range: list[int] | None = None  # dln without widths: [lo, hi], each width H_0..H_M ~ U{lo..hi}
    hidden: int | list[int] | None = None  # tanh: hidden units H; rrr: hidden width; mlp: hidden widths (list or one int)
    input_dim: int | None = None  # rrr: input width M; mlp: input features
    output_dim: int | None = None  # rrr: output width N; mlp: outputs (classes when task is classification)
    task: str | None = None  # mlp: "regression" (Gaussian loss, default) or "classification" (cross-entropy)
    weight_scale: str | None = None  # dln, rrr: true weights N(0, 1) ("unit", paper) or N(0, 1/H_in) ("fan_in", default)
    train_steps: int | None = None  # dln, rrr, mlp: > 0 puts w* at the point SGD reaches after this many steps
    train_lr: float | None = None  # learning rate of that SGD (momentum 0.9); default derived from the curvature
    path: str | None = None  # checkpoint: the weights file (.safetensors, .pt state dict, or .pt2 torch.export program)
    architecture: dict | None = None  # checkpoint: JSON spec {"layers": [...]} (checkpoint.ARCHITECTURE_SPEC_HELP); default inferred
    activation: str | None = None  # checkpoint: activation between inferred Linear layers (identity, relu, tanh, gelu, ...; default relu)


@dataclass
class DataConfig:
    """The dataset: n samples drawn with `seed`; `noise_scale` is σ of the Gaussian likelihood."""

    n: int = defaults.N_SAMPLES
    seed: int = defaults.DATA_SEED
    noise_scale: float = 1.0
    # Model kind "checkpoint" only (llc_core/files/datafiles.py): a data file, or a zoo teacher that draws n samples.
    path: str | None = None  # .npz, .safetensors, .pt (tensors only) or .csv with a header; n is then the file's rows
    inputs_key: str | None = None  # the inputs' array name (default: x, inputs, X, ... when unambiguous)
    targets_key: str | None = None  # the targets' array name (default: y, targets, Y, labels, ...)
    target_columns: list[str] | None = None  # CSV: the target column(s); the other columns are the inputs
    loss: str | None = None  # "gaussian" (σ = noise_scale, the default), "cross_entropy" or "next_token"
    class_weights: list[float] | None = None  # cross_entropy: one weight > 0 per class (losses.weighted_cross_entropy_nll)
    teacher: dict | None = None  # ModelConfig fields of a zoo kind whose data to use, e.g. {"kind": "mlp", "input_dim": 4}

    def validate(self) -> None:
        """Raise LLCInputError for a value no data can have (types are checked by `build_config`)."""
        check_types(self, "data")
        if not _is_int(self.n) or self.n < 2:
            raise LLCInputError(f"data.n = {self.n!r} must be a whole number ≥ 2")
        check_seed("data.seed", self.seed)
        _finite_number("data.noise_scale", self.noise_scale)
        if self.noise_scale <= 0:
            raise LLCInputError(f"data.noise_scale σ = {self.noise_scale} must be > 0: 1.0 is the usual value")
        _within("data.noise_scale", self.noise_scale, MAX_SETTING, "1.0 is the usual value", smallest=1 / MAX_SETTING)


@dataclass
class RefineConfig:
    """A refined LLC (llc_core/refine.py): which parameters move, which data count, or which groups.

    parameters: name patterns of the parameters that move, e.g. ["layers.0.*"] (the rest stay at w*).
    data: a subset of the data, {"indices": [...]}, {"range": [0, 500]}, {"label": 3}, {"tokens": [5, 7]} or
    {"column": 0, "value": 1.0}; n and nβ = n / log n are then the subset's.
    groups: for `python -m llc_core refine` and the Checkpoint page: "layer", "head", or
    {"name": [patterns], ...}: the LLC of every group at once, groups as extra chains.
    subsets: for the same: the data-refined LLC of every data subset, one run each (all parameters move, the
    loss is the subset's, n and nβ = n / log n the subset's): "label" (one subset per class label), or
    {"name": one `data` form, ...}. Excludes groups and data.
    """

    parameters: list[str] | None = None
    data: dict | None = None
    groups: str | dict | None = None
    subsets: str | dict | None = None


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    device: str = "auto"
    dtype: str = "float32"
    refine: RefineConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, raw: Any) -> "RunConfig":
        if not isinstance(raw, dict):
            raise LLCInputError(f"a config must be a JSON object, got {type(raw).__name__}")
        reject_unknown_keys(cls, raw, "config")
        for name, example in (("device", "\"auto\", \"cpu\" or \"cuda\""), ("dtype", "\"float32\" or \"float64\"")):
            if not isinstance(raw.get(name, ""), str):
                raise LLCInputError(f"{name} = {_short(raw[name])} must be a string: {example}")
        return cls(
            model=build_config(ModelConfig, raw.get("model", {}), "model"),
            data=build_config(DataConfig, raw.get("data", {}), "data"),
            sampler=build_config(SamplerConfig, raw.get("sampler", {}), "sampler"),
            device=raw.get("device", "auto"),
            dtype=raw.get("dtype", "float32"),
            refine=build_config(RefineConfig, raw["refine"], "refine") if raw.get("refine") is not None else None,
        )

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        return cls.from_dict(parse_json(text, "config"))



@dataclass
class ExecutorConfig:
    """Where a study's independent runs go (docs/CLUSTER.md), a study config's "executor" key.

    ray: None runs them here, one after another (the default, which imports no Ray); "auto" a Ray
    cluster started on this machine (`ray start --head`, or RAY_ADDRESS), else Ray on this machine
    alone; "local" Ray on this machine alone; "host:port" the Ray cluster whose head is there.
    num_cpus / num_gpus: what each run asks for (its torch threads are num_cpus; num_gpus unset: one
    GPU per run when the cluster has GPUs, else none); actors: how many long-lived workers take the
    runs in turn, keeping the study's model and data resident (unset: one per GPU when the cluster has
    GPUs, else a task per run; 0: always a task per run); max_retries: how often a run lost with its
    worker or node is run again; resume: a results directory whose finished runs are kept and where
    new ones are written (with or without Ray); chain_groups: an estimate's chains split into this
    many groups, each a run of its own, merged into one result (llc_core/execution/chain_groups.py).
    """

    ray: str | None = None
    num_cpus: float = 1.0
    num_gpus: float | None = None
    max_retries: int = 3
    resume: str | None = None
    actors: int | None = None
    chain_groups: int = 1

    @classmethod
    def from_dict(cls, raw: Any) -> "ExecutorConfig":
        built = build_config(cls, raw, "executor")
        if (built.num_cpus <= 0 or (built.num_gpus is not None and built.num_gpus < 0) or built.max_retries < 0
                or (built.actors is not None and built.actors < 0) or built.chain_groups < 1):
            raise LLCInputError("executor: num_cpus must be > 0, num_gpus ≥ 0, max_retries ≥ 0, actors ≥ 0 and "
                                "chain_groups ≥ 1")
        if not all(math.isfinite(v) for v in (built.num_cpus, built.num_gpus or 0.0)):
            raise LLCInputError("executor: num_cpus and num_gpus must be finite numbers")
        if built.resume is not None and not built.resume.strip():
            raise LLCInputError("executor.resume is empty: give a results directory, e.g. \"runs/\"")
        return built


def parse_json(text: str, what: str) -> Any:
    """JSON text as Python values, every failure (syntax, nesting too deep) an LLCInputError."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise LLCInputError(f"{what} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}") from None
    except RecursionError:
        raise LLCInputError(f"{what} is nested too deeply to be a config: a config is at most a few levels deep") from None


def read_config_text(path: str) -> str:
    """The text of a config file, or of stdin for "-" (the CLI's CONFIG argument)."""
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as err:
        raise LLCInputError(f"cannot read config {path!r}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise LLCInputError(f"config {path!r} is not a UTF-8 text file: pass a JSON file") from None


def build_config(kind: type, raw: Any, where: str):
    """`kind(**raw)` for a config dataclass, after checking that raw is an object of known keys."""
    if not isinstance(raw, dict):
        raise LLCInputError(f"'{where}' must be a JSON object, got {type(raw).__name__}")
    reject_unknown_keys(kind, raw, where)
    built = kind(**raw)
    check_types(built, where)
    return built


def reject_unknown_keys(kind: type, raw: dict, where: str) -> None:
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise LLCInputError(f"unknown key(s) {', '.join(map(repr, unknown))} in {where}: known keys are {', '.join(sorted(known))}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite_number(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value)):
        raise LLCInputError(f"{name} = {_short(value)} must be a finite number")


# --------------------------------------------------------------------------- type checks

MAX_SETTING = 1e30  # |ε|, γ, nβ, σ beyond this overflow float32 on the way (1/nβ, ε·∇L, ...)
MIN_NBETA = 1e-6  # below it the kinds' ε ∝ 1/nβ overflows; nβ = n / log n is ≥ 2.9 for any n ≥ 2
MAX_START_SPREAD = 1e3  # σ of start_spread, in units of the weights' own scale
_LARGEST_INT = 2**63  # a JSON whole number beyond ±2**63 fits no tensor, seed or count
_SCALARS = {"int": "a whole number", "float": "a number", "str": "a string", "bool": "true or false",
            "dict": "a JSON object", "list": "a list"}


def check_types(config: Any, where: str) -> None:
    """Raise LLCInputError naming the first field of a config dataclass whose value has the wrong JSON
    type (the annotation's: int, float, str, list[int], dict, ... or None where allowed)."""
    for f in dataclasses.fields(config):
        annotation = "None | str | list" if f.type == "Preconditioner" else str(f.type)
        allowed = [part.strip() for part in annotation.split("|")]
        value = getattr(config, f.name)
        if not any(_has_type(value, kind) for kind in allowed):
            names = [_SCALARS.get(kind, kind.replace("list[", "a list of ").rstrip("]") + "s")
                     for kind in allowed if kind != "None"]
            names = [name.replace("a list of ints", "a list of whole numbers").replace("a list of floats", "a list of numbers")
                     for name in names]
            suffix = ", or null" if "None" in allowed else ""
            raise LLCInputError(f"{where}.{f.name} = {_short(value)} must be {' or '.join(names)}{suffix}")


def _has_type(value: Any, kind: str) -> bool:
    if kind == "None":
        return value is None
    if kind.startswith("list[") and isinstance(value, list):
        return all(_has_type(item, kind[5:-1]) for item in value)
    if kind == "int":
        return _is_int(value) and -_LARGEST_INT < value < _LARGEST_INT
    if kind == "float":
        return _has_type(value, "int") or isinstance(value, float)
    return isinstance(value, {"str": str, "bool": bool, "dict": dict, "list": list}.get(kind, object))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_seed(name: str, value: Any) -> None:
    if not _is_int(value) or not 0 <= value <= defaults.MAX_SEED:
        raise LLCInputError(f"{name} = {_short(value)} must be a whole number from 0 to 2**63 − 1")


def _within(name: str, value: Any, largest: float, hint: str, smallest: float = 0.0) -> None:
    """A positive setting whose size would overflow float32 arithmetic on the way."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not smallest <= abs(value) <= largest:
        raise LLCInputError(f"{name} = {value:g} is outside {smallest:g} … {largest:g}: {hint}")

