"""The refined LLC of every group of a partition at once: per layer, per attention head, or named groups.

Each group's chains move only that group's parameters (the rest stay at w*), and all groups' chains
run as one batched computation (`sampling.sgld.SGLD.mask`), so the LLC of each of G groups costs one
run of G × C chains rather than G runs. A refined LLC is not a share of the full λ: parameters interact
(the loss is not a sum over groups), so the groups' λ̂ need not add up to the model's.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from torch import nn

from llc_core.config import RefineConfig, RunConfig
from llc_core.errors import LLCInputError
from llc_core.estimator import StopRequest, estimate_llc
from llc_core.refine import ParameterMask, head_groups, layer_groups, mask_from_patterns, moving_count, parameter_shapes
from llc_core.result import RunResult, Snapshot, json_safe
from llc_core.runner import build_problem, refinement

GROUPINGS = ("layer", "head")


@dataclass
class GroupLLC:
    """One group's refined λ̂ over its own chains."""

    name: str
    moving_params: int
    llc_mean: float | None
    llc_se: float | None
    llc_per_chain: list[float | None]
    acceptance: float | None


@dataclass
class RefinedResult:
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

    def table(self) -> str:
        lines = [f"{'group':<28} {'moving':>8} {'λ̂':>10} {'± se':>8} {'accept':>7}"]
        for g in self.groups:
            llc = "—" if g.llc_mean is None else f"{g.llc_mean:.4g}"
            se = "—" if g.llc_se is None else f"{g.llc_se:.2g}"
            acc = "—" if g.acceptance is None else f"{g.acceptance:.3f}"
            lines.append(f"{g.name[:28]:<28} {g.moving_params:>8,} {llc:>10} {se:>8} {acc:>7}")
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


def run_groups(config: RunConfig, on_snapshot: Callable[[Snapshot], None] | None = None,
               stop: StopRequest = None) -> RefinedResult:
    """`config.refine.groups` of the config's model, on its data (or `refine.data`'s subset)."""
    started = time.perf_counter()
    refine = config.refine or RefineConfig(groups="layer")
    if refine.parameters is not None:
        raise LLCInputError("refine.parameters and refine.groups exclude each other: the groups say what moves")
    problem = build_problem(config.model, config.data)
    groups = partition(problem.model, refine.groups or "layer")
    subset = refinement(dataclasses.replace(refine, groups=None), problem)
    inputs, targets = subset.data if subset is not None else (problem.inputs, problem.targets)
    sampler = config.sampler.with_defaults(problem.sampler_defaults)
    result, llcs = estimate_groups(problem.model, inputs, targets, sampler, groups, on_snapshot=on_snapshot,
                                   stop=stop, loss=problem.loss, noise_scale=config.data.noise_scale,
                                   device=config.device, dtype=config.dtype, class_weights=config.data.class_weights)
    return RefinedResult(
        groups=llcs, grouping=refine.groups if isinstance(refine.groups, str) else "named", chains_per_group=sampler.chains,
        n=result.n, nbeta=result.nbeta, step_size=result.step_size, partial=result.partial,
        wall_time_s=time.perf_counter() - started, verdicts=[v.code for v in result.verdicts], config=config.to_dict(),
    )
