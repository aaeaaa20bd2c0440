"""Run a RunConfig: build the model kind's problem, fill the defaults, estimate.

`build_problem` is the one place that knows every model kind: the zoo's (`truth/`) and a user's
checkpoint with its data (`files/`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from llc_core.config import DataConfig, ModelConfig, RunConfig
from llc_core.estimator import StopRequest, default_nbeta, estimate_llc
from llc_core.result import RunResult, Snapshot
from llc_core.files.checkpoint import checkpoint_problem
from llc_core.problem import Problem
from llc_core.truth import zoo


def build_problem(model: ModelConfig, data: DataConfig) -> Problem:
    """The Problem a model kind and its data describe: a zoo model, or a user's checkpoint and data."""
    if model.kind == "checkpoint":
        zoo.check_config(model, data)
        return checkpoint_problem(model, data)
    return zoo.build_problem(model, data)


def run(
    config: RunConfig,
    on_snapshot: Callable[[Snapshot], None] | None = None,
    stop: StopRequest = None,
) -> RunResult:
    """Estimate λ̂ for the model, data and sampler a RunConfig describes.

    The result's `config` is the fully resolved one (every default filled in), so that feeding it
    back reproduces the run exactly.
    """
    problem = build_problem(config.model, config.data)
    sampler = config.sampler.with_defaults(problem.sampler_defaults)
    kind_step_size = None
    if problem.step_size_rule is not None:
        # the kind's ε depends on nβ and γ: recompute it for the values this run actually uses
        nbeta = sampler.nbeta if sampler.nbeta is not None else default_nbeta(problem.inputs.shape[0])
        kind_step_size = problem.step_size_rule(nbeta, sampler.localization)
    if config.sampler.step_size is None and kind_step_size is not None and not sampler.auto_step_size:
        sampler = dataclasses.replace(sampler, step_size=kind_step_size)
    truth = problem.truth
    return estimate_llc(
        problem.model, problem.inputs, problem.targets, sampler,
        loss=problem.loss, noise_scale=config.data.noise_scale, device=config.device, dtype=config.dtype,
        theoretical_llc=float(truth.llc) if truth is not None else None,
        multiplicity=truth.multiplicity if truth is not None else None,
        on_snapshot=on_snapshot, stop=stop, config=_resolved(config, problem),
        initial_step_size=kind_step_size if sampler.auto_step_size else None, class_weights=config.data.class_weights,
    )


def _resolved(config: RunConfig, problem: Problem) -> dict:
    """The config as a dict, with n as the data actually has it (a data file decides its own n)."""
    resolved = config.to_dict()
    resolved["data"]["n"] = int(problem.inputs.shape[0])
    return resolved
