"""Estimate λ̂(w*) = nβ (E_w[L_n(w)] − L_n(w*)) with C chains of SGLD run as one batched computation.

One run is a composition: a *kernel* (`sampling/`: SGLD or MALA, `init` and `step`), a *schedule*
(`schedule.py`: calibration, burn-in rechecks, heat cap), a *data stream* (`stream.py`: each chain's
minibatch walk) and *bookkeeping* (`bookkeeping.py`: running sums, snapshots, divergence, the final
RunResult). `estimate_llc` takes any torch.nn.Module, its data and a loss; it streams Snapshots to a
callback, honours a stop request within one snapshot interval, stops chains that diverge while the
others go on, and returns a RunResult.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from llc_core import defaults
from llc_core.bookkeeping import Divergence, Ending, RunFacts, Tally, run_result
from llc_core.config import LOCAL_RMSPROP, LOCAL_RMSPROPS, SCALED_LOCAL_RMSPROP, SamplerConfig
from llc_core.errors import LLCInputError
from llc_core.batching import batched_loss_and_grad
from llc_core.model_function import (ModelFunction, Parameters, available_devices, check_data, copy_parameters,
                                     differentiable_attention, model_function, resolve_device, resolve_dtype)
from llc_core.refine import ParameterMask, flat_mask
from llc_core.result import RunResult, Snapshot
from llc_core.sampling.adaptation import effective_target
from llc_core.sampling.curvature import step_size_from_curvature, top_hessian_eigenvalue
from llc_core.sampling.mala import MALA
from llc_core.sampling.sgld import SGLD, RMSprop, local_rmsprop
from llc_core.schedule import Move, Schedule
from llc_core.stream import DataStream, MinibatchWalk

StopRequest = Callable[[], bool] | threading.Event | None

__all__ = ["StopRequest", "available_devices", "default_nbeta", "estimate_llc", "resolve_device", "stop_checker"]


def default_nbeta(n: int) -> float:
    """nβ* = n / log n: β* = 1/log n, the inverse temperature of the WBIC and of the LLC estimator."""
    return n / math.log(n)


def estimate_llc(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    sampler: SamplerConfig,
    *,
    loss: str = "gaussian",
    noise_scale: float = 1.0,
    w_star: Mapping[str, Tensor] | None = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "float32",
    theoretical_llc: float | None = None,
    multiplicity: int | None = None,
    on_snapshot: Callable[[Snapshot], None] | None = None,
    stop: StopRequest = None,
    config: dict[str, Any] | None = None,
    initial_step_size: float | None = None,
    per_chain: Mapping[str, Sequence[float]] | None = None,
    class_weights: Sequence[float] | None = None,
    parameter_masks: ParameterMask | Sequence[ParameterMask] | None = None,
) -> RunResult:
    """Run C SGLD chains from w* and return λ̂ with diagnostics.

    w_star defaults to the module's own parameters. Unset sampler fields take the defaults of
    `defaults.py`; an unset step size comes from the curvature at w* (`sampling/curvature.py`), and
    so does the starting ε of step_size "auto" unless `initial_step_size` gives one. `config` is the
    RunConfig dict to attach to the result (its sampler part is replaced by the resolved one).
    `per_chain` maps some of "step_size", "localization", "nbeta" to one value per chain (a sweep's
    grid cells run as chains); each chain's λ̂ then uses its own nβ, and per-chain step sizes replace
    the sampler's (no calibration). The module is evaluated in eval mode on a copy (RunResult.model_mode
    says why); `class_weights` weight the cross-entropy loss per class. `parameter_masks` (one for all
    chains, or one per chain) say which parameters move; the rest stay at w* (weight-refined LLCs).
    """
    started = time.perf_counter()
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    n = check_data(model, inputs, targets)
    parameters = copy_parameters(model, w_star, dev, dt)
    sampler = validated_sampler(sampler, per_chain, n, parameters.flat.num_params)
    with differentiable_attention():
        function = model_function(parameters, inputs, targets, loss=loss, noise_scale=noise_scale,
                                  class_weights=class_weights)
        plan = plan_run(sampler, function, per_chain, initial_step_size)
        plan = dataclasses.replace(plan, mask=chain_masks(parameter_masks, parameters.flat, plan, function.w_star))
        loop = start_loop(plan, function, parameters)
        partial, loop_time = sample(loop, plan.sampler.snapshot_every, on_snapshot, stop_checker(stop))
    facts = RunFacts(sampler=plan.sampler, n=n, num_params=function.num_params, nbeta=plan.nbeta,
                     localization=plan.localization, batch_size=plan.batch_size, device=str(dev),
                     theoretical_llc=theoretical_llc, multiplicity=multiplicity, config=config,
                     model_mode=parameters.mode, moving_params=moving_per_chain(plan.mask))
    ending = Ending(partial=partial, loop_time=loop_time, wall_time=time.perf_counter() - started,
                    step_size=loop.kernel.step_size, calibration=loop.schedule.report(loop.kernel))
    return run_result(loop.tally, facts, ending)


def start_loop(plan: "RunPlan", function: ModelFunction, parameters: Parameters) -> "Loop":
    """The kernel at its starting states, the schedule, the data stream and an empty tally."""
    generator = torch.Generator(device=function.w_star.device)
    generator.manual_seed(plan.sampler.seed)
    walk = None if plan.full_batch else MinibatchWalk(function.x, function.y, plan.chains, plan.batch_size, generator)
    schedule = Schedule(
        steps=plan.sampler.steps, burnin=plan.sampler.burnin_steps(), calibration=plan.calibration,
        mala_every=plan.sampler.mala_every, heat_measurable=not plan.mala and not plan.full_batch,
        target=effective_target(plan.sampler.target_acceptance, function.num_params, defaults.AUTO_FULL_DIMENSION),
        num_params=function.num_params, initial_step_size=plan.step_size,
    )
    kernel = make_kernel(plan, function)
    loop = Loop(
        kernel=kernel, state=kernel.init(start_positions(parameters, function.w_star, plan, generator)),
        schedule=schedule, stream=DataStream(function.x, function.y, walk, plan.calibration),
        tally=Tally.start(schedule.steps, schedule.burnin, plan.nbeta_chains, function.init_loss, function.w_star,
                          heat_correction=bool(plan.sampler.heat_correction) and not plan.mala),
        divergence=Divergence.for_run(function.w_star, plan.nbeta_chains, function.init_loss), generator=generator,
    )
    loop.kernel = schedule.start(loop.kernel)
    return loop


# --------------------------------------------------------------------------- the sampling loop


@dataclass
class Loop:
    """The parts of a run that change from step to step, and those that say how."""

    kernel: SGLD | MALA
    state: Any
    schedule: Schedule
    stream: DataStream
    tally: Tally
    divergence: Divergence
    generator: torch.Generator


def sample(loop: Loop, snapshot_every: int, on_snapshot: Callable[[Snapshot], None] | None,
           stop_requested: Callable[[], bool]) -> tuple[bool, float]:
    """Run the steps; at every snapshot park diverged chains, stream a Snapshot and honour a stop.
    Between snapshots the stop request is also read every defaults.STOP_CHECK_SECONDS of wall time,
    so that a stop takes effect within about that long whatever snapshot_every is; a stop there
    closes the window as a snapshot would. Reading the clock and the request draws nothing from the
    generator, so a run that is not stopped takes the same steps with the same numbers.
    Returns (stopped early, seconds spent)."""
    schedule, tally = loop.schedule, loop.tally
    loop_start = time.perf_counter()
    next_check = loop_start + defaults.STOP_CHECK_SECONDS
    for t in range(schedule.steps):
        step(loop, t)
        tally.done = done = t + 1
        snapshot_due = done % snapshot_every == 0 or done == schedule.steps
        stopping = False
        if not snapshot_due and time.perf_counter() >= next_check:
            next_check = time.perf_counter() + defaults.STOP_CHECK_SECONDS
            stopping = snapshot_due = stop_requested()
        if snapshot_due:
            loop.state = tally.close_window(loop.state, loop.divergence, ignore_before=schedule.calibration)
            if on_snapshot is not None:
                elapsed = time.perf_counter() - loop_start
                on_snapshot(tally.snapshot(elapsed, loop.kernel.step_size, done <= schedule.calibration))
            tally.checked = done
            if done < schedule.steps and (stopping or stop_requested()):
                return True, time.perf_counter() - loop_start
    return False, time.perf_counter() - loop_start


def step(loop: Loop, t: int) -> None:
    """Step t: the kernel's move on this step's batch, then what the schedule does at t."""
    schedule, tally = loop.schedule, loop.tally
    measure_heat = schedule.measure_heat(t)
    started_from = loop.state
    state, info = loop.kernel.step(
        started_from, loop.stream.batch(t), loop.generator, measure_acceptance=schedule.measure_acceptance(t),
        adapt_preconditioner=t < schedule.burnin, measure_step_heat=t >= tally.burnin,
        **({"keep_grad": True} if measure_heat else {}))
    tally.losses[t] = info.loss
    if info.step_heat is not None:
        tally.record_step_heat(info.step_heat)
    if t >= tally.burnin:
        # ||w − w*||² of the point whose loss that is: the localization effect's covariance (bookkeeping)
        tally.record_distance(info.loss, (started_from.position - loop.divergence.w_star).square().sum(1))
    if measure_heat:
        schedule.after_heat(t, loop.kernel.minibatch_heat(started_from, info, loop.stream.peek()), tally)
    loop.kernel = schedule.recheck(t, loop.kernel, tally, loop.divergence.nbeta)
    if schedule.calibrating(t):
        # the acceptance of a step with ε still moving says nothing about the fixed-ε chain
        move = Move(started_from, state, info, loop.generator)
        loop.kernel, state = schedule.calibrate(t, loop.kernel, move, tally, loop.divergence)
    elif info.acceptance is not None:
        schedule.after_acceptance(t, info.acceptance, tally)
    loop.state = state


def stop_checker(stop: StopRequest) -> Callable[[], bool]:
    """A stop request (an Event, a callable or None) as a function that says whether to stop."""
    if stop is None:
        return lambda: False
    if isinstance(stop, threading.Event):
        return stop.is_set
    return stop


# --------------------------------------------------------------------------- the run's settings


@dataclass(frozen=True)
class RunPlan:
    """The resolved settings of one run: ε (step_size), γ (localization), nβ (nbeta), C (chains)."""

    sampler: SamplerConfig  # every default filled; step_size None when each chain has its own
    chains: int
    batch_size: int
    full_batch: bool
    nbeta: float  # the run's nβ (the mean over chains when each chain has its own)
    nbeta_chains: np.ndarray  # nβ of each chain, (C,)
    localization: float
    step_size: float | None  # the fixed ε, or the starting ε of "auto"; None for per-chain ε
    calibration: int  # steps of "auto" calibration
    chain_values: dict[str, Tensor]  # per-chain ε, γ or nβ, (C,) each
    mask: Tensor | None = None  # (C, d): 1 where a chain moves (refined LLCs), None when all move
    plain_step_size: float | None = None  # plain SGLD's ε for this model, when "rmsprop-local" derived its own from it

    @property
    def mala(self) -> bool:
        return self.sampler.algorithm == "mala"


def validated_sampler(sampler: SamplerConfig, per_chain: Mapping[str, Sequence[float]] | None, n: int,
                      num_params: int) -> SamplerConfig:
    """The sampler with its defaults filled, validated for this data and model."""
    if per_chain and "step_size" in per_chain:
        # each chain has its own fixed ε: validate as a fixed-ε run (not the default "auto"); the
        # resolved config records no single ε (plan_run)
        sampler = dataclasses.replace(sampler, step_size=float(per_chain["step_size"][0]))
    sampler = sampler.with_defaults()
    sampler.validate(n=n, num_params=num_params)
    return sampler


def plan_run(sampler: SamplerConfig, function: ModelFunction, per_chain: Mapping[str, Sequence[float]] | None,
             initial_step_size: float | None) -> RunPlan:
    n = function.n
    batch_size = n if sampler.algorithm == "mala" else sampler.batch_size or min(defaults.BATCH_SIZE, n)
    nbeta = sampler.nbeta if sampler.nbeta is not None else default_nbeta(n)
    localization = sampler.localization if sampler.localization is not None else defaults.LOCALIZATION
    w = function.w_star
    chain_values = per_chain_settings(per_chain, sampler.chains, w.device, w.dtype)
    if "step_size" in chain_values:
        sampler = dataclasses.replace(sampler, step_size=None)
    step_size = None if sampler.step_size is None or sampler.auto_step_size else float(sampler.step_size)
    plain_step_size = None
    if step_size is None and "step_size" not in chain_values:
        step_size = first_step_size(sampler, function, (nbeta, localization), initial_step_size)
        if sampler.preconditioner in LOCAL_RMSPROPS:
            plain_step_size, step_size = step_size, local_rmsprop_step_size(step_size)
        if not sampler.auto_step_size:
            sampler = dataclasses.replace(sampler, step_size=step_size)
    if "nbeta" in chain_values:
        nbeta_chains = chain_values["nbeta"].cpu().double().numpy()
        nbeta = float(nbeta_chains.mean())
    else:
        nbeta_chains = np.full(sampler.chains, float(nbeta))
    return RunPlan(sampler, sampler.chains, batch_size, batch_size == n, nbeta, nbeta_chains, localization,
                   step_size, sampler.calibration_steps_used(), chain_values, plain_step_size=plain_step_size)


def first_step_size(sampler: SamplerConfig, function: ModelFunction, temperature: tuple[float, float],
                    initial_step_size: float | None) -> float:
    """ε from the curvature at w* for (nβ, γ) = `temperature`, unless "auto" was given a start."""
    if sampler.auto_step_size and initial_step_size is not None:
        return float(initial_step_size)
    top = top_hessian_eigenvalue(function.batch_loss, function.w_star, function.x, function.y, seed=sampler.seed)
    if not math.isfinite(top):
        raise LLCInputError("the Hessian at w* is not finite: check the weights and data for overflow")
    return step_size_from_curvature(top, *temperature)


def local_rmsprop_step_size(plain: float) -> float:
    """The starting ε of "rmsprop-local" from plain SGLD's ε (docs/METHOD.md §7): √ε_plain.

    Plain SGLD's ε ≈ 1/(nβ h_max) keeps the stiffest direction stable. With A = 1/√V̂ and V̂ ≈ g² ≈
    nβ h in a direction of curvature h at equilibrium, the preconditioned step is ε/√(nβ h), so the
    same stability needs ε ≈ 1/√(nβ h_max) = √ε_plain; "auto" then tunes it to the acceptance goal."""
    return math.sqrt(plain)


def make_kernel(plan: RunPlan, function: ModelFunction) -> SGLD | MALA:
    values, w = plan.chain_values, function.w_star
    return (MALA if plan.mala else SGLD)(
        loss_and_grad=batched_loss_and_grad(function.batch_loss, plan.full_batch, function.num_params),
        w_star=w,
        step_size=values.get("step_size", plan.step_size),
        localization=values.get("localization", float(plan.localization)),
        nbeta=values.get("nbeta", float(plan.nbeta)),
        preconditioner=preconditioner(plan.sampler.preconditioner, w.device, w.dtype, plan.plain_step_size),
        **({"mask": plan.mask} if plan.mask is not None else {}),
    )


def start_positions(parameters: Parameters, w_star: Tensor, plan: RunPlan, generator: torch.Generator) -> Tensor:
    """Every chain at w*; with start_spread, every second chain moved by start_noise."""
    start = w_star.expand(plan.chains, -1).clone()
    if plan.sampler.start_spread is not None:
        start[1::2] += start_noise(parameters, plan.sampler.start_spread, plan.chains // 2, generator)
        if plan.mask is not None:  # a frozen parameter starts, and stays, at w*
            start = w_star + plan.mask * (start - w_star)
    return start


def start_noise(parameters: Parameters, spread: float, count: int, generator: torch.Generator) -> Tensor:
    """σ·rms(w*) of each parameter tensor (σ for an all-zero tensor) times N(0, 1), for `count` chains:
    a start on the scale of the weights themselves, so that every layer is spread alike."""
    _, params, flat, _ = parameters
    scales = []
    for name in flat.names:
        rms = float(params[name].double().pow(2).mean().sqrt())
        scales.append(torch.full((params[name].numel(),), spread * (rms if rms > 0 else 1.0)))
    scale = torch.cat(scales).to(device=params[flat.names[0]].device, dtype=params[flat.names[0]].dtype)
    noise = torch.randn((count, flat.num_params), generator=generator, device=scale.device, dtype=scale.dtype)
    return noise * scale


def chain_masks(masks: ParameterMask | Sequence[ParameterMask] | None, flat, plan: RunPlan,
                like: Tensor) -> Tensor | None:
    """(C, d) rows of 1 where each chain moves, from one mask for all chains or one per chain."""
    if masks is None:
        return None
    if plan.mala:
        raise LLCInputError("refined LLCs (parameter masks) run with SGLD: set algorithm to \"sgld\"")
    per_chain = [masks] * plan.chains if isinstance(masks, Mapping) else list(masks)
    if len(per_chain) != plan.chains:
        raise LLCInputError(f"{len(per_chain)} parameter masks for {plan.chains} chains: give one, or one per chain")
    rows = torch.stack([flat_mask(flat, mask) for mask in per_chain])
    if bool((rows.sum(1) == 0).any()):
        raise LLCInputError("a parameter mask selects no parameter: every chain must move something")
    return rows.to(like)


def moving_per_chain(mask: Tensor | None) -> list[int] | None:
    return None if mask is None else [int(m) for m in mask.sum(1).tolist()]


def per_chain_settings(per_chain, chains: int, device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
    """Validated per-chain values as (C,) tensors."""
    values = {}
    for name, seq in (per_chain or {}).items():
        if name not in ("step_size", "localization", "nbeta"):
            raise LLCInputError(f"per-chain setting {name!r} is not one of step_size, localization, nbeta")
        array = np.asarray(seq, dtype=float)
        if array.shape != (chains,):
            raise LLCInputError(f"per-chain {name} has {array.size} values for {chains} chains")
        lowest = 0.0 if name == "localization" else np.nextafter(0, 1)
        if not np.all(np.isfinite(array)) or np.any(array < lowest):
            raise LLCInputError(f"per-chain {name} values must be finite and {'≥ 0' if name == 'localization' else '> 0'}")
        values[name] = torch.as_tensor(array, device=device, dtype=dtype)
    return values


def preconditioner(spec, device: torch.device, dtype: torch.dtype,
                   plain_step_size: float | None = None) -> Tensor | RMSprop | None:
    """A's spec: None (A = 1), "rmsprop" (pSGLD), "rmsprop-local" (Hitchcock & Hoogland's variant,
    docs/METHOD.md §7), or a fixed diagonal (d values)."""
    if spec is None:
        return None
    if spec == "rmsprop":
        return RMSprop(defaults.RMSPROP_ALPHA, defaults.RMSPROP_DELTA)
    if spec == LOCAL_RMSPROP:
        return local_rmsprop()
    if spec == SCALED_LOCAL_RMSPROP:
        # V₀ on the scale of g² in the stiffest direction at equilibrium, nβ h_max ≈ 1/ε_plain
        return local_rmsprop(initial=1.0 / plain_step_size if plain_step_size else 1.0)
    return torch.as_tensor(spec, device=device, dtype=dtype)
