"""Run a RunConfig: build the model kind's problem, fill the defaults, estimate."""

from __future__ import annotations

import dataclasses
from typing import Callable

from .config import RunConfig
from .estimator import StopRequest, default_nbeta, estimate_llc
from .result import RunResult, Snapshot
from .zoo import build_problem


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
        initial_step_size=kind_step_size if sampler.auto_step_size else None,
    )


def _resolved(config: RunConfig, problem) -> dict:
    """The config as a dict, with n as the data actually has it (a data file decides its own n)."""
    resolved = config.to_dict()
    resolved["data"]["n"] = int(problem.inputs.shape[0])
    return resolved
