"""The refined LLC of every group of a partition at once: per layer, per attention head, or named groups;
and the data-refined LLC of every data subset: per class label, or named subsets.

Each group's chains move only that group's parameters (the rest stay at w*), and all groups' chains
run as one batched computation (`sampling.sgld.SGLD.mask`), so the LLC of each of G groups costs one
run of G × C chains rather than G runs. A refined LLC is not a share of the full λ: parameters interact
(the loss is not a sum over groups), so the groups' λ̂ need not add up to the model's.

A data subset changes the loss and n, so subsets run one after the other (`estimate_subsets`), every
parameter moving, the loss on the subset's rows only and nβ = n_k / log n_k of its n_k rows (a given
nβ is used as given); each reports as it finishes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from torch import Tensor, nn

from llc_core.config import RefineConfig, RunConfig
from llc_core.errors import LLCInputError
from llc_core.estimator import StopRequest, estimate_llc, stop_checker
from llc_core.problem import Problem
from llc_core.refine import (ParameterMask, data_rows, head_groups, label_subsets, layer_groups, mask_from_patterns,
                             moving_count, parameter_shapes)
from llc_core.result import RunResult, Snapshot, json_safe
from llc_core.runner import build_problem, refinement

GROUPINGS = ("layer", "head")
SUBSET_KINDS = ("label",)
MAX_SUBSETS = 64  # named data subsets in one request: each is a run of its own


@dataclass
class GroupLLC:
    """One group's refined λ̂ over its own chains."""

    name: str
    moving_params: int
    llc_mean: float | None
    llc_se: float | None
    llc_per_chain: list[float | None]
    acceptance: float | None
    # a data subset's own run (None for a weight group, whose run is shared): its rows, n_k, nβ, ε and verdicts
    data: str | None = None
    n: int | None = None
    nbeta: float | None = None
    step_size: float | None = None
    verdicts: list[str] = field(default_factory=list)


@dataclass
class RefinedResult:
    """The refined λ̂ of every group (or data subset). grouping: "layer", "head", "named" (weight groups), or
    "label", "subsets" (data subsets: then nbeta is NaN and step_size None, each group having its own)."""

    groups: list[GroupLLC]
    grouping: str
    chains_per_group: int
    n: int
    nbeta: float
    step_size: float | None
    partial: bool
    wall_time_s: float
    verdicts: list[str] = field(default_factory=list)  # codes of the shared run's verdicts
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(dataclasses.asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @property
    def by_data(self) -> bool:
        """Data subsets (each its own run), not weight groups."""
        return self.grouping in SUBSET_KINDS + ("subsets",)

    def table(self) -> str:
        first = f"{'rows':>8} {'nβ':>8}" if self.by_data else f"{'moving':>8}"
        lines = [f"{'group':<28} {first} {'λ̂':>10} {'± se':>8} {'accept':>7}"]
        for g in self.groups:
            llc = "—" if g.llc_mean is None else f"{g.llc_mean:.4g}"
            se = "—" if g.llc_se is None else f"{g.llc_se:.2g}"
            acc = "—" if g.acceptance is None else f"{g.acceptance:.3f}"
            size = f"{g.n or 0:>8,} {g.nbeta or float('nan'):>8.4g}" if self.by_data else f"{g.moving_params:>8,}"
            lines.append(f"{g.name[:28]:<28} {size} {llc:>10} {se:>8} {acc:>7}")
        return "\n".join(lines)


def partition(model: nn.Module, groups: str | dict) -> dict[str, ParameterMask]:
    """The named parameter selections of a grouping: "layer", "head", or {name: [patterns]}."""
    if groups == "layer":
        return layer_groups(model)
    if groups == "head":
        return head_groups(model)
    if isinstance(groups, dict) and groups:
        shapes = parameter_shapes(model)
        return {str(name): mask_from_patterns(shapes, patterns) for name, patterns in groups.items()}
    raise LLCInputError(f"refine.groups = {groups!r}: use \"layer\", \"head\" or {{\"name\": [\"pattern\", ...]}}")


def estimate_groups(model: nn.Module, inputs, targets, sampler, groups: dict[str, ParameterMask], *,
                    on_snapshot: Callable[[Snapshot], None] | None = None, stop: StopRequest = None,
                    **estimate: Any) -> tuple[RunResult, list[GroupLLC]]:
    """One computation of len(groups) × sampler.chains chains, group k's chains moving group k only."""
    per = sampler.chains
    names = list(groups)
    masks = [groups[name] for name in names for _ in range(per)]
    shared = dataclasses.replace(sampler, chains=per * len(names))
    result = estimate_llc(model, inputs, targets, shared, parameter_masks=masks, on_snapshot=on_snapshot, stop=stop,
                          **estimate)
    return result, [group_llc(result, name, range(k * per, (k + 1) * per), moving_count(groups[name]))
                    for k, name in enumerate(names)]


def group_llc(result: RunResult, name: str, chains: range, moving: int) -> GroupLLC:
    values = np.array([result.llc_per_chain[c] for c in chains if result.llc_per_chain[c] is not None], dtype=float)
    accepted = [result.mala_acceptance_per_chain[c] for c in chains
                if result.mala_acceptance_per_chain[c] is not None]
    se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) >= 2 else None
    return GroupLLC(name=name, moving_params=moving, llc_mean=float(values.mean()) if len(values) else None,
                    llc_se=se, llc_per_chain=[result.llc_per_chain[c] for c in chains],
                    acceptance=float(np.mean(accepted)) if accepted else None)


def data_subsets(inputs: Tensor, targets: Tensor, subsets: str | dict) -> dict[str, tuple[Tensor, str]]:
    """The rows of every data subset, {name: (rows, what they are)}, all checked before any run starts:
    "label" (one subset per class label, `refine.label_subsets`) or {name: a refine.data form}."""
    if subsets == "label":
        specs = label_subsets(targets)
    elif isinstance(subsets, dict) and subsets and len(subsets) <= MAX_SUBSETS:
        specs = subsets
    elif isinstance(subsets, dict) and subsets:
        raise LLCInputError(f"refine.subsets names {len(subsets)} subsets, more than {MAX_SUBSETS}: each is a run "
                            "of its own; choose fewer")
    else:
        raise LLCInputError(f"refine.subsets = {str(subsets)[:80]!r}: use \"label\" (one subset per class label) or "
                            "{\"name\": {\"range\": [0, 500]}, ...} with any refine.data form")
    found = {}
    for name, spec in specs.items():
        try:
            found[str(name)] = data_rows(inputs, targets, spec)
        except LLCInputError as err:
            raise LLCInputError(f"data subset {str(name)[:40]!r}: {err}") from None
    return found


def estimate_subsets(problem: Problem, config: RunConfig, sampler, subsets: dict[str, tuple[Tensor, str]], *,
                     on_group: Callable[[GroupLLC], None] | None = None,
                     on_snapshot: Callable[[Snapshot], None] | None = None,
                     stop: StopRequest = None) -> tuple[list[GroupLLC], bool]:
    """The data-refined λ̂ of every subset, one run each, in order; (the finished ones, stopped early).

    Every parameter moves; the loss, n and nβ (when not given) are the subset's. A stop ends the run in
    progress, which is dropped; the finished subsets are kept. `on_snapshot` sees the progress of all of
    them as one count of steps (subset k's step s of S is k·S + s of K·S)."""
    should_stop = stop_checker(stop)
    done: list[GroupLLC] = []
    moving = problem.num_params
    for index, (name, (rows, what)) in enumerate(subsets.items()):
        if should_stop():
            return done, True
        result = estimate_llc(problem.model, problem.inputs[rows], problem.targets[rows], sampler,
                              on_snapshot=part_of(on_snapshot, index, len(subsets)), stop=should_stop,
                              loss=problem.loss, noise_scale=config.data.noise_scale, device=config.device,
                              dtype=config.dtype, class_weights=config.data.class_weights)
        if result.partial:
            return done, True
        group = group_llc(result, name, range(len(result.llc_per_chain)), moving)
        group = dataclasses.replace(group, data=what, n=result.n, nbeta=result.nbeta, step_size=result.step_size,
                                    verdicts=[v.code for v in result.verdicts])
        done.append(group)
        if on_group is not None:
            on_group(group)
    return done, False


def part_of(on_snapshot: Callable[[Snapshot], None] | None, part: int, parts: int
            ) -> Callable[[Snapshot], None] | None:
    """A snapshot callback for run `part` of `parts` equal runs: its step counted among all of theirs."""
    if on_snapshot is None:
        return None
    return lambda snapshot: on_snapshot(dataclasses.replace(
        snapshot, step=part * snapshot.total_steps + snapshot.step, total_steps=parts * snapshot.total_steps))


def run_groups(config: RunConfig, on_snapshot: Callable[[Snapshot], None] | None = None,
               stop: StopRequest = None, on_group: Callable[[GroupLLC], None] | None = None) -> RefinedResult:
    """`config.refine.groups` of the config's model, on its data (or `refine.data`'s subset); or with
    `config.refine.subsets`, the data-refined LLC of every subset. `on_group` gets each group's λ̂ as it
    is known: a subset's when its run ends, the weight groups' all at once at the end."""
    started = time.perf_counter()
    refine = config.refine or RefineConfig(groups="layer")
    if refine.parameters is not None:
        raise LLCInputError("refine.parameters and refine.groups exclude each other: the groups say what moves")
    if refine.subsets is not None and (refine.groups is not None or refine.data is not None):
        raise LLCInputError("refine.subsets excludes refine.groups and refine.data: the subsets say which data counts "
                            "and every parameter moves")
    problem = build_problem(config.model, config.data)
    sampler = config.sampler.with_defaults(problem.sampler_defaults)
    if refine.subsets is not None:
        subsets = data_subsets(problem.inputs, problem.targets, refine.subsets)
        llcs, stopped = estimate_subsets(problem, config, sampler, subsets, on_group=on_group,
                                         on_snapshot=on_snapshot, stop=stop)
        verdicts = sorted({code for g in llcs for code in g.verdicts if code != "ok"}) + (["partial"] if stopped else [])
        return RefinedResult(
            groups=llcs, grouping=refine.subsets if isinstance(refine.subsets, str) else "subsets",
            chains_per_group=sampler.chains, n=int(problem.inputs.shape[0]), nbeta=float("nan"), step_size=None,
            partial=stopped, wall_time_s=time.perf_counter() - started, verdicts=verdicts, config=config.to_dict())
    groups = partition(problem.model, refine.groups or "layer")
    subset = refinement(dataclasses.replace(refine, groups=None), problem)
    inputs, targets = subset.data if subset is not None else (problem.inputs, problem.targets)
    result, llcs = estimate_groups(problem.model, inputs, targets, sampler, groups, on_snapshot=on_snapshot,
                                   stop=stop, loss=problem.loss, noise_scale=config.data.noise_scale,
                                   device=config.device, dtype=config.dtype, class_weights=config.data.class_weights)
    if on_group is not None and not result.partial:
        for group in llcs:
            on_group(group)
    return RefinedResult(
        groups=llcs, grouping=refine.groups if isinstance(refine.groups, str) else "named", chains_per_group=sampler.chains,
        n=result.n, nbeta=result.nbeta, step_size=result.step_size, partial=result.partial,
        wall_time_s=time.perf_counter() - started, verdicts=[v.code for v in result.verdicts], config=config.to_dict(),
    )
