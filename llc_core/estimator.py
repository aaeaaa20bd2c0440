"""Estimate λ̂(w*) = nβ (E_w[L_n(w)] − L_n(w*)) with C chains of SGLD run as one batched computation.

`estimate_llc` takes any torch.nn.Module, its data and a loss; it streams Snapshots to a callback,
honours a stop request within one snapshot interval, stops chains that diverge while the others go
on, and returns a RunResult.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import threading
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from . import adaptation, defaults, diagnostics
from .config import SamplerConfig
from .curvature import step_size_from_curvature, top_hessian_eigenvalue
from .errors import LLCInputError
from .losses import check_output_matches, make_nll
from .mala import MALA
from .result import RunResult, Snapshot
from .sgld import SGLD, RMSprop

StopRequest = Callable[[], bool] | threading.Event | None


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" picks CUDA when present, else the CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise LLCInputError(f"unknown device {device!r}: use \"auto\", \"cpu\" or \"cuda\"") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise LLCInputError("device \"cuda\" was asked for but no CUDA GPU is available: use \"auto\" or \"cpu\"")
    return resolved


def available_devices() -> list[str]:
    return ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "float64": torch.float64}
    if dtype not in table:
        raise LLCInputError(f"dtype {dtype!r} is not supported: use \"float32\" or \"float64\"")
    return table[dtype]


def default_nbeta(n: int) -> float:
    """nβ* = n / log n (β* = 1/log n, REFERENCE §1)."""
    return n / math.log(n)


class FlatParams:
    """A module's parameters as one flat vector w of length d, and back to a name → tensor dict."""

    def __init__(self, params: Mapping[str, Tensor]):
        self.names = list(params)
        self.shapes = [tuple(p.shape) for p in params.values()]
        self.sizes = [p.numel() for p in params.values()]
        self.num_params = sum(self.sizes)

    def flatten(self, params: Mapping[str, Tensor]) -> Tensor:
        return torch.cat([params[name].reshape(-1) for name in self.names])

    def unflatten(self, w: Tensor) -> dict[str, Tensor]:
        return {
            name: piece.reshape(shape)
            for name, piece, shape in zip(self.names, torch.split(w, self.sizes), self.shapes)
        }


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
) -> RunResult:
    """Run C SGLD chains from w* and return λ̂ with diagnostics.

    w_star defaults to the module's own parameters. Unset sampler fields take the defaults of
    `defaults.py`; an unset step size comes from the curvature at w* (`curvature.py`), and so does
    the starting ε of step_size "auto" unless `initial_step_size` gives one. `config` is the
    RunConfig dict to attach to the result (its sampler part is replaced by the resolved one).
    `per_chain` maps some of "step_size", "localization", "nbeta" to one value per chain (a sweep's
    grid cells run as chains); each chain's λ̂ then uses its own nβ, and per-chain step sizes replace
    the sampler's (no calibration).
    """
    started = time.perf_counter()
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    if not isinstance(model, nn.Module):
        raise LLCInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(inputs, Tensor) or not isinstance(targets, Tensor):
        raise LLCInputError("inputs and targets must be torch tensors")
    n = inputs.shape[0] if inputs.ndim else 0
    if n < 2 or targets.ndim == 0 or targets.shape[0] != n:
        raise LLCInputError(
            f"inputs ({tuple(inputs.shape)}) and targets ({tuple(targets.shape)}) must share a first "
            "dimension n ≥ 2 (one row per sample)"
        )
    _check_finite("inputs", inputs)
    _check_finite("targets", targets)

    model = copy.deepcopy(model).to(device=dev, dtype=dt)
    params = {k: v.detach() for k, v in model.named_parameters()}
    if w_star is not None:
        params = _checked_w_star(params, w_star)
    params = {k: v.to(device=dev, dtype=dt) for k, v in params.items()}
    for name, value in params.items():
        _check_finite(f"weight {name!r} of w*", value)
    flat = FlatParams(params)
    if flat.num_params == 0:
        raise LLCInputError("the model has no parameters to sample")
    if per_chain and "step_size" in per_chain:
        # each chain has its own fixed ε: validate as a fixed-ε run (not the default "auto"); the
        # resolved config records no single ε (below)
        sampler = dataclasses.replace(sampler, step_size=float(per_chain["step_size"][0]))
    sampler = sampler.with_defaults()
    sampler.validate(n=n, num_params=flat.num_params)

    x = inputs.to(device=dev, dtype=dt if inputs.is_floating_point() else inputs.dtype)
    y = targets.to(device=dev, dtype=dt if targets.is_floating_point() else targets.dtype)
    nll = make_nll(loss, noise_scale)
    buffers = {k: v for k, v in model.named_buffers()}

    def forward(w_flat: Tensor, xb: Tensor) -> Tensor:
        return functional_call(model, (flat.unflatten(w_flat), buffers), (xb,))

    _check_model_runs(forward, flat.flatten(params), x[:2], y[:2], loss)

    def batch_loss(w_flat: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
        return nll(forward(w_flat, xb), yb).mean()

    w_star_flat = flat.flatten(params)
    init_loss = _full_loss(batch_loss, w_star_flat, x, y)
    if not math.isfinite(init_loss):
        raise LLCInputError(f"the loss at w* is {init_loss}: check the weights and data for overflow")

    chains = sampler.chains
    mala = sampler.algorithm == "mala"
    batch_size = n if mala else sampler.batch_size or min(defaults.BATCH_SIZE, n)
    full_batch = batch_size == n
    nbeta = sampler.nbeta if sampler.nbeta is not None else default_nbeta(n)
    localization = sampler.localization if sampler.localization is not None else defaults.LOCALIZATION
    burnin = sampler.burnin_steps()
    steps = sampler.steps
    chain_values = _per_chain_settings(per_chain, chains, dev, dt)
    if "step_size" in chain_values:
        sampler = dataclasses.replace(sampler, step_size=None)
    calibration = sampler.calibration_steps_used()

    step_size = None if sampler.step_size is None or sampler.auto_step_size else float(sampler.step_size)
    if step_size is None and "step_size" not in chain_values:
        if sampler.auto_step_size and initial_step_size is not None:
            step_size = float(initial_step_size)
        else:
            top = top_hessian_eigenvalue(batch_loss, w_star_flat, x, y, seed=sampler.seed)
            if not math.isfinite(top):
                raise LLCInputError("the Hessian at w* is not finite: check the weights and data for overflow")
            step_size = step_size_from_curvature(top, nbeta, localization)
        if not sampler.auto_step_size:
            sampler = dataclasses.replace(sampler, step_size=step_size)

    kernel = (MALA if mala else SGLD)(
        loss_and_grad=_batched_loss_and_grad(batch_loss, full_batch, flat.num_params),
        w_star=w_star_flat,
        step_size=chain_values.get("step_size", step_size),
        localization=chain_values.get("localization", float(localization)),
        nbeta=chain_values.get("nbeta", float(nbeta)),
        preconditioner=_preconditioner(sampler.preconditioner, dev, dt),
    )
    nbeta_chains = chain_values["nbeta"].cpu().double().numpy() if "nbeta" in chain_values else np.full(chains, float(nbeta))
    if "nbeta" in chain_values:
        nbeta = float(nbeta_chains.mean())
    generator = torch.Generator(device=dev)
    generator.manual_seed(sampler.seed)
    batches = _MinibatchWalk(x, y, chains, batch_size, generator) if not full_batch else None

    start = w_star_flat.expand(chains, -1).clone()
    if sampler.start_spread is not None:
        start[1::2] += _start_noise(params, flat, sampler.start_spread, chains // 2, generator)
    state = kernel.init(start)
    tuner = adaptation.init(step_size) if calibration else None
    target = adaptation.effective_target(sampler.target_acceptance, flat.num_params, defaults.AUTO_FULL_DIMENSION)
    calibration_trace: list[tuple[float, float]] = []
    if tuner is not None:
        kernel = dataclasses.replace(kernel, step_size=adaptation.current_step_size(tuner))
    losses = torch.empty(steps, chains, device=dev, dtype=dt)
    acceptances: list[Tensor] = []
    alive = torch.ones(chains, dtype=torch.bool, device=dev)
    diverged: list[dict[str, Any]] = []
    explosion = defaults.EXPLOSION_FACTOR * max(flat.num_params, 10)
    nbeta_column = torch.as_tensor(nbeta_chains, device=dev, dtype=dt)
    post_sum = torch.zeros(chains, dtype=torch.float64, device=dev)
    acc_sum = torch.zeros(chains, dtype=torch.float64, device=dev)
    acc_count = 0
    stop_requested = _stop_checker(stop)
    # minibatch heat (SGLD.minibatch_heat): measured every MINIBATCH_HEAT_EVERY steps after
    # calibration; "auto" lowers ε during the rest of burn-in if it is too large a share of λ̂
    heat_measurable = not mala and not full_batch
    # "auto" checks its ε twice more, at 1/3 and 2/3 of the rest of burn-in (the first heat check
    # compares with a λ̂ that is itself hot): acceptance, then minibatch heat
    recheck_at = ([calibration + (burnin - calibration) * k // 3 for k in (1, 2)]
                  if tuner is not None and isinstance(kernel, SGLD) else [])
    burnin_acceptance: list[Tensor] = []
    acceptance_recheck = None
    burnin_heat: list[Tensor] = []
    heat_sum = torch.zeros(chains, dtype=torch.float64, device=dev)
    heat_count = 0
    heat_cap = None

    loop_start = time.perf_counter()
    checked = 0
    done = 0
    partial = False
    calibration_batch = None
    for t in range(steps):
        calibrating = t < calibration
        if full_batch:
            batch = (x, y)
        elif calibrating:
            # one fixed minibatch for all of calibration: a chain under a changing potential sits
            # off-equilibrium for each step's batch, which inflates the acceptance of that batch's
            # move (to 1.0 at an ε where SGLD was 20% high, on a regular 3000-parameter model)
            if calibration_batch is None:
                calibration_batch = batches.next()
            batch = calibration_batch
        else:
            batch = batches.next()
        measure = calibrating or (t + 1) % sampler.mala_every == 0
        measure_heat = heat_measurable and not calibrating and (t + 1) % defaults.MINIBATCH_HEAT_EVERY == 0
        started_from = state
        state, info = kernel.step(state, batch, generator, measure_acceptance=measure,
                                  adapt_preconditioner=t < burnin, **({"keep_grad": True} if measure_heat else {}))
        losses[t] = info.loss
        if measure_heat:
            heat = kernel.minibatch_heat(started_from, info, batches.peek())
            if t >= burnin:
                heat_sum += torch.where(alive, heat, 0.0)  # a diverging chain's NaN stays out
                heat_count += 1
            else:
                burnin_heat.append(heat)
        if t in recheck_at and burnin_acceptance:
            kernel, check = _recheck_acceptance(kernel, burnin_acceptance, alive, flat.num_params)
            acceptance_recheck = [*(acceptance_recheck or []), check]
            burnin_acceptance = []
        if t in recheck_at and burnin_heat and heat_measurable:
            kernel, cap = _cap_minibatch_heat(kernel, burnin_heat, losses[t - (burnin - calibration) // 6:t + 1],
                                              alive, nbeta_column, init_loss)
            heat_cap = [*(heat_cap or []), cap]
            burnin_heat = []
        if calibrating:
            # the acceptance of a step with ε still moving says nothing about the fixed-ε chain
            tuner, state = _calibrate(tuner, kernel, started_from, state, info, alive, target, calibration_trace,
                                      w_star_flat, nbeta_column, init_loss, explosion, generator)
            step_now = adaptation.final_step_size(tuner) if t + 1 == calibration else adaptation.current_step_size(tuner)
            kernel = dataclasses.replace(kernel, step_size=step_now)
        elif info.acceptance is not None:
            if t < burnin:
                burnin_acceptance.append(info.acceptance)
            acceptances.append(info.acceptance)
            acc_sum += info.acceptance * alive
            acc_count += 1
        done = t + 1
        if done % sampler.snapshot_every == 0 or done == steps:
            window = losses[checked:done]
            state = _stop_diverged(window, checked, state, alive, diverged, w_star_flat, nbeta_column, init_loss,
                                   explosion, ignore_before=calibration)
            start = max(checked, burnin)
            if done > start:
                post_sum += losses[start:done].double().sum(0)
            if on_snapshot is not None:
                elapsed = time.perf_counter() - loop_start
                on_snapshot(_snapshot(window, checked, done, steps, burnin, post_sum, acc_sum, acc_count,
                                      alive, nbeta_chains, init_loss, elapsed, diverged, kernel.step_size,
                                      done <= calibration))
            checked = done
            if done < steps and stop_requested():
                partial = True
                break
    loop_time = time.perf_counter() - loop_start

    calibration_report = None
    if calibration:
        calibration_report = {
            "steps": len(calibration_trace), "target_acceptance": target,
            "initial_step_size": step_size, "step_size": float(kernel.step_size),
            "acceptance_step_size": adaptation.final_step_size(tuner), "acceptance_recheck": acceptance_recheck,
            "minibatch_heat_cap": heat_cap,
            "trace_step_size": [e for e, _ in calibration_trace], "trace_acceptance": [a for _, a in calibration_trace],
        }
    alive_heat = (heat_sum / heat_count)[alive] if heat_count else None
    minibatch_heat = float(alive_heat.mean()) if alive_heat is not None and len(alive_heat) else None
    return _result(
        losses[:done].cpu().double().numpy(),
        torch.stack(acceptances).cpu().numpy() if acceptances else np.zeros((0, chains)),
        alive.cpu().numpy(), diverged, burnin, done, partial, init_loss, nbeta, nbeta_chains, flat.num_params, n,
        sampler, localization, batch_size, theoretical_llc, multiplicity, dev, loop_time,
        time.perf_counter() - started, config, kernel.step_size, calibration_report, minibatch_heat,
    )


def _start_noise(params: dict[str, Tensor], flat: "FlatParams", spread: float, count: int,
                 generator: torch.Generator) -> Tensor:
    """σ·rms(w*) of each parameter tensor (σ for an all-zero tensor) times N(0, 1), for `count` chains:
    a start on the scale of the weights themselves, so that every layer is spread alike."""
    scales = []
    for name in flat.names:
        rms = float(params[name].double().pow(2).mean().sqrt())
        scales.append(torch.full((params[name].numel(),), spread * (rms if rms > 0 else 1.0)))
    scale = torch.cat(scales).to(device=params[flat.names[0]].device, dtype=params[flat.names[0]].dtype)
    noise = torch.randn((count, flat.num_params), generator=generator, device=scale.device, dtype=scale.dtype)
    return noise * scale


def _per_chain_settings(per_chain, chains, dev, dt) -> dict[str, Tensor]:
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
        values[name] = torch.as_tensor(array, device=dev, dtype=dt)
    return values


def _calibrate(tuner, kernel, previous, state, info, alive, target, trace, w_star, nbeta, init_loss, explosion,
               generator):
    """One dual-averaging update from this step's mean acceptance over live chains.

    The move is then accepted or rejected as in MALA. Without that, a chain on a too-large trial ε
    runs hot (the Langevin discretisation and minibatch noise both add variance), and the
    acceptance of a move from a hot point is inflated: calibration drifted up to ε where SGLD was
    20-30% high while reading acceptance 1.0 (a regular 10⁴-parameter model). A chain that blew up
    on a trial ε goes back to w* (calibration is part of burn-in, so nothing is lost)."""
    acceptance = float(info.acceptance[alive].mean()) if bool(alive.any()) else 0.0
    trace.append((float(kernel.step_size), acceptance))
    tuner = adaptation.update(tuner, acceptance, target)
    if isinstance(kernel, SGLD):  # a MALA step has accepted or rejected already (and caches ∇U at its position)
        uniform = torch.rand(info.acceptance.shape, generator=generator, device=info.acceptance.device)
        rejected = uniform >= info.acceptance
        if bool(rejected.any()):
            state = state._replace(position=torch.where(rejected[:, None], previous.position, state.position))
    blown = ~torch.isfinite(state.position).all(1) | ~torch.isfinite(info.loss)
    blown |= nbeta * (info.loss - init_loss) > explosion
    if bool(blown.any()):
        state = _reset_chains(state, blown, w_star)
    return tuner, state


def _recheck_acceptance(kernel, acceptances: list[Tensor], alive: Tensor, num_params: int):
    """Lower ε when the acceptance measured during burn-in (on the run's changing minibatches, which
    if anything inflates it) fell below the band. Calibration sees chains near w*; at highly singular
    points the curvature grows as the chains spread out, and dln-deepest cases ended at 0.59-0.81."""
    if not bool(alive.any()):
        return kernel, None
    acceptance = float(torch.stack(acceptances)[:, alive].mean())
    report = {"acceptance": acceptance, "step_size_before": float(kernel.step_size)}
    if acceptance < diagnostics.acceptance_band(num_params)[0]:
        kernel = dataclasses.replace(
            kernel, step_size=diagnostics.suggested_step_size(float(kernel.step_size), acceptance, num_params))
    report["step_size_after"] = float(kernel.step_size)
    return kernel, report


def _cap_minibatch_heat(kernel, heats: list[Tensor], recent_losses: Tensor, alive: Tensor, nbeta: Tensor,
                        init_loss: float):
    """Lower ε when minibatch noise adds more than defaults.MINIBATCH_HEAT_LIMIT of λ̂ (the heat is
    proportional to ε); the chains re-equilibrate over the rest of burn-in."""
    if not bool(alive.any()):
        return kernel, None
    heat = float(torch.stack(heats)[:, alive].mean())
    llc_now = float((nbeta * (recent_losses[:, alive].double().mean(0) - init_loss)).mean())
    share = heat / llc_now if llc_now > 0 else None
    report = {"heat": heat, "llc_burnin": llc_now, "share": share, "limit": defaults.MINIBATCH_HEAT_LIMIT,
              "step_size_before": float(kernel.step_size)}
    if share is not None and share > defaults.MINIBATCH_HEAT_LIMIT:
        kernel = dataclasses.replace(kernel, step_size=float(kernel.step_size) * defaults.MINIBATCH_HEAT_LIMIT / share)
    report["step_size_after"] = float(kernel.step_size)
    return kernel, report


def _reset_chains(state, mask: Tensor, w_star: Tensor):
    """Put the chains in `mask` back at w*, forgetting their preconditioner and cached gradient."""
    position = torch.where(mask[:, None], w_star.expand_as(state.position), state.position)
    square_avg = state.square_avg
    if square_avg is not None:
        square_avg = torch.where(mask[:, None], torch.zeros_like(square_avg), square_avg)
    state = state._replace(position=position, square_avg=square_avg)
    if hasattr(state, "grad_potential"):  # MALA caches ∇U at the position: recompute it
        state = state._replace(loss=None, grad_potential=None)
    return state


# Below this many parameters a step is dominated by fixed per-call costs, and vmapping only the
# forward pass (then one autograd call for all chains) beats vmap(grad(...)) by 15-45%; above it
# vmap(grad(...)) is 5-10% faster (benchmarks/bench_engine.py). The choice depends on d alone, so a
# run is reproducible.
SMALL_MODEL_PARAMS = 20_000


def _batched_loss_and_grad(batch_loss, full_batch: bool, num_params: int):
    """(w (C, d), (x, y)) -> (L_B per chain, ∇L_B per chain), chains as a vmapped batch dimension."""
    in_dims = (0, None, None) if full_batch else (0, 0, 0)
    if num_params <= SMALL_MODEL_PARAMS:
        forward = vmap(batch_loss, in_dims=in_dims)

        def loss_and_grad(w: Tensor, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            with torch.enable_grad():
                w = w.detach().requires_grad_(True)
                loss = forward(w, *batch)
                # chains do not interact, so the gradient of the sum is each chain's own gradient
                (grad,) = torch.autograd.grad(loss.sum(), w)
            return loss.detach(), grad

        return loss_and_grad

    grad_fn = vmap(grad_and_value(batch_loss), in_dims=in_dims)

    def loss_and_grad(w: Tensor, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        grad, value = grad_fn(w, *batch)
        return value, grad

    return loss_and_grad


class _MinibatchWalk:
    """Shuffle once, then walk through consecutive minibatches; an independent order per chain.

    When a chain's pass through the data ends, a fresh permutation starts the next pass (the
    remainder n mod m is skipped so that every minibatch has m samples). Each pass gathers the
    shuffled data in one copy when that fits in PRESHUFFLE_BYTES, so a step's batch is a free view;
    otherwise each step gathers its own rows.
    """

    PRESHUFFLE_BYTES = 256 * 2**20

    def __init__(self, x: Tensor, y: Tensor, chains: int, batch_size: int, generator: torch.Generator):
        self.x, self.y, self.chains, self.batch_size, self.generator = x, y, chains, batch_size, generator
        self.per_pass = x.shape[0] // batch_size
        self.position = self.per_pass  # forces a shuffle on the first call
        row_bytes = x[0].numel() * x.element_size() + y[0].numel() * y.element_size()
        self.preshuffle = chains * x.shape[0] * row_bytes <= self.PRESHUFFLE_BYTES

    def next(self) -> tuple[Tensor, Tensor]:
        if self.position == self.per_pass:
            n, device = self.x.shape[0], self.x.device
            self.order = torch.stack(
                [torch.randperm(n, generator=self.generator, device=device) for _ in range(self.chains)]
            )
            if self.preshuffle:
                self.x_pass, self.y_pass = self._gather(self.order)
            self.position = 0
        start = self.position * self.batch_size
        self.position += 1
        if self.preshuffle:
            return self.x_pass[:, start:start + self.batch_size], self.y_pass[:, start:start + self.batch_size]
        return self._gather(self.order[:, start:start + self.batch_size])

    def peek(self) -> tuple[Tensor, Tensor]:
        """The minibatch the walk gives next (the pass's first when this pass is used up), without
        moving the walk or drawing random numbers: a second, independent batch at the same point."""
        start = (self.position % self.per_pass) * self.batch_size
        if self.preshuffle:
            return self.x_pass[:, start:start + self.batch_size], self.y_pass[:, start:start + self.batch_size]
        return self._gather(self.order[:, start:start + self.batch_size])

    def _gather(self, index: Tensor) -> tuple[Tensor, Tensor]:
        flat = index.reshape(-1)
        return (self.x.index_select(0, flat).view(index.shape + self.x.shape[1:]),
                self.y.index_select(0, flat).view(index.shape + self.y.shape[1:]))


def _stop_diverged(window, offset, state, alive, diverged, w_star, nbeta, init_loss, explosion, ignore_before=0):
    """Mark chains whose loss went non-finite or exploded in `window`; park them at w*. Steps before
    `ignore_before` (calibration, which resets its own failures) do not count."""
    bad = ~torch.isfinite(window) | (nbeta * (window - init_loss) > explosion)
    if offset < ignore_before:
        bad[:ignore_before - offset] = False
    newly = bad.any(0) & alive
    if not bool(newly.any()):
        return state
    first_bad = bad.float().argmax(0)
    for chain in torch.nonzero(newly).flatten().tolist():
        step = offset + int(first_bad[chain])
        value = float(window[int(first_bad[chain]), chain])
        reason = "loss became NaN/inf" if not math.isfinite(value) else f"loss exploded to {value:.3g}"
        diverged.append({"chain": chain, "step": step, "reason": reason})
    alive &= ~newly
    # A parked chain keeps being computed (it is one row of a batched tensor) but is never counted.
    return _reset_chains(state, newly, w_star)


def _snapshot(window, offset, done, steps, burnin, post_sum, acc_sum, acc_count, alive, nbeta_chains, init_loss,
              elapsed, diverged, step_size, calibrating) -> Snapshot:
    nbeta = nbeta_chains
    alive_np = alive.cpu().numpy()
    recent = window.double().cpu().numpy()
    post = done - burnin
    llc_running = nbeta * (post_sum.cpu().numpy() / post - init_loss) if post > 0 else np.full(len(alive_np), np.nan)
    llc_recent = nbeta * (recent.mean(0) - init_loss)
    acceptance = acc_sum.cpu().numpy() / acc_count if acc_count else np.full(len(alive_np), np.nan)
    for values in (llc_running, llc_recent, acceptance):
        values[~alive_np] = np.nan
    return Snapshot(
        step=done, total_steps=steps, burnin=burnin, steps=np.arange(offset, done), losses=recent,
        llc_running=llc_running, llc_recent=llc_recent, acceptance=acceptance,
        steps_per_second=done / elapsed if elapsed > 0 else 0.0, elapsed=elapsed,
        diverged=list(diverged), init_loss=init_loss, nbeta=float(nbeta_chains.mean()),
        step_size=float(step_size) if not isinstance(step_size, Tensor) else None, calibrating=calibrating,
    )


def _result(trace, acceptance, alive, diverged, burnin, done, partial, init_loss, nbeta, nbeta_chains, num_params,
            n, sampler, localization, batch_size, theoretical_llc, multiplicity, dev, loop_time, wall_time,
            config, step_size, calibration, minibatch_heat=None) -> RunResult:
    chains = trace.shape[1]
    used_burnin = done > burnin
    start = burnin if used_burnin else done // 2
    post = trace[start:]
    healthy = np.flatnonzero(alive)
    per_chain = nbeta_chains * (post.mean(0) - init_loss) if len(post) else np.full(chains, np.nan)
    used_step = float(step_size) if not isinstance(step_size, Tensor) else None
    llc_per_chain = [float(per_chain[c]) if alive[c] else None for c in range(chains)]
    values = per_chain[healthy]
    llc_mean = float(values.mean()) if len(values) else None
    llc_std = float(values.std(ddof=1)) if len(values) >= 2 else None
    llc_se = llc_std / math.sqrt(len(values)) if llc_std is not None else None

    acc_per_chain = acceptance.mean(0) if len(acceptance) else np.full(chains, np.nan)
    acc_list = [float(acc_per_chain[c]) if alive[c] and len(acceptance) else None for c in range(chains)]
    acc_mean = float(acc_per_chain[healthy].mean()) if len(acceptance) and len(healthy) else None

    start_comparison = _compare_starts(per_chain, alive) if sampler.start_spread is not None else None
    healthy_trace = post[:, healthy].T
    rhat, ess = diagnostics.rhat_ess(healthy_trace) if len(healthy) else (None, None)
    flat = diagnostics.flatness(healthy_trace, nbeta, init_loss) if len(healthy) else {"drift": None, "drift_se": None, "flat": None}
    long_trend = diagnostics.trend(trace[:, healthy].T, nbeta, init_loss) if len(healthy) else {}
    verdicts = diagnostics.verdicts(
        llc_mean=llc_mean, llc_se=llc_se, acceptance=acc_mean, step_size=used_step,
        diverged=diverged, chains=chains, flat=flat, rhat=rhat, partial=partial, used_burnin=used_burnin,
        long_trend=long_trend, num_params=num_params, minibatch_heat=minibatch_heat, batch_size=batch_size, n=n,
        calibrated=calibration is not None, start_comparison=start_comparison,
    )
    resolved = dict(config) if config is not None else {}
    resolved["sampler"] = {
        **(resolved.get("sampler") or {}),
        **{k: getattr(sampler, k) for k in SamplerConfig.__dataclass_fields__},
        "localization": localization, "nbeta": nbeta, "batch_size": batch_size,
    }
    resolved["device"] = str(dev)
    return RunResult(
        llc_mean=llc_mean, llc_std=llc_std, llc_se=llc_se, llc_per_chain=llc_per_chain,
        theoretical_llc=theoretical_llc, multiplicity=multiplicity,
        mala_acceptance_mean=acc_mean, mala_acceptance_per_chain=acc_list,
        diverged_chains=diverged, chain_steps_per_second=chains * done / loop_time if loop_time > 0 else 0.0,
        partial=partial, steps_completed=done, burnin_steps=burnin, init_loss=init_loss, nbeta=nbeta,
        num_params=num_params, n=n, rhat=rhat, ess=ess, flatness={**flat, "trend": long_trend}, verdicts=verdicts,
        device=str(dev),
        wall_time_s=wall_time, config=resolved, loss_trace=trace.tolist(), step_size=used_step,
        calibration=calibration, minibatch_heat=minibatch_heat, start_comparison=start_comparison,
    )


def _compare_starts(per_chain: np.ndarray, alive: np.ndarray) -> dict[str, Any] | None:
    """λ̂ of the chains started at w* (even indices) against those started spread out (odd)."""
    groups = {}
    for name, index in (("from_w_star", slice(0, None, 2)), ("from_spread", slice(1, None, 2))):
        values = per_chain[index][alive[index]]
        if len(values) == 0:
            return None
        se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) >= 2 else None
        groups[name] = {"llc": float(values.mean()), "se": se, "chains": int(len(values))}
    ses = [g["se"] for g in groups.values()]
    groups["gap"] = groups["from_spread"]["llc"] - groups["from_w_star"]["llc"]
    groups["gap_se"] = math.sqrt(sum(e * e for e in ses)) if None not in ses else None
    return groups


def _preconditioner(spec, dev, dt) -> Tensor | RMSprop | None:
    if spec is None:
        return None
    if spec == "rmsprop":
        return RMSprop(defaults.RMSPROP_ALPHA, defaults.RMSPROP_DELTA)
    return torch.as_tensor(spec, device=dev, dtype=dt)


def _full_loss(batch_loss, w: Tensor, x: Tensor, y: Tensor) -> float:
    """L_n(w*) over the whole dataset, exactly, in chunks so that large n fits in memory."""
    total, n = 0.0, x.shape[0]
    with torch.no_grad():
        for start in range(0, n, defaults.FULL_LOSS_CHUNK):
            xb, yb = x[start:start + defaults.FULL_LOSS_CHUNK], y[start:start + defaults.FULL_LOSS_CHUNK]
            total += float(batch_loss(w, xb, yb).double()) * xb.shape[0]
    return total / n


def _check_finite(what: str, tensor: Tensor) -> None:
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise LLCInputError(f"{what} contain {bad} NaN/inf value(s): clean or drop them before estimating")


def _checked_w_star(params: dict[str, Tensor], w_star: Mapping[str, Tensor]) -> dict[str, Tensor]:
    missing = sorted(set(params) - set(w_star))
    unexpected = sorted(set(w_star) - set(params))
    if missing or unexpected:
        raise LLCInputError(f"w_star does not match the model: missing {missing}, unexpected {unexpected}")
    for name, value in params.items():
        if tuple(w_star[name].shape) != tuple(value.shape):
            raise LLCInputError(
                f"w_star[{name!r}] has shape {tuple(w_star[name].shape)} but the model expects {tuple(value.shape)}"
            )
    return {name: torch.as_tensor(w_star[name]).detach() for name in params}


def _check_model_runs(forward, w: Tensor, xb: Tensor, yb: Tensor, loss: str) -> None:
    try:
        with torch.no_grad():
            out = forward(w, xb)
    except Exception as err:  # any failure here means the data does not fit the model
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LLCInputError(
            f"the model cannot take inputs of shape {tuple(xb.shape[1:])} per sample ({first_line}): "
            "check that the data's columns match the model's first layer"
        ) from None
    check_output_matches(loss, out, yb)


def _stop_checker(stop: StopRequest) -> Callable[[], bool]:
    if stop is None:
        return lambda: False
    if isinstance(stop, threading.Event):
        return stop.is_set
    return stop
