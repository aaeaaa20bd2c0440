"""Calibration sweeps: λ̂ and its diagnostics over a grid of step sizes ε × localizations γ (× nβ).

A sweep takes a RunConfig (its model, data and sampler settings; the sampler's ε, γ and nβ are
replaced by the grid's) and runs `chains_per_cell` chains per grid cell. Cells are numbered in the
order of `SweepConfig.cells()` (nβ outermost, then γ, then ε), and cell k owns the chains
k·c … k·c + c − 1 (c = chains_per_cell) whether the grid runs as one computation or cell by cell.

Two ways to run it:

- batched: the whole grid is ONE `estimate_llc` call with cells × c chains, each chain given its
  cell's ε, γ and nβ through `per_chain`. For small models a step costs about the same for 4 or
  400 chains (fixed per-call costs dominate), so the grid comes almost for free.
- cells: one `estimate_llc` call per cell, each with the same seed (common random numbers make
  neighbouring cells easier to compare). Chosen when d × (total chains) exceeds BATCH_LIMIT: there
  a step costs ∝ d × chains anyway, batching saves nothing, the (C, d) state, gradient and noise
  tensors and the vmapped activations grow with every chain, and running cell by cell lets a UI
  show each cell as soon as it is done.

Per cell: λ̂ ± se across the cell's chains, mean MALA acceptance, fraction of chains diverged, trace
flatness (`diagnostics.flatness` on the cell's post-burn-in trace with its own nβ) and a negative-λ̂
flag. `recommend` picks a cell by docs/METHOD.md §2-3 and says why, or says what to change.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from llc_core import defaults, diagnostics
from llc_core.config import ExecutorConfig, RunConfig, SamplerConfig
from llc_core.errors import LLCInputError
from llc_core.estimator import StopRequest, stop_checker, default_nbeta, estimate_llc
from llc_core.execution import ray_backend
from llc_core.execution.jobs import Job
from llc_core.result import RunResult, Snapshot, json_safe
from llc_core.problem import Problem
from llc_core.runner import build_problem, check_config

# d × (cells × chains per cell) up to which the grid runs as one batched computation. Measured on
# 2 shared CPU cores, one thread (DLN, batch 100): d = 1,800 gave 1,400 chain-steps/s with 4 chains,
# 4,600 with 64 and 5,900 with 256 (d × C = 5e5); d = 80,000 gave 280 with 4 chains, 310 with 16
# (d × C = 1.3e6) and 210 with 64 (5e6): past ~1e6 batching gains nothing and then loses, while the
# (C, d) tensors of a step (position, gradient, noise, proposal) grow with every chain.
BATCH_LIMIT = 1_000_000
MAX_CELLS = 400
MODES = ("auto", "batched", "cells")


def log_grid(low: float, high: float, count: int) -> list[float]:
    """`count` values from `low` to `high`, evenly spaced on a log scale, to 3 significant digits."""
    for name, value in (("low", low), ("high", high)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise LLCInputError(f"ε range {name} end = {value!r} must be a number > 0, e.g. 1e-5")
    if not isinstance(count, int) or count < 1:
        raise LLCInputError(f"number of step sizes = {count!r} must be a whole number ≥ 1")
    if count == 1:
        return [float(f"{low:.3g}")]
    if high <= low:
        raise LLCInputError(f"ε range {low:g} … {high:g}: the upper end must exceed the lower one")
    return [float(f"{v:.3g}") for v in np.geomspace(low, high, count)]


def parse_numbers(text: str, name: str) -> list[float]:
    """"1e-5,1e-4, 1e-3" → [1e-5, 1e-4, 1e-3]; LLCInputError naming `name` when an item is no number."""
    items = [item.strip() for item in str(text).replace(";", ",").split(",") if item.strip()]
    if not items:
        raise LLCInputError(f"{name} is empty: give numbers separated by commas, e.g. 1,10,100")
    values = []
    for item in items:
        try:
            values.append(float(item))
        except ValueError:
            raise LLCInputError(f"{name}: {item!r} is not a number; write numbers separated by commas, e.g. 1,10,100") from None
    return values


@dataclass
class SweepConfig:
    """A grid over ε × γ (× nβ) for one model. `run` supplies the model, the data and the sampler
    settings the grid does not vary (steps, burn-in, batch size, seed, preconditioner, ...).

    nbetas: None sweeps only the run's nβ (its sampler's, else n / log n). mode: "auto" (batched when
    d × total chains ≤ BATCH_LIMIT, else cell by cell), "batched" or "cells".
    """

    run: RunConfig = field(default_factory=RunConfig)
    step_sizes: list[float] = field(default_factory=lambda: log_grid(1e-5, 1e-2, 7))
    localizations: list[float] = field(default_factory=lambda: [1.0, 10.0, 100.0])
    nbetas: list[float] | None = None
    chains_per_cell: int = 4
    mode: str = "auto"
    executor: ExecutorConfig | None = None  # where the cells run (None: here); with Ray, cell by cell

    def cells(self, nbeta: float | None = None) -> list[tuple[float, float, float | None]]:
        """(ε, γ, nβ) of every cell in order: nβ outermost, then γ, then ε. `nbeta` stands in for
        an unswept nβ."""
        nbetas = self.nbetas if self.nbetas else [nbeta]
        return [(e, g, b) for b, g, e in itertools.product(nbetas, self.localizations, self.step_sizes)]

    def validate(self) -> None:
        _numbers("step_sizes", self.step_sizes, positive=True)
        _numbers("localizations", self.localizations, positive=False)
        if self.nbetas is not None:
            _numbers("nbetas", self.nbetas, positive=True)
        if not _is_int(self.chains_per_cell) or self.chains_per_cell < 1:
            raise LLCInputError(f"chains_per_cell = {self.chains_per_cell!r} must be a whole number ≥ 1 (2 or more give error bars)")
        if self.mode not in MODES:
            raise LLCInputError(f"mode = {self.mode!r}: use \"auto\", \"batched\" or \"cells\"")
        if ray_backend.ray_requested(self.executor) and self.mode == "batched":
            raise LLCInputError("a batched sweep is one computation and cannot be split over a Ray cluster: "
                                "use mode \"cells\" or \"auto\" (with Ray every cell is a task)")
        count = len(self.cells())
        if count > MAX_CELLS:
            raise LLCInputError(f"the grid has {count} cells (more than {MAX_CELLS}): use fewer step sizes or localizations")
        # the model, data and budget of the grid as one batched run (every cell's chains together)
        chains = count * self.chains_per_cell
        check_config(dataclasses.replace(self.run, sampler=dataclasses.replace(
            self.run.sampler, chains=chains, step_size=float(self.step_sizes[0]), localization=None, nbeta=None)))

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run.to_dict(), "step_sizes": list(self.step_sizes),
                "localizations": list(self.localizations),
                "nbetas": None if self.nbetas is None else list(self.nbetas),
                "chains_per_cell": self.chains_per_cell, "mode": self.mode,
                **({"executor": dataclasses.asdict(self.executor)} if self.executor is not None else {})}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, raw: Any) -> "SweepConfig":
        if not isinstance(raw, dict):
            raise LLCInputError(f"a sweep config must be a JSON object, got {type(raw).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise LLCInputError(f"unknown key(s) {', '.join(map(repr, unknown))} in sweep: known keys are {', '.join(sorted(known))}")
        values = {k: v for k, v in raw.items() if k != "run"}
        if values.get("executor") is not None:
            values["executor"] = ExecutorConfig.from_dict(values["executor"])
        return cls(run=RunConfig.from_dict(raw.get("run", {})), **values)

    @classmethod
    def from_json(cls, text: str) -> "SweepConfig":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as err:
            raise LLCInputError(f"sweep config is not valid JSON: {err.msg} at line {err.lineno}") from None


@dataclass
class CellResult:
    """One grid cell. chains: its chain numbers in the grid (cell k: k·c … k·c + c − 1)."""

    index: int
    step_size: float
    localization: float
    nbeta: float
    chains: list[int]
    llc_mean: float | None
    llc_se: float | None
    llc_per_chain: list[float | None]
    acceptance: float | None  # mean MALA acceptance over the cell's healthy chains
    diverged_fraction: float
    flat: bool | None  # diagnostics.flatness of the post-burn-in trace; None: too few draws or no healthy chain
    drift: float | None
    drift_se: float | None
    negative: bool
    partial: bool = False
    wall_time_s: float | None = None  # the cell's own run (cells mode) or the whole batched run

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "CellResult":
        return cls(**raw)


@dataclass
class SweepResult:
    """The grid's cells, the recommended cell (an index into `cells`, or None) and the reason."""

    config: dict[str, Any]  # the SweepConfig, its run part resolved as the sampler ran it
    cells: list[CellResult]
    recommended: int | None
    reason: str
    mode: str  # "batched" or "cells"
    partial: bool
    num_params: int
    n: int
    init_loss: float
    default_nbeta: float  # n / log n
    steps: int
    burnin_steps: int
    theoretical_llc: float | None
    wall_time_s: float
    acceptance_band: list[float] = field(default_factory=lambda: list(defaults.ACCEPTANCE_TARGET))  # (low, high) used
    executor: dict[str, Any] | None = None  # on Ray: where the cells ran, what was retried or resumed

    @property
    def recommended_cell(self) -> CellResult | None:
        return None if self.recommended is None else self.cells[self.recommended]

    def recommended_config(self) -> RunConfig:
        """The sweep's RunConfig with the recommended cell's ε, γ and nβ; LLCInputError when none."""
        cell = self.recommended_cell
        if cell is None:
            raise LLCInputError(f"no cell is recommended: {self.reason}")
        return config_for_cell(SweepConfig.from_dict(self.config).run, cell, self.default_nbeta)

    def to_dict(self) -> dict[str, Any]:
        raw = json_safe(dataclasses.asdict(self))
        if raw["executor"] is None:
            del raw["executor"]
        return raw

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "SweepResult":
        raw = dict(raw)
        raw["cells"] = [CellResult.from_dict(c) for c in raw["cells"]]
        return cls(**raw)

    @classmethod
    def from_json(cls, text: str) -> "SweepResult":
        return cls.from_dict(json.loads(text))


@dataclass
class SweepProgress:
    """Streamed while a sweep runs. running_llc: per cell, the running λ̂ of its chains (None until
    its burn-in is over, and for cells not started); finished cells also arrive through on_cell."""

    cells_done: int
    cells_total: int
    step: int  # steps done in the current computation
    total_steps: int
    computation: int  # 0 for a batched sweep; the cell index when running cell by cell
    running_llc: list[float | None]
    mode: str = "batched"  # "batched" or "cells"
    acceptance_band: tuple[float, float] = defaults.ACCEPTANCE_TARGET

    @property
    def fraction(self) -> float:
        """Share of the sweep's steps done."""
        within = self.step / self.total_steps if self.total_steps else 0.0
        if self.mode == "batched":
            return within
        return min(1.0, (self.computation + within) / max(self.cells_total, 1))


def config_for_cell(run: RunConfig, cell: CellResult, default: float | None = None) -> RunConfig:
    """`run` with the cell's ε and γ; its nβ too unless it is the default n / log n (left unset)."""
    nbeta = None if default is not None and math.isclose(cell.nbeta, default, rel_tol=1e-9) else cell.nbeta
    sampler = dataclasses.replace(run.sampler, step_size=cell.step_size, localization=cell.localization, nbeta=nbeta)
    return dataclasses.replace(copy.deepcopy(run), sampler=sampler)


# ----------------------------------------------------------------------------- per-cell statistics


def cell_stats(result: RunResult, index: int, cell: tuple[float, float, float], chains: Sequence[int],
               offset: int = 0) -> CellResult:
    """A cell's statistics from the run that held its chains: columns `chains` of the result (shifted
    by `offset` into grid chain numbers)."""
    step_size, localization, nbeta = cell
    chains = list(chains)
    trace = np.asarray(result.loss_trace, dtype=float)
    done = result.steps_completed
    start = result.burnin_steps if done > result.burnin_steps else done // 2
    dead = {d["chain"] for d in result.diverged_chains}
    healthy = [c for c in chains if c not in dead]
    per_chain = [result.llc_per_chain[c] for c in chains]
    values = np.array([result.llc_per_chain[c] for c in healthy], dtype=float)
    llc_mean = float(values.mean()) if len(values) else None
    llc_se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) >= 2 else None
    accepted = [result.mala_acceptance_per_chain[c] for c in healthy if result.mala_acceptance_per_chain[c] is not None]
    acceptance = float(np.mean(accepted)) if accepted else None
    flat = {"flat": None, "drift": None, "drift_se": None}
    if healthy and trace.ndim == 2 and len(trace) > start:
        flat = diagnostics.flatness(trace[start:, healthy].T, nbeta, result.init_loss)
    return CellResult(
        index=index, step_size=float(step_size), localization=float(localization), nbeta=float(nbeta),
        chains=[c + offset for c in chains], llc_mean=llc_mean, llc_se=llc_se, llc_per_chain=per_chain,
        acceptance=acceptance, diverged_fraction=(len(chains) - len(healthy)) / len(chains),
        flat=flat["flat"], drift=flat["drift"], drift_se=flat["drift_se"],
        negative=llc_mean is not None and llc_mean < 0, partial=result.partial, wall_time_s=result.wall_time_s,
    )


# ----------------------------------------------------------------------------- recommendation


def cell_problems(cell: CellResult, band: tuple[float, float] = defaults.ACCEPTANCE_TARGET) -> list[str]:
    """Why a cell cannot be recommended (empty when it can): codes partial, no_estimate, diverged,
    no_acceptance, acceptance_low, acceptance_high, not_flat, flat_unknown, negative."""
    low, high = band
    problems = []
    if cell.partial:
        problems.append("partial")
    if cell.llc_mean is None:
        problems.append("no_estimate")
    if cell.diverged_fraction > 0:
        problems.append("diverged")
    if cell.acceptance is None:
        problems.append("no_acceptance")
    elif cell.acceptance < low:
        problems.append("acceptance_low")
    elif cell.acceptance > high:
        problems.append("acceptance_high")
    if cell.flat is False:
        problems.append("not_flat")
    elif cell.flat is None and cell.llc_mean is not None:
        problems.append("flat_unknown")
    if cell.negative:
        problems.append("negative")
    return problems


def recommend(cells: Sequence[CellResult], band: tuple[float, float] = defaults.ACCEPTANCE_TARGET,
              default_nbeta: float | None = None) -> tuple[int | None, str]:
    """The recommended cell (its `index`) and the reason, by docs/METHOD.md §2-3.

    A cell qualifies when its mean acceptance lies in `band` (0.90-0.95; run_sweep passes
    diagnostics.acceptance_band, higher for models under 20 parameters), its trace is flat after
    burn-in, no chain diverged, λ̂ ≥ 0 and it ran to the end. Among those: the smallest γ (a large
    γ swamps the likelihood), then the nβ closest to n / log n (the estimator's β* = 1/log n), then
    the largest ε (fastest mixing for the same number of steps). With none, the reason says what to
    change.
    """
    low, high = band
    good = [c for c in cells if not cell_problems(c, band)]
    if not good:
        return None, _why_none(list(cells), band)
    gamma = min(c.localization for c in good)
    pool = [c for c in good if c.localization == gamma]
    if default_nbeta is not None:
        closest = min(abs(math.log(c.nbeta / default_nbeta)) for c in pool)
        pool = [c for c in pool if abs(math.log(c.nbeta / default_nbeta)) == closest]
    best = max(pool, key=lambda c: c.step_size)
    gammas = sorted({c.localization for c in cells})
    passing_at_gamma = sorted(c.step_size for c in pool)
    se = f" ± {best.llc_se:.2g}" if best.llc_se is not None else ""
    reason = (
        f"ε = {best.step_size:.3g}, γ = {best.localization:g}: mean acceptance {best.acceptance:.3f} lies in "
        f"{low:.3g}–{high:.3g}, the loss trace is flat after burn-in, no chain diverged and λ̂ = "
        f"{best.llc_mean:.4g}{se} is not negative."
    )
    if len(gammas) > 1:
        reason += (f" γ = {gamma:g} is the smallest of the swept γ ({', '.join(f'{g:g}' for g in gammas)}) at which "
                   "a cell passes: a larger γ pulls the chains towards w* and biases λ̂ down.")
    if len(passing_at_gamma) > 1:
        reason += (f" {len(passing_at_gamma)} step sizes pass at this γ ({passing_at_gamma[0]:.3g} … "
                   f"{passing_at_gamma[-1]:.3g}); the largest mixes fastest for the same number of steps.")
    smaller = [c for c in cells if c.localization < gamma and not c.partial]
    crossing = _crossing(smaller, band)
    if crossing is not None:
        below, above, at = crossing
        reason += (f" At the smaller γ = {at:g} no cell passes only because the grid is coarse: acceptance goes from "
                   f"{below.acceptance:.3f} at ε = {below.step_size:.3g} to "
                   + ("divergence" if above.acceptance is None else f"{above.acceptance:.3f}")
                   + f" at ε = {above.step_size:.3g}. Sweep ε between them: a cell there would be preferable.")
    return best.index, reason


def _why_none(cells: list[CellResult], band: tuple[float, float]) -> str:
    low, high = band
    if not cells:
        return "No cell has finished yet."
    complete = [c for c in cells if not c.partial]
    if not complete:
        return "The sweep was stopped before any cell finished: run it to the end (fewer steps or cells make it quicker)."
    smallest = min(c.step_size for c in complete)
    largest = max(c.step_size for c in complete)
    if all(c.diverged_fraction == 1 for c in complete):
        return (f"Every chain diverged in every cell: even ε = {smallest:.3g} is too large. "
                f"Sweep smaller step sizes, e.g. from {smallest / 1000:.2g} to {smallest / 3:.2g}.")
    in_band = [c for c in complete if c.acceptance is not None and low <= c.acceptance <= high]
    if in_band:
        return _in_band_failures(in_band, band) + _coarse_note(complete, in_band, band)
    crossing = _crossing(complete, band)
    if crossing is not None:
        below, above, gamma = crossing
        upper = ("every chain diverges" if above.acceptance is None
                 else f"it is {above.acceptance:.3f}")
        return (f"No cell's acceptance falls in {low:.3g}–{high:.3g}: at γ = {gamma:g} it is "
                f"{below.acceptance:.3f} at ε = {below.step_size:.3g} and at ε = {above.step_size:.3g} {upper}. "
                f"Sweep more step sizes between {below.step_size:.3g} and {above.step_size:.3g}.")
    measured = [c for c in complete if c.acceptance is not None]
    if measured and all(c.acceptance > high for c in measured):
        return (f"Every cell accepts more than {high:.3g}: all step sizes are smaller than needed. Extend the "
                f"range upwards, e.g. ε from {largest:.2g} to {largest * 100:.2g}.")
    if measured and all(c.acceptance < low for c in measured):
        return (f"Every cell accepts less than {low:.3g}: all step sizes are too large (discretisation error "
                f"inflates λ̂). Extend the range downwards, e.g. ε from {smallest / 100:.2g} to {smallest:.2g}.")
    return ("No cell meets every rule (acceptance in "
            f"{low:.3g}–{high:.3g}, flat trace, no divergence, λ̂ ≥ 0): widen the ε range and run more steps.")


def _in_band_failures(in_band: list[CellResult], band: tuple[float, float]) -> str:
    low, high = band
    codes = [set(cell_problems(c, band)) for c in in_band]
    where = ", ".join(f"ε = {c.step_size:.3g}/γ = {c.localization:g}" for c in in_band[:4])
    if all("not_flat" in p or "flat_unknown" in p for p in codes):
        return (f"Acceptance is in {low:.3g}–{high:.3g} at {where}, but the loss trace there is still "
                "moving after burn-in, so λ̂ is not equilibrated: run more steps (e.g. twice as many).")
    if all("negative" in p for p in codes):
        return (f"Acceptance is in {low:.3g}–{high:.3g} at {where}, but λ̂ is negative there: the chains "
                "find lower loss than at w*, so w* is probably not a local minimum (train it further), "
                "or try a larger γ.")
    if all("diverged" in p for p in codes):
        return (f"Acceptance is in {low:.3g}–{high:.3g} at {where}, but some chains diverged there: "
                "lower ε a little, or raise γ to keep chains near w*.")
    return (f"Acceptance is in {low:.3g}–{high:.3g} at {where}, but each of those cells fails another "
            "check (rising trace, divergence or negative λ̂; see the heatmaps): run more steps, and "
            "sweep ε more finely around these values.")


def _coarse_note(complete: list[CellResult], in_band: list[CellResult], band: tuple[float, float]) -> str:
    """A sentence on a γ whose acceptance jumps over the band between two swept ε, if there is one."""
    covered = {(c.localization, c.nbeta) for c in in_band}
    crossing = _crossing([c for c in complete if (c.localization, c.nbeta) not in covered], band)
    if crossing is None:
        return ""
    below, above, gamma = crossing
    upper = "divergence" if above.acceptance is None else f"{above.acceptance:.3f}"
    return (f" At γ = {gamma:g} acceptance goes from {below.acceptance:.3f} at ε = {below.step_size:.3g} to "
            f"{upper} at ε = {above.step_size:.3g}: sweep ε between them too.")


def _crossing(cells: list[CellResult], band: tuple[float, float]):
    """The first adjacent pair (in ε, at one γ and nβ) whose acceptance jumps over the band; a cell
    whose chains all diverged counts as acceptance 0 (its `acceptance` is None)."""
    low, high = band
    rows: dict[tuple[float, float], list[CellResult]] = {}
    for c in cells:
        if c.acceptance is not None or c.diverged_fraction == 1:
            rows.setdefault((c.localization, c.nbeta), []).append(c)
    for (gamma, _), row in sorted(rows.items()):
        row.sort(key=lambda c: c.step_size)
        for a, b in zip(row, row[1:]):
            b_acceptance = 0.0 if b.acceptance is None else b.acceptance
            if a.acceptance is not None and a.acceptance > high and b_acceptance < low:
                return a, b, gamma
    return None


# ----------------------------------------------------------------------------- running a sweep


def choose_mode(sweep: SweepConfig, num_params: int) -> str:
    """"batched" when d × total chains ≤ BATCH_LIMIT (or asked for), else "cells"."""
    if sweep.mode != "auto":
        return sweep.mode
    if ray_backend.ray_requested(sweep.executor):
        return "cells"
    total = len(sweep.cells()) * sweep.chains_per_cell
    return "batched" if num_params * total <= BATCH_LIMIT else "cells"


def run_sweep(
    sweep: SweepConfig,
    on_cell: Callable[[CellResult], None] | None = None,
    on_progress: Callable[[SweepProgress], None] | None = None,
    stop: StopRequest = None,
) -> SweepResult:
    """Run every cell of the grid and recommend one.

    on_cell receives each cell as it finishes (all at the end of a batched sweep); on_progress gets
    a SweepProgress at every snapshot. A stop request ends the sweep at the next snapshot: finished
    cells are kept, the running computation's cells are marked partial, later ones are not run.
    """
    started = time.perf_counter()
    sweep.validate()
    config = sweep.run
    problem = build_problem(config.model, config.data)
    n = int(problem.inputs.shape[0])
    base = config.sampler.with_defaults(problem.sampler_defaults)
    default = default_nbeta(n)
    run_nbeta = base.nbeta if base.nbeta is not None else default
    low, _, high = diagnostics.acceptance_band(problem.num_params)  # higher for models under 20 parameters
    grid = [(e, g, b if b is not None else run_nbeta) for e, g, b in sweep.cells(run_nbeta)]
    state = SweepRun(
        problem=problem, grid=grid, per=sweep.chains_per_cell, mode=choose_mode(sweep, problem.num_params),
        band=(low, high), on_cell=on_cell, on_progress=on_progress, stop=stop,
        template=dataclasses.replace(base, step_size=None, localization=None, nbeta=None, calibration_steps=None),
        common=dict(loss=problem.loss, noise_scale=config.data.noise_scale, device=config.device, dtype=config.dtype),
    )
    journal = sweep_journal(sweep)
    if ray_backend.ray_requested(sweep.executor):
        last = state.run_cells_on_ray(sweep.executor, journal)
    else:
        state.journal = journal
        last = state.run_batched() if state.mode == "batched" else state.run_cells()
        if sweep.executor is not None:  # resuming here: what was taken from the results directory
            state.executor_report = ray_backend.Outcome(
                values={key: {} for key in state.stored}, resumed=list(state.resumed), address="this machine",
                executor="local").summary()
    cells = state.cells
    index, reason = recommend(cells, state.band, default_nbeta=default)
    resolved = sweep.to_dict()
    resolved["run"]["sampler"] = {**resolved["run"]["sampler"],
                                  **{k: getattr(state.template, k) for k in SamplerConfig.__dataclass_fields__},
                                  "chains": state.per,
                                  "batch_size": (last.config["sampler"]["batch_size"] if last else None)}
    resolved["nbetas"] = sweep.nbetas
    truth = problem.truth
    return SweepResult(
        config=resolved, cells=cells, recommended=index, reason=reason, mode=state.mode,
        partial=len(cells) < len(grid) or any(c.partial for c in cells), num_params=problem.num_params, n=n,
        init_loss=last.init_loss if last else float("nan"), default_nbeta=default, steps=base.steps,
        burnin_steps=base.burnin_steps(), theoretical_llc=float(truth.llc) if truth is not None else None,
        wall_time_s=time.perf_counter() - started, acceptance_band=list(state.band), executor=state.executor_report,
    )


@dataclass
class SweepRun:
    """One sweep while it runs: the grid, how its cells run, and the cells finished so far."""

    problem: Problem
    grid: list[tuple[float, float, float]]  # (ε, γ, nβ) per cell
    per: int  # chains per cell
    mode: str
    band: tuple[float, float]
    template: SamplerConfig  # the sampler without ε, γ, nβ
    common: dict[str, Any]  # estimate_llc's keywords shared by every computation
    on_cell: Callable[[CellResult], None] | None = None
    on_progress: Callable[[SweepProgress], None] | None = None
    stop: StopRequest = None
    cells: list[CellResult] = field(default_factory=list)
    running: list[float | None] = field(default_factory=list)
    executor_report: dict[str, Any] | None = None
    journal: ray_backend.Journal | None = None  # here, with executor.resume: finished cells kept and written there
    stored: list[str] = field(default_factory=list)  # keys of the cells finished (run or resumed) here
    resumed: list[str] = field(default_factory=list)  # of those, the ones taken from the journal

    def cell_sampler(self, cell: tuple[float, float, float]) -> SamplerConfig:
        e, g, b = cell
        return dataclasses.replace(self.template, chains=self.per, step_size=e, localization=g, nbeta=b)

    def cell_key(self, k: int, cell: tuple[float, float, float]) -> str:
        """A cell run on its own (cells mode, here or on Ray): the same key, so either resumes the other."""
        return ray_backend.unit_key(f"cell {k}", [cell, self.per, dataclasses.asdict(self.cell_sampler(cell)),
                                                  self.common])

    def batched_key(self, k: int, cell: tuple[float, float, float]) -> str:
        """A cell of the batched computation, whose numbers depend on the whole grid."""
        return ray_backend.unit_key(f"batched cell {k}", [cell, self.per, dataclasses.asdict(self.template),
                                                          self.common, self.grid])

    def resume(self, key: str, found: dict[str, Any]) -> "LastRun | None":
        """The cell stored under `key` (finished, and handed on), or None when it is not there."""
        value = found.get(key)
        if not isinstance(value, dict) or "cell" not in value:
            return None
        self.finish(CellResult.from_dict(value["cell"]))
        self.stored.append(key)
        self.resumed.append(key)
        return LastRun(value["init_loss"], {"sampler": {"batch_size": value["batch_size"]}})

    def store(self, key: str, cell: CellResult, result: RunResult) -> None:
        """Write a finished cell to the journal (not one a stop cut short)."""
        if self.journal is not None and not cell.partial:
            self.journal.append(key, cell_value(cell, result))
            self.stored.append(key)

    def run_cells_on_ray(self, executor: ExecutorConfig, journal: ray_backend.Journal | None) -> "LastRun | None":
        """Every cell as a Ray task (execution/ray_backend.py), the problem shared through Ray's
        object store; each cell is the same computation as in run_cells, seed included, so the numbers
        are those of a local cell-by-cell sweep. Cells arrive as they finish and are kept in grid order."""
        units, last = [], {}
        for k, cell in enumerate(self.grid):
            payload = {"index": k, "cell": cell, "per": self.per, "sampler": self.cell_sampler(cell), "common": self.common}
            units.append(ray_backend.Unit(self.cell_key(k, cell), cell_on_worker, payload))

        def arrived(key: str, value: dict[str, Any], done: int, total: int) -> None:
            last.update(value)
            cell = CellResult.from_dict(value["cell"])
            self.finish(cell)
            if self.on_progress is not None:
                self.running = self.running or [None] * len(self.grid)
                self.running[cell.index] = cell.llc_mean
                self.on_progress(SweepProgress(done, total, 1, 1, cell.index, list(self.running), self.mode, self.band))

        outcome = ray_backend.run_units(units, executor, shared=self.problem, journal=journal, on_value=arrived,
                                        stop=stop_checker(self.stop))
        self.cells.sort(key=lambda c: c.index)
        self.executor_report = outcome.summary()
        return LastRun(last["init_loss"], {"sampler": {"batch_size": last["batch_size"]}}) if last else None

    def run_batched(self) -> "RunResult | LastRun":
        """Every cell as a group of chains of one computation (each chain's ε from per_chain, which
        switches the engine's "auto" off). Resuming, it is not run again when every cell is stored."""
        keys = [self.batched_key(k, cell) for k, cell in enumerate(self.grid)]
        found = self.journal.load() if self.journal is not None else {}
        if found and all(isinstance(found.get(key), dict) for key in keys):
            stored = [self.resume(key, found) for key in keys]
            if all(stored):
                return stored[-1]
            self.cells, self.stored, self.resumed = [], [], []  # a record of another version: run afresh
        sampler = dataclasses.replace(self.template, chains=len(self.grid) * self.per)
        per_chain = {name: [cell[i] for cell in self.grid for _ in range(self.per)]
                     for i, name in enumerate(("step_size", "localization", "nbeta"))}
        last = estimate_llc(self.problem.model, self.problem.inputs, self.problem.targets, sampler, **self.common,
                            per_chain=per_chain, stop=self.stop, on_snapshot=lambda s: self.progress(s, 0, 0))
        for k, cell in enumerate(self.grid):
            finished = cell_stats(last, k, cell, range(k * self.per, (k + 1) * self.per))
            self.finish(finished)
            self.store(keys[k], finished, last)
        return last

    def run_cells(self) -> "RunResult | LastRun | None":
        """One computation per cell, in grid order, until the grid ends or a stop request; resuming,
        the cells already stored are taken from the journal."""
        stop_requested = stop_checker(self.stop)
        found = self.journal.load() if self.journal is not None else {}
        last = None
        for k, cell in enumerate(self.grid):
            key = self.cell_key(k, cell)
            stored = self.resume(key, found)
            if stored is not None:
                last = stored
                continue
            if k and stop_requested():
                break
            last = estimate_llc(self.problem.model, self.problem.inputs, self.problem.targets, self.cell_sampler(cell),
                                **self.common, stop=self.stop, on_snapshot=lambda s, k=k: self.progress(s, k, k))
            finished = cell_stats(last, k, cell, range(self.per), offset=k * self.per)
            self.finish(finished)
            self.store(key, finished, last)
            if last.partial:
                break
        return last

    def finish(self, cell: CellResult) -> None:
        self.cells.append(cell)
        if self.on_cell is not None:
            self.on_cell(cell)

    def progress(self, snapshot: Snapshot, computation: int, first_cell: int) -> None:
        if self.on_progress is None:
            return
        if not self.running:
            self.running = [None] * len(self.grid)
        llc = snapshot.llc_running
        for k in range(len(llc) // self.per):
            values = llc[k * self.per:(k + 1) * self.per]
            values = values[np.isfinite(values)]
            running = float(values.mean()) if len(values) and snapshot.step > snapshot.burnin else None
            self.running[first_cell + k] = running
        self.on_progress(SweepProgress(len(self.cells), len(self.grid), snapshot.step, snapshot.total_steps,
                                       computation, list(self.running), self.mode, self.band))


@dataclass
class LastRun:
    """What run_sweep reads from the last computation, when the cells ran as Ray tasks."""

    init_loss: float
    config: dict[str, Any]


def cell_on_worker(payload: dict[str, Any], problem: Problem) -> dict[str, Any]:
    """One cell on a Ray worker (ray_backend.Unit): run_cells' computation for it, its statistics."""
    k, per = payload["index"], payload["per"]
    result = estimate_llc(problem.model, problem.inputs, problem.targets, payload["sampler"], **payload["common"])
    return cell_value(cell_stats(result, k, payload["cell"], range(per), offset=k * per), result)


def cell_value(cell: CellResult, result: RunResult) -> dict[str, Any]:
    """What a finished cell leaves in the results directory (and what a Ray task hands back)."""
    return {"cell": dataclasses.asdict(cell), "init_loss": float(result.init_loss),
            "batch_size": result.config["sampler"]["batch_size"]}


def sweep_journal(sweep: SweepConfig) -> ray_backend.Journal | None:
    """With executor.resume: the sweep's results file there, named by a digest of the sweep itself."""
    if sweep.executor is None or not sweep.executor.resume:
        return None
    grid = {k: v for k, v in sweep.to_dict().items() if k != "executor"}
    name = ray_backend.unit_key("sweep", grid).replace("#", "-")
    return ray_backend.Journal(Path(sweep.executor.resume) / f"{name}.runs.jsonl")


def format_table(result: SweepResult) -> str:
    """One line per cell, the recommended one marked with *."""
    header = f"{'':1} {'ε':>9} {'γ':>7} {'nβ':>9} {'λ̂':>10} {'± se':>8} {'accept':>7} {'diverged':>8} {'trace':>8}"
    lines = [header]
    for c in result.cells:
        flat = {True: "flat", False: "rising" if (c.drift or 0) > 0 else "falling", None: "—"}[c.flat]
        lines.append(
            f"{'*' if c.index == result.recommended else ' ':1} {c.step_size:9.3g} {c.localization:7.3g} {c.nbeta:9.4g} "
            f"{_num(c.llc_mean, 10)} {_num(c.llc_se, 8)} {_num(c.acceptance, 7, '.3f')} "
            f"{c.diverged_fraction:8.0%} {flat + (' partial' if c.partial else ''):>8}"
        )
    return "\n".join(lines)


def _num(value: float | None, width: int, spec: str = ".4g") -> str:
    return f"{value:{width}{spec}}" if value is not None else f"{'—':>{width}}"


def _numbers(name: str, values: Any, positive: bool) -> None:
    if not isinstance(values, (list, tuple)) or not values:
        raise LLCInputError(f"{name} must be a non-empty list of numbers")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (positive and v == 0):
            raise LLCInputError(f"{name} contains {v!r}: every value must be a finite number {'> 0' if positive else '≥ 0'}")
    if len(set(values)) != len(values):
        raise LLCInputError(f"{name} lists a value twice: give each value once")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ----------------------------------------------------------------------------- background work


def sweep_job(sweep: SweepConfig, abandon_after: float | None = 60.0) -> Job:
    """A Job running `run_sweep`: items are CellResults, progress a SweepProgress, result a SweepResult."""
    def work(report, stop):
        return run_sweep(sweep, on_cell=lambda c: report("item", c), on_progress=lambda p: report("progress", p),
                         stop=stop)

    return Job(work, abandon_after, name="llc-sweep")
