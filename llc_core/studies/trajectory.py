"""λ̂ across a training run: the LLC of every checkpoint with one set of SGLD settings.

As in the paper's ResNet experiments, the sampler is calibrated once and then used unchanged for
every checkpoint, so that differences in λ̂ come from the checkpoints, not from the settings: with
the step size left unset, ε is the engine's curvature rule (curvature.py: c / (nβ h_max + γ)) at
the final checkpoint; with "auto", the final checkpoint is estimated first with dual averaging and
the ε it settled on is fixed for all the others (that run is the final checkpoint's point).

Checkpoints come from files (several, or a zip: `read_checkpoint_zip`) or from training a model
here (`train_model`): a deep linear network from a small initialisation, whose rank grows in stages
(saddle-to-saddle dynamics), or an MLP student of a zoo teacher.

With `refine.groups` ("layer", "head" or {name: [patterns]}), every checkpoint also gets the refined λ̂ ± se
of each group (`refined.estimate_groups`: all groups in one batched computation, with the same settings and ε).
The result carries stage hints (`stages.find_stages`, `describe`) for the full λ̂ and for every group.

`TrajectoryRun` runs a TrajectoryConfig in a worker thread that a UI polls (no UI calls in it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from llc_core import defaults
from llc_core.files import checkpoint as ckpt
from llc_core.files import safe_read
from llc_core.config import DataConfig, ExecutorConfig, RefineConfig, SamplerConfig, build_config, reject_unknown_keys
from llc_core.files.datafiles import Dataset, dataset_for, make_dataset, check_fits
from llc_core.errors import LLCInputError
from llc_core.estimator import default_nbeta, estimate_llc, stop_checker
from llc_core.execution import ray_backend
from llc_core.execution.jobs import Job
from llc_core.execution.units import Journal, Outcome, Unit, combine, tensor_digest, unit_key
from llc_core.refine import ParameterMask
from llc_core.result import RunResult, Snapshot
from llc_core.studies.refined import estimate_groups, partition
from llc_core.studies.stages import Stage, describe, find_stages, transitions

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".pt2")

# Settings for trajectories that have no better ones (unset sampler fields take these, then the
# engine's defaults). Measured on the default DLN training run (widths 6-4-4-6): with γ = 10 the
# checkpoints on the loss plateaus give steady λ̂ plateaus that step up with the rank (about −3,
# 4.5, 8, 11.4 for ranks 0-3; low against Aoyagi's λ = 14 at rank 3, since 1000 steps at the
# curvature rule's ε do not equilibrate the soft directions, the same bias at every checkpoint). A
# checkpoint caught mid-transition is no critical point: its chains find lower loss and λ̂ is
# negative, which the negative_llc verdict flags. (γ = 1 let saddle checkpoints of a two-layer DLN
# slide away; the three-layer default's saddles are flatter.)
TRAJECTORY_SAMPLER = {"chains": 4, "steps": 1000, "burnin": 0.5, "localization": 10.0}


# ====================================================================== configs and results


@dataclass
class TrainingConfig:
    """A training run that keeps checkpoints.

    task "dln": a deep linear network (no biases) with `widths`, learning y = T x from x ~ N(0, I)
    where T has singular values `teacher_singular_values` (distinct, so each mode is learned in its
    own stage); weights start N(0, init_scale²), small, so that training passes from saddle to saddle
    and the rank of the product grows one step at a time. Full-batch gradient descent.
    task "mlp": a ReLU student with `widths` of the zoo's mlp teacher (`teacher_hidden`, seed
    `seed`), PyTorch's default initialisation, full-batch Adam.
    `checkpoints` are kept evenly over `steps` (the first at step 0).
    """

    task: str = "dln"
    widths: list[int] | None = None  # dln default [6, 4, 4, 6]; mlp default [4, 16, 1]
    teacher_singular_values: list[float] | None = None  # dln default [3, 1.5, 0.75]
    teacher_hidden: list[int] | None = None  # mlp default [8]
    init_scale: float | None = None  # dln default 0.05
    n: int = 1000
    steps: int | None = None  # dln default 500 (the three modes are learned by step ~350), mlp 2000
    lr: float | None = None  # dln default 0.05 (GD), mlp 0.01 (Adam)
    checkpoints: int = 21
    seed: int = 0


@dataclass
class TrajectoryConfig:
    """Checkpoints (`checkpoint_paths`, files or zips, with `data`) or a `training` run, and the one
    sampler setting for every checkpoint (unset fields: TRAJECTORY_SAMPLER, then the engine's)."""

    checkpoint_paths: list[str] | None = None
    architecture: dict | None = None  # for state dicts; default inferred from the first checkpoint
    activation: str | None = None  # between inferred Linear layers (default relu)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig | None = None
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    device: str = "auto"
    dtype: str = "float32"
    # groups tracked at every checkpoint: {"groups": "layer" | "head" | {"name": [patterns]}} (RefineConfig.groups)
    refine: RefineConfig | None = None
    # where the checkpoints' estimates run (None: here, in turn); with Ray each one is a task (docs/CLUSTER.md)
    executor: ExecutorConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        raw = dataclasses.asdict(self)
        if raw["executor"] is None:  # the local default's JSON is as it was
            del raw["executor"]
        return raw

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, raw: Any) -> "TrajectoryConfig":
        if not isinstance(raw, dict):
            raise LLCInputError(f"a trajectory config must be a JSON object, got {type(raw).__name__}")
        reject_unknown_keys(cls, raw, "trajectory config")
        training = raw.get("training")
        return cls(
            checkpoint_paths=raw.get("checkpoint_paths"), architecture=raw.get("architecture"),
            activation=raw.get("activation"), data=build_config(DataConfig, raw.get("data", {}), "data"),
            training=build_config(TrainingConfig, training, "training") if training is not None else None,
            sampler=build_config(SamplerConfig, raw.get("sampler", {}), "sampler"),
            device=raw.get("device", "auto"), dtype=raw.get("dtype", "float32"),
            refine=build_config(RefineConfig, raw["refine"], "refine") if raw.get("refine") is not None else None,
            executor=ExecutorConfig.from_dict(raw["executor"]) if raw.get("executor") is not None else None,
        )


@dataclass
class WeightsAtStep:
    """One checkpoint: its training step and its weights under the model's parameter names."""

    step: int
    weights: dict[str, Tensor] = field(repr=False)
    label: str = ""


@dataclass
class TrajectoryPoint:
    step: int
    label: str
    train_loss: float  # L_n(w*): the mean negative log-likelihood of the checkpoint on the data
    llc_mean: float | None
    llc_se: float | None
    llc_std: float | None
    acceptance: float | None
    diverged_chains: int
    partial: bool
    verdicts: list[str]  # codes of the warnings and errors
    # the refined λ̂ of every tracked group: name -> {"llc", "se", "moving"} (TrajectoryConfig.refine.groups)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class StageHints:
    """Stage hints on one λ̂ curve (llc_core/studies/stages.py): its stages, the steps in transition
    (negative λ̂) and both in words."""

    stages: list[Stage]
    transitions: list[int]
    text: str

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "StageHints":
        return cls([Stage(**s) for s in raw["stages"]], [int(s) for s in raw["transitions"]], str(raw["text"]))


def stage_hints(points: list[TrajectoryPoint], group: str | None = None) -> StageHints:
    """The stages of the full λ̂ across `points` (by step), or of one tracked group's refined λ̂."""
    ordered = sorted(points, key=lambda p: p.step)
    steps = [p.step for p in ordered]
    if group is None:
        llc, se = [p.llc_mean for p in ordered], [p.llc_se for p in ordered]
    else:
        llc = [p.groups.get(group, {}).get("llc") for p in ordered]
        se = [p.groups.get(group, {}).get("se") for p in ordered]
    stages, moving = find_stages(steps, llc, se), transitions(steps, llc)
    return StageHints(stages, moving, describe(stages, moving))


@dataclass
class TrajectoryResult:
    points: list[TrajectoryPoint]  # by step
    step_size: float
    nbeta: float
    localization: float
    calibrated_on: str  # the checkpoint whose run fixed ε (or "given")
    checkpoints_total: int
    partial: bool  # stopped before every checkpoint was done
    sampler: dict[str, Any]  # the resolved sampler settings every point used
    info: dict[str, Any] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)  # the tracked groups, in the model's order
    stages: StageHints | None = None  # stage hints on the full λ̂
    group_stages: dict[str, StageHints] = field(default_factory=dict)  # and on each group's refined λ̂
    executor: dict[str, Any] | None = None  # on Ray or resumed: where the checkpoints ran, what was retried or resumed

    def to_dict(self) -> dict[str, Any]:
        raw = dataclasses.asdict(self)
        if raw["executor"] is None:
            del raw["executor"]
        return raw

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False, default=str)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "TrajectoryResult":
        """The inverse of to_dict (after a JSON round trip too)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in raw.items() if k in fields}
        kept["points"] = [TrajectoryPoint(**p) for p in raw["points"]]
        kept["stages"] = StageHints.from_dict(raw["stages"]) if raw.get("stages") else None
        kept["group_stages"] = {k: StageHints.from_dict(v) for k, v in (raw.get("group_stages") or {}).items()}
        return cls(**kept)

    def with_stage_hints(self) -> "TrajectoryResult":
        """This result with the stage hints of its points filled in (full λ̂ and every group)."""
        self.stages = stage_hints(self.points)
        self.group_stages = {name: stage_hints(self.points, name) for name in self.groups}
        return self

    def group_table(self) -> str:
        """The refined λ̂ ± se of every group (columns) at every checkpoint (rows); empty without groups."""
        if not self.groups:
            return ""
        width = min(28, max(14, *(len(name) for name in self.groups)))
        lines = [f"{'step':>8}  " + "  ".join(f"{name[:width]:>{width}}" for name in self.groups)]
        for p in self.points:
            cells = [p.groups.get(name, {}) for name in self.groups]
            lines.append(f"{p.step:>8}  " + "  ".join(
                f"{format_number(c.get('llc'), 3) + ' ± ' + format_number(c.get('se'), 2):>{width}}" for c in cells))
        return "\n".join(lines)

    def hints_text(self) -> str:
        """The stage hints in words: the full λ̂'s, then each group's."""
        lines = [f"Stages of λ̂: {self.stages.text}"] if self.stages is not None else []
        lines += [f"Stages of group {name}: {hints.text}" for name, hints in self.group_stages.items()]
        return "\n".join(lines)

    def table(self) -> str:
        lines = [f"{'step':>8}  {'checkpoint':<28}  {'train loss':>11}  {'λ̂':>10}  {'± se':>8}  {'accept':>6}"]
        for p in self.points:
            lines.append(f"{p.step:>8}  {p.label[:28]:<28}  {p.train_loss:>11.4g}  {format_number(p.llc_mean):>10}  "
                         f"{format_number(p.llc_se):>8}  {format_number(p.acceptance, 3):>6}" + ("  (partial)" if p.partial else ""))
        return "\n".join(lines)


def format_number(value: float | None, digits: int = 4) -> str:
    return f"{value:.{digits}g}" if value is not None and math.isfinite(value) else "—"


# ====================================================================== the estimate across checkpoints


def estimate_trajectory(
    module: nn.Module,
    checkpoints: list[WeightsAtStep],
    inputs: Tensor,
    targets: Tensor,
    sampler: SamplerConfig,
    *,
    loss: str = "gaussian",
    noise_scale: float = 1.0,
    device: str = "auto",
    dtype: str = "float32",
    on_point: Callable[[TrajectoryPoint, int, int], None] | None = None,
    on_snapshot: Callable[[Snapshot], None] | None = None,
    stop: Callable[[], bool] | threading.Event | None = None,
    groups: dict[str, ParameterMask] | None = None,
    executor: ExecutorConfig | None = None,
    journal: Journal | None = None,
) -> TrajectoryResult:
    """λ̂ of every checkpoint, with ε calibrated once on the last one (module docstring).

    `on_point(point, done, total)` is called as each checkpoint finishes; `stop` ends the run after
    the current checkpoint's partial estimate, keeping every point done so far. `groups` (named
    parameter selections, `refined.partition`): each checkpoint also gets the refined λ̂ ± se of every
    group, from one batched computation with the same settings and ε (`refine_point`). With
    `executor.ray` every checkpoint's estimate is a Ray task (after the calibration run, with "auto"),
    with the numbers of a run here; `journal` (a results directory) keeps finished checkpoints, and
    those already in it are not estimated again (here or on Ray).
    """
    if not checkpoints:
        raise LLCInputError("no checkpoints to estimate: give at least one")
    ordered = sorted(checkpoints, key=lambda c: c.step)
    final = ordered[-1]
    requested = sampler.step_size  # read before with_defaults, which may fill in "auto"
    sampler = sampler.with_defaults(TRAJECTORY_SAMPLER)
    nbeta = sampler.nbeta if sampler.nbeta is not None else default_nbeta(int(inputs.shape[0]))
    sampler = dataclasses.replace(sampler, nbeta=float(nbeta))
    by_run = requested == "auto"
    if requested is None:
        step = curvature_step_size(module, final.weights, inputs, targets, loss=loss, noise_scale=noise_scale,
                                   nbeta=nbeta, localization=float(sampler.localization), seed=int(sampler.seed))
        sampler = dataclasses.replace(sampler, step_size=step)
    study = Checkpoints(module, ordered, inputs, targets, groups or None,
                        {"loss": loss, "noise_scale": noise_scale, "device": device, "dtype": dtype},
                        journal=journal, on_point=on_point, on_snapshot=on_snapshot, stop=stop_checker(stop))
    ran = study.on_ray(sampler, by_run, executor) if ray_backend.ray_requested(executor) else study.here(sampler, by_run)
    if ran.fixed is None:  # stopped (or lost) before the calibration run was done
        raise LLCInputError(ran.why or "stopped before the calibration run on the final checkpoint finished: no point to keep")
    points = ran.points
    return TrajectoryResult(
        points=sorted(points, key=lambda p: p.step), step_size=float(ran.fixed.step_size), nbeta=float(ran.fixed.nbeta),
        localization=float(ran.fixed.localization),
        calibrated_on=(final.label or f"step {final.step}") if requested in (None, "auto") else "given",
        checkpoints_total=len(ordered),
        partial=len(points) < len(ordered) or any(p.partial for p in points),
        sampler=dataclasses.asdict(ran.fixed), groups=list(groups or {}),
        executor=ran.outcome.summary() if executor is not None else None,
    ).with_stage_hints()


@dataclass
class Ran:
    """What estimating the checkpoints gave: the points, the fixed sampler (None: the calibration run
    never finished, and why), whether it was stopped, and where the runs went."""

    points: list[TrajectoryPoint]
    fixed: SamplerConfig | None
    stopped: bool
    outcome: Outcome
    why: str | None = None


@dataclass
class Checkpoints:
    """A trajectory's checkpoints while they are estimated: what every estimate shares (the model, the
    data, the groups, estimate_llc's keywords), the results directory, and the callbacks."""

    module: nn.Module
    ordered: list[WeightsAtStep]  # by step
    inputs: Tensor
    targets: Tensor
    groups: dict[str, ParameterMask] | None
    estimate: dict[str, Any]  # loss, noise_scale, device, dtype
    journal: Journal | None = None
    on_point: Callable[[TrajectoryPoint, int, int], None] | None = None
    on_snapshot: Callable[[Snapshot], None] | None = None
    stop: Callable[[], bool] = lambda: False
    digests: dict[str, str] = field(default_factory=dict)

    def shared(self) -> dict[str, Any]:
        return {"module": self.module, "inputs": self.inputs, "targets": self.targets, "groups": self.groups,
                "estimate": self.estimate}

    def key(self, index: int, sampler: SamplerConfig, calibrates: bool) -> str:
        """The checkpoint's run in the study: its step and label, and digests of everything that decides
        its numbers (its weights, the data, the settings, the groups), never where it runs."""
        if not self.digests:
            self.digests["data"] = tensor_digest({"inputs": self.inputs, "targets": self.targets})
            self.digests["groups"] = json.dumps({name: tensor_digest(mask) for name, mask in (self.groups or {}).items()})
        point = self.ordered[index]
        return unit_key(f"checkpoint {point.step}:{point.label}",
                        [tensor_digest(point.weights), self.digests, dataclasses.asdict(sampler), calibrates,
                         self.estimate])

    def unit(self, index: int, sampler: SamplerConfig, calibrates: bool) -> Unit:
        payload = {"checkpoint": self.ordered[index], "sampler": sampler, "calibrates": calibrates}
        return Unit(self.key(index, sampler, calibrates), point_on_worker, payload)

    def here(self, sampler: SamplerConfig, by_run: bool) -> Ran:
        """In turn in this process: "auto" runs the final checkpoint first, then the others in training
        order with the ε it settled on; a checkpoint in the journal is taken from it."""
        last = len(self.ordered) - 1
        order = [last, *range(last)] if by_run else list(range(len(self.ordered)))
        found = self.journal.load() if self.journal is not None else {}
        outcome = Outcome(address="this machine", executor="local")
        points: list[TrajectoryPoint] = []
        fixed = None if by_run else sampler
        for index in order:
            calibrates = fixed is None
            # without a results directory no key is needed (nor the digests of every checkpoint's weights)
            key = self.key(index, sampler if calibrates else fixed, calibrates) if self.journal is not None else str(index)
            record = stored_point(found.get(key), calibrates)
            if record is not None:
                outcome.resumed.append(key)
                point, used = record[0], dataclasses.replace(sampler, **record[1]) if calibrates else fixed
            else:
                point, used = estimate_point(self.shared(), self.ordered[index], sampler if calibrates else fixed,
                                             calibrates, stop=self.stop, on_snapshot=self.on_snapshot)
                if self.journal is not None and not point.partial:
                    self.journal.append(key, point_record(point, used, calibrates))
            outcome.values[key] = {}
            fixed = used if calibrates else fixed
            points.append(point)
            if self.on_point is not None:
                self.on_point(point, len(points), len(self.ordered))
            if point.partial or self.stop():
                return Ran(points, fixed, True, outcome)
        return Ran(points, fixed, False, outcome)

    def on_ray(self, sampler: SamplerConfig, by_run: bool, executor: ExecutorConfig) -> Ran:
        """Every checkpoint a Ray task (ray_backend.run_units), the model and data shared through the object
        store; with "auto" the final checkpoint's run first, then the others with the ε it settled on.
        Points arrive as they finish, in any order."""
        points: list[TrajectoryPoint] = []

        def arrived(key: str, value: dict[str, Any], done: int, total: int) -> None:
            points.append(TrajectoryPoint(**value["point"]))
            if self.on_point is not None:
                self.on_point(points[-1], len(points), len(self.ordered))

        run = lambda units: ray_backend.run_units(units, executor, shared=self.shared(), journal=self.journal,  # noqa: E731
                                                  on_value=arrived, stop=self.stop)
        outcomes, fixed, rest = [], sampler, range(len(self.ordered))
        if by_run:
            first = self.unit(len(self.ordered) - 1, sampler, True)
            outcomes.append(run([first]))
            value = outcomes[0].values.get(first.key)
            if value is None:
                lost = outcomes[0].failed.get(first.key)
                why = f"the calibration run on the final checkpoint was lost on the cluster: {lost}" if lost else None
                return Ran(points, None, True, outcomes[0], why)
            fixed, rest = dataclasses.replace(sampler, **value["fixed"]), range(len(self.ordered) - 1)
        if rest and not self.stop():
            outcomes.append(run([self.unit(i, fixed, False) for i in rest]))
        outcome = combine(outcomes)
        return Ran(points, fixed, bool(outcome.cancelled or outcome.failed) or self.stop(), outcome)


FIXED_FIELDS = ("step_size", "nbeta", "localization", "batch_size")  # what the calibration run fixes (_fixed_sampler)


def estimate_point(shared: dict[str, Any], checkpoint: WeightsAtStep, sampler: SamplerConfig, calibrates: bool, *,
                   stop: Callable[[], bool] | None = None,
                   on_snapshot: Callable[[Snapshot], None] | None = None) -> tuple[TrajectoryPoint, SamplerConfig]:
    """One checkpoint's λ̂ (and its groups' refined λ̂), here or on a worker: the point and the sampler
    every later checkpoint uses (the calibration run's ε when `calibrates`, else `sampler`)."""
    should_stop = stop_checker(stop)
    module, data, groups, estimate = shared["module"], (shared["inputs"], shared["targets"]), shared["groups"], shared["estimate"]
    result = estimate_llc(module, *data, sampler, w_star=checkpoint.weights, stop=should_stop,
                          on_snapshot=part_of(on_snapshot, 0, 2 if groups else 1), **estimate)
    fixed = _fixed_sampler(sampler, result) if calibrates else sampler
    point = _point(checkpoint, result)
    if groups and not result.partial and not should_stop():
        refine_point(point, module, checkpoint.weights, data, fixed, groups, on_snapshot=part_of(on_snapshot, 1, 2),
                     stop=should_stop, **estimate)
    return point, fixed


def point_record(point: TrajectoryPoint, fixed: SamplerConfig, calibrates: bool) -> dict[str, Any]:
    """What a finished checkpoint leaves in the results directory (and what its Ray task hands back)."""
    return {"point": dataclasses.asdict(point),
            "fixed": {name: getattr(fixed, name) for name in FIXED_FIELDS} if calibrates else None}


def stored_point(value: Any, calibrates: bool) -> tuple[TrajectoryPoint, dict[str, Any] | None] | None:
    """A checkpoint's point from the results directory, with the settings it fixed when it was the
    calibration run (None when not there, or written by another version)."""
    try:
        point = TrajectoryPoint(**value["point"])
        fixed = {name: value["fixed"][name] for name in FIXED_FIELDS} if calibrates else None
    except (TypeError, KeyError):
        return None
    return point, fixed


def point_on_worker(payload: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    """One checkpoint on a Ray worker (ray_backend.Unit): its point and, for the calibration run, the
    settings it fixed."""
    point, fixed = estimate_point(shared, payload["checkpoint"], payload["sampler"], payload["calibrates"])
    return point_record(point, fixed, payload["calibrates"])


def refine_point(point: TrajectoryPoint, module: nn.Module, weights: dict[str, Tensor], data: tuple[Tensor, Tensor],
                 sampler: SamplerConfig, groups: dict[str, ParameterMask], **estimate: Any) -> None:
    """Fill `point.groups` with the refined λ̂ ± se of every group at this checkpoint: one computation of
    len(groups) × sampler.chains chains (`refined.estimate_groups`), the sampler's ε as it is."""
    result, llcs = estimate_groups(module, *data, sampler, groups, w_star=weights, **estimate)
    point.groups = {g.name: {"llc": g.llc_mean, "se": g.llc_se, "moving": g.moving_params} for g in llcs}
    point.partial = point.partial or result.partial


def part_of(on_snapshot: Callable[[Snapshot], None] | None, part: int, parts: int
            ) -> Callable[[Snapshot], None] | None:
    """A snapshot callback for one of `parts` equal runs at one checkpoint: its progress, step / total,
    is reported as part of the checkpoint's (the full run first, then the groups' run)."""
    if on_snapshot is None or parts == 1:
        return on_snapshot
    return lambda snapshot: on_snapshot(dataclasses.replace(
        snapshot, step=part * snapshot.total_steps + snapshot.step, total_steps=parts * snapshot.total_steps))


def curvature_step_size(module: nn.Module, weights: dict[str, Tensor], inputs: Tensor, targets: Tensor, *, loss: str,
                        noise_scale: float, nbeta: float, localization: float, seed: int = 0) -> float:
    """The engine's curvature rule ε = c / (nβ h_max + γ), h_max the top Hessian eigenvalue of L_n at
    `weights` (the same rule estimate_llc applies to an unset step size)."""
    from torch.func import functional_call

    from llc_core.sampling.curvature import step_size_from_curvature, top_hessian_eigenvalue
    from llc_core.model_function import FlatParams
    from llc_core.losses import make_nll

    params = {name: weights[name].detach().float() for name, _ in module.named_parameters()}
    flat = FlatParams(params)
    nll = make_nll(loss, noise_scale)

    def batch_loss(w: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
        return nll(functional_call(module, flat.unflatten(w), (xb,)), yb).mean()

    # token ids stay integers: an embedding indexes with them
    top = top_hessian_eigenvalue(batch_loss, flat.flatten(params), inputs.float() if inputs.is_floating_point() else inputs,
                                 targets.float() if targets.is_floating_point() else targets, seed=seed)
    if not math.isfinite(top):
        raise LLCInputError("the Hessian at the final checkpoint is not finite: check its weights and the data")
    return step_size_from_curvature(top, nbeta, localization)


def _fixed_sampler(sampler: SamplerConfig, result: RunResult) -> SamplerConfig:
    """The settings a run actually used, with ε as a number, for every later checkpoint."""
    used = result.config.get("sampler", {})
    step = getattr(result, "step_size", None)
    if not isinstance(step, (int, float)) or not math.isfinite(step):
        step = used.get("step_size")
    if not isinstance(step, (int, float)) or not math.isfinite(step) or step <= 0:
        raise LLCInputError("the calibration run on the final checkpoint found no usable step size: set step_size")
    fields = {f.name for f in dataclasses.fields(SamplerConfig)}
    kept = {k: v for k, v in used.items() if k in fields}
    kept["step_size"] = float(step)
    return dataclasses.replace(sampler, **{k: v for k, v in kept.items()
                                           if k in ("step_size", "nbeta", "localization", "batch_size")})


def _point(point_ckpt: WeightsAtStep, result: RunResult) -> TrajectoryPoint:
    return TrajectoryPoint(
        step=point_ckpt.step, label=point_ckpt.label or f"step {point_ckpt.step}", train_loss=float(result.init_loss),
        llc_mean=result.llc_mean, llc_se=result.llc_se, llc_std=result.llc_std,
        acceptance=result.mala_acceptance_mean, diverged_chains=len(result.diverged_chains), partial=result.partial,
        verdicts=[v.code for v in result.verdicts if v.severity in ("warning", "error")],
    )


# ====================================================================== checkpoints from files


def step_from_name(name: str, fallback: int) -> int:
    """The training step in a checkpoint's file name (the last number in it: ckpt_000500.pt → 500)."""
    numbers = re.findall(r"\d+", PurePosixPath(name).stem)
    return int(numbers[-1]) if numbers else fallback


def read_checkpoint_zip(data: bytes) -> list[tuple[str, bytes]]:
    """The checkpoint files in a zip, read into memory (never extracted to disk) by
    safe_read.read_zip_members: paths checked, member count and bytes read bounded; a member that is
    not a checkpoint is refused rather than skipped, so that no checkpoint is silently missing."""
    def checkpoint(name: str) -> bool:
        if not name.lower().endswith(CHECKPOINT_SUFFIXES):
            raise LLCInputError(f"the zip holds {name!r}, not a checkpoint: only "
                                f"{', '.join(CHECKPOINT_SUFFIXES)} files may be in it")
        return True

    members = safe_read.read_zip_members(data, "zip of checkpoints", checkpoint)
    if not members:
        raise LLCInputError("the zip holds no checkpoint files")
    return [(PurePosixPath(name).name, body) for name, body in members.items()]


def expand_uploads(files: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Named files, with every zip among them replaced by the checkpoints inside it."""
    out: list[tuple[str, bytes]] = []
    for name, body in files:
        if safe_read.sniff(body) == "zip" and safe_read.file_kind(body) == "zip":
            out.extend(read_checkpoint_zip(body))
        else:
            out.append((name, body))
    return out


def checkpoints_from_files(files: list[tuple[str, bytes]], architecture: Any = None,
                           activation: str | None = None) -> tuple[nn.Module, list[WeightsAtStep], dict[str, Any] | None]:
    """The model (built from the first checkpoint) and every checkpoint's weights under its parameter
    names; each file is checked like a single upload, and all must be of the same architecture."""
    files = expand_uploads(files)
    if not files:
        raise LLCInputError("no checkpoint files given")
    steps = [step_from_name(name, i) for i, (name, _) in enumerate(files)]
    if len(set(steps)) != len(steps):
        steps = list(range(len(files)))  # names without distinct numbers: keep the upload order
    first = _load_named(*files[0])
    module, spec = ckpt.model_from_checkpoint(first, architecture, activation)
    checkpoints = []
    for (name, body), step in zip(files, steps):
        loaded = first if body is files[0][1] else _load_named(name, body)
        try:
            weights = ckpt.weights_for(module, loaded, spec)
        except LLCInputError as err:
            raise LLCInputError(f"{_safe_label(name)}: {err}") from None
        checkpoints.append(WeightsAtStep(step, weights, _safe_label(name)))
    return module, checkpoints, spec


def _load_named(name: str, body: bytes) -> ckpt.LoadedCheckpoint:
    try:
        return ckpt.load_checkpoint(body)
    except LLCInputError as err:
        raise LLCInputError(f"{_safe_label(name)}: {err}") from None


def _safe_label(name: str) -> str:
    """A file name fit for display: its last component, printable characters only, short."""
    base = PurePosixPath(str(name).replace("\\", "/")).name
    return "".join(c for c in base if c.isprintable())[:80] or "checkpoint"


# ====================================================================== training that keeps checkpoints


def train_model(config: TrainingConfig, stop: Callable[[], bool] | None = None
                ) -> tuple[nn.Module, list[WeightsAtStep], Dataset, dict[str, Any]]:
    """Train the model a TrainingConfig describes; returns the module, its checkpoints, the data
    and what was drawn (the teacher, the losses along the way)."""
    if config.task not in ("dln", "mlp"):
        raise LLCInputError(f"training task {config.task!r}: use \"dln\" or \"mlp\"")
    for name in ("n", "checkpoints", "seed"):
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < (2 if name == "n" else 1 if name == "checkpoints" else 0):
            raise LLCInputError(f"training.{name} = {value!r} must be a whole number ≥ {2 if name == 'n' else 1 if name == 'checkpoints' else 0}")
    steps = config.steps if config.steps is not None else (500 if config.task == "dln" else 2000)
    if not isinstance(steps, int) or steps < 1:
        raise LLCInputError(f"training.steps = {steps!r} must be a whole number ≥ 1")
    build = _dln_setup if config.task == "dln" else _mlp_setup
    module, dataset, optimizer, info = build(config)
    keep = set(np.unique(np.linspace(0, steps, min(config.checkpoints, steps + 1)).round().astype(int)).tolist())
    from llc_core.losses import make_nll

    nll = make_nll(dataset.loss, 1.0)
    checkpoints, losses = [], []
    # the stop request is read every defaults.STOP_CHECK_SECONDS of wall time (as the sampler does): a
    # costly request (a Job's) is not asked every step, and a stop still ends training within ~0.25 s
    next_check = time.perf_counter()  # the first step looks, then every STOP_CHECK_SECONDS
    for step in range(steps + 1):
        loss = nll(module(dataset.inputs), dataset.targets).mean()
        if not math.isfinite(float(loss.detach())):
            raise LLCInputError(f"training diverged at step {step}: lower training.lr")
        if step in keep:
            checkpoints.append(WeightsAtStep(step, {k: v.detach().clone() for k, v in module.named_parameters()},
                                             f"step {step}"))
            losses.append(float(loss.detach()))
        if step == steps:
            break
        if stop is not None and time.perf_counter() >= next_check:
            next_check = time.perf_counter() + defaults.STOP_CHECK_SECONDS
            if stop():
                break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    info.update({"steps": steps, "checkpoint_losses": losses})
    return module, checkpoints, dataset, info


def _dln_setup(config: TrainingConfig):
    widths = config.widths or [6, 4, 4, 6]
    if len(widths) < 2 or not all(isinstance(h, int) and h >= 1 for h in widths):
        raise LLCInputError(f"training.widths = {widths!r} must list at least 2 whole numbers ≥ 1")
    values = config.teacher_singular_values or [3.0, 1.5, 0.75]
    rank = min(len(values), min(widths))
    generator = torch.Generator().manual_seed(config.seed)
    left, _ = torch.linalg.qr(torch.randn(widths[-1], widths[-1], generator=generator, dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(widths[0], widths[0], generator=generator, dtype=torch.float64))
    singular = torch.zeros(widths[-1], widths[0], dtype=torch.float64)
    for i, s in enumerate(values[:min(widths[0], widths[-1])]):
        singular[i, i] = float(s)
    teacher = left @ singular @ right.T
    x = torch.randn(config.n, widths[0], generator=generator, dtype=torch.float64)
    dataset = make_dataset(x.float(), (x @ teacher.T).float(), "gaussian", "teacher")
    module = nn.Sequential(*[nn.Linear(a, b, bias=False) for a, b in zip(widths[:-1], widths[1:])])
    scale = 0.05 if config.init_scale is None else config.init_scale
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * scale)
    from llc_core.truth.theory import deep_linear_network

    truths = {r: float(deep_linear_network(widths, r).llc) for r in range(rank + 1)}
    lr = 0.05 if config.lr is None else config.lr
    info = {"task": "dln", "widths": widths, "teacher_singular_values": list(values), "init_scale": scale,
            "lr": lr, "llc_by_rank": truths}
    return module, dataset, torch.optim.SGD(module.parameters(), lr=lr), info


def _mlp_setup(config: TrainingConfig):
    from llc_core.files.datafiles import teacher_dataset

    widths = config.widths or [4, 16, 1]
    teacher = {"kind": "mlp", "input_dim": widths[0], "output_dim": widths[-1], "hidden": config.teacher_hidden or [8],
               "seed": config.seed}
    dataset = teacher_dataset(teacher, config.n, config.seed)
    from llc_core.truth.zoo import relu_mlp

    with torch.random.fork_rng():
        torch.manual_seed(config.seed + 1)
        module = relu_mlp(widths)
    lr = 0.01 if config.lr is None else config.lr
    info = {"task": "mlp", "widths": widths, "teacher": teacher, "lr": lr}
    return module, dataset, torch.optim.Adam(module.parameters(), lr=lr), info


# ====================================================================== a whole trajectory from its config


def prepare(config: TrajectoryConfig, stop: Callable[[], bool] | None = None
            ) -> tuple[nn.Module, list[WeightsAtStep], Dataset, dict[str, Any]]:
    """The model, checkpoints and data a TrajectoryConfig describes (training first if it says so)."""
    if (config.training is None) == (not config.checkpoint_paths):
        raise LLCInputError("give either checkpoint_paths (files or zips) with data, or a training run, not both")
    if config.training is not None:
        return train_model(config.training, stop)
    files = [(str(path), safe_read.read_limited(path, "checkpoint")) for path in config.checkpoint_paths]
    module, checkpoints, spec = checkpoints_from_files(files, config.architecture, config.activation)
    dataset = dataset_for(config.data)
    ckpt.check_model_accepts(module, dataset.inputs)
    check_fits(module, dataset)
    info = {"architecture": spec, "architecture_text": ckpt.describe_architecture(spec) if spec else "torch.export program",
            "data": dataset.describe()}
    return module, checkpoints, dataset, info


def run_trajectory(config: TrajectoryConfig, on_point=None, on_snapshot=None, stop=None,
                   on_status: Callable[[str], None] | None = None) -> TrajectoryResult:
    should_stop = stop_checker(stop)
    if on_status:
        on_status("training" if config.training is not None else "loading")
    module, checkpoints, dataset, info = prepare(config, should_stop)
    if should_stop():
        raise LLCInputError(f"stopped while {'training' if config.training else 'loading'}, before any checkpoint "
                            "was estimated: start again and let it reach the estimates")
    groups = tracked_groups(config, module)
    if on_status:
        on_status("estimating")
    result = estimate_trajectory(module, checkpoints, dataset.inputs, dataset.targets, config.sampler,
                                 loss=dataset.loss, noise_scale=config.data.noise_scale, device=config.device,
                                 dtype=config.dtype, on_point=on_point, on_snapshot=on_snapshot, stop=should_stop,
                                 groups=groups, executor=config.executor, journal=trajectory_journal(config))
    result.info = {**info, "config": config.to_dict()}
    return result


def trajectory_journal(config: TrajectoryConfig) -> Journal | None:
    """With executor.resume: the trajectory's results file there, named by a digest of its config (each
    checkpoint's key also holds digests of its weights and the data, so changed files are run afresh)."""
    if config.executor is None or not config.executor.resume:
        return None
    study = {k: v for k, v in config.to_dict().items() if k != "executor"}
    return Journal(Path(config.executor.resume) / f"{unit_key('trajectory', study).replace('#', '-')}.runs.jsonl")


def tracked_groups(config: TrajectoryConfig, module: nn.Module) -> dict[str, ParameterMask] | None:
    """The parameter selections of `config.refine.groups` in this model, or None when none are tracked."""
    refine = config.refine
    if refine is None:
        return None
    if refine.parameters is not None or refine.data is not None or refine.subsets is not None:
        raise LLCInputError("a trajectory's refine takes only groups (\"layer\", \"head\" or {\"name\": [patterns]}): "
                            "refine.parameters, refine.data and refine.subsets are for one checkpoint")
    return partition(module, refine.groups) if refine.groups is not None else None


@dataclass
class TrajectoryProgress:
    status: str = "starting"  # starting, training, loading, estimating, done, stopped, failed
    points: list[TrajectoryPoint] = field(default_factory=list)
    total: int = 0
    step_fraction: float = 0.0  # of the checkpoint being estimated
    result: TrajectoryResult | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("done", "stopped", "failed")


class TrajectoryRun(Job):
    """One trajectory in a worker thread (jobs.Job: stops when asked, or when nobody has polled it
    for `abandon_after` s); `poll()` gives a TrajectoryProgress copy."""

    def __init__(self, config: TrajectoryConfig, abandon_after: float | None = 60.0):
        self.config = config

        def work(report, stop):
            state = {"status": "starting", "step_fraction": 0.0, "total": 0}

            def update(**changes) -> None:  # only this thread writes `state`; the Job keeps a copy
                state.update(changes)
                report("progress", dict(state))

            return run_trajectory(config, lambda point, done, total: (report("item", point), update(total=total)),
                                  lambda snapshot: update(step_fraction=snapshot.step / max(snapshot.total_steps, 1)),
                                  stop, on_status=lambda status: update(status=status))

        super().__init__(work, abandon_after, name="llc-trajectory")

    def poll(self) -> TrajectoryProgress:
        snap = self.snapshot()
        state = snap["progress"] or {"status": "starting", "step_fraction": 0.0, "total": 0}
        result: TrajectoryResult | None = snap["result"]
        status = ("failed" if snap["error"] else "stopped" if result is not None and result.partial
                  else "done" if result is not None else state["status"])
        return TrajectoryProgress(
            status=status, points=sorted(snap["items"], key=lambda p: p.step),
            total=result.checkpoints_total if result is not None else state["total"],
            step_fraction=state["step_fraction"], result=result, error=snap["error"])

    def join(self, timeout: float | None = None) -> TrajectoryProgress:
        super().join(timeout)
        return self.poll()
