"""Run a RunConfig: build the model kind's problem, fill the defaults, estimate.

`build_problem` is the one place that knows every model kind: the zoo's (`truth/`) and a user's
checkpoint with its data (`files/`).
"""

from __future__ import annotations

import dataclasses
import os
import stat
from typing import Any, Callable, NamedTuple

from torch import Tensor

from llc_core import defaults, diagnostics
from llc_core.config import DataConfig, ModelConfig, RefineConfig, RunConfig
from llc_core.errors import LLCInputError
from llc_core.estimator import StopRequest, default_nbeta, estimate_llc
from llc_core.result import RunResult, Snapshot
from llc_core.files.checkpoint import checkpoint_problem
from llc_core.problem import Problem
from llc_core.refine import ParameterMask, data_rows, mask_from_patterns, parameter_shapes
from llc_core.truth import zoo


def build_problem(model: ModelConfig, data: DataConfig, *, stop: StopRequest = None) -> Problem:
    """The Problem a model kind and its data describe: a zoo model, or a user's checkpoint and data.
    `stop` ends a zoo kind's SGD pre-training (train_steps) with an LLCInputError."""
    if model.kind == "checkpoint":
        zoo.check_config(model, data)
        return checkpoint_problem(model, data)
    return zoo.build_problem(model, data, stop=stop)


def run(
    config: RunConfig,
    on_snapshot: Callable[[Snapshot], None] | None = None,
    stop: StopRequest = None,
) -> RunResult:
    """Estimate λ̂ for the model, data and sampler a RunConfig describes.

    The result's `config` is the fully resolved one (every default filled in), so that feeding it
    back reproduces the run exactly.
    """
    if config.refine is not None and (config.refine.groups is not None or config.refine.subsets is not None):
        which = "group" if config.refine.groups is not None else "data subset"
        raise LLCInputError(f"refine.{which}s asks for the LLC of every {which}: run `python -m llc_core refine` "
                            "(llc_core.studies.refined.run_groups); a single run takes refine.parameters or refine.data")
    check_config(config)
    problem = build_problem(config.model, config.data, stop=stop)
    sampler = config.sampler.with_defaults(problem.sampler_defaults)
    refined = refinement(config.refine, problem)
    # a refined LLC is not the model's λ: the closed form of the whole model does not apply to it
    truth = problem.truth if refined is None else None
    inputs, targets = (problem.inputs, problem.targets) if refined is None else refined.data
    kind_step_size = None
    if problem.step_size_rule is not None:
        # the kind's ε depends on nβ and γ: recompute it for the values this run actually uses (a data
        # subset's nβ follows its own n)
        nbeta = sampler.nbeta if sampler.nbeta is not None else default_nbeta(inputs.shape[0])
        kind_step_size = problem.step_size_rule(nbeta, sampler.localization)
    if config.sampler.step_size is None and kind_step_size is not None and not sampler.auto_step_size:
        sampler = dataclasses.replace(sampler, step_size=kind_step_size)
    result = estimate_llc(
        problem.model, inputs, targets, sampler,
        loss=problem.loss, noise_scale=config.data.noise_scale, device=config.device, dtype=config.dtype,
        theoretical_llc=float(truth.llc) if truth is not None else None,
        multiplicity=truth.multiplicity if truth is not None else None,
        on_snapshot=on_snapshot, stop=stop, config=_resolved(config, problem),
        initial_step_size=kind_step_size if sampler.auto_step_size else None, class_weights=config.data.class_weights,
        parameter_masks=refined.mask if refined is not None else None,
    )
    if refined is not None:
        result.refined = {**(result.refined or {}), **refined.info}
    # judged again knowing what the kind recommends: advice can then jump to its ε and step count
    result.verdicts = diagnostics.judge(result, kind_reference(problem, kind_step_size))
    return result


def kind_reference(problem: Problem, kind_step_size: float | None) -> diagnostics.Reference:
    """What the problem's kind recommends, for the verdicts: its rule's ε at the run's nβ and γ,
    whether its default ε is "auto", and its step count."""
    return diagnostics.Reference(
        kind_step_size, problem.sampler_defaults.get("step_size", defaults.STEP_SIZE) == "auto",
        problem.sampler_defaults.get("steps"))


class Refinement(NamedTuple):
    """What a RefineConfig makes of a problem: the rows kept, the parameters that move, a record."""

    data: tuple[Tensor, Tensor]
    mask: ParameterMask | None
    info: dict[str, Any]


def refinement(refine: RefineConfig | None, problem: Problem) -> Refinement | None:
    """The data subset and parameter selection of a refined run (None for a plain run)."""
    if refine is None or (refine.parameters is None and refine.data is None):
        return None
    inputs, targets, info = problem.inputs, problem.targets, {"n_total": int(problem.inputs.shape[0])}
    if refine.data is not None:
        rows, info["data"] = data_rows(inputs, targets, refine.data)
        inputs, targets = inputs[rows], targets[rows]
    mask = None
    if refine.parameters is not None:
        mask = mask_from_patterns(parameter_shapes(problem.model), refine.parameters)
        info["parameters"] = list(refine.parameters)
        info["moving"] = [name for name, m in mask.items() if bool(m.any())]
    return Refinement((inputs, targets), mask, info)


def check_config(config: RunConfig) -> None:
    """Everything about a RunConfig that can be checked before anything is built or allocated: the
    types and values of its model, data and sampler, and the resource budget (llc_core/budget.py) of
    the zoo model with the sampler it will run, the kind's recommended chains and steps included.
    A checkpoint's size is known once its file is read: estimate_llc checks it there."""
    if not isinstance(config, RunConfig):
        raise LLCInputError(f"expected a RunConfig, got {type(config).__name__}: use RunConfig.from_dict(...)")
    zoo.check_config(config.model, config.data)
    for what, path in (("model.path", config.model.path), ("data.path", config.data.path)):
        check_regular_file(what, path)
    if config.model.kind == "checkpoint":
        return
    sampler = config.sampler.with_defaults(zoo.recommended_sampler(config.model.kind, config.model))
    planned = zoo.planned_size(config.model)
    if planned is None:
        return  # the kind's builder names what is malformed
    num_params, data_width, activation_width = planned
    n = config.data.n
    if sampler.batch_size is not None and _is_int(sampler.batch_size) and sampler.batch_size > n:
        return  # validate names it once the data exists
    sampler.validate(n=n, num_params=num_params)
    sampler.check_budget(n, num_params, sample_width=data_width, activation_width=activation_width)


def check_regular_file(what: str, path: str | None) -> None:
    """Refuse a path that is neither a file nor a folder (a Hugging Face model is one): /dev/zero, a pipe,
    a socket, before anything reads it."""
    if path is None:
        return
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError) as err:
        raise LLCInputError(f"cannot read {what} {path!r}: {getattr(err, 'strerror', None) or err}; check the path") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise LLCInputError(f"{what} {path!r} is not a regular file (a device or a pipe): give the path of a file")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _resolved(config: RunConfig, problem: Problem) -> dict:
    """The config as a dict, with n as the data actually has it (a data file decides its own n)."""
    resolved = config.to_dict()
    resolved["data"]["n"] = int(problem.inputs.shape[0])
    return resolved
